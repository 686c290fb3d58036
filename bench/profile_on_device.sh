#!/usr/bin/env bash
# Per-kernel GPU time of one eager step per configuration (2.8b preset, random bf16 weights):
# decode at batch 1, 64, 256, 1024 and a 2048-token prefill, through ncu (kernel durations only;
# bms_bench --profile_steps brackets one step of each with cudaProfilerStart/Stop).
# BMS_PROF_METRICS adds ncu metrics, e.g. gpu__time_duration.sum,
# dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__warps_active.avg.pct_of_peak_sustained_active.
# Uses the bundle from bench/pack_for_device.sh:
#   run(command="bash bench/profile_on_device.sh", carry=["build-perf-carry"])
set -u
ROOT=$(pwd)
OUT=${OUT:-/tmp/bms-prof-out}
mkdir -p "$OUT" /tmp/bms
[ -x /tmp/bms/bin/bms_bench ] || tar -xJf "$ROOT/build-perf-carry/bundle.tar.xz" -C /tmp/bms || exit 1
export LD_LIBRARY_PATH="/tmp/bms/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
BATCHES=${BMS_PROF_BATCHES:-1,64,256,1024}
timeout 300 "$NCU" --clock-control none --profile-from-start off --metrics "${BMS_PROF_METRICS:-gpu__time_duration.sum}" \
  --csv /tmp/bms/bin/bms_bench --presets=blackmamba-2.8b --batches="$BATCHES" --prompts=2048 \
  --ttft_prompts= --bf16_state_batches= --capacity=false --eager --steps=2 --profile_steps \
  > "$OUT/ncu.csv" 2> "$OUT/ncu.err"
echo "ncu exit $?"
labels="prefill-2048 $(echo "$BATCHES" | tr ',' '\n' | sed 's/^/decode-b/' | tr '\n' ' ')"
python3 "$ROOT/bench/tools/ncu_step_summary.py" "$OUT/ncu.csv" $labels | tee "$OUT/ncu_summary.txt"
