#!/usr/bin/env bash
# Builds the real server for the device (bmserve with the CUDA backend, Release), the HTTP load
# generator (bmserve-loadgen) and the engine-level bench (bms_bench) in build-cuda-serve, and
# packs the stripped binaries with every library ldd resolves outside the base system and the
# CUDA toolkit (gRPC, protobuf, absl, ICU, OpenBLAS, OpenSSL, ...) into
# build-serve-carry/bundle.tar.xz, plus the GPT-NeoX tokenizer from the shared assets (the
# device does not see ../shared; never commit it). Then, with the bundle carried:
#   run(command="bash bench/serve_on_device.sh", carry=["build-serve-carry"])
set -eu
SHARED=${BMS_SHARED_DIR:-$(cd "$(dirname "$0")/../.." && pwd)/shared}
TOKENIZER="$SHARED/assets/20B_tokenizer.json"
[ -f "$TOKENIZER" ] || { echo "pack_serve_for_device: no tokenizer at $TOKENIZER" >&2; exit 1; }
cmake -S . -B build-cuda-serve -G Ninja -DBMS_CUDA=ON -DCMAKE_BUILD_TYPE=Release
cmake --build build-cuda-serve --target bmserve bmserve-loadgen bms_bench -j2
CARRY=build-serve-carry
rm -rf "$CARRY" && mkdir -p "$CARRY/stage/bin" "$CARRY/stage/lib"
cp build-cuda-serve/server/bmserve build-cuda-serve/tools/loadgen/bmserve-loadgen \
  build-cuda-serve/bench/engine/bms_bench "$CARRY/stage/bin/"
# bmserve keeps its symbol table (perf on the device); the others are stripped.
strip -s "$CARRY"/stage/bin/bms_bench "$CARRY"/stage/bin/bmserve-loadgen
strip --strip-debug "$CARRY"/stage/bin/bmserve
# Base system (glibc, libstdc++, libgcc) and the CUDA driver/toolkit libraries come from the
# device; everything else travels.
ldd "$CARRY"/stage/bin/* | awk '/=>/ {print $3}' | sort -u \
  | grep -vE '/(libc|libm|libdl|librt|libpthread|libgcc_s|libstdc\+\+|ld-linux[^/]*)\.so' \
  | grep -vE '/(libcuda|libcudart|libcublas|libcublasLt|libnv[^/]*)\.so|/usr/local/cuda' \
  | xargs -r -I{} cp -L {} "$CARRY/stage/lib/"
tar -cJf "$CARRY/bundle.tar.xz" -C "$CARRY/stage" bin lib
rm -rf "$CARRY/stage"
cp "$TOKENIZER" "$CARRY/tokenizer.json"
ls -la "$CARRY"
total=$(du -cb "$CARRY"/* | tail -1 | cut -f1)
echo "carry size: $total bytes (limit 64 MiB = 67108864)"
[ "$total" -lt 67108864 ] || { echo "pack_serve_for_device: carry too large" >&2; exit 1; }
