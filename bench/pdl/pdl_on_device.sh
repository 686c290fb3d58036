#!/usr/bin/env bash
# Device run for programmatic dependent launch (kernels/cuda/pdl.h, BMS_PDL): the GPU tests with
# BMS_PDL=1 and BMS_PDL=0 (gpu_pdl_test compares both bit-exactly in one process), then bms_bench
# graph decode, same binary, BMS_PDL=0 vs 1: 2.8b preset at batches 1,4,16,64,256 and 1.5b at
# batch 1, interleaved so an A/B pair survives a cut. Bundle: $BMS_CARRY/bundle.tar.xz (layout of
# bench/pack_for_device.sh). Pack and run:
#   BMS_BUILD=build-cuda-decode3 BMS_CARRY=build-dev-pdl \
#     BMS_PACK_TESTS="gpu_pdl_test gpu_graph_test gpu_model_test" bash bench/pack_for_device.sh
#   run(command="bash bench/pdl/pdl_on_device.sh", carry=["build-dev-pdl"], timeout_s=180)
set -u
ROOT=$(pwd)
CARRY=${BMS_CARRY:-build-dev-pdl}
OUT=${OUT:-/tmp/bms-pdl-out}
mkdir -p "$OUT" /tmp/bms
tar -xJf "$ROOT/$CARRY/bundle.tar.xz" -C /tmp/bms || exit 1
export LD_LIBRARY_PATH="/tmp/bms/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
t0=$(date +%s)
for pdl in 1 0; do
  for t in /tmp/bms/bin/gpu_*_test; do
    n=$(basename "$t")
    (BMS_PDL=$pdl timeout ${BMS_TEST_TIMEOUT:-55} "$t" --gtest_brief=1 > "/tmp/bms/$n.pdl$pdl.log" 2>&1
     echo "=== $n BMS_PDL=$pdl exit $?" >> "/tmp/bms/$n.pdl$pdl.log") &
  done
done
wait
cat /tmp/bms/gpu_*_test.pdl*.log > "$OUT/tests.log"
echo "tests: $(( $(date +%s) - t0 )) s" > "$OUT/summary.txt"
COMMON="--prompts= --bf16_state_batches= --ttft_prompts= --capacity=false --steps=${BMS_STEPS:-10}"
for run in "28 0" "28 1" "15 0" "15 1"; do
  set -- $run
  if [ "$1" = 28 ]; then
    args="--presets=blackmamba-2.8b --batches=${BMS_BATCHES:-1,4,16,64,256}"; lim=42
  else
    args="--presets=blackmamba-1.5b --batches=1"; lim=22
  fi
  BMS_PDL=$2 timeout $lim /tmp/bms/bin/bms_bench $args $COMMON --json="$OUT/bench_$1_pdl$2.json" \
    > "$OUT/bench_$1_pdl$2.log" 2>&1
  echo "bench $1 BMS_PDL=$2 exit $? at $(( $(date +%s) - t0 )) s" >> "$OUT/summary.txt"
done
{
  grep -E "^=== .* exit|FAILED|Failure|error" "$OUT/tests.log" | head -30
  grep -E "PASSED|tests? ran" "$OUT/tests.log" | head -10
  for f in "$OUT"/bench_*.log; do
    echo "---- $(basename "$f") ----"; grep -E "decode +graph|[Cc]apture|[Ww]arn|ERROR" "$f" | tail -8
  done
} | tee -a "$OUT/summary.txt"
