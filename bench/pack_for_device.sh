#!/usr/bin/env bash
# Builds every GPU test (tests/gpu/gpu_*_test that the build defines) and bms_bench (the engine
# benchmark; bench/engine/engine_bench.h) with CUDA, Release, and packs them with the Debian
# libraries the device lacks (absl, OpenBLAS, gfortran, quadmath, icu: whatever ldd resolves
# outside the CUDA and base system libraries) into $BMS_CARRY/bundle.tar.xz for
# bench/run_on_device.sh. The PyTorch peer and the chart/table scripts run from the source tree.
#   bash bench/pack_for_device.sh   then   run(command="bash bench/run_on_device.sh",
#                                             carry=["build-perf-carry"])
# BMS_BUILD (default build-cuda) and BMS_CARRY (default build-perf-carry) pick the folders;
# BMS_PACK_TESTS="a_test b_test" packs only those tests ("" = none).
set -eu
BUILD=${BMS_BUILD:-build-cuda}
CARRY=${BMS_CARRY:-build-perf-carry}
cmake -S . -B "$BUILD" -G Ninja -DBMS_CUDA=ON -DCMAKE_BUILD_TYPE=Release > /dev/null
TESTS=${BMS_PACK_TESTS-$(ninja -C "$BUILD" -t targets all \
  | sed -n 's/^\(gpu_[a-z0-9_]*_test\): .*/\1/p' | grep -v gpu_unavailable_test | sort -u | tr '\n' ' ')}
echo "pack_for_device: tests: $TESTS"
cmake --build "$BUILD" --target $TESTS bms_bench -j2
rm -rf "$CARRY" && mkdir -p "$CARRY/stage/bin" "$CARRY/stage/lib"
for t in $TESTS; do cp "$BUILD/tests/gpu/$t" "$CARRY/stage/bin/"; done
cp "$BUILD/bench/engine/bms_bench" "$CARRY/stage/bin/"
strip -s "$CARRY"/stage/bin/*
ldd "$CARRY"/stage/bin/* | awk '/=>/ {print $3}' | sort -u \
  | grep -E 'absl|openblas|gfortran|quadmath|icu' | xargs -r -I{} cp -L {} "$CARRY/stage/lib/"
{ echo "commit $(git rev-parse --short HEAD) ($(git status --short --untracked-files=no | wc -l) \
tracked files modified in the tree at pack time), packed $(date -u +%FT%TZ)"; } > "$CARRY/stage/BUILD_INFO"
tar -cJf "$CARRY/bundle.tar.xz" -C "$CARRY/stage" bin lib BUILD_INFO
rm -rf "$CARRY/stage"
ls -la "$CARRY"
