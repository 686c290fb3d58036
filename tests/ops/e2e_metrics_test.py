"""End to end: live GET /metrics after traffic passes `promtool check metrics`, and its values
match what this test sent (requests, tokens, latencies, expert routing, HTTP codes).

usage: e2e_metrics_test.py BMSERVE_BINARY
"""
import sys
import time

import harness
from harness import check

MAX_SLOTS = 8
MAX_TOKENS = 8


def main():
    binary = sys.argv[1]
    srv = harness.Server(binary, ["--max-num-seqs", str(MAX_SLOTS)])
    try:
        srv.wait_ready()
        started = time.time()
        # Before traffic: every family is declared; counters start at zero.
        _, text0 = srv.metrics()
        m0 = harness.parse_metrics(text0)
        check(m0.get('bmserve:request_success_total{finished_reason="length"}') == 0,
              "success counter does not start at 0", srv)

        prompts = [list(range(1, 4 + i)) for i in range(6)]  # 3..8 prompt tokens
        for p in prompts:
            status, body = srv.post_json("/v1/completions",
                                         harness.completion_body(p, MAX_TOKENS))
            check(status == 200, "completion failed: %d %s" % (status, body), srv)
            check(body["usage"]["completion_tokens"] == MAX_TOKENS, "wrong usage %s" % body, srv)
        stream_prompts = [[5, 6, 7, 8], [9, 10]]
        for p in stream_prompts:
            s = harness.SseStream(srv, "/v1/completions",
                                  harness.completion_body(p, MAX_TOKENS, stream=True))
            check(s.status == 200, "stream status %d" % s.status, srv)
            events = s.read_all()
            s.close()
            check(s.done, "stream ended without [DONE]", srv)
            usage = [e for e in events if e.get("usage")]
            check(usage and usage[-1]["usage"]["completion_tokens"] == MAX_TOKENS,
                  "stream usage missing/wrong", srv)
        status, _ = srv.post_json("/v1/completions", {"model": "bmserve-demo", "prompt": [1],
                                                      "max_tokens": -1})
        check(status == 400, "max_tokens=-1 gave %d, expected 400" % status, srv)

        m, text = harness.wait_idle(srv)
        headers, _ = srv.metrics()
        ctype = headers.get("content-type", "")
        check(ctype.startswith("text/plain") and "version=0.0.4" in ctype,
              "Content-Type is %r" % ctype, srv)

        rc, unexpected = harness.promtool_findings(text)
        check(rc != 1, "promtool could not parse /metrics:\n" + "\n".join(unexpected), srv)
        check(not unexpected, "promtool findings:\n" + "\n".join(unexpected), srv)

        n_req = len(prompts) + len(stream_prompts)
        prompt_tokens = sum(len(p) for p in prompts + stream_prompts)
        decode_tokens = n_req * (MAX_TOKENS - 1)  # the first token comes from the prefill step
        expect = {
            'bmserve:request_success_total{finished_reason="length"}': n_req,
            'bmserve:request_success_total{finished_reason="stop"}': 0,
            "bmserve:generation_tokens_total": n_req * MAX_TOKENS,
            "bmserve:prompt_tokens_total": prompt_tokens,
            "bmserve:time_to_first_token_seconds_count": n_req,
            'bmserve:time_to_first_token_seconds_bucket{le="+Inf"}': n_req,
            "bmserve:e2e_request_latency_seconds_count": n_req,
            "bmserve:request_queue_time_seconds_count": n_req,
            "bmserve:request_prefill_time_seconds_count": n_req,
            "bmserve:request_decode_time_seconds_count": n_req,
            "bmserve:inter_token_latency_seconds_count": decode_tokens,
            "bmserve:iteration_tokens_total_sum": prompt_tokens + decode_tokens,
            "bmserve:num_requests_running": 0,
            "bmserve:num_requests_waiting": 0,
            "bmserve:state_slots_total": MAX_SLOTS,
            "bmserve:state_slots_used": 0,
            'bmserve:http_requests_total{route="/v1/completions",code="200"}': n_req,
            'bmserve:http_requests_total{route="/v1/completions",code="400"}': 1,
            "bmserve:engine_ready": 1,
        }
        # A frontend counts its HTTP request after the response is written, so a scrape that
        # races the client's last response may not show it yet: allow a moment to settle.
        settle_deadline = time.time() + 5
        while time.time() < settle_deadline and any(m.get(k) != v for k, v in expect.items()):
            time.sleep(0.05)
            _, text = srv.metrics()
            m = harness.parse_metrics(text)
        for series, want in expect.items():
            check(m.get(series) == want, "%s = %s, expected %s" % (series, m.get(series), want),
                  srv)
        # Time sums are positive and bounded by the test's own wall time.
        elapsed = time.time() - started
        for h in ["time_to_first_token_seconds", "e2e_request_latency_seconds"]:
            s = m["bmserve:%s_sum" % h]
            check(0 < s <= n_req * elapsed, "%s_sum = %s out of (0, %s]" % (h, s, n_req * elapsed),
                  srv)
        check(m["bmserve:state_bytes_per_slot"] > 0, "state_bytes_per_slot is 0", srv)
        check(m["bmserve:backend_memory_in_use_bytes"] > 0, "backend memory is 0", srv)
        # Every token forwarded goes through every MoE layer exactly once: the warm-up token,
        # the prompts, and each decode step's input token.
        per_layer = {}
        for series, v in m.items():
            if series.startswith("bmserve:expert_tokens_total{"):
                layer = series.split('layer="')[1].split('"')[0]
                per_layer[layer] = per_layer.get(layer, 0) + v
        check(per_layer, "no expert_tokens_total samples", srv)
        for layer, total in per_layer.items():
            check(total == 1 + prompt_tokens + decode_tokens,
                  "layer %s routed %s tokens, expected %s" % (
                      layer, total, 1 + prompt_tokens + decode_tokens), srv)
            ratio = m.get('bmserve:moe_imbalance_ratio{layer="%s"}' % layer)
            check(ratio is not None and 1 <= ratio <= 8,
                  "moe_imbalance_ratio for layer %s = %s" % (layer, ratio), srv)
        # Process metrics.
        check(m["process_resident_memory_bytes"] > 1e6, "RSS too small", srv)
        check(m["process_open_fds"] >= 3, "open fds", srv)
        check(abs(m["process_start_time_seconds"] - started) < 600, "start time", srv)
        print("ok: %d requests, %d prompt tokens, /metrics passes promtool" % (n_req,
                                                                               prompt_tokens))
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
