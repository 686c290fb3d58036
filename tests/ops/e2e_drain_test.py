"""End to end: graceful drain of `bmserve serve` on SIGTERM.

1. In-flight streams complete: streams running when SIGTERM arrives finish normally (length)
   while /ready is 503, gRPC health is NOT_SERVING and new completions get 503; exit 0.
2. Drain timeout: a stream that cannot finish within --drain-timeout ends with finish_reason
   "abort"; the process still exits 0, soon after the timeout.
3. A second signal during the drain exits at once.

usage: e2e_drain_test.py BMSERVE_BINARY
"""
import signal
import sys
import threading
import time

import harness
from harness import check

LONG = 100000  # more tokens than the demo model can generate in the test's time


def stream_until_first_token(srv, prompt, max_tokens):
    s = harness.SseStream(srv, "/v1/completions",
                          harness.completion_body(prompt, max_tokens, stream=True))
    check(s.status == 200, "stream status %d" % s.status, srv)
    first = s.next_event()
    check(isinstance(first, dict), "no first stream event", srv)
    return s, [first]


def finish_reason(events):
    reasons = [c.get("finish_reason") for e in events for c in e.get("choices", [])
               if c.get("finish_reason")]
    return reasons[-1] if reasons else None


def usage_tokens(events):
    usage = [e["usage"] for e in events if e.get("usage")]
    return usage[-1]["completion_tokens"] if usage else None


def grpc_health(srv):
    """grpc.health.v1.Health/Check for the whole server: "SERVING", "NOT_SERVING", or None when
    gRPC is unavailable here. The messages are tiny enough to encode by hand (field 1)."""
    if srv.grpc_port is None:
        return None
    try:
        import grpc  # Debian python3-grpcio
    except ImportError:
        return None
    with grpc.insecure_channel("127.0.0.1:%d" % srv.grpc_port) as channel:
        check_call = channel.unary_unary("/grpc.health.v1.Health/Check",
                                         request_serializer=lambda b: b,
                                         response_deserializer=lambda b: b)
        reply = check_call(b"", timeout=5)
    return {b"\x08\x01": "SERVING", b"\x08\x02": "NOT_SERVING"}.get(reply, repr(reply))


def generated(srv):
    return harness.parse_metrics(srv.metrics()[1]).get("bmserve:generation_tokens_total", 0)


def in_flight_streams_complete(binary):
    srv = harness.Server(binary, ["--drain-timeout", "60", "--max-num-seqs", "8"])
    try:
        srv.wait_ready()
        # Measure the decode rate to size streams that are surely still running at SIGTERM
        # (about 3 s of generation each) without making the test slow on a fast machine.
        t0, g0 = time.time(), generated(srv)
        probe, _ = stream_until_first_token(srv, [1, 2, 3], 400)
        probe.read_all()
        probe.close()
        rate = (generated(srv) - g0) / max(time.time() - t0, 1e-3)
        n_tokens = int(min(max(rate * 3, 50), 4000))
        streams = [stream_until_first_token(srv, [7, 8, 9 + i], n_tokens) for i in range(3)]
        health = grpc_health(srv)
        check(health in (None, "SERVING"), "gRPC health before the drain: %s" % health, srv)

        srv.signal(signal.SIGTERM)
        deadline = time.time() + 5
        while True:
            status, _, _ = srv.request("GET", "/ready", timeout=5)
            if status == 503:
                break
            check(time.time() < deadline, "/ready still %d 5 s after SIGTERM" % status, srv)
            time.sleep(0.05)
        health = grpc_health(srv)
        check(health in (None, "NOT_SERVING"), "gRPC health during the drain: %s" % health, srv)
        m = harness.parse_metrics(srv.metrics()[1])
        check(m.get("bmserve:num_requests_running", 0) > 0,
              "no request was in flight at SIGTERM (streams finished too early)", srv)
        status, body = srv.post_json("/v1/completions", harness.completion_body([1], 4))
        check(status == 503, "new completion during drain gave %d (%s), expected 503" % (
            status, body), srv)
        status, _, _ = srv.request("GET", "/health", timeout=5)
        check(status == 200, "/health during drain gave %d" % status, srv)

        for s, events in streams:
            events += s.read_all()
            s.close()
            check(s.done, "in-flight stream ended without [DONE]", srv)
            check(finish_reason(events) == "length",
                  "in-flight stream finished with %r, expected length" % finish_reason(events),
                  srv)
            check(usage_tokens(events) == n_tokens, "in-flight stream generated %s of %d tokens" %
                  (usage_tokens(events), n_tokens), srv)
        rc = srv.wait_exit(60)
        check(rc == 0, "serve exited with %s after the drain, expected 0" % rc, srv)
        print("ok: %d in-flight streams of %d tokens completed during the drain" % (
            len(streams), n_tokens))
    finally:
        srv.stop()


def drain_timeout_aborts(binary):
    srv = harness.Server(binary, ["--drain-timeout", "1", "--max-tokens-limit", str(LONG)])
    try:
        srv.wait_ready()
        s, events = stream_until_first_token(srv, [1, 2, 3], LONG)
        t_signal = time.time()
        srv.signal(signal.SIGTERM)
        events += s.read_all()
        s.close()
        check(finish_reason(events) == "abort",
              "stream past the drain timeout finished with %r, expected abort" %
              finish_reason(events), srv)
        rc = srv.wait_exit(30)
        elapsed = time.time() - t_signal
        check(rc == 0, "serve exited with %s, expected 0" % rc, srv)
        check(elapsed < 15, "exit took %.1f s with --drain-timeout 1" % elapsed, srv)
        print("ok: drain timeout aborted the stream; exit 0 after %.1f s" % elapsed)
    finally:
        srv.stop()


def second_signal_exits_at_once(binary):
    srv = harness.Server(binary, ["--drain-timeout", "120", "--max-tokens-limit", str(LONG)])
    s = None
    try:
        srv.wait_ready()
        s, _ = stream_until_first_token(srv, [1, 2, 3], LONG)
        # Keep reading so the server is never blocked on this client.
        reader = threading.Thread(target=s.read_all, daemon=True)
        reader.start()
        srv.signal(signal.SIGTERM)
        time.sleep(0.5)
        check(srv.proc.poll() is None, "serve exited on the first signal with a long stream", srv)
        t = time.time()
        srv.signal(signal.SIGINT)
        rc = srv.wait_exit(10)
        check(rc is not None, "serve still running 10 s after the second signal", srv)
        check(time.time() - t < 5, "second signal took %.1f s" % (time.time() - t), srv)
        check(rc != 0, "a forced exit should not report success (got 0)", srv)
        print("ok: second signal exited at once (status %d)" % rc)
    finally:
        if s is not None:
            try:
                s.close()
            except OSError:
                pass
        srv.stop()


def main():
    binary = sys.argv[1]
    in_flight_streams_complete(binary)
    drain_timeout_aborts(binary)
    second_signal_exits_at_once(binary)


if __name__ == "__main__":
    main()
