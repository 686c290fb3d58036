"""Helpers shared by the ops end-to-end tests (run with /usr/bin/python3).

Starts `bmserve serve --demo` on free loopback ports, waits for /ready, makes HTTP calls and
reads SSE streams with the standard library only, parses the Prometheus text format, and runs
promtool. Every helper fails loudly with the server's log attached.
"""
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

# Findings `promtool check metrics` reports that the metric naming mandates: the vLLM-style
# "bmserve:" prefix, and the names for a gauge and a histogram ending in _total.
ALLOWED_PROMTOOL_FINDINGS = [
    re.compile(r"^\S+ metric names should not contain ':'$"),
    re.compile(r'^bmserve:(state_slots_total|iteration_tokens_total) '
               r'non-counter metrics should not have "_total" suffix$'),
]


def fail(msg, server=None):
    if server is not None:
        msg += "\n--- server log (tail) ---\n" + server.log_tail()
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def check(cond, msg, server=None):
    if not cond:
        fail(msg, server)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_help(binary):
    out = subprocess.run([binary, "serve", "--help"], capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        fail("bmserve serve --help exited %d: %s" % (out.returncode, out.stderr))
    return out.stdout


def help_flags(help_text):
    """{flag name: default text} from `bmserve serve --help`."""
    flags = {}
    lines = help_text.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^\s+--([a-z0-9-]+)( VALUE)?\s*$", line)
        if not m:
            continue
        desc = lines[i + 1] if i + 1 < len(lines) else ""
        d = re.search(r"\(default: (.*?); env (BMSERVE_[A-Z0-9_]+)\)\s*$", desc)
        flags[m.group(1)] = {"default": d.group(1) if d else None,
                             "env": d.group(2) if d else None}
    return flags


class Server:
    """One `bmserve serve --demo` process on free ports."""

    def __init__(self, binary, extra_args=(), env_extra=None):
        self.binary = binary
        self.http_port = free_port()
        self.flags = help_flags(serve_help(binary))
        args = [binary, "serve", "--demo", "--http-port", str(self.http_port)]
        self.grpc_port = None
        if "grpc-port" in self.flags:
            self.grpc_port = free_port()
            args += ["--grpc-port", str(self.grpc_port)]
        args += list(extra_args)
        env = {k: v for k, v in os.environ.items() if not k.startswith("BMSERVE_")}
        env.update(env_extra or {})
        self.log = tempfile.NamedTemporaryFile(prefix="bmserve-ops-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.args = args

    def log_tail(self, n=4000):
        try:
            with open(self.log.name, "rb") as f:
                data = f.read()
            return data[-n:].decode("utf-8", "replace")
        except OSError:
            return "(no log)"

    def log_text(self):
        with open(self.log.name, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_ready(self, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                fail("server exited with %d before becoming ready" % self.proc.returncode, self)
            try:
                status, _, _ = self.request("GET", "/ready", timeout=2)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        fail("server not ready after %ds" % timeout, self)

    def request(self, method, path, body=None, timeout=60, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=timeout)
        try:
            data = None
            hdrs = dict(headers or {})
            if body is not None:
                data = json.dumps(body).encode()
                hdrs["Content-Type"] = "application/json"
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            return resp.status, dict((k.lower(), v) for k, v in resp.getheaders()), resp.read()
        finally:
            conn.close()

    def post_json(self, path, body, timeout=120):
        status, _, data = self.request("POST", path, body, timeout=timeout)
        try:
            return status, json.loads(data)
        except ValueError:
            return status, {"raw": data.decode("utf-8", "replace")}

    def metrics(self):
        status, headers, body = self.request("GET", "/metrics", timeout=10)
        check(status == 200, "GET /metrics returned %d" % status, self)
        return headers, body.decode("utf-8")

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            if self.wait_exit(60) is None:
                self.proc.kill()
                self.proc.wait()
        try:
            os.unlink(self.log.name)
        except OSError:
            pass


class SseStream:
    """A streaming POST whose `data:` frames are read one at a time."""

    def __init__(self, server, path, body, timeout=120):
        self.conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=timeout)
        self.conn.request("POST", path, body=json.dumps(body).encode(),
                          headers={"Content-Type": "application/json"})
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.done = False

    def next_event(self):
        """The next frame's JSON, the string "[DONE]", or None at the end of the body."""
        buf = b""
        while True:
            line = self.resp.readline()
            if not line:
                return None
            if line in (b"\n", b"\r\n"):
                if buf:
                    break
                continue
            if line.startswith(b"data:"):
                buf += line[5:].strip()
        if buf == b"[DONE]":
            self.done = True
            return "[DONE]"
        return json.loads(buf)

    def read_all(self):
        events = []
        while True:
            ev = self.next_event()
            if ev is None or ev == "[DONE]":
                return events
            events.append(ev)

    def close(self):
        self.conn.close()


def parse_metrics(text):
    """{series: value} where series is the sample line before its value."""
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        samples[series] = float(value)
    return samples


def metric_families(text):
    """{family name: type} from the TYPE lines."""
    out = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            out[name] = kind
    return out


def promtool_findings(text):
    """(exit code, unexpected findings) of `promtool check metrics` over `text`."""
    if shutil.which("promtool") is None:
        fail("promtool is not installed (Debian package prometheus; scripts/install-deps.sh --test)")
    out = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                         text=True, timeout=60)
    findings = [l for l in (out.stdout + out.stderr).splitlines() if l.strip()]
    unexpected = [l for l in findings
                  if not any(p.match(l) for p in ALLOWED_PROMTOOL_FINDINGS)]
    return out.returncode, unexpected


def completion_body(prompt_ids, max_tokens, stream=False):
    body = {"model": "bmserve-demo", "prompt": prompt_ids, "max_tokens": max_tokens,
            "temperature": 0, "ignore_eos": True}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def wait_idle(server, timeout=30):
    """Polls /metrics until no request runs or waits; returns the last parsed samples."""
    deadline = time.time() + timeout
    while True:
        _, text = server.metrics()
        m = parse_metrics(text)
        if m.get("bmserve:num_requests_running") == 0 and m.get("bmserve:num_requests_waiting") == 0:
            return m, text
        if time.time() > deadline:
            fail("requests still running after %ds" % timeout, server)
        time.sleep(0.1)
