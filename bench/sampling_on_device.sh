#!/usr/bin/env bash
# Device run for device-side sampling (kernels/cuda/sampling.cu): the GPU tests that cover it
# (gpu_sampling_test, gpu_graph_test, gpu_model_test), compute-sanitizer memcheck + racecheck on
# the sampling kernel test, and bms_bench decode rows (2.8b preset) with ForwardSampled (device
# sampling) and with --host_sampling (Forward + logits copy), and the sampling kernel
# micro-benchmark (bms_kernel_bench_sampling, when packed), printing a short table last.
# SAN=0 skips the sanitizers, BENCH=0 both bms_bench runs, HOST_BENCH=0 the host-sampling one.
# Pack here first (BMS_BUILD=build-cuda-samp BMS_CARRY=build-dev-samp
#   BMS_PACK_TESTS="gpu_sampling_test gpu_graph_test gpu_model_test" bash bench/pack_for_device.sh)
# then run(command="bash bench/sampling_on_device.sh", carry=["build-dev-samp"]).
set -u
ROOT=$(pwd)
OUT=${OUT:-/tmp/bms-samp-out}
CARRY=${BMS_CARRY:-build-dev-samp}
mkdir -p "$OUT" /tmp/bms
tar -xJf "$ROOT/$CARRY/bundle.tar.xz" -C /tmp/bms || exit 1
export LD_LIBRARY_PATH="/tmp/bms/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
B=/tmp/bms/bin
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*" >> "$OUT/summary.txt"; }
nvidia-smi --query-gpu=name --format=csv,noheader > "$OUT/summary.txt"
for t in gpu_sampling_test gpu_graph_test gpu_model_test; do
  (timeout ${TEST_TIMEOUT:-60} "$B/$t" --gtest_brief=1 > "$OUT/$t.log" 2>&1
   echo "=== $t exit $?" >> "$OUT/$t.log") &
done
wait
stamp "tests done"
for tool in $([ "${SAN:-1}" = 1 ] && echo memcheck racecheck); do
  timeout ${SAN_TIMEOUT:-25} compute-sanitizer --tool $tool --error-exitcode 9 \
    "$B/gpu_sampling_test" --gtest_filter='*Reproducible*' > "$OUT/$tool.log" 2>&1
  echo "=== $tool exit $?" >> "$OUT/$tool.log"
done
stamp "sanitizers done"
if [ -x "$B/bms_kernel_bench_sampling" ]; then
  timeout 30 "$B/bms_kernel_bench_sampling" > "$OUT/kernel_bench.log" 2>&1
  echo "=== kernel bench exit $?" >> "$OUT/kernel_bench.log"
  stamp "kernel bench done"
fi
ARGS="--presets=blackmamba-2.8b --batches=1,64,256,1024 --prompts= --ttft_prompts= \
  --bf16_state_batches=1024 --steps=10 --capacity=false"
if [ "${BENCH:-1}" = 1 ]; then
  timeout ${BENCH_TIMEOUT:-45} "$B/bms_bench" $ARGS > "$OUT/bench.log" 2>&1
  echo "=== bench exit $?" >> "$OUT/bench.log"
  stamp "bench (device sampling) done"
fi
if [ "${BENCH:-1}" = 1 ] && [ "${HOST_BENCH:-1}" = 1 ]; then
  timeout ${HOST_BENCH_TIMEOUT:-60} "$B/bms_bench" $ARGS --host_sampling > "$OUT/bench_host.log" 2>&1
  echo "=== bench exit $?" >> "$OUT/bench_host.log"
  stamp "bench (host sampling) done"
fi
cat "$OUT/summary.txt"
for f in "$OUT"/gpu_*_test.log; do
  grep -E "^\[  (FAILED|PASSED|SKIPPED) |^\[ draws \]|^=== |Failure|Expected|Which is|actual" "$f" | head -20
done
grep -E "ERROR SUMMARY|^=== " "$OUT/memcheck.log" "$OUT/racecheck.log" 2>/dev/null | head
cat "$OUT/kernel_bench.log" 2>/dev/null
echo "--- device sampling"; grep -E "^kind|^decode|=== " "$OUT/bench.log" 2>/dev/null
echo "--- host sampling"; grep -E "^kind|^decode|=== " "$OUT/bench_host.log" 2>/dev/null
