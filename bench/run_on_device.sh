#!/usr/bin/env bash
# One device run for the GPU perf pass: the GPU tests (every gpu_*_test binary, i.e. ctest -L gpu
# without the ctest files) and bms_bench, from a bundle built on the dev machine, so nothing is
# compiled on the device. Writes logs + JSON to $OUT and prints a short table last.
# Build here first (bench/pack_for_device.sh), then run with the bundle carried:
#   run(command="bash bench/run_on_device.sh", carry=["build-perf-carry"])
set -u
ROOT=$(pwd)
OUT=${OUT:-/tmp/bms-perf-out}
mkdir -p "$OUT" /tmp/bms
tar -xJf "$ROOT/build-perf-carry/bundle.tar.xz" -C /tmp/bms || exit 1
export LD_LIBRARY_PATH="/tmp/bms/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader \
  | tee "$OUT/summary.txt"
t0=$(date +%s)
# The test binaries run side by side (small models; the GPU is shared), the benchmark alone after.
for t in /tmp/bms/bin/gpu_*_test; do
  n=$(basename "$t")
  (timeout 120 "$t" --gtest_brief=1 > "/tmp/bms/$n.log" 2>&1; echo "=== $n exit $?" >> "/tmp/bms/$n.log") &
done
wait
cat /tmp/bms/gpu_*_test.log > "$OUT/tests.log"
echo "tests: $(( $(date +%s) - t0 )) s" >> "$OUT/summary.txt"
timeout 200 /tmp/bms/bin/bms_bench --json="$OUT/bench.json" > "$OUT/bench.log" 2>&1
echo "bench exit $?" >> "$OUT/summary.txt"
# Optional (BMS_NCU=1): per-kernel GPU times of eager batch-1 decode steps of the 2.8b preset
# (ncu, kernel durations only; skips the ceiling GEMMs).
if [ "${BMS_NCU:-0}" = 1 ]; then
  NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  timeout 200 "$NCU" --clock-control none --metrics gpu__time_duration.sum --csv \
    --launch-skip 130 --launch-count 1200 /tmp/bms/bin/bms_bench --batches=1 --prompts= \
    --bf16_state_batches= --steps=1 > "$OUT/ncu.csv" 2> "$OUT/ncu.err"
  echo "ncu exit $?" >> "$OUT/summary.txt"
fi
{
  echo "---- GPU tests ----"
  grep -E "^=== .* exit|PASSED|FAILED" "$OUT/tests.log" | grep -v "^\[       OK" | head -40
  echo "---- bench ----"
  tail -n 40 "$OUT/bench.log"
} | tee -a "$OUT/summary.txt"
