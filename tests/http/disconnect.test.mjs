// Clients that disconnect mid-stream: 50 streams are opened, each dropped after its first
// chunks; every engine slot must be free again within a second (engine counters from /ready).
// And a client that stops reading is disconnected after --write-timeout.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { startServer, request, sleep } from './server.mjs';

let server;
before(async () => { server = await startServer(['--max-num-seqs', '64']); });
after(async () => { await server.stop(); });

function openStream(port, body) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method: 'POST', path: '/v1/completions',
                               headers: { 'content-type': 'application/json' },
                               agent: false });
    req.on('response', (res) => {
      res.once('data', () => resolve({ req, res }));
    });
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}

test('50 dropped streams free every slot within a second', async () => {
  const body = { prompt: 'stream me', max_tokens: 100000, ignore_eos: true, stream: true };
  const streams = await Promise.all(Array.from({ length: 50 }, () => openStream(server.port, body)));
  const busy = await request(server, 'GET', '/ready');
  assert.equal(busy.body.engine.slots_used, 50);
  const dropped = Date.now();
  for (const s of streams) s.req.destroy();
  let stats;
  for (;;) {
    stats = (await request(server, 'GET', '/ready')).body;
    if (stats.engine.slots_used === 0 && stats.engine.running === 0) break;
    if (Date.now() - dropped > 1000) break;
    await sleep(20);
  }
  assert.equal(stats.engine.slots_used, 0, JSON.stringify(stats));
  assert.equal(stats.engine.running, 0);
  assert.ok(Date.now() - dropped <= 1000);
  // The server still serves.
  const ok = await request(server, 'POST', '/v1/completions', { prompt: 'a', max_tokens: 2 });
  assert.equal(ok.status, 200);
});

test('a client that stops reading is cut after --write-timeout and its slot freed', async () => {
  const s = await startServer(['--write-timeout', '1', '--max-buffered-output', '4096']);
  try {
    const body = { prompt: 'slow reader', max_tokens: 100000, ignore_eos: true, stream: true };
    const { req, res } = await openStream(s.port, body);
    res.pause();  // read nothing more: kernel buffers fill, then the server's write stalls
    let stats;
    const started = Date.now();
    for (;;) {
      stats = (await request(s, 'GET', '/ready')).body;
      if (stats.engine.slots_used === 0) break;
      assert.ok(Date.now() - started < 120000, 'the stalled stream was never cut');
      await sleep(100);
    }
    assert.equal(stats.engine.running, 0);
    assert.equal(stats.http.active_requests, 1);  // this /ready request itself
    req.destroy();
  } finally {
    await s.stop();
  }
});
