#!/usr/bin/env bash
# One device run of the real server: makes the blackmamba-2.8b preset (random bf16 weights) with
# `bmserve make-model`, starts `bmserve serve --backend cuda`, sends ONE streaming
# /v1/completions request with curl and prints its text chunks (the issue-7 acceptance check),
# then drives the server with bmserve-loadgen (closed loop at concurrency 1, 16, 64, 256; open
# loop at two Poisson rates), stops it, runs bms_bench (engine level, no HTTP) at the same batch
# sizes and prints one table: server tokens/s vs engine tokens/s and the server's overhead.
# Logs and JSON go to $OUT; the short table is printed last. Nothing is compiled here.
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
mkdir -p "$OUT" "$W"
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*" | tee -a "$OUT/summary.txt"; }
tar -xJf "$CARRY/bundle.tar.xz" -C "$W" || { echo "cannot unpack the bundle"; exit 1; }
export LD_LIBRARY_PATH="$W/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
B="$W/bin"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader \
  | tee "$OUT/summary.txt"

if [ "${BMS_LOCAL_DEMO:-0}" = 1 ]; then
  # Dry run of this script on a CPU machine: the demo model, no engine bench.
  MODEL_ARGS="--demo --backend cpu --cpu-threads 1"
else
  stamp "make-model blackmamba-2.8b bf16"
  if ! "$B/bmserve" make-model --preset blackmamba-2.8b --dtype bf16 --out /tmp/bm-2.8b \
      > "$OUT/make_model.log" 2>&1; then
    tail -5 "$OUT/make_model.log"; exit 1
  fi
  MODEL_ARGS="--backend cuda --model /tmp/bm-2.8b --tokenizer $CARRY/tokenizer.json"
fi
stamp "serve $MODEL_ARGS"
"$B/bmserve" serve $MODEL_ARGS --served-model-name blackmamba-2.8b --http-port $PORT --grpc-port 0 --http-threads 8 \
  --max-num-seqs 512 --max-queued-requests 8192 --drain-timeout 5 > "$OUT/serve.log" 2>&1 &
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
  stamp "server did not come up"; tail -20 "$OUT/serve.log"; kill $SERVE 2>/dev/null; exit 1
fi
stamp "server up: $(grep -o 'slots=[0-9]* state_bytes_per_slot=[0-9]*' "$OUT/serve.log" | head -1)"

# The issue-7 check: one streaming request, its chunks as they came.
http /v1/completions '{"model":"blackmamba-2.8b","prompt":"The capital of France is",
  "max_tokens":24,"temperature":0,"stream":true,"stream_options":{"include_usage":true}}' \
  > "$OUT/stream.txt"
stamp "streaming request exit $?"
{
  echo "---- streamed /v1/completions (serve --backend cuda, blackmamba-2.8b bf16) ----"
  echo "data lines: $(grep -c '^data: ' "$OUT/stream.txt"); last: $(grep '^data: ' "$OUT/stream.txt" | tail -1)"
  python3 - "$OUT/stream.txt" <<'PY' || grep -o '"text":"[^"]*"' "$OUT/stream.txt"
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
} | tee "$OUT/stream_summary.txt"

LG="$B/bmserve-loadgen --port $PORT --prompt-len $PROMPT --vocab-size $VOCAB --max-tokens $MAXTOK --quiet"
# Warm-up: the decode graphs are captured lazily, one per batch bucket.
stamp "warm-up"
$LG --concurrency 256 --requests 512 --max-tokens 16 > "$OUT/lg_warmup.log" 2>&1
for c in $CONC; do
  stamp "loadgen concurrency $c"
  $LG --concurrency "$c" --duration "$SECS" --warmup 2 --label "c$c" --json "$OUT/lg_c$c.json" \
    > "$OUT/lg_c$c.log" 2>&1
done
for r in $RATES; do
  stamp "loadgen rate $r/s"
  $LG --rate "$r" --duration "$SECS" --warmup 2 --label "r$r" --json "$OUT/lg_r$r.json" \
    > "$OUT/lg_r$r.log" 2>&1
done
http /metrics > "$OUT/metrics.txt" 2>/dev/null
kill -INT $SERVE
wait $SERVE
stamp "serve exit $?"

BATCHES=$(echo $CONC | tr ' ' ',')
stamp "bms_bench --batches=$BATCHES"
[ "${BMS_LOCAL_DEMO:-0}" = 1 ] || timeout 150 "$B/bms_bench" --presets=blackmamba-2.8b --batches="$BATCHES" --prompts= \
  --ttft_prompts= --bf16_state_batches= --capacity=false --eager --steps=20 --json="$OUT/bench.json" > "$OUT/bench.log" 2>&1
stamp "bench exit $?"

python3 - "$OUT" > "$OUT/table.txt" <<'PY'
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
def key(p):
    j = json.load(open(p))
    return (j['options']['mode'] != 'closed', j['options']['concurrency'] or j['options']['rate'])
print('%-9s %5s %4s %7s %9s %9s %9s %8s %7s %7s %6s %6s' % (
    'load', 'done', 'fail', 'req/s', 'srv tok/s', 'eng graph', 'eng eager', 'overhead', 'ttft50',
    'ttft99', 'itl50', 'itl99'))
for p in sorted(glob.glob(os.path.join(out, 'lg_[cr]*.json')), key=key):
    j = json.load(open(p))
    o = j['options']
    load = 'c=%d' % o['concurrency'] if o['mode'] == 'closed' else 'r=%g/s' % o['rate']
    srv = j['steady_output_tokens_per_s']
    e = engine.get(o['concurrency'], {}) if o['mode'] == 'closed' else {}
    eng, eager = e.get('graph'), e.get('eager')
    ovh = '%7.1f%%' % (100 * (1 - srv / eng)) if eng else '%8s' % '-'
    print('%-9s %5d %4d %7.2f %9.0f %9s %9s %s %7.1f %7.1f %6.2f %6.2f' % (
        load, j['requests_completed'], j['requests_failed'], j['requests_per_s'], srv,
        '%.0f' % eng if eng else '-', '%.0f' % eager if eager else '-', ovh,
        j['ttft_ms']['p50'], j['ttft_ms']['p99'], j['itl_ms']['p50'], j['itl_ms']['p99']))
print('srv tok/s: output tokens/s in [warmup, duration] of the run; eng tok/s: bms_bench decode,')
print('CUDA graphs, f32 state, same batch; overhead = 1 - srv/eng (includes prefill of new')
print('requests and eager mixed steps). Latencies in ms; itl = gap between streamed chunks.')
PY
{
  echo "---- timeline ----"; cat "$OUT/summary.txt"
  echo "---- stream ----"; cat "$OUT/stream_summary.txt"
  echo "---- engine bench (tail) ----"; tail -n 12 "$OUT/bench.log"
  echo "---- server vs engine ----"; cat "$OUT/table.txt"
}
