#!/usr/bin/env bash
# Device run for the fused decode kernels (kernels/cuda/mamba_decode_fused.cu, router_fused.cu,
# moe_group.cuh): the GPU tests (fused, scan; model and graph with BMS_MAMBA_DECODE_FUSED=1),
# the kernel micro-benchmark, then bms_bench decode on the 2.8b preset with the fused mixer on
# and off (A/B in one run). Bundle: $BMS_CARRY/bundle.tar.xz (layout of bench/pack_for_device.sh,
# plus bms_kernel_bench_decode). Pack:
#   BMS_BUILD=build-cuda-decode3 BMS_CARRY=build-dev-decode3 \
#     BMS_PACK_TESTS="gpu_fused_test gpu_scan_test gpu_model_test gpu_graph_test" \
#     bash bench/pack_for_device.sh && cp build-cuda-decode3/bench/decode_kernels/... (see NOTES)
#   run(command="bash bench/decode_kernels/decode_on_device.sh", carry=["build-dev-decode3"])
set -u
ROOT=$(pwd)
CARRY=${BMS_CARRY:-build-dev-decode3}
OUT=${OUT:-/tmp/bms-decode-out}
mkdir -p "$OUT" /tmp/bms
tar -xJf "$ROOT/$CARRY/bundle.tar.xz" -C /tmp/bms || exit 1
export LD_LIBRARY_PATH="/tmp/bms/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
t0=$(date +%s)
for t in /tmp/bms/bin/gpu_*_test; do
  n=$(basename "$t")
  (BMS_MAMBA_DECODE_FUSED=1 BMS_MAMBA_PARTIAL_MAX=16 BMS_MAMBA_FUSED_SCAN_MAX=1024 timeout 60 "$t" --gtest_brief=1 > "/tmp/bms/$n.log" 2>&1
   echo "=== $n exit $?" >> "/tmp/bms/$n.log") &
done
wait
cat /tmp/bms/gpu_*_test.log > "$OUT/tests.log"
echo "tests: $(( $(date +%s) - t0 )) s" > "$OUT/summary.txt"
timeout 25 /tmp/bms/bin/bms_kernel_bench_decode --reps 20 > "$OUT/kernels.log" 2>&1
echo "kernel bench exit $?" >> "$OUT/summary.txt"
BENCH="--presets=blackmamba-2.8b --batches=${BMS_BATCHES:-1,2,4,8,16} --prompts= \
  --bf16_state_batches= --ttft_prompts= --capacity=false --steps=10"
# A/B: fused mixer with programmatic dependent launch, without it, and the unfused kernels.
CONFIGS=${BMS_CONFIGS:-"fused_pdl fused_nopdl unfused"}
for cfg in $CONFIGS; do
  case $cfg in
    fused_pdl) env="BMS_MAMBA_DECODE_FUSED=1 BMS_MAMBA_PDL=1" ;;
    fused_nopdl) env="BMS_MAMBA_DECODE_FUSED=1 BMS_MAMBA_PDL=0" ;;
    *) env="BMS_MAMBA_DECODE_FUSED=0" ;;
  esac
  env $env BMS_MAMBA_PARTIAL_MIN=1 BMS_MAMBA_PARTIAL_MAX=16 timeout 38 /tmp/bms/bin/bms_bench \
    $BENCH --json="$OUT/bench_$cfg.json" > "$OUT/bench_$cfg.log" 2>&1
  echo "bench $cfg exit $?" >> "$OUT/summary.txt"
done
{
  grep -E "^=== .* exit|FAILED|Failure|error" "$OUT/tests.log" | head -30
  grep -E "PASSED|tests? ran" "$OUT/tests.log" | head -10
  cat "$OUT/kernels.log"
  for cfg in $CONFIGS; do
    echo "---- bms_bench $cfg ----"; grep -E "decode +graph|[Cc]apture|[Ww]arn" "$OUT/bench_$cfg.log" | tail -8
  done
} | tee -a "$OUT/summary.txt"
