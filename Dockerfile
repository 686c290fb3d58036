# syntax=docker/dockerfile:1
# bmserve container image. Two stages: build in the CUDA devel image (the same CMake configure and
# targets as CI's scripts/build.sh: every target, tests included), run in the CUDA runtime image
# as a non-root user.
#
#   GPU image:  docker build -t bmserve .
#   CPU image:  docker build -t bmserve:cpu --build-arg BMS_CUDA=OFF \
#                 --build-arg BUILD_IMAGE=ubuntu:24.04 --build-arg RUNTIME_IMAGE=ubuntu:24.04 .
#   Run:        docker run --gpus all -p 8000:8000 -p 50051:50051 \
#                 -v /srv/models:/models:ro -e BMSERVE_MODEL=/models/blackmamba-2.8b \
#                 -e BMSERVE_BACKEND=cuda bmserve
#               (no BMSERVE_MODEL / --model: the built-in demo model)
#
# Ubuntu 24.04 carries the same library versions the project builds against on Debian 12
# (Abseil 20220623, gRPC 1.51, protobuf 3.21, nlohmann-json 3.11).
ARG CUDA_VERSION=13.0.0
ARG BUILD_IMAGE=nvidia/cuda:${CUDA_VERSION}-devel-ubuntu24.04
ARG RUNTIME_IMAGE=nvidia/cuda:${CUDA_VERSION}-runtime-ubuntu24.04

# ---------------------------------------------------------------------------------------------
FROM ${BUILD_IMAGE} AS build
ARG BMS_CUDA=ON
ARG JOBS=8
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends \
      build-essential cmake ninja-build pkg-config git ca-certificates \
      libabsl-dev libgtest-dev libgmock-dev nlohmann-json3-dev libopenblas-dev libboost-dev \
      libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DBMS_CUDA=${BMS_CUDA} \
 && cmake --build build -j "${JOBS}"
# Stage the binary with the shared libraries it links that the runtime image lacks (Abseil,
# gRPC, protobuf, OpenBLAS, ...); glibc, the CUDA runtime libraries and the driver (injected by
# the NVIDIA container toolkit) come from the runtime image.
RUN mkdir -p /out/bin /out/lib \
 && cp build/server/bmserve /out/bin/ \
 && ldd build/server/bmserve | awk '/=> \//{print $3}' \
    | grep -Ev '/(libc|libm|libdl|libpthread|librt|libgcc_s|libstdc\+\+|ld-linux[^/]*)\.so' \
    | grep -Ev '/usr/local/cuda|/libcuda\.so|/libcudart|/libcublas|/libnvidia' \
    | xargs -r -I{} cp -L {} /out/lib/ \
 && ls -l /out/lib

# ---------------------------------------------------------------------------------------------
FROM ${RUNTIME_IMAGE} AS runtime
ENV DEBIAN_FRONTEND=noninteractive
# libstdc++/libgcc come with the base image; curl serves the HEALTHCHECK; libgomp for OpenBLAS.
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends curl ca-certificates libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && (userdel -r ubuntu 2>/dev/null || true) \
 && groupadd --system --gid 10001 bmserve \
 && useradd --system --uid 10001 --gid bmserve --home-dir /nonexistent --shell /usr/sbin/nologin bmserve \
 && mkdir -p /models && chown bmserve:bmserve /models
COPY --from=build /out/bin/ /opt/bmserve/bin/
COPY --from=build /out/lib/ /opt/bmserve/lib/
ENV LD_LIBRARY_PATH=/opt/bmserve/lib \
    PATH=/opt/bmserve/bin:${PATH} \
    BMSERVE_HOST=0.0.0.0 \
    BMSERVE_HTTP_PORT=8000 \
    BMSERVE_GRPC_PORT=50051 \
    BMSERVE_LOG_FORMAT=json
# Model checkpoints (config.json + weights + tokenizer.json) are mounted here, read-only.
VOLUME ["/models"]
EXPOSE 8000 50051
USER 10001:10001
# /health is 200 once the process serves HTTP; readiness (/ready) is for load balancers.
HEALTHCHECK --interval=15s --timeout=3s --start-period=120s --retries=3 \
  CMD curl -fsS "http://127.0.0.1:${BMSERVE_HTTP_PORT:-8000}/health" >/dev/null || exit 1
# SIGTERM drains (in-flight requests get --drain-timeout seconds) and exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/opt/bmserve/bin/bmserve", "serve"]
CMD []
