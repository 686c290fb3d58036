#!/usr/bin/env bash
# Runs the GPU test suite on the GPU machine (the device tool), from the repository root, with
# the build carried in build-cuda/tests/gpu and the Debian libraries it needs in lib/:
#   1. ctest -L gpu (every GPU test, verbose log),
#   2. compute-sanitizer memcheck and racecheck over each GPU test binary,
# writing logs to $OUT (or /tmp/bms-gpu-out) and printing a short table last.
# Build here first:  cmake -S . -B build-cuda -G Ninja -DBMS_CUDA=ON \
#   -DCMAKE_BUILD_TYPE=Release && cmake --build build-cuda --target gpu_ops_test gpu_moe_test \
#   gpu_model_test -j2;  then copy the libraries `ldd` lists (absl, openblas, gfortran,
#   quadmath) into lib/.
set -u
ROOT=$(pwd)
OUT=${OUT:-/tmp/bms-gpu-out}
mkdir -p "$OUT"
# The build's ctest files name /work/main/build-cuda: make that path resolve here.
if [ "$ROOT" != /work/main ] && [ ! -e /work/main ]; then mkdir -p /work && ln -s "$ROOT" /work/main; fi
export LD_LIBRARY_PATH="$ROOT/lib:/usr/local/cuda/lib64:/usr/local/cuda/lib:${LD_LIBRARY_PATH:-}"
BIN=/work/main/build-cuda/tests/gpu
SAN_TIMEOUT=${SAN_TIMEOUT:-200}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/summary.txt"

# The opt-in full-size preset smoke test runs here (BMS_GPU_PRESET; not under the sanitizers).
(cd "$BIN" && BMS_GPU_PRESET=${BMS_GPU_PRESET-blackmamba-1.5b} ctest -L gpu -V --timeout 300) \
  > "$OUT/ctest.log" 2>&1
ctest_rc=$?
for tool in memcheck racecheck; do
  : > "$OUT/$tool.log"
  for t in gpu_ops_test gpu_moe_test gpu_model_test; do
    echo "=== $tool $t" >> "$OUT/$tool.log"
    timeout "$SAN_TIMEOUT" compute-sanitizer --tool "$tool" --error-exitcode 9 \
      $([ "$tool" = memcheck ] && echo "--leak-check full") "$BIN/$t" --gtest_brief=1 \
      $([ "$tool" = racecheck ] && [ "$t" = gpu_model_test ] && echo "--gtest_filter=*tiny*") \
      >> "$OUT/$tool.log" 2>&1
    echo "=== $tool $t exit $?" >> "$OUT/$tool.log"
  done
done

{
  echo "---- GPU test summary ----"
  grep -E "tests passed|tests failed" "$OUT/ctest.log"
  grep -E "^\s*[0-9]+ - .*\((Failed|Timeout|SEGFAULT|Subprocess|Exception)" "$OUT/ctest.log" | head -20
  grep -hE "\[ (fp32|bf16|preset) \]" "$OUT/ctest.log" | sed 's/^[0-9]*: //' | sort -u
  for tool in memcheck racecheck; do
    grep -E "^=== $tool .* exit" "$OUT/$tool.log"
    grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$OUT/$tool.log" | sort | uniq -c
  done
  echo "ctest exit $ctest_rc"
} | tee -a "$OUT/summary.txt"
