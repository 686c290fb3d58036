"""Helpers for the reliability tests and the soak tool: start `bmserve serve --demo` on
127.0.0.1 with free ports, small HTTP/1.1 client calls, generated bmserve.v1 protobuf classes."""
import http.client
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Serve:
    """A `bmserve serve --demo` child process; ports are read back from its start-up log."""

    def __init__(self, binary, extra_args=(), env=None):
        args = [binary, 'serve', '--demo', '--host', '127.0.0.1', '--http-port', '0',
                '--grpc-port', '0', '--cpu-threads', '1', '--http-threads', '2', *extra_args]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     env={**os.environ, **(env or {})})
        self.log = ''
        self.http_port = self.grpc_port = 0
        self._lock = threading.Lock()
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        self._ready.wait(60)
        if not (self.http_port and self.grpc_port):
            self.stop()
            raise RuntimeError('server did not start:\n' + self.log)

    def _read(self):
        for raw in self.proc.stderr:
            line = raw.decode('utf-8', 'replace')
            with self._lock:
                self.log += line
            m = re.search(r'listening on http://[^:]+:(\d+)', line)
            if m:
                self.http_port = int(m.group(1))
            m = re.search(r'listening on grpc://[^:]+:(\d+)', line)
            if m:
                self.grpc_port = int(m.group(1))
                self._ready.set()
        self._ready.set()

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def http_call(port, method, path, body=None, headers=None, timeout=60):
    """Returns (status, parsed JSON or text, headers dict)."""
    conn = http.client.HTTPConnection('127.0.0.1', port, timeout=timeout)
    data = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
    hdrs = dict(headers or {})
    if data is not None:
        hdrs.setdefault('Content-Type', 'application/json')
    conn.request(method, path, body=data, headers=hdrs)
    r = conn.getresponse()
    text = r.read().decode('utf-8', 'replace')
    conn.close()
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = text
    return r.status, parsed, {k.lower(): v for k, v in r.getheaders()}


def load_protos():
    """Generates the bmserve.v1 Python protobuf module with protoc and imports it."""
    out = tempfile.mkdtemp(prefix='bms_pb_')
    subprocess.run(['protoc', '-I', os.path.join(REPO, 'proto'), '--python_out', out,
                    os.path.join(REPO, 'proto/bmserve/v1/inference.proto')], check=True)
    sys.path.insert(0, out)
    from bmserve.v1 import inference_pb2  # noqa: E402
    return inference_pb2


def proc_stats(pid):
    """(RSS in KiB, open fd count) of a process."""
    rss = 0
    with open(f'/proc/{pid}/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                rss = int(line.split()[1])
    return rss, len(os.listdir(f'/proc/{pid}/fd'))


def wait_idle(port, timeout=30):
    """Waits until the engine runs nothing and every slot is free; returns the /ready body."""
    deadline = time.time() + timeout
    body = None
    while time.time() < deadline:
        _, body, _ = http_call(port, 'GET', '/ready')
        e = body['engine']
        if e['running'] == 0 and e['waiting'] == 0 and e['slots_used'] == 0:
            return body
        time.sleep(0.1)
    return body
