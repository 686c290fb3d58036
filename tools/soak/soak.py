#!/usr/bin/env python3
"""bmserve soak test: starts `bmserve serve --demo` on 127.0.0.1 (or uses --bin), runs many
concurrent clients for a while, and checks the server survives intact.

Clients mix HTTP (OpenAI completions/chat, streaming and not) and gRPC (bmserve.v1 Generate,
streaming and unary). Of all requests ~10% disconnect at a random point, ~5% are malformed or over
a limit (each must get its exact 4xx), ~10% are slow readers (tiny reads with pauses); the rest
are well-formed requests from a fixed set with fixed seeds, each of which must be answered exactly
once with output identical to the same request run alone before the soak. At the end: the server
process is alive, the engine runs nothing and every state slot is free, the open fd count is back
to its warm-up value, RSS is flat after warm-up (the curve is printed), and SIGTERM exits 0.

  /usr/bin/python3 tools/soak/soak.py --bin build/server/bmserve --clients 200 --duration 60
Exit status 0 when every check passed. Needs grpcio and protoc (bmserve.v1 classes)."""
import argparse
import asyncio
import collections
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'tests',
                                'reliability'))
import grpc  # noqa: E402
import grpc.aio  # noqa: E402

from bms_proc import Serve, http_call, load_protos, proc_stats, wait_idle  # noqa: E402

pb = load_protos()
MAX_TOKENS_LIMIT = 64
MAX_BODY = 64 * 1024
SERVER_ARGS = ['--max-tokens-limit', str(MAX_TOKENS_LIMIT), '--max-body-bytes', str(MAX_BODY),
               '--max-num-seqs', '64', '--max-queued-requests', '4096', '--write-timeout', '30',
               '--max-connections', '4096', '--drain-timeout', '10']

# The well-formed requests (fixed seeds): (api, body). api: completion | chat.
TEMPLATES = [
    ('completion', {'prompt': 'The quick brown fox', 'max_tokens': 16, 'temperature': 0.9,
                    'seed': 11, 'ignore_eos': True}),
    ('completion', {'prompt': 'Once upon a time', 'max_tokens': 24, 'temperature': 0,
                    'ignore_eos': True}),
    ('completion', {'prompt': 'abc', 'max_tokens': 8, 'temperature': 1.2, 'top_p': 0.9,
                    'seed': 5, 'ignore_eos': True}),
    ('completion', {'prompt': 'Soak test prompt number four, a bit longer than the rest.',
                    'max_tokens': 32, 'temperature': 0.7, 'top_k': 20, 'seed': 77,
                    'ignore_eos': True}),
    ('chat', {'messages': [{'role': 'user', 'content': 'hello there'}], 'max_tokens': 12,
              'temperature': 0.8, 'seed': 3, 'ignore_eos': True}),
    ('chat', {'messages': [{'role': 'system', 'content': 'be brief'},
                           {'role': 'user', 'content': 'why?'}], 'max_tokens': 20,
              'temperature': 0, 'ignore_eos': True}),
]


def grpc_request(body, stream):
    """The gRPC form of a completion template (same prompt text and sampling)."""
    sp = pb.SamplingParams(max_tokens=body['max_tokens'], temperature=body.get('temperature', 1),
                           ignore_eos=body.get('ignore_eos', False))
    if 'seed' in body:
        sp.seed = body['seed']
    if 'top_p' in body:
        sp.top_p = body['top_p']
    if 'top_k' in body:
        sp.top_k = body['top_k']
    return pb.GenerateRequest(text=body['prompt'], sampling=sp, stream=stream)


# ---- a minimal asyncio HTTP/1.1 client ---------------------------------------------------------

class HttpResult:
    def __init__(self):
        self.status = 0
        self.body = b''


async def http_exchange(port, method, path, body, slow=False, cut_after=None, raw=None):
    """One request on a fresh connection (Connection: close). Returns HttpResult; with cut_after
    (bytes) the connection is closed after reading that much (result None)."""
    reader, writer = await asyncio.open_connection('127.0.0.1', port, limit=1 << 22)
    try:
        if raw is None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            raw = (f'{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n'
                   f'Content-Length: {len(data)}\r\nConnection: close\r\n\r\n').encode() + data
        writer.write(raw)
        await writer.drain()
        got = bytearray()
        while True:
            n = random.randint(1, 64) if slow else 65536
            chunk = await reader.read(n)
            if not chunk:
                break
            got += chunk
            if cut_after is not None and len(got) >= cut_after:
                return None
            if slow:
                await asyncio.sleep(random.uniform(0.001, 0.02))
        return parse_http(bytes(got))
    finally:
        writer.close()


def parse_http(data):
    r = HttpResult()
    head, _, rest = data.partition(b'\r\n\r\n')
    lines = head.decode('latin-1').split('\r\n')
    r.status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(':') for ln in lines[1:])}
    if headers.get('transfer-encoding') == 'chunked':
        body = bytearray()
        while rest:
            size_line, _, rest = rest.partition(b'\r\n')
            size = int(size_line, 16)
            if size == 0:
                break
            body += rest[:size]
            rest = rest[size + 2:]
        r.body = bytes(body)
    else:
        r.body = rest[:int(headers.get('content-length', len(rest)))]
    return r


def http_output(api, r, stream):
    """The generated text of a 200 response, checking it finished exactly once."""
    if r.status != 200:
        raise ValueError(f'status {r.status}: {r.body[:200]!r}')
    if not stream:
        j = json.loads(r.body)
        c = j['choices'][0]
        assert c['finish_reason'] in ('length', 'stop'), c
        return c['message']['content'] if api == 'chat' else c['text']
    frames = [f for f in r.body.decode().split('\n\n') if f]
    assert frames[-1] == 'data: [DONE]', frames[-1]
    assert frames.count('data: [DONE]') == 1
    text, finishes = '', 0
    for f in frames[:-1]:
        j = json.loads(f[len('data: '):])
        if 'error' in j:
            raise ValueError(f'stream error: {j}')
        for c in j['choices']:
            text += (c.get('delta', {}).get('content') or '') if api == 'chat' else c['text']
            finishes += c.get('finish_reason') is not None
    assert finishes == 1, finishes
    return text


async def grpc_output(stub_call, request, cut_after=None):
    call = stub_call(request, timeout=120)
    text, completes, n = '', 0, 0
    async for resp in call:
        n += 1
        if cut_after is not None and n >= cut_after:
            call.cancel()
            return None
        which = resp.WhichOneof('response')
        if which == 'chunk':
            text += resp.chunk.text
        elif which == 'complete':
            text += resp.complete.text
            completes += 1
        else:
            raise ValueError(f'gRPC error message: {resp}')
    assert completes == 1, completes
    return text


# ---- the soak ----------------------------------------------------------------------------------

class Stats:
    def __init__(self):
        self.sent = collections.Counter()      # by kind
        self.outcome = collections.Counter()   # by (kind, outcome)
        self.failures = []

    def fail(self, what):
        self.outcome[('all', 'FAILED')] += 1
        if len(self.failures) < 20:
            self.failures.append(what)


MALFORMED = [
    ('bad json', lambda: b'{"prompt": "x", ', 400),
    ('max_tokens over limit', lambda: {'prompt': 'x', 'max_tokens': MAX_TOKENS_LIMIT + 1}, 400),
    ('body over limit', lambda: {'prompt': 'x' * (MAX_BODY + 10)}, 413),
    ('bad field type', lambda: {'prompt': 'x', 'temperature': 'hot'}, 400),
    ('unknown model', lambda: {'prompt': 'x', 'model': 'nope'}, 400),
    ('bad token id', lambda: {'prompt': [10 ** 9]}, 400),
]


async def client(cid, port, grpc_port, deadline, expected, stats):
    rng = random.Random(cid)
    random.seed(cid)
    async with grpc.aio.insecure_channel(f'127.0.0.1:{grpc_port}') as ch:
        gen = ch.unary_stream('/bmserve.v1.Inference/Generate',
                              request_serializer=lambda m: m.SerializeToString(),
                              response_deserializer=pb.GenerateResponse.FromString)
        while time.time() < deadline:
            roll = rng.random()
            t = rng.randrange(len(TEMPLATES))
            api, body = TEMPLATES[t]
            path = '/v1/chat/completions' if api == 'chat' else '/v1/completions'
            use_grpc = api == 'completion' and rng.random() < 0.35
            stream = rng.random() < 0.7
            try:
                if roll < 0.05:
                    name, make, want = MALFORMED[rng.randrange(len(MALFORMED))]
                    kind = 'malformed'
                    stats.sent[kind] += 1
                    r = await http_exchange(port, 'POST', '/v1/completions', make())
                    if r.status != want:
                        stats.fail(f'{name}: status {r.status}, want {want}')
                    else:
                        stats.outcome[(kind, f'{want} as expected')] += 1
                elif roll < 0.15:
                    kind = 'disconnect-grpc' if use_grpc else 'disconnect-http'
                    stats.sent[kind] += 1
                    if use_grpc:
                        await grpc_output(gen, grpc_request(body, True), rng.randint(1, 6))
                    else:
                        await http_exchange(port, 'POST', path, {**body, 'stream': True},
                                            cut_after=rng.randint(1, 600))
                    stats.outcome[(kind, 'disconnected')] += 1
                else:
                    slow = roll < 0.25 and not use_grpc
                    kind = ('grpc' if use_grpc else 'http') + ('-stream' if stream else '-unary')
                    kind += '-slow' if slow else ''
                    stats.sent[kind] += 1
                    if use_grpc:
                        text = await grpc_output(gen, grpc_request(body, stream))
                    else:
                        r = await http_exchange(port, 'POST', path, {**body, 'stream': stream},
                                                slow=slow)
                        text = http_output(api, r, stream)
                    if text != expected[t]:
                        stats.fail(f'{kind} template {t}: {text!r} != alone {expected[t]!r}')
                    else:
                        stats.outcome[(kind, 'identical')] += 1
            except (grpc.RpcError, grpc.aio.AioRpcError) as e:
                stats.fail(f'{kind}: gRPC {e.code()} {e.details()}')
            except Exception as e:  # noqa: BLE001 - every other failure is recorded
                stats.fail(f'{kind}: {type(e).__name__}: {e}')


async def sample(pid, deadline, curve):
    t0 = time.time()
    while time.time() < deadline:
        rss, fds = proc_stats(pid)
        curve.append((time.time() - t0, rss, fds))
        await asyncio.sleep(1)


async def soak(port, grpc_port, pid, clients, duration, expected, stats, curve):
    deadline = time.time() + duration
    tasks = [client(i, port, grpc_port, deadline, expected, stats) for i in range(clients)]
    await asyncio.gather(sample(pid, deadline, curve), *tasks)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--bin', default='build/server/bmserve')
    ap.add_argument('--clients', type=int, default=200)
    ap.add_argument('--duration', type=float, default=60)
    ap.add_argument('--max-rss-growth', type=float, default=0.25,
                    help='allowed RSS growth from the end of warm-up to the end (fraction)')
    args = ap.parse_args()

    server = Serve(args.bin, SERVER_ARGS)
    checks = []
    try:
        # Each template alone, over HTTP (the reference) and gRPC (must agree).
        expected = []
        for api, body in TEMPLATES:
            path = '/v1/chat/completions' if api == 'chat' else '/v1/completions'
            status, resp, _ = http_call(server.http_port, 'POST', path, body)
            assert status == 200, resp
            c = resp['choices'][0]
            expected.append(c['message']['content'] if api == 'chat' else c['text'])
        warm_rss, warm_fds = proc_stats(server.pid)
        stats, curve = Stats(), []
        t0 = time.time()
        asyncio.run(soak(server.http_port, server.grpc_port, server.pid, args.clients,
                         args.duration, expected, stats, curve))
        elapsed = time.time() - t0
        checks.append(('server alive after the soak', server.alive(), ''))
        ready = wait_idle(server.http_port, 60) if server.alive() else None
        eng = ready['engine'] if ready else {}
        checks.append(('every slot free, nothing running',
                       bool(eng) and eng['slots_used'] == 0 and eng['running'] == 0 and
                       eng['waiting'] == 0, f"slots_used={eng.get('slots_used')} "
                       f"running={eng.get('running')} waiting={eng.get('waiting')}"))
        # Connections close asynchronously: give them a moment before counting fds.
        end_rss, end_fds = warm_rss, -1
        for _ in range(50):
            if not server.alive():
                break
            end_rss, end_fds = proc_stats(server.pid)
            if end_fds <= warm_fds:
                break
            time.sleep(0.2)
        checks.append(('no fd leak', end_fds <= warm_fds, f'fds warm-up {warm_fds}, end {end_fds}'))
        # RSS after warm-up: the sample a quarter into the run vs the end.
        base = curve[len(curve) // 4][1] if curve else warm_rss
        peak = max((c[1] for c in curve), default=warm_rss)
        checks.append(('RSS flat after warm-up', end_rss <= base * (1 + args.max_rss_growth),
                       f'start {warm_rss} KiB, after warm-up {base} KiB, peak {peak} KiB, '
                       f'end {end_rss} KiB'))
        well_formed = sum(v for k, v in stats.sent.items()
                          if not k.startswith(('malformed', 'disconnect')))
        identical = sum(v for (k, o), v in stats.outcome.items() if o == 'identical')
        checks.append(('every well-formed request answered once, identical to alone',
                       identical == well_formed and not stats.failures,
                       f'{identical}/{well_formed}'))
    finally:
        code = server.stop()
    checks.append(('SIGTERM exits 0', code == 0, f'exit {code}'))

    print(f'\nbmserve soak: {args.clients} clients, {elapsed:.0f} s, '
          f'{sum(stats.sent.values())} requests ({sum(stats.sent.values()) / elapsed:.1f}/s)')
    print(f'\n{"kind":<22}{"sent":>8}  outcomes')
    for kind in sorted(stats.sent):
        outs = ', '.join(f'{o}: {v}' for (k, o), v in sorted(stats.outcome.items()) if k == kind)
        print(f'{kind:<22}{stats.sent[kind]:>8}  {outs}')
    print(f'{"errors":<22}{stats.outcome[("all", "FAILED")]:>8}')
    for f in stats.failures:
        print(f'  FAILED: {f}')
    print('\nRSS/fd curve (s, RSS KiB, fds):')
    step = max(1, len(curve) // 12)
    print('  ' + '  '.join(f'{t:.0f}s:{r}/{fd}' for t, r, fd in curve[::step]))
    print(f'\n{"check":<62}result')
    ok = True
    for name, passed, detail in checks:
        ok &= bool(passed)
        print(f'{name:<62}{"ok" if passed else "FAIL"}  {detail}')
    print('\nSOAK PASSED' if ok else '\nSOAK FAILED')
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
