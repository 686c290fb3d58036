#!/usr/bin/python3
"""Time to first token of multi-turn chats with and without the state cache (serve over HTTP).

Starts `bmserve serve` twice on the same model (`--state-cache-entries 0`, then N), and runs the
same conversations one request at a time: a shared system prompt, then `--turns` user turns of
`--words` words each, every turn resending the whole history with the previous replies, as chat
clients do. Per turn it prints the prompt tokens, the tokens the server actually prefilled
(bmserve:prompt_tokens_total before/after), TTFT without and with the cache, and the floor: the
TTFT of a cold prompt as long as what the cached server still had to prefill (same server, a
fresh prompt with no cached prefix), so "ratio" = TTFT with the cache / that floor.

  /usr/bin/python3 bench/tools/state_cache_bench.py --bin build/server/bmserve --model DIR
(stdlib only; no --model: the built-in demo model.)
"""
import argparse
import http.client
import json
import os
import random
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'tests'))
from demo_server import DemoServer  # noqa: E402

WORDS = ('state space model layer token slot memory scan expert route gate conv window decode '
         'prefill batch stream cache prompt reply turn chat system user assistant river clock '
         'town bells noon garden stone wall').split()


def stream_chat(port, messages, max_tokens):
    """(ttft seconds, reply text, prompt tokens) of one streamed chat completion."""
    body = json.dumps({'messages': messages, 'max_tokens': max_tokens, 'temperature': 0,
                       'ignore_eos': True, 'stream': True,
                       'stream_options': {'include_usage': True}})
    conn = http.client.HTTPConnection('127.0.0.1', port, timeout=600)
    t0 = time.perf_counter()
    conn.request('POST', '/v1/chat/completions', body, {'Content-Type': 'application/json'})
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f'HTTP {resp.status}: {resp.read()[:200]}')
    ttft, text, prompt_tokens = None, '', 0
    for raw in resp:
        line = raw.decode().strip()
        if not line.startswith('data: ') or line == 'data: [DONE]':
            continue
        chunk = json.loads(line[6:])
        if chunk.get('usage'):
            prompt_tokens = chunk['usage']['prompt_tokens']
        for c in chunk.get('choices', []):
            content = c.get('delta', {}).get('content')
            if content:
                if ttft is None:
                    ttft = time.perf_counter() - t0
                text += content
    conn.close()
    return ttft if ttft is not None else time.perf_counter() - t0, text, prompt_tokens


def words(rng, n):
    return ' '.join(rng.choice(WORDS) for _ in range(n))


def run(server, args):
    """Per turn: a list of (prompt tokens, prefilled tokens, ttft seconds), one per conversation."""
    rng = random.Random(args.seed)
    system = words(rng, args.system_words)
    per_turn = [[] for _ in range(args.turns)]
    for _ in range(args.conversations):
        messages = [{'role': 'system', 'content': system}]
        for t in range(args.turns):
            messages.append({'role': 'user', 'content': words(rng, args.words)})
            before = server.metric('prompt_tokens_total')
            ttft, reply, prompt_tokens = stream_chat(server.port, messages, args.max_tokens)
            prefilled = server.metric('prompt_tokens_total') - before
            per_turn[t].append((prompt_tokens, prefilled, ttft))
            messages.append({'role': 'assistant', 'content': reply})
    return per_turn


def floors(server, args, per_turn):
    """Per turn: TTFT of cold prompts (no cached prefix) as long as what each turn prefilled."""
    rng = random.Random(args.seed + 7)
    out = []
    for turn in per_turn:
        times = []
        for _, prefilled, _ in turn:
            n_words = max(1, int(prefilled * 0.7))
            for _attempt in range(8):  # a prompt of about `prefilled` tokens, none cached
                msg = [{'role': 'user', 'content': words(rng, n_words)}]
                before = server.metric('prompt_tokens_total')
                ttft = stream_chat(server.port, msg, 1)[0]
                got = server.metric('prompt_tokens_total') - before
                if abs(got - prefilled) <= max(4, 0.1 * prefilled):
                    break
                n_words = max(1, int(n_words * prefilled / max(got, 1)))
            times.append(ttft)
        out.append(times)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--bin', default='build/server/bmserve')
    ap.add_argument('--model', default='')
    ap.add_argument('--conversations', type=int, default=4)
    ap.add_argument('--turns', type=int, default=4)
    ap.add_argument('--system-words', type=int, default=300)
    ap.add_argument('--words', type=int, default=60)
    ap.add_argument('--max-tokens', type=int, default=24)
    ap.add_argument('--cache-entries', type=int, default=64)
    ap.add_argument('--seed', type=int, default=1)
    ap.add_argument('--extra', default='', help='more serve flags, space separated')
    args = ap.parse_args()
    extra = args.extra.split() + ['--max-prompt-tokens', '65536']
    results = {}
    for label, entries in (('off', 0), ('on', args.cache_entries)):
        server = DemoServer(args.bin, '--state-cache-entries', str(entries), *extra,
                            model=args.model or None)
        try:
            per_turn = run(server, args)
            results[label] = (per_turn, floors(server, args, per_turn) if entries else None)
        finally:
            server.stop()
    off, _ = results['off']
    on, floor_times = results['on']
    med = statistics.median
    print(f"{'turn':>4} {'prompt tok':>10} {'prefilled off':>13} {'prefilled on':>12} "
          f"{'TTFT off ms':>11} {'TTFT on ms':>10} {'speed-up':>8} {'floor ms':>8} {'on/floor':>8}")
    for t in range(args.turns):
        p = med([x[0] for x in on[t]])
        f_off, f_on = med([x[1] for x in off[t]]), med([x[1] for x in on[t]])
        t_off, t_on = med([x[2] for x in off[t]]) * 1e3, med([x[2] for x in on[t]]) * 1e3
        fl = med(floor_times[t]) * 1e3
        print(f'{t + 1:>4} {p:>10.0f} {f_off:>13.0f} {f_on:>12.0f} {t_off:>11.1f} {t_on:>10.1f} '
              f'{t_off / t_on:>7.2f}x {fl:>8.1f} {t_on / fl:>7.2f}x')
    return 0


if __name__ == '__main__':
    sys.exit(main())
