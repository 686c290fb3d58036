#!/usr/bin/env bash
# One command from a fresh Debian machine to every test: installs what is missing, builds, runs
# the unit, e2e and gpu suites (gpu tests skip visibly without a GPU), then the sanitizer builds
# (AddressSanitizer+UBSan on loaders, tokenizer and engine; ThreadSanitizer on the engine).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh --test
JOBS=${JOBS:-$(nproc)}

./scripts/build.sh
if [[ -f tests/http/package.json ]]; then
  (cd tests/http && npm install --no-audit --no-fund --loglevel=error)
fi

echo "== unit, e2e and gpu tests =="
ctest --test-dir build --output-on-failure -j "$JOBS" --timeout 900 | tee build/ctest-summary.log
CTEST_TOTAL=$(grep -oE 'tests passed, 0 tests failed out of [0-9]+' build/ctest-summary.log | grep -oE '[0-9]+$')
CTEST_SKIPPED=$(grep -c '\*\*\*Skipped' build/ctest-summary.log || true)

# A sanitizer build compiles only the test executables it runs (2-core CI) and runs each one
# directly (ctest would also list the tests of targets it did not build).
sanitizer_run() {  # build-dir, cmake-flag, test executables...
  local dir=$1 flag=$2
  shift 2
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DBMS_CUDA=OFF "$flag" >/dev/null
  cmake --build "$dir" -j "$JOBS" --target "$@"
  local t exe
  for t in "$@"; do
    exe=$(find "$PWD/$dir/tests" -type f -name "$t" -perm -u+x | head -n 1)
    [[ -n "$exe" ]] || { echo "sanitizer_run: $t was not built"; return 1; }
    echo "-- $t"
    (cd "$(dirname "$exe")" && "$exe" --gtest_brief=1)
  done
}
TOKENIZER_TESTS=$(cd tests/tokenizer && ls *_test.cc | sed 's/\.cc$//')
export BMS_SHARED_DIR=${BMS_SHARED_DIR:-$(cd .. && pwd)/shared}
# OpenBLAS's own threads are not instrumented; one thread keeps the reports about our code.
export OPENBLAS_NUM_THREADS=1

echo "== AddressSanitizer + UndefinedBehaviorSanitizer (loaders, tokenizer, reference ops, engine) =="
sanitizer_run build-asan -DBMS_SANITIZE=ON \
  weights_test ref_ops_test cpu_backend_test engine_sampler_test engine_scheduler_test \
  engine_loop_test engine_cpu_engine_test engine_state_cache_test $TOKENIZER_TESTS

echo "== AddressSanitizer + UndefinedBehaviorSanitizer: end-to-end tests against an ASan bmserve =="
# Same build folder (the libraries are already built); leaks at exit and the start-up test's
# deliberately impossible allocation are not findings.
cmake --build build-asan -j "$JOBS" --target bmserve bmserve-loadgen grpc_e2e_test
ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1 \
  ctest --test-dir build-asan --output-on-failure -j "$JOBS" -L e2e -E soak_ci --timeout 900

echo "== ThreadSanitizer (engine loop, scheduler, sampler threads, metrics) =="
TSAN_OPTIONS=halt_on_error=1 sanitizer_run build-tsan -DBMS_TSAN=ON \
  engine_sampler_test engine_scheduler_test engine_loop_test metrics_registry_test \
  metrics_collector_test

echo "== fuzz smoke (libFuzzer, clang) =="
BMS_FUZZ_BUILD=build-fuzz JOBS=$JOBS ./fuzz/run.sh all "${BMS_FUZZ_SECONDS:-30}"

echo "== all tests passed =="
# The plain closing line: ctest's tests (unit, e2e, gpu skipped without a GPU) plus sanitizer runs.
echo "$(( ${CTEST_TOTAL:-0} - ${CTEST_SKIPPED:-0} )) passed, 0 failed, ${CTEST_SKIPPED:-0} skipped"
