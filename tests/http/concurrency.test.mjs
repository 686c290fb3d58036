// 1000 simultaneous streaming connections complete correctly while the server's thread count
// stays what it was before the load (/proc/<pid>/status Threads).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { startServer, request } from './server.mjs';

let server;
before(async () => {
  server = await startServer(['--max-num-seqs', '256', '--max-queued-requests', '2000']);
});
after(async () => { await server.stop(); });

function stream(port, body) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method: 'POST', path: '/v1/completions',
                               headers: { 'content-type': 'application/json' }, agent: false });
    req.on('response', (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { text += d; });
      res.on('end', () => resolve({ status: res.statusCode, text }));
    });
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}

test('1000 concurrent streams, fixed thread count', async () => {
  const warm = await request(server, 'POST', '/v1/completions', { prompt: 'w', max_tokens: 2 });
  assert.equal(warm.status, 200);
  const before = server.threads();
  let maxThreads = before;
  const sampler = setInterval(() => { maxThreads = Math.max(maxThreads, server.threads()); }, 50);
  const body = { prompt: 'hello', max_tokens: 8, ignore_eos: true, temperature: 0, stream: true,
                 stream_options: { include_usage: true } };
  const results = await Promise.all(Array.from({ length: 1000 }, () => stream(server.port, body)));
  clearInterval(sampler);
  let reference;
  for (const r of results) {
    assert.equal(r.status, 200);
    const frames = r.text.split('\n\n').filter((f) => f);
    assert.equal(frames[frames.length - 1], 'data: [DONE]');
    const chunks = frames.slice(0, -1).map((f) => JSON.parse(f.slice(6)));
    assert.deepEqual(chunks[chunks.length - 1].usage.completion_tokens, 8);
    const text = chunks.flatMap((c) => c.choices.map((x) => x.text)).join('');
    reference ??= text;
    assert.equal(text, reference);  // greedy: every stream says the same
  }
  assert.equal(maxThreads, before, `threads grew from ${before} to ${maxThreads}`);
  assert.equal(server.threads(), before);
});
