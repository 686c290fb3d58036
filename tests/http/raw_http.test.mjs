// Raw HTTP against bmserve: every error status with its OpenAI error body, malformed and
// hostile input, pipelining, HEAD/OPTIONS, unknown routes, request ids, and errors after a
// stream started (fault injection).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startServer, request, sseEvents, sleep } from './server.mjs';

let server;
before(async () => {
  server = await startServer(['--max-body-bytes', '1048576', '--max-prompt-tokens', '64']);
});
after(async () => { await server.stop(); });

// Sends raw bytes, reads until the server closes the connection, parses the responses.
function raw(port, bytes, { endAfterMs } = {}) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    const parts = [];
    sock.on('data', (d) => parts.push(d));
    sock.on('error', reject);
    sock.on('close', () => resolve(parseResponses(Buffer.concat(parts))));
    sock.on('connect', () => {
      sock.write(bytes);
      if (endAfterMs !== undefined) setTimeout(() => sock.end(), endAfterMs);
    });
  });
}

function parseResponses(buf) {
  const out = [];
  let at = 0;
  while (at < buf.length) {
    const headEnd = buf.indexOf('\r\n\r\n', at);
    if (headEnd < 0) break;
    const lines = buf.subarray(at, headEnd).toString('latin1').split('\r\n');
    const status = Number(lines[0].split(' ')[1]);
    const headers = {};
    for (const l of lines.slice(1)) {
      const i = l.indexOf(':');
      headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim();
    }
    at = headEnd + 4;
    let body = Buffer.alloc(0);
    if (headers['transfer-encoding'] === 'chunked') {
      const chunks = [];
      for (;;) {
        const lineEnd = buf.indexOf('\r\n', at);
        const size = parseInt(buf.subarray(at, lineEnd).toString(), 16);
        at = lineEnd + 2;
        if (size === 0) { at += 2; break; }
        chunks.push(buf.subarray(at, at + size));
        at += size + 2;
      }
      body = Buffer.concat(chunks);
    } else if (headers['content-length'] !== undefined) {
      body = buf.subarray(at, at + Number(headers['content-length']));
      at += body.length;
    }
    out.push({ status, headers, body: body.toString() });
  }
  return out;
}

function assertError(res, status, param) {
  assert.equal(res.status, status, JSON.stringify(res.body));
  const e = typeof res.body === 'string' ? JSON.parse(res.body).error : res.body.error;
  assert.equal(typeof e.message, 'string');
  assert.ok(e.message.length > 0);
  assert.equal(typeof e.type, 'string');
  assert.ok('param' in e && 'code' in e);
  if (param !== undefined) assert.equal(e.param, param);
}

const post = (path, body, headers) => request(server, 'POST', path, body, headers);
const base = { model: 'bmserve-demo', prompt: 'hi', max_tokens: 2 };

test('400: malformed JSON, wrong types, out of range, huge numbers, invalid UTF-8', async () => {
  assertError(await post('/v1/completions', '{"prompt": "x",'), 400);
  assertError(await post('/v1/completions', '[1, 2]'), 400);
  assertError(await post('/v1/completions', { ...base, max_tokens: 'ten' }), 400, 'max_tokens');
  assertError(await post('/v1/completions', { ...base, max_tokens: -1 }), 400, 'max_tokens');
  assertError(await post('/v1/completions', { ...base, max_tokens: 0 }), 400, 'max_tokens');
  assertError(await post('/v1/completions', '{"prompt":"x","max_tokens":1e30}'), 400, 'max_tokens');
  assertError(await post('/v1/completions', '{"prompt":"x","max_tokens":123456789012345678901234567890}'),
              400, 'max_tokens');
  assertError(await post('/v1/completions', '{"prompt":"x","temperature":1e400}'), 400);
  assertError(await post('/v1/completions', { ...base, temperature: 3 }), 400, 'temperature');
  assertError(await post('/v1/completions', { ...base, top_p: 0 }), 400, 'top_p');
  assertError(await post('/v1/completions', { ...base, n: 0 }), 400, 'n');
  assertError(await post('/v1/completions', { ...base, logprobs: 21 }), 400, 'logprobs');
  assertError(await post('/v1/completions', { ...base, stop: 5 }), 400, 'stop');
  assertError(await post('/v1/completions', { ...base, logit_bias: { abc: 1 } }), 400, 'logit_bias');
  assertError(await post('/v1/completions', { ...base, prompt: [1, 100000] }), 400, 'prompt');
  assertError(await post('/v1/completions', { ...base, prompt: 5 }), 400, 'prompt');
  assertError(await post('/v1/completions', { ...base, prompt: undefined }), 400, 'prompt');
  assertError(await post('/v1/completions', { ...base, best_of: 3, n: 1 }), 400, 'best_of');
  assertError(await post('/v1/completions', { ...base, suffix: 'tail' }), 400, 'suffix');
  assertError(await post('/v1/completions', { ...base, model: 'gpt-4' }), 400, 'model');
  assertError(await post('/v1/completions', { ...base, prompt: 'y'.repeat(100) }), 400, 'prompt');
  assertError(await post('/v1/chat/completions', { model: 'bmserve-demo', messages: [] }), 400,
              'messages');
  assertError(await post('/v1/chat/completions', { messages: [{ role: 'tool', content: 'x' }] }),
              400, 'messages[0].role');
  assertError(await post('/v1/chat/completions', { messages: [{ role: 'user', content: 5 }] }),
              400, 'messages[0].content');
  assertError(await post('/v1/chat/completions', { messages: [{ role: 'user', content: 'x' }],
                                                   top_logprobs: 2 }), 400, 'top_logprobs');
  // Invalid UTF-8 inside a JSON string.
  const bad = Buffer.concat([Buffer.from('{"prompt":"a'), Buffer.from([0xff, 0xfe]), Buffer.from('"}')]);
  const r = await raw(server.port, Buffer.concat([
    Buffer.from(`POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n` +
                `Content-Length: ${bad.length}\r\nConnection: close\r\n\r\n`), bad]));
  assertError({ status: r[0].status, body: r[0].body }, 400);
  assertError(await post('/tokenize', { prompt: 7 }), 400, 'prompt');
  assertError(await post('/detokenize', { tokens: [-1] }), 400, 'tokens');
});

test('404, 405, HEAD, OPTIONS, tokenize round trip', async () => {
  assertError(await request(server, 'GET', '/nope'), 404);
  assertError(await request(server, 'GET', '/v1/models/other'), 404);
  const r405 = await request(server, 'GET', '/v1/completions');
  assertError(r405, 405);
  assert.match(r405.headers.get('allow'), /POST/);
  const [head] = await raw(server.port, 'HEAD /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  assert.equal(head.status, 200);
  assert.ok(Number(head.headers['content-length']) > 0);
  assert.equal(head.body, '');
  const opt = await request(server, 'OPTIONS', '/v1/chat/completions');
  assert.equal(opt.status, 204);
  assert.match(opt.headers.get('allow'), /POST/);
  const tok = await post('/tokenize', { prompt: 'héllo' });
  assert.equal(tok.status, 200);
  assert.equal(tok.body.count, tok.body.tokens.length);
  const detok = await post('/detokenize', { tokens: tok.body.tokens });
  assert.equal(detok.body.prompt, 'héllo');
});

test('413 for a 10 MB body; 411 without Content-Length', async () => {
  const big = JSON.stringify({ prompt: 'x'.repeat(10 * 1024 * 1024) });
  const r = await post('/v1/completions', big);
  assertError(r, 413);
  const [r411] = await raw(server.port,
    'POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n{"prompt":"x"}');
  assert.equal(r411.status, 411);
  // A malformed request line is a 400 and the connection closes.
  const [bad] = await raw(server.port, 'BLAH\r\n\r\n');
  assert.equal(bad.status, 400);
});

test('pipelined requests are answered in order on one connection', async () => {
  const body = JSON.stringify({ prompt: 'ab', max_tokens: 3, temperature: 0 });
  const reqs = 'GET /health HTTP/1.1\r\nHost: x\r\n\r\n' +
    `POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}` +
    'GET /nope HTTP/1.1\r\nHost: x\r\n\r\n' +
    'GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n';
  const rs = await raw(server.port, reqs);
  assert.deepEqual(rs.map((r) => r.status), [200, 200, 404, 200]);
  assert.equal(JSON.parse(rs[1].body).usage.completion_tokens, 3);
  assert.equal(JSON.parse(rs[3].body).data[0].id, 'bmserve-demo');
});

test('X-Request-Id is echoed and names the response', async () => {
  const r = await post('/v1/completions', base, { 'X-Request-Id': 'test-req-42' });
  assert.equal(r.status, 200);
  assert.equal(r.headers.get('x-request-id'), 'test-req-42');
  assert.equal(r.body.id, 'cmpl-test-req-42');
  const g = await request(server, 'GET', '/health');
  assert.match(g.headers.get('x-request-id'), /^[0-9a-f]{16}$/);
});

test('/health and /ready report the engine', async () => {
  const h = await request(server, 'GET', '/health');
  assert.equal(h.status, 200);
  const r = await request(server, 'GET', '/ready');
  assert.equal(r.status, 200);
  assert.equal(r.body.ready, true);
  assert.equal(r.body.engine.slots_used, 0);
  assert.ok(r.body.engine.slots_total > 0);
});

test('429 with Retry-After when the queue is full', async () => {
  const s = await startServer(['--max-num-seqs', '1', '--max-queued-requests', '1']);
  try {
    const long = { prompt: 'q', max_tokens: 2000, ignore_eos: true };
    const rs = await Promise.all(Array.from({ length: 8 }, () =>
      request(s, 'POST', '/v1/completions', long).catch((e) => ({ status: -1, e }))));
    const limited = rs.filter((r) => r.status === 429);
    assert.ok(limited.length >= 1, JSON.stringify(rs.map((r) => r.status)));
    assertError(limited[0], 429);
    assert.equal(limited[0].headers.get('retry-after'), '1');
  } finally {
    await s.stop();
  }
});

test('503 while draining; an engine failure is 500, or an error frame mid-stream', async () => {
  const s = await startServer(['--fault-injection', 'step-fail:4']);
  try {
    const body = { prompt: 'z', max_tokens: 30, ignore_eos: true };
    const r = await request(s, 'POST', '/v1/completions', body);
    assertError(r, 500);
    const res = await fetch(s.baseURL + '/v1/completions', {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ ...body, stream: true }),
    });
    assert.equal(res.status, 200);
    const events = await sseEvents(res);
    assert.equal(events[events.length - 1], '[DONE]');
    const err = JSON.parse(events[events.length - 2]);
    assert.equal(typeof err.error.message, 'string');
  } finally {
    await s.stop();
  }
  // Draining: a keep-alive connection opened before SIGTERM sees /ready 503 and a refused POST.
  const d = await startServer(['--drain-timeout', '3']);
  const sock = net.connect(d.port, '127.0.0.1');
  await new Promise((r) => sock.on('connect', r));
  const data = [];
  sock.on('data', (x) => data.push(x));
  const closed = new Promise((r) => sock.on('close', r));
  // A stream that outlives the drain: the server stays up (draining) for --drain-timeout.
  const streamRes = fetch(d.baseURL + '/v1/completions', {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ prompt: 'a', max_tokens: 100000, ignore_eos: true, stream: true }),
  }).then((x) => x.text()).catch(() => '');
  await sleep(200);
  d.proc.kill('SIGTERM');
  await sleep(300);
  const body = JSON.stringify({ prompt: 'x' });
  sock.write('GET /ready HTTP/1.1\r\nHost: x\r\n\r\n' +
             `POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`);
  await closed;
  const rs = parseResponses(Buffer.concat(data));
  assert.deepEqual(rs.map((x) => x.status), [503, 503]);
  assert.equal(JSON.parse(rs[0].body).draining, true);
  assertError({ status: 503, body: rs[1].body }, 503);
  const streamed = await streamRes;
  assert.match(streamed, /data: \[DONE\]\n\n$/);  // cancelled at the drain's end, cleanly closed
  await d.stop();
});
