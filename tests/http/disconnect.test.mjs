// Clients that disconnect mid-stream: 50 streams are opened, each dropped after its first
// chunks; every engine slot must be free again within a second (engine counters from /ready).
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
