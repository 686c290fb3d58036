// The official `openai` npm client against bmserve's demo model: completions and chat,
// streaming and not, n, batched prompts, include_usage, stop strings, logprobs, echo, seeds.
// Expected values are derived from other requests to the same server (same seed => same
// tokens), never hard-coded model output.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { startServer, request } from './server.mjs';

let server;
let client;
const MODEL = 'bmserve-demo';

before(async () => {
  server = await startServer(['--max-num-seqs', '32']);
  client = new OpenAI({ baseURL: server.baseURL + '/v1', apiKey: 'unused', maxRetries: 0 });
});
after(async () => { await server.stop(); });

async function streamCompletion(params) {
  const stream = await client.completions.create({ ...params, stream: true });
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  return chunks;
}

test('models list and model by id', async () => {
  const list = await client.models.list();
  assert.deepEqual(list.data.map((m) => m.id), [MODEL]);
  const m = await client.models.retrieve(MODEL);
  assert.equal(m.id, MODEL);
  assert.equal(m.object, 'model');
});

test('completion: non-streaming shape, usage and length finish', async () => {
  const prompt = 'Hello, world';
  const r = await client.completions.create({
    model: MODEL, prompt, max_tokens: 12, temperature: 0, ignore_eos: true,
  });
  assert.equal(r.object, 'text_completion');
  assert.match(r.id, /^cmpl-/);
  assert.equal(r.choices.length, 1);
  assert.equal(r.choices[0].index, 0);
  assert.equal(r.choices[0].finish_reason, 'length');
  const tok = await request(server, 'POST', '/tokenize', { prompt });
  assert.equal(r.usage.prompt_tokens, tok.body.count);
  assert.equal(r.usage.completion_tokens, 12);
  assert.equal(r.usage.total_tokens, tok.body.count + 12);
});

test('completion: same seed gives the same text; streamed text equals non-streamed', async () => {
  const params = { model: MODEL, prompt: 'Once upon', max_tokens: 24, temperature: 1, seed: 1234,
                   ignore_eos: true };
  const a = await client.completions.create(params);
  const b = await client.completions.create(params);
  assert.equal(a.choices[0].text, b.choices[0].text);
  const chunks = await streamCompletion(params);
  const streamed = chunks.map((c) => c.choices.map((x) => x.text).join('')).join('');
  assert.equal(streamed, a.choices[0].text);
  // Same id and created on every chunk; the last choice chunk carries the finish reason.
  assert.ok(chunks.every((c) => c.id === chunks[0].id && c.created === chunks[0].created));
  assert.ok(chunks.every((c) => c.object === 'text_completion'));
  const finishes = chunks.flatMap((c) => c.choices.map((x) => x.finish_reason)).filter((x) => x);
  assert.deepEqual(finishes, ['length']);
  // Greedy is deterministic without a seed too.
  const g1 = await client.completions.create({ ...params, seed: undefined, temperature: 0 });
  const g2 = await client.completions.create({ ...params, seed: undefined, temperature: 0 });
  assert.equal(g1.choices[0].text, g2.choices[0].text);
});

test('completion: n=2 and batched prompts index = prompt_i * n + choice', async () => {
  const base = { model: MODEL, max_tokens: 10, temperature: 1, seed: 7, ignore_eos: true, n: 2 };
  const batch = await client.completions.create({ ...base, prompt: ['alpha', 'beta gamma'] });
  assert.deepEqual(batch.choices.map((c) => c.index), [0, 1, 2, 3]);
  const single0 = await client.completions.create({ ...base, prompt: 'alpha' });
  const single1 = await client.completions.create({ ...base, prompt: 'beta gamma' });
  assert.equal(batch.choices[0].text, single0.choices[0].text);
  assert.equal(batch.choices[1].text, single0.choices[1].text);
  assert.equal(batch.choices[2].text, single1.choices[0].text);
  assert.equal(batch.choices[3].text, single1.choices[1].text);
  assert.equal(batch.usage.completion_tokens, 40);
  // Token-id prompts are the same request as their text.
  const ids = (await request(server, 'POST', '/tokenize', { prompt: 'alpha' })).body.tokens;
  const byIds = await client.completions.create({ ...base, prompt: ids });
  assert.equal(byIds.choices[1].text, single0.choices[1].text);
  const byIdArrays = await client.completions.create({ ...base, prompt: [ids, ids] });
  assert.equal(byIdArrays.choices[3].text, single0.choices[1].text);
});

test('completion streaming with include_usage: usage chunk then [DONE]', async () => {
  const params = { model: MODEL, prompt: 'abc', max_tokens: 6, temperature: 0, ignore_eos: true,
                   n: 2, stream_options: { include_usage: true } };
  const chunks = await streamCompletion(params);
  const last = chunks[chunks.length - 1];
  assert.deepEqual(last.choices, []);
  assert.deepEqual(last.usage, { prompt_tokens: 3, completion_tokens: 12, total_tokens: 15 });
  for (const c of chunks.slice(0, -1)) assert.equal(c.usage, null);
  const texts = ['', ''];
  for (const c of chunks) for (const x of c.choices) texts[x.index] += x.text;
  const whole = await client.completions.create({ ...params, stream_options: undefined });
  assert.deepEqual(texts, whole.choices.map((c) => c.text));
});

test('completion: stop strings end the text before the stop string, streamed and not', async () => {
  const base = { model: MODEL, prompt: 'The', max_tokens: 40, temperature: 1, seed: 99,
                 ignore_eos: true };
  const full = (await client.completions.create(base)).choices[0].text;
  // Pick a 2-character stop string from the middle of the unconstrained text.
  const chars = Array.from(full);
  assert.ok(chars.length >= 8, `need some text, got ${JSON.stringify(full)}`);
  const stop = chars.slice(4, 6).join('');
  const expected = full.slice(0, full.indexOf(stop));
  const r = await client.completions.create({ ...base, stop: [stop] });
  assert.equal(r.choices[0].text, expected);
  assert.equal(r.choices[0].finish_reason, 'stop');
  const chunks = await streamCompletion({ ...base, stop });
  assert.equal(chunks.map((c) => c.choices.map((x) => x.text).join('')).join(''), expected);
  const withStop = await client.completions.create({ ...base, stop, include_stop_str_in_output: true });
  assert.equal(withStop.choices[0].text, expected + stop);
});

test('completion: logprobs shape, greedy picks the top alternative', async () => {
  const r = await client.completions.create({
    model: MODEL, prompt: 'xyz', max_tokens: 5, temperature: 0, ignore_eos: true, logprobs: 3,
  });
  const lp = r.choices[0].logprobs;
  assert.equal(lp.tokens.length, 5);
  assert.equal(lp.token_logprobs.length, 5);
  assert.equal(lp.top_logprobs.length, 5);
  assert.equal(lp.text_offset.length, 5);
  for (let i = 0; i < 5; i++) {
    assert.ok(lp.token_logprobs[i] <= 0);
    const top = Object.values(lp.top_logprobs[i]);
    assert.ok(top.length >= 1 && top.length <= 3);
    assert.ok(Math.abs(Math.max(...top) - lp.token_logprobs[i]) < 1e-4);
    if (i > 0) assert.ok(lp.text_offset[i] >= lp.text_offset[i - 1]);
  }
});

test('completion: echo prepends the prompt', async () => {
  const r = await client.completions.create({
    model: MODEL, prompt: 'echo me', max_tokens: 4, temperature: 0, echo: true,
  });
  const plain = await client.completions.create({
    model: MODEL, prompt: 'echo me', max_tokens: 4, temperature: 0,
  });
  assert.equal(r.choices[0].text, 'echo me' + plain.choices[0].text);
});

test('chat: non-streaming and streaming agree; first chunk carries the role', async () => {
  const params = { model: MODEL, messages: [{ role: 'system', content: 'Be brief.' },
                                            { role: 'user', content: [{ type: 'text', text: 'Hi' }] }],
                   max_tokens: 16, temperature: 1, seed: 5, ignore_eos: true };
  const r = await client.chat.completions.create(params);
  assert.equal(r.object, 'chat.completion');
  assert.match(r.id, /^chatcmpl-/);
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.equal(r.choices[0].finish_reason, 'length');
  assert.equal(r.usage.completion_tokens, 16);
  const stream = await client.chat.completions.create({ ...params, stream: true,
                                                        stream_options: { include_usage: true } });
  const chunks = [];
  for await (const c of stream) chunks.push(c);
  assert.equal(chunks[0].choices[0].delta.role, 'assistant');
  assert.ok(chunks.slice(1).every((c) => c.choices.every((x) => x.delta.role === undefined)));
  assert.ok(chunks.every((c) => c.object === 'chat.completion.chunk' && c.id === chunks[0].id));
  const text = chunks.flatMap((c) => c.choices.map((x) => x.delta.content ?? '')).join('');
  assert.equal(text, r.choices[0].message.content);
  assert.deepEqual(chunks[chunks.length - 1].usage, r.usage);
  // max_completion_tokens is honoured (and wins over max_tokens).
  const short = await client.chat.completions.create({ ...params, max_completion_tokens: 3 });
  assert.equal(short.usage.completion_tokens, 3);
});

test('chat: logprobs with top_logprobs, n=2', async () => {
  const r = await client.chat.completions.create({
    model: MODEL, messages: [{ role: 'user', content: 'q' }], max_tokens: 4, temperature: 0,
    ignore_eos: true, logprobs: true, top_logprobs: 2, n: 2,
  });
  assert.equal(r.choices.length, 2);
  for (const c of r.choices) {
    assert.equal(c.logprobs.content.length, 4);
    for (const t of c.logprobs.content) {
      assert.equal(t.top_logprobs.length, 2);
      assert.ok(Math.abs(t.top_logprobs[0].logprob - t.logprob) < 1e-4);
      assert.ok(Array.isArray(t.bytes));
    }
  }
  // Greedy: both choices are the same text.
  assert.equal(r.choices[0].message.content, r.choices[1].message.content);
});
