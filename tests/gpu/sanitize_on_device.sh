#!/usr/bin/env bash
# compute-sanitizer (memcheck, then racecheck) over GPU test binaries from the bundle that
# bench/pack_for_device.sh builds (unpacked into /tmp/bms by bench/run_on_device.sh, or here),
# each run capped at BMS_SAN_TIMEOUT seconds. Logs to $OUT/sanitizer.log, summary lines last.
#   bash tests/gpu/sanitize_on_device.sh gpu_fused_test gpu_graph_test:'*fp32*'
# An argument TEST:FILTER passes --gtest_filter=FILTER. BMS_SAN_TOOLS picks the tools
# (default "memcheck racecheck").
set -u
ROOT=$(pwd)
OUT=${OUT:-/tmp/bms-san-out}
mkdir -p "$OUT" /tmp/bms
[ -d /tmp/bms/bin ] || tar -xJf "$ROOT/${BMS_CARRY:-build-perf-carry}/bundle.tar.xz" -C /tmp/bms
export LD_LIBRARY_PATH="/tmp/bms/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
LOG="$OUT/sanitizer.log"
: > "$LOG"
for tool in ${BMS_SAN_TOOLS:-memcheck racecheck}; do
  for arg in "$@"; do
    t=${arg%%:*}
    filter=$([ "$t" != "$arg" ] && echo "--gtest_filter=${arg#*:}")
    echo "=== $tool $t $filter" >> "$LOG"
    timeout "${BMS_SAN_TIMEOUT:-60}" compute-sanitizer --tool "$tool" --error-exitcode 9 \
      "/tmp/bms/bin/$t" --gtest_brief=1 $filter >> "$LOG" 2>&1
    echo "=== $tool $t exit $? (124 = timed out)" >> "$LOG"
  done
done
grep -E "^=== .* exit|ERROR SUMMARY|RACECHECK SUMMARY" "$LOG"
