"""Shared by the Python end-to-end tests: `bmserve serve --demo` (or --model DIR) on 127.0.0.1
(CPU, one thread, ephemeral ports), the HTTP port read from its start-up log."""
import json
import re
import subprocess
import threading
import urllib.request


class DemoServer:
    def __init__(self, bmserve, *extra, model=None):
        source = ['--model', model] if model else ['--demo']
        args = [bmserve, 'serve', *source, '--host', '127.0.0.1', '--http-port', '0',
                '--grpc-port', '0', '--cpu-threads', '1', *extra]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.port = 0
        self.log = ''
        found = threading.Event()

        def read():
            for raw in self.proc.stderr:
                line = raw.decode('utf-8', 'replace')
                self.log += line
                m = re.search(r'listening on http://[^:]+:(\d+)', line)
                if m:
                    self.port = int(m.group(1))
                    found.set()
            found.set()

        threading.Thread(target=read, daemon=True).start()
        found.wait(60)
        if not self.port:
            self.stop()
            raise RuntimeError('bmserve did not start:\n' + self.log)

    def post(self, path, body):
        """POSTs a JSON body; returns the parsed JSON answer (HTTP errors raise)."""
        req = urllib.request.Request(f'http://127.0.0.1:{self.port}{path}',
                                     data=json.dumps(body).encode(),
                                     headers={'Content-Type': 'application/json'})
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.loads(r.read())

    def metric(self, name):
        """The value of the unlabelled metric bmserve:<name> in /metrics."""
        with urllib.request.urlopen(f'http://127.0.0.1:{self.port}/metrics', timeout=30) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(f'bmserve:{name} '):
                    return float(line.split()[-1])
        raise AssertionError(f'no bmserve:{name} in /metrics')

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stderr.close()
