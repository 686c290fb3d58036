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

# A sanitizer build compiles only the test targets it runs (2-core CI), then runs their tests:
# ctest skips none of them silently because only those targets' tests are selected by label.
sanitizer_run() {  # build-dir, cmake-flag, ctest-label, targets...
  local dir=$1 flag=$2 label=$3
  shift 3
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DBMS_CUDA=OFF "$flag" >/dev/null
  cmake --build "$dir" -j "$JOBS" --target "$@"
  ctest --test-dir "$dir" --output-on-failure -j "$JOBS" -L "$label" --timeout 900
}

echo "== AddressSanitizer + UndefinedBehaviorSanitizer =="
sanitizer_run build-asan -DBMS_SANITIZE=ON asan weights_test

echo "== all tests passed =="
