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
ctest --test-dir build --output-on-failure -j "$JOBS" --timeout 900

echo "== AddressSanitizer + UndefinedBehaviorSanitizer =="
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DBMS_CUDA=OFF -DBMS_SANITIZE=ON \
  -DBMS_BUILD_SERVER=OFF
ASAN_TARGETS=$(ninja -C build-asan -t targets all 2>/dev/null | grep -oE '^(weights_test|tokenizer_test|engine_test|model_test)[^:]*' | sort -u || true)
if [[ -n "$ASAN_TARGETS" ]]; then
  cmake --build build-asan -j "$JOBS" --target $ASAN_TARGETS
  ctest --test-dir build-asan --output-on-failure -j "$JOBS" -L unit --timeout 900
fi

echo "== ThreadSanitizer (engine) =="
cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DBMS_CUDA=OFF -DBMS_TSAN=ON \
  -DBMS_BUILD_SERVER=OFF
TSAN_TARGETS=$(ninja -C build-tsan -t targets all 2>/dev/null | grep -oE '^(engine_test|metrics_test)[^:]*' | sort -u || true)
if [[ -n "$TSAN_TARGETS" ]]; then
  cmake --build build-tsan -j "$JOBS" --target $TSAN_TARGETS
  TSAN_OPTIONS=halt_on_error=1 ctest --test-dir build-tsan --output-on-failure -L unit \
    -R "^(Engine|Scheduler|Metrics|EventChannel)" --timeout 900
fi
echo "== all tests passed =="
