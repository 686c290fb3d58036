"""End-to-end (label e2e, CPU, `bmserve serve --demo`): with n = 2, a choice that ends on a stop
string is cancelled in the engine at once (Engine::CancelChoice) while the other choice runs on.
Seeded sampling is reproducible, so a first run without `stop` gives both choices' texts; a
stop string found early in choice 0's text and nowhere in choice 1's then makes choice 0 stop
there (text cut before it, finish_reason stop) and choice 1 come out unchanged (length), and
the server's generation-token counter grows by fewer than 2 x max_tokens: the stopped choice
stopped decoding. Binary from the environment: BMSERVE_BIN."""
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
from demo_server import DemoServer  # noqa: E402

BMSERVE = os.environ.get('BMSERVE_BIN', '')
MAX_TOKENS = 200


class Serve(DemoServer):
    def __init__(self):
        super().__init__(BMSERVE)

    def post(self, body):
        return super().post('/v1/completions', body)

    def generated_tokens(self):
        return self.metric('generation_tokens_total')


def pick_stop(t0, t1):
    """A 3-character printable stop string whose first match in t0 is in its first quarter and
    that never occurs in t1; None if there is none."""
    for i in range(0, len(t0) // 4):
        s = t0[i:i + 3]
        if len(s) == 3 and all(32 < ord(ch) < 127 for ch in s) and s not in t1:
            return s
    return None


class ChoiceCancelTest(unittest.TestCase):
    def test_stopped_choice_stops_decoding(self):
        serve = Serve()
        try:
            tried = 0
            for seed in range(1, 40):
                base = {'model': 'bmserve-demo', 'prompt': 'The quick brown fox', 'n': 2,
                        'max_tokens': MAX_TOKENS, 'temperature': 1.0, 'seed': seed,
                        'ignore_eos': True}
                free = serve.post(base)
                t0, t1 = (c['text'] for c in sorted(free['choices'], key=lambda c: c['index']))
                stop = pick_stop(t0, t1)
                if stop is None:
                    continue
                tried += 1
                before = serve.generated_tokens()
                got = serve.post(dict(base, stop=[stop]))
                after = serve.generated_tokens()
                c0, c1 = sorted(got['choices'], key=lambda c: c['index'])
                self.assertEqual(c0['finish_reason'], 'stop')
                self.assertEqual(c0['text'], t0[:t0.index(stop)])
                self.assertEqual(c1['finish_reason'], 'length')
                self.assertEqual(c1['text'], t1)
                # Choice 1 decoded MAX_TOKENS; choice 0 stopped soon after its stop string (the
                # engine may run a few steps ahead of the HTTP thread) instead of running to
                # MAX_TOKENS too.
                self.assertLess(after - before, 2 * MAX_TOKENS - MAX_TOKENS // 4,
                                f'seed {seed}: stop {stop!r} at char {t0.index(stop)}')
                return
            self.fail(f'no usable stop string in 39 seeds (tried {tried})')
        finally:
            serve.stop()


if __name__ == '__main__':
    unittest.main(verbosity=2)
