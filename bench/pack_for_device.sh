#!/usr/bin/env bash
# Builds the GPU tests and bms_bench in build-cuda and packs them, with the Debian libraries the
# device lacks (absl, OpenBLAS, gfortran, quadmath: whatever ldd resolves outside the CUDA and
# base system libraries), into build-perf-carry/bundle.tar.xz for bench/run_on_device.sh.
set -eu
cmake -S . -B build-cuda -G Ninja -DBMS_CUDA=ON -DCMAKE_BUILD_TYPE=Release
TESTS="gpu_ops_test gpu_moe_test gpu_model_test gpu_preset_test gpu_graph_test"
cmake --build build-cuda --target $TESTS bms_bench -j2
rm -rf build-perf-carry && mkdir -p build-perf-carry/stage/bin build-perf-carry/stage/lib
for t in $TESTS; do cp build-cuda/tests/gpu/$t build-perf-carry/stage/bin/; done
cp build-cuda/bench/engine/bms_bench build-perf-carry/stage/bin/
strip -s build-perf-carry/stage/bin/*
ldd build-perf-carry/stage/bin/* | awk '/=>/ {print $3}' | sort -u \
  | grep -E 'absl|openblas|gfortran|quadmath|icu' | xargs -r -I{} cp -L {} build-perf-carry/stage/lib/
tar -cJf build-perf-carry/bundle.tar.xz -C build-perf-carry/stage bin lib
rm -rf build-perf-carry/stage
ls -la build-perf-carry
