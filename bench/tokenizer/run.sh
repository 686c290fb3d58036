#!/usr/bin/env bash
# Tokenizer benchmark: bmserve's C++ tokenizer and HF tokenizers (Rust, Node binding) encoding
# ../shared/assets/tinyshakespeare/input.txt on one core, side by side. Not a test.
# Usage: bench/tokenizer/run.sh [BUILD_DIR] [ITERATIONS]   (BUILD_DIR default: build-tok)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
build="${1:-$root/build-tok}"
iterations="${2:-5}"
shared="${BMS_SHARED_DIR:-$root/../shared}"
tokenizer="$shared/assets/20B_tokenizer.json"
input="$shared/assets/tinyshakespeare/input.txt"

if [[ ! -x "$build/bench/tokenizer/bench_tokenizer" ]]; then
  cmake -S "$root" -B "$build" -G Ninja -DBMS_CUDA=OFF >/dev/null
  cmake --build "$build" --target bench_tokenizer -j2
fi
if [[ ! -d "$here/node_modules/@anush008/tokenizers" ]]; then
  (cd "$here" && npm install --no-audit --no-fund --silent)
fi

echo "input: $input ($(stat -c %s "$input") bytes), $iterations iterations, one core"
# One core for both: taskset pins the process; HF's own thread pool is limited too.
pin=()
if command -v taskset >/dev/null; then pin=(taskset -c 0); fi
"${pin[@]}" "$build/bench/tokenizer/bench_tokenizer" "$tokenizer" "$input" "$iterations"
RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false UV_THREADPOOL_SIZE=1 \
  "${pin[@]}" node "$here/bench_hf.js" "$tokenizer" "$input" "$iterations"
