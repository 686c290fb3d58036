"""End-to-end test of bmserve-loadgen against a real `bmserve serve --demo` (CPU): closed loop
(by request count and by duration), open loop (Poisson), token counts against the server's
usage and max_tokens, latency percentiles, API keys, and a closed port that must fail fast.
Binaries come from the environment: BMSERVE_BIN and LOADGEN_BIN."""
import json
import os
import socket
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
from demo_server import DemoServer  # noqa: E402

BMSERVE = os.environ.get('BMSERVE_BIN', '')
LOADGEN = os.environ.get('LOADGEN_BIN', '')
MAX_TOKENS = 12


def Serve(*extra):
    return DemoServer(BMSERVE, *extra)


def run_loadgen(port, *args, timeout=120):
    """Runs the load generator; returns (exit code, parsed --json, stdout)."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, 'out.json')
        p = subprocess.run([LOADGEN, '--host', '127.0.0.1', '--port', str(port),
                            '--json', path, *args],
                           capture_output=True, text=True, timeout=timeout)
        report = None
        if os.path.exists(path):
            with open(path) as f:
                report = json.load(f)
        return p.returncode, report, p.stdout + p.stderr


def closed_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


class LoadgenTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.serve = Serve()

    @classmethod
    def tearDownClass(cls):
        cls.serve.stop()

    def check_latencies(self, r, completed):
        for name in ('ttft_ms', 'itl_ms', 'tpot_ms', 'e2e_ms'):
            p = r[name]
            self.assertGreater(p['count'], 0, name)
            self.assertGreaterEqual(p['p50'], 0, name)
            self.assertLessEqual(p['p50'], p['p90'], name)
            self.assertLessEqual(p['p90'], p['p99'], name)
            self.assertLessEqual(p['p99'], p['max'], name)
        self.assertGreater(r['ttft_ms']['p50'], 0)
        self.assertGreater(r['e2e_ms']['p50'], 0)
        self.assertGreater(r['itl_ms']['max'], 0)
        self.assertEqual(r['ttft_ms']['count'], completed)
        self.assertEqual(r['e2e_ms']['count'], completed)
        # A request's first token comes before its last.
        self.assertLessEqual(r['ttft_ms']['p50'], r['e2e_ms']['max'])

    def test_closed_loop_by_requests_counts_every_token(self):
        n = 24
        rc, r, out = run_loadgen(self.serve.port, '--concurrency', '4', '--requests', str(n),
                                 '--max-tokens', str(MAX_TOKENS), '--prompt-len', '8',
                                 '--logprobs')
        self.assertEqual(rc, 0, out)
        self.assertEqual(r['requests_issued'], n)
        self.assertEqual(r['requests_completed'], n)
        self.assertEqual(r['requests_failed'], 0)
        # ignore_eos: exactly max_tokens each; the server's usage and the tokens counted in
        # the stream (logprobs entries) both agree.
        self.assertEqual(r['output_tokens'], n * MAX_TOKENS)
        self.assertEqual(r['streamed_tokens'], n * MAX_TOKENS)
        self.assertEqual(r['prompt_tokens'], n * 8)
        self.check_latencies(r, n)
        self.assertGreater(r['output_tokens_per_s'], 0)
        self.assertAlmostEqual(r['requests_per_s'], n / r['wall_s'], places=6)

    def test_closed_loop_by_duration_text_prompt(self):
        rc, r, out = run_loadgen(self.serve.port, '--concurrency', '4', '--duration', '2',
                                 '--max-tokens', str(MAX_TOKENS), '--prompt-kind', 'text',
                                 '--prompt-len', '6', '--warmup', '0.5')
        self.assertEqual(rc, 0, out)
        done = r['requests_completed']
        self.assertGreaterEqual(done, 4)
        self.assertEqual(r['requests_issued'], done)
        self.assertEqual(r['requests_failed'], 0)
        self.assertEqual(r['output_tokens'], done * MAX_TOKENS)
        self.assertGreaterEqual(r['wall_s'], 2.0)
        self.assertEqual(r['window_end_s'], 2.0)
        self.assertGreater(r['steady_output_tokens_per_s'], 0)
        self.check_latencies(r, done)

    def test_open_loop_poisson(self):
        n = 12
        rc, r, out = run_loadgen(self.serve.port, '--rate', '10', '--requests', str(n),
                                 '--max-tokens', str(MAX_TOKENS))
        self.assertEqual(rc, 0, out)
        self.assertEqual(r['options']['mode'], 'open')
        self.assertEqual(r['requests_completed'], n)
        self.assertEqual(r['requests_failed'], 0)
        self.assertEqual(r['output_tokens'], n * MAX_TOKENS)
        self.check_latencies(r, n)

    def test_closed_port_reports_failures_without_hanging(self):
        port = closed_port()
        rc, r, out = run_loadgen(port, '--concurrency', '2', '--requests', '5', timeout=30)
        self.assertEqual(rc, 1, out)
        self.assertEqual(r['requests_issued'], 5)
        self.assertEqual(r['requests_failed'], 5)
        self.assertEqual(r['requests_completed'], 0)
        self.assertTrue(any('connect' in e for e in r['errors']), r['errors'])
        rc, r, out = run_loadgen(port, '--rate', '20', '--duration', '1', timeout=30)
        self.assertEqual(rc, 1, out)
        self.assertEqual(r['requests_completed'], 0)
        self.assertEqual(r['requests_failed'], r['requests_issued'])

    def test_bad_flags_exit_2_naming_the_flag(self):
        p = subprocess.run([LOADGEN, '--concurrency', '2'], capture_output=True, text=True)
        self.assertEqual(p.returncode, 2)
        self.assertIn('--duration', p.stderr)
        p = subprocess.run([LOADGEN, '--rate', 'x', '--requests', '1'], capture_output=True,
                           text=True)
        self.assertEqual(p.returncode, 2)
        self.assertIn('--rate', p.stderr)


class LoadgenApiKeyTest(unittest.TestCase):

    def test_api_key(self):
        serve = Serve('--api-key', 'sekrit')
        try:
            rc, r, out = run_loadgen(serve.port, '--concurrency', '2', '--requests', '4',
                                     '--max-tokens', '4', '--api-key', 'sekrit')
            self.assertEqual(rc, 0, out)
            self.assertEqual(r['requests_completed'], 4)
            rc, r, out = run_loadgen(serve.port, '--concurrency', '2', '--requests', '4',
                                     '--max-tokens', '4', '--api-key', 'wrong')
            self.assertEqual(rc, 1, out)
            self.assertEqual(r['requests_failed'], 4)
            self.assertTrue(all(e.startswith('HTTP 401') for e in r['errors']), r['errors'])
        finally:
            serve.stop()


if __name__ == '__main__':
    if not (BMSERVE and LOADGEN):
        sys.exit('set BMSERVE_BIN and LOADGEN_BIN')
    unittest.main(verbosity=2)
