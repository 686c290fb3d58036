#!/usr/bin/env bash
# The benchmark suite on the device (issue 8), from the bundle bench/pack_for_device.sh built
# here (nothing is compiled on the device):
#   1. every GPU test binary (side by side; small models),
#   2. bms_bench for both presets (ceilings, decode per batch, prefill, TTFT, host share,
#      capacity), writing each preset's random weights as safetensors for the peer,
#   3. the PyTorch peer (bench/torch_peer/bench_peer.py) on the same weights and rows, eager and
#      with CUDA graphs,
#   4. the chart (bench/tools/plot_bench.py) and the short table with the bmserve / PyTorch
#      speed-up per row (bench/tools/compare_peer.py), printed last.
# Everything goes to $OUT. Fits 10 minutes on an H100 with the defaults.
#   run(command="bash bench/run_on_device.sh", carry=["build-perf-carry"], timeout_s=600)
# Knobs (environment): BMS_CARRY (bundle folder), BMS_BENCH_ARGS (extra bms_bench flags, e.g.
# --steps=10), BMS_PEER_ARGS (extra bench_peer.py flags), BMS_PEER=0 (skip the peer),
# BMS_SAME_WEIGHTS=0 (the peer draws its own random weights instead of loading bmserve's),
# BMS_TESTS=0 (skip the GPU tests), BMS_NCU=1 (ncu kernel times of eager batch-1 decode steps).
# BMS_TEST_TIMEOUT (seconds per GPU test binary, default 240: gpu_moe_test times every variant).
set -u
ROOT=$(pwd)
OUT=${OUT:-/tmp/bms-perf-out}
CARRY=${BMS_CARRY:-build-perf-carry}
mkdir -p "$OUT" /tmp/bms
tar -xJf "$ROOT/$CARRY/bundle.tar.xz" -C /tmp/bms || exit 1
export LD_LIBRARY_PATH="/tmp/bms/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader \
  | tee "$OUT/summary.txt"
cat /tmp/bms/BUILD_INFO >> "$OUT/summary.txt" 2>/dev/null
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*" | tee -a "$OUT/summary.txt"; }
if [ "${BMS_TESTS:-1}" = 1 ]; then
  for t in /tmp/bms/bin/gpu_*_test; do
    n=$(basename "$t")
    (timeout "${BMS_TEST_TIMEOUT:-240}" "$t" --gtest_brief=1 > "/tmp/bms/$n.log" 2>&1; echo "=== $n exit $?" >> "/tmp/bms/$n.log") &
  done
  wait
  cat /tmp/bms/gpu_*_test.log > "$OUT/tests.log"
  stamp "GPU tests done"
fi
WEIGHTS=/tmp/bms/weights
SAVE=""
if [ "${BMS_PEER:-1}" = 1 ] && [ "${BMS_SAME_WEIGHTS:-1}" = 1 ]; then SAVE="--save_weights=$WEIGHTS"; fi
timeout 330 /tmp/bms/bin/bms_bench $SAVE --json="$OUT/bench.json" ${BMS_BENCH_ARGS:-} \
  > "$OUT/bench.log" 2>&1
stamp "bms_bench exit $?"
if [ "${BMS_PEER:-1}" = 1 ]; then
  PY=$(command -v python3)
  timeout 200 "$PY" "$ROOT/bench/torch_peer/bench_peer.py" --model_root="$WEIGHTS" \
    --json="$OUT/peer.json" ${BMS_PEER_ARGS:-} > "$OUT/peer.log" 2>&1
  stamp "peer exit $?"
  rm -rf "$WEIGHTS"
fi
python3 "$ROOT/bench/tools/plot_bench.py" "$OUT/bench.json" "$OUT/bench.png" \
  $( [ -f "$OUT/peer.json" ] && echo --peer "$OUT/peer.json" ) > "$OUT/plot.log" 2>&1
stamp "chart exit $? ($(tail -1 "$OUT/plot.log"))"
# Optional (BMS_NCU=1): per-kernel GPU times of eager batch-1 decode steps of the 2.8b preset.
if [ "${BMS_NCU:-0}" = 1 ]; then
  NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  timeout 200 "$NCU" --clock-control none --profile-from-start off \
    --metrics gpu__time_duration.sum --csv /tmp/bms/bin/bms_bench --presets=blackmamba-2.8b \
    --batches=1 --prompts= --ttft_prompts= --bf16_state_batches= --capacity=false --eager \
    --steps=2 --profile_steps > "$OUT/ncu.csv" 2> "$OUT/ncu.err"
  stamp "ncu exit $?"
fi
{
  echo "---- GPU tests ----"
  grep -E "^=== .* exit|FAILED" "$OUT/tests.log" 2>/dev/null | head -40
  echo "---- bench (bmserve vs floor vs PyTorch peer) ----"
  grep -E "^ERROR|capacity|num_slots = 0" "$OUT/bench.log" | head -12
  python3 "$ROOT/bench/tools/compare_peer.py" "$OUT/bench.json" "$OUT/peer.json" 2>&1 \
    || tail -n 30 "$OUT/bench.log"
} | tee -a "$OUT/summary.txt"
