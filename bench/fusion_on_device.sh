#!/usr/bin/env bash
# Device run for the fused decode kernels (kernels/cuda/router_fused.cu, gemv.cu, the fast
# AddNorm): GPU tests, then bms_bench on the 2.8b preset with the new kernels and with
# BMS_LEGACY_KERNELS=1 (A/B in one run), optionally (BMS_NCU=1) an ncu kernel table of one eager
# batch-1 step. Bundle: build-dev-fuse/bundle.tar.xz (same layout as bench/pack_for_device.sh).
#   run(command="bash bench/fusion_on_device.sh", carry=["build-dev-fuse"])
set -u
ROOT=$(pwd)
OUT=${OUT:-/tmp/bms-fuse-out}
mkdir -p "$OUT" /tmp/bms
tar -xJf "$ROOT/build-dev-fuse/bundle.tar.xz" -C /tmp/bms || exit 1
export LD_LIBRARY_PATH="/tmp/bms/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
t0=$(date +%s)
for t in /tmp/bms/bin/gpu_*_test; do
  n=$(basename "$t")
  (timeout 70 "$t" --gtest_brief=1 > "/tmp/bms/$n.log" 2>&1; echo "=== $n exit $?" >> "/tmp/bms/$n.log") &
done
wait
cat /tmp/bms/gpu_*_test.log > "$OUT/tests.log"
echo "tests: $(( $(date +%s) - t0 )) s" > "$OUT/summary.txt"
BENCH="--presets=blackmamba-2.8b --batches=${BMS_BATCHES:-1,8,64,256} --prompts=2048 \
  --bf16_state_batches= --ttft_prompts= --capacity=false --steps=10"
timeout 60 /tmp/bms/bin/bms_bench $BENCH --json="$OUT/bench_new.json" > "$OUT/bench_new.log" 2>&1
echo "bench new exit $?" >> "$OUT/summary.txt"
if [ "${BMS_SKIP_LEGACY:-0}" != 1 ]; then
  BMS_LEGACY_KERNELS=1 timeout 60 /tmp/bms/bin/bms_bench $BENCH --json="$OUT/bench_legacy.json" \
    > "$OUT/bench_legacy.log" 2>&1
  echo "bench legacy exit $?" >> "$OUT/summary.txt"
fi
if [ "${BMS_NCU:-0}" = 1 ]; then
  NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  timeout 60 "$NCU" --clock-control none --profile-from-start off --metrics gpu__time_duration.sum \
    --csv /tmp/bms/bin/bms_bench --presets=blackmamba-2.8b --batches=${BMS_PROF_BATCHES:-1} --prompts= \
    --bf16_state_batches= --ttft_prompts= --capacity=false --steps=2 --eager --profile_steps \
    > "$OUT/ncu.csv" 2> "$OUT/ncu.err"
  echo "ncu exit $?" >> "$OUT/summary.txt"
  labels=$(echo "${BMS_PROF_BATCHES:-1}" | tr ',' '\n' | sed 's/^/decode-b/' | tr '\n' ' ')
  python3 "$ROOT/bench/tools/ncu_step_summary.py" "$OUT/ncu.csv" $labels > "$OUT/ncu_summary.txt" 2>&1
fi
{
  grep -E "^=== .* exit|FAILED|Failure|error" "$OUT/tests.log" | head -30
  echo "---- new ----"; grep -iE "decode|prefill" "$OUT/bench_new.log" | tail -12
  [ -f "$OUT/bench_legacy.log" ] && { echo "---- legacy ----"; grep -iE "decode|prefill" "$OUT/bench_legacy.log" | tail -12; }
  [ -f "$OUT/ncu_summary.txt" ] && head -60 "$OUT/ncu_summary.txt"
} | tee -a "$OUT/summary.txt"
