"""End to end: a real Prometheus server (Debian package `prometheus`) started on 127.0.0.1
scrapes bmserve every second; after traffic its HTTP query API returns the request counter and
the TTFT histogram with the values this test produced.

usage: e2e_prometheus_test.py BMSERVE_BINARY
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

import harness
from harness import check

N_REQUESTS = 5
MAX_TOKENS = 4


def query(port, expr):
    url = "http://127.0.0.1:%d/api/v1/query?%s" % (port, urllib.parse.urlencode({"query": expr}))
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.loads(r.read())
    if body.get("status") != "success":
        return None
    return body["data"]["result"]


def scalar(port, expr):
    """The single sample's value of an instant query, or None."""
    try:
        result = query(port, expr)
    except OSError:
        return None
    if not result or len(result) != 1:
        return None
    return float(result[0]["value"][1])


def main():
    binary = sys.argv[1]
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        print("SKIP: prometheus is not installed (apt-get install prometheus)")
        sys.exit(77)
    srv = harness.Server(binary)
    workdir = tempfile.mkdtemp(prefix="bmserve-prom-")
    prom = None
    prom_log = open(os.path.join(workdir, "prometheus.log"), "wb")
    try:
        srv.wait_ready()
        prom_port = harness.free_port()
        config = os.path.join(workdir, "prometheus.yml")
        with open(config, "w") as f:
            f.write(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                "scrape_configs:\n  - job_name: bmserve\n    metrics_path: /metrics\n"
                "    static_configs:\n      - targets: ['127.0.0.1:%d']\n" % srv.http_port)
        prom = subprocess.Popen(
            [prometheus, "--config.file=" + config,
             "--storage.tsdb.path=" + os.path.join(workdir, "data"),
             "--web.listen-address=127.0.0.1:%d" % prom_port],
            stdout=prom_log, stderr=subprocess.STDOUT)

        # Wait until Prometheus scrapes the target successfully.
        deadline = time.time() + 60
        while scalar(prom_port, 'up{job="bmserve"}') != 1:
            check(prom.poll() is None, "prometheus exited with %s" % prom.returncode, srv)
            check(time.time() < deadline, "prometheus never scraped bmserve (up != 1)", srv)
            time.sleep(0.5)

        for i in range(N_REQUESTS):
            status, body = srv.post_json("/v1/completions",
                                         harness.completion_body([1, 2, 3 + i], MAX_TOKENS))
            check(status == 200, "completion failed: %d %s" % (status, body), srv)

        want = {
            'sum(bmserve:request_success_total{job="bmserve"})': N_REQUESTS,
            'bmserve:request_success_total{job="bmserve",finished_reason="length"}': N_REQUESTS,
            'bmserve:time_to_first_token_seconds_count{job="bmserve"}': N_REQUESTS,
            'bmserve:time_to_first_token_seconds_bucket{job="bmserve",le="+Inf"}': N_REQUESTS,
            'bmserve:generation_tokens_total{job="bmserve"}': N_REQUESTS * MAX_TOKENS,
        }
        deadline = time.time() + 30
        while True:
            got = {expr: scalar(prom_port, expr) for expr in want}
            if got == {k: float(v) for k, v in want.items()}:
                break
            check(time.time() < deadline, "Prometheus query results %s, expected %s" % (got, want),
                  srv)
            time.sleep(0.5)
        # The histogram is usable as one: the median TTFT is positive and within the test's time.
        p50 = scalar(prom_port, 'histogram_quantile(0.5, '
                                'bmserve:time_to_first_token_seconds_bucket{job="bmserve"})')
        check(p50 is not None and 0 < p50 < 60, "TTFT median from Prometheus = %s" % p50, srv)
        print("ok: Prometheus sees %d requests and their TTFT histogram" % N_REQUESTS)
    finally:
        if prom is not None and prom.poll() is None:
            prom.terminate()
            try:
                prom.wait(timeout=20)
            except subprocess.TimeoutExpired:
                prom.kill()
        prom_log.close()
        srv.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
