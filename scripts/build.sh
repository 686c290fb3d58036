#!/usr/bin/env bash
# Configures and builds bmserve into build/ (Release). BMS_CUDA=AUTO builds the CUDA backend
# when nvcc is found (/usr/local/cuda/bin/nvcc); override with BMS_CUDA=OFF|ON in the environment.
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${JOBS:-$(nproc)}
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DBMS_CUDA="${BMS_CUDA:-AUTO}" "$@"
cmake --build build -j "$JOBS"
