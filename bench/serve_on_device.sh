#!/usr/bin/env bash
# One device run of the real server: makes the blackmamba-2.8b preset (random bf16 weights) with
# `bmserve make-model`, starts `bmserve serve --backend cuda`, sends ONE streaming
# /v1/completions request with curl and prints its text chunks (the issue-7 acceptance check),
# then drives the server with bmserve-loadgen (closed loop at concurrency 1, 16, 64, 256; open
# loop at two Poisson rates), stops it, runs bms_bench (engine level, no HTTP) at the same batch
# sizes and prints one table: server tokens/s vs engine tokens/s and the server's overhead.
# Logs and JSON go to $OUT/serve_run.tar.gz (and the table to $OUT/table.txt); the short table
# is printed last. Nothing is compiled here.
# Build first on the dev machine (bench/pack_serve_for_device.sh), then:
#   run(command="bash bench/serve_on_device.sh", carry=["build-serve-carry"], timeout_s=400)
# Knobs (environment): BMS_LG_SECONDS (per loadgen run, default 12), BMS_LG_CONC, BMS_LG_RATES,
# BMS_LG_MAX_TOKENS (default 256), BMS_LG_PROMPT (default 32), BMS_LG_VOCAB
# (prompt ids, default 50000); BMS_LOCAL_DEMO=1 dry-runs the script on a CPU machine (--demo).
set -u
ROOT=$(pwd)
CARRY="$ROOT/build-serve-carry"
OUT=${OUT:-/tmp/bms-serve-out}
W=/tmp/bms-serve
SECS=${BMS_LG_SECONDS:-12}
CONC=${BMS_LG_CONC:-1 16 64 256}
RATES=${BMS_LG_RATES:-20 60}
MAXTOK=${BMS_LG_MAX_TOKENS:-256}
PROMPT=${BMS_LG_PROMPT:-32}
VOCAB=${BMS_LG_VOCAB:-50000}
PORT=8011
R="$W/out"  # everything lands here; $OUT gets one archive of it plus the table (few files)
rm -rf "$R" && mkdir -p "$OUT" "$R"
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*" | tee -a "$R/summary.txt"; }
tar -xJf "$CARRY/bundle.tar.xz" -C "$W" || { echo "cannot unpack the bundle"; exit 1; }
export LD_LIBRARY_PATH="$W/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
B="$W/bin"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader \
  | tee "$R/summary.txt"

if [ "${BMS_LOCAL_DEMO:-0}" = 1 ]; then
  # Dry run of this script on a CPU machine: the demo model, no engine bench.
  MODEL_ARGS="--demo --backend cpu --cpu-threads 1"
else
  stamp "make-model blackmamba-2.8b bf16"
  if ! "$B/bmserve" make-model --preset blackmamba-2.8b --dtype bf16 --out /tmp/bm-2.8b \
      > "$R/make_model.log" 2>&1; then
    tail -5 "$R/make_model.log"; exit 1
  fi
  MODEL_ARGS="--backend cuda --model /tmp/bm-2.8b --tokenizer $CARRY/tokenizer.json"
fi
stamp "serve $MODEL_ARGS"
"$B/bmserve" serve $MODEL_ARGS --served-model-name blackmamba-2.8b --http-port $PORT --grpc-port 0 --http-threads 8 \
  --max-num-seqs 512 --max-queued-requests 8192 --drain-timeout 5 > "$R/serve.log" 2>&1 &
SERVE=$!
# GET (or POST a JSON body, streaming the answer to stdout) with curl, else python3.
http() {  # http PATH [BODY]
  if command -v curl > /dev/null; then
    if [ $# -gt 1 ]; then
      curl -sfN "http://127.0.0.1:$PORT$1" -H 'Content-Type: application/json' -d "$2"
    else
      curl -sf "http://127.0.0.1:$PORT$1"
    fi
  else
    python3 - "$PORT" "$@" <<'PY'
import http.client, sys
c = http.client.HTTPConnection('127.0.0.1', int(sys.argv[1]), timeout=60)
if len(sys.argv) > 3:
    c.request('POST', sys.argv[2], body=sys.argv[3], headers={'Content-Type': 'application/json'})
else:
    c.request('GET', sys.argv[2])
r = c.getresponse()
for line in r:
    sys.stdout.write(line.decode('utf-8', 'replace')); sys.stdout.flush()
sys.exit(0 if r.status == 200 else 1)
PY
  fi
}
up=0
for _ in $(seq 1 240); do
  if ! kill -0 $SERVE 2>/dev/null; then break; fi
  if http /health > /dev/null 2>&1; then up=1; break; fi
  sleep 0.5
done
if [ $up != 1 ]; then
  stamp "server did not come up"; tail -20 "$R/serve.log"; kill $SERVE 2>/dev/null; exit 1
fi
stamp "server up: $(grep -o 'slots=[0-9]* state_bytes_per_slot=[0-9]*' "$R/serve.log" | head -1)"

# The issue-7 check: one streaming request, its chunks as they came.
http /v1/completions '{"model":"blackmamba-2.8b","prompt":"The capital of France is",
  "max_tokens":24,"temperature":0,"stream":true,"stream_options":{"include_usage":true}}' \
  > "$R/stream.txt"
stamp "streaming request exit $?"
{
  echo "---- streamed /v1/completions (serve --backend cuda, blackmamba-2.8b bf16) ----"
  echo "data lines: $(grep -c '^data: ' "$R/stream.txt"); last: $(grep '^data: ' "$R/stream.txt" | tail -1)"
  python3 - "$R/stream.txt" <<'PY' || grep -o '"text":"[^"]*"' "$R/stream.txt"
import json, sys
chunks, usage = [], None
for line in open(sys.argv[1], encoding='utf-8', errors='replace'):
    if not line.startswith('data: ') or line.strip() == 'data: [DONE]':
        continue
    j = json.loads(line[6:])
    usage = j.get('usage') or usage
    chunks += [c['text'] for c in j.get('choices', [])]
print('chunks:', json.dumps(chunks, ensure_ascii=False))
print('text:  ', json.dumps(''.join(chunks), ensure_ascii=False))
print('usage: ', json.dumps(usage))
PY
} | tee "$R/stream_summary.txt"

LG="$B/bmserve-loadgen --port $PORT --prompt-len $PROMPT --vocab-size $VOCAB --max-tokens $MAXTOK --quiet"
# Warm-up: the decode graphs are captured lazily, one per batch bucket.
stamp "warm-up"
$LG --concurrency 256 --requests 512 --max-tokens 16 > "$R/lg_warmup.log" 2>&1
# The engine's own step counters around each run (engine_step_seconds by kind).
steps() { http /metrics 2>/dev/null | grep -E '^bmserve:engine_step_seconds_(sum|count)' > "$R/$1"; }
PERF=$(command -v perf || true)
PERF_JOB=
for c in $CONC; do
  stamp "loadgen concurrency $c"
  steps "steps_c$c.before"
  if [ -n "$PERF" ] && [ "$c" = 256 ]; then
    (sleep 5; timeout 20 "$PERF" record -F 499 -g -p $SERVE -o "$W/perf.data" -- sleep 4 \
      > "$R/perf_record.log" 2>&1) &
    PERF_JOB=$!
  fi
  $LG --concurrency "$c" --duration "$SECS" --warmup 2 --label "c$c" --json "$R/lg_c$c.json" \
    > "$R/lg_c$c.log" 2>&1
  steps "steps_c$c.after"
done
[ -n "${PERF_JOB:-}" ] && wait "$PERF_JOB"
for r in $RATES; do
  stamp "loadgen rate $r/s"
  $LG --rate "$r" --duration "$SECS" --warmup 2 --label "r$r" --json "$R/lg_r$r.json" \
    > "$R/lg_r$r.log" 2>&1
done
http /metrics > "$R/metrics.txt" 2>/dev/null
kill -INT $SERVE
wait $SERVE
stamp "serve exit $?"

if [ -f "$W/perf.data" ]; then
  "$PERF" report -i "$W/perf.data" --no-children --sort comm,symbol --stdio 2>/dev/null \
    | grep -E '^ +[0-9]' | head -60 > "$R/perf_c256.txt"
  "$PERF" report -i "$W/perf.data" --no-children --sort tid --stdio 2>/dev/null \
    | grep -E '^ +[0-9]' | head -20 > "$R/perf_c256_threads.txt"
fi
# The engine alone (scheduler + backend, no HTTP) at the same load: bmserve bench-engine.
if [ "${BMS_LOCAL_DEMO:-0}" != 1 ]; then
  for c in ${BMS_ENGINE_CONC:-64 256}; do
    stamp "bench-engine concurrency $c"
    timeout 90 "$B/bmserve" bench-engine --backend cuda --model /tmp/bm-2.8b \
      --max-num-seqs 512 --concurrency "$c" --requests $((2 * c)) --prompt-len "$PROMPT" \
      --gen-len "$MAXTOK" > "$R/bench_engine_c$c.log" 2>&1
  done
fi
BATCHES=$(echo $CONC | tr ' ' ',')
stamp "bms_bench --batches=$BATCHES"
[ "${BMS_LOCAL_DEMO:-0}" = 1 ] || timeout 150 "$B/bms_bench" --presets=blackmamba-2.8b --batches="$BATCHES" --prompts= \
  --ttft_prompts= --bf16_state_batches= --capacity=false --eager --steps=20 --json="$R/bench.json" > "$R/bench.log" 2>&1
stamp "bench exit $?"

python3 - "$R" > "$R/table.txt" <<'PY'
import glob, json, os, sys
out = sys.argv[1]
engine = {}
try:
    for row in json.load(open(os.path.join(out, 'bench.json')))['rows']:
        if row['kind'] == 'decode' and row['state'] == 'f32' and \
                row.get('preset', 'blackmamba-2.8b') == 'blackmamba-2.8b':
            engine.setdefault(row['size'], {})[row['mode']] = row['tokens_per_s']
except Exception as e:
    print('no engine bench:', e)
def step_stats(label):
    """Mean engine step (ms) and share of mixed (prefill) steps during a run, from /metrics."""
    vals = {}
    for side in ('before', 'after'):
        try:
            for line in open(os.path.join(out, 'steps_%s.%s' % (label, side))):
                name, v = line.rsplit(' ', 1)
                vals[(side, name)] = float(v)
        except OSError:
            return None, None
    d = lambda n: vals.get(('after', n), 0) - vals.get(('before', n), 0)
    base = 'bmserve:engine_step_seconds_%s{kind="%s"}'
    n_dec, n_mix = d(base % ('count', 'decode')), d(base % ('count', 'mixed'))
    s_all = d(base % ('sum', 'decode')) + d(base % ('sum', 'mixed'))
    if n_dec + n_mix <= 0:
        return None, None
    return 1e3 * s_all / (n_dec + n_mix), 100.0 * n_mix / (n_dec + n_mix)
def key(p):
    j = json.load(open(p))
    return (j['options']['mode'] != 'closed', j['options']['concurrency'] or j['options']['rate'])
print('%-9s %5s %4s %7s %9s %9s %9s %8s %7s %7s %6s %6s %7s %6s' % (
    'load', 'done', 'fail', 'req/s', 'srv tok/s', 'eng graph', 'eng eager', 'overhead', 'ttft50',
    'ttft99', 'itl50', 'itl99', 'step ms', 'mixed%'))
for p in sorted(glob.glob(os.path.join(out, 'lg_[cr]*.json')), key=key):
    j = json.load(open(p))
    o = j['options']
    load = 'c=%d' % o['concurrency'] if o['mode'] == 'closed' else 'r=%g/s' % o['rate']
    srv = j['steady_output_tokens_per_s']
    e = engine.get(o['concurrency'], {}) if o['mode'] == 'closed' else {}
    eng, eager = e.get('graph'), e.get('eager')
    ovh = '%7.1f%%' % (100 * (1 - srv / eng)) if eng else '%8s' % '-'
    step_ms, mixed = step_stats(j['label'])
    print('%-9s %5d %4d %7.2f %9.0f %9s %9s %s %7.1f %7.1f %6.2f %6.2f %7s %6s' % (
        load, j['requests_completed'], j['requests_failed'], j['requests_per_s'], srv,
        '%.0f' % eng if eng else '-', '%.0f' % eager if eager else '-', ovh,
        j['ttft_ms']['p50'], j['ttft_ms']['p99'], j['itl_ms']['p50'], j['itl_ms']['p99'],
        '%.2f' % step_ms if step_ms else '-', '%.1f' % mixed if mixed is not None else '-'))
print('srv tok/s: output tokens/s in [warmup, duration] of the run; eng tok/s: bms_bench decode,')
print('CUDA graphs, f32 state, same batch; overhead = 1 - srv/eng (includes prefill of new')
print('requests and eager mixed steps). Latencies in ms; itl = gap between streamed chunks;')
print('step ms: the engine\'s mean step (engine_step_seconds) during the run; mixed%: steps with prefill.')
PY
cp "$R/table.txt" "$OUT/table.txt"
tar -czf "$OUT/serve_run.tar.gz" -C "$W" out
{
  echo "---- timeline ----"; cat "$R/summary.txt"
  echo "---- stream ----"; cat "$R/stream_summary.txt"
  echo "---- engine bench (tail) ----"; tail -n 12 "$R/bench.log"
  for f in "$R"/bench_engine_c*.log; do
    [ -f "$f" ] && { echo "---- $(basename "$f") ----"; grep -E 'throughput|inter-token|step time|backend time|overhead' "$f"; }
  done
  [ -f "$R/perf_c256_threads.txt" ] && { echo "---- perf c=256 (threads) ----"; head -8 "$R/perf_c256_threads.txt" | cut -c1-100; }
  [ -f "$R/perf_c256.txt" ] && { echo "---- perf c=256 (symbols) ----"; head -25 "$R/perf_c256.txt" | cut -c1-160; }
  echo "---- server vs engine ----"; cat "$R/table.txt"
}
