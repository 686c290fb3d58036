// Starts a bmserve server for one test file (--demo model on 127.0.0.1, a free port chosen by
// the server: --http-port 0, read back from its "listening on" log line) and stops it.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';

export const BMSERVE = process.env.BMSERVE_BIN;
if (!BMSERVE) throw new Error('set BMSERVE_BIN to the bmserve executable');

export async function startServer(extraArgs = []) {
  const args = ['serve', '--demo', '--host', '127.0.0.1', '--http-port', '0', '--grpc-port', '0', '--http-threads',
                '2', '--cpu-threads', '1', ...extraArgs];
  const proc = spawn(BMSERVE, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${log}`)), 60000);
    proc.stderr.on('data', (d) => {
      log += d.toString();
      const m = log.match(/listening on http:\/\/[^:]+:(\d+)/);
      if (m) { clearTimeout(timer); resolve(Number(m[1])); }
    });
    proc.on('exit', (code) => { clearTimeout(timer); reject(new Error(`server exited ${code}:\n${log}`)); });
  });
  proc.stderr.on('data', (d) => { log += d.toString(); });
  return {
    port,
    pid: proc.pid,
    baseURL: `http://127.0.0.1:${port}`,
    proc,
    log: () => log,
    threads: () => Number(readFileSync(`/proc/${proc.pid}/status`, 'utf8').match(/Threads:\s+(\d+)/)[1]),
    async stop() {
      if (proc.exitCode !== null) return;
      const exited = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      await exited;
    },
  };
}

// POST/GET JSON with fetch; returns {status, headers, body (parsed JSON or text)}.
export async function request(server, method, path, body, headers = {}) {
  const res = await fetch(server.baseURL + path, {
    method,
    headers: body === undefined ? headers : { 'content-type': 'application/json', ...headers },
    body: body === undefined ? undefined : (typeof body === 'string' ? body : JSON.stringify(body)),
  });
  const text = await res.text();
  let parsed = text;
  try { parsed = JSON.parse(text); } catch { /* not JSON */ }
  return { status: res.status, headers: res.headers, body: parsed };
}

// Reads an SSE response body into the list of `data:` payloads (strings).
export async function sseEvents(res) {
  const text = await res.text();
  return text.split('\n\n').filter((f) => f.length > 0).map((f) => {
    if (!f.startsWith('data: ')) throw new Error(`bad SSE frame: ${JSON.stringify(f)}`);
    return f.slice(6);
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
