// CUDA backend: the BlackMamba forward pass on one NVIDIA GPU (DESIGN.md §1, §2). Weights are
// uploaded once at start-up (bf16, or fp32 with BackendOptions::fp32_compute), the state pool
// (num_slots + 1 padding slot) is allocated once, and each Forward runs the packed batch with
// slot-indexed kernels from kernels/cuda/. This header is CUDA-free: engine/backend_registry.cc
// includes it under #ifdef BMS_HAVE_CUDA. Not thread-safe (see Backend).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend.h"
#include "engine/model_weights.h"

namespace bms {

// The CUDA backend's extra surface beyond Backend (metrics, tests). Obtain one by
// dynamic_cast on the Backend that CreateCudaBackend returns.
class CudaBackend : public Backend {
 public:
  // Tokens routed to each expert since start-up, per MoE layer in order:
  // [num_moe_layers * n_experts], row-major. Kept on the device; this call syncs.
  virtual absl::StatusOr<std::vector<int64_t>> ReadRoutingCounts() = 0;
  // Device bytes held for weights and for the state pool (start-up allocations).
  virtual size_t weight_bytes() const = 0;
  virtual size_t state_pool_bytes() const = 0;
  // Host time (us) of the last Forward from entry to the last launch, before the logits copy
  // (which waits for the GPU): validation, packing and launches, or one graph launch. Benchmarks.
  virtual double last_step_host_us() const = 0;
  // Decode CUDA graphs held now (one per batch bucket, plus one with the sampling kernel), replays
  // since start-up, and captures since start-up (PrepareForServing's included; a serving step
  // that captures shows up here).
  virtual int graphs_captured() const = 0;
  virtual int64_t graph_replays() const = 0;
  virtual int64_t graph_captures() const = 0;
};

// Uploads `weights` to GPU 0 and allocates the state pool. Errors: FailedPrecondition when no
// usable GPU is present; ResourceExhausted naming what did not fit (weights, state pool) under
// options.gpu_memory_fraction of the free device memory; InvalidArgument for a config the
// kernels do not support (naming the field). Never exits.
absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(const ModelWeights& weights,
                                                           const BackendOptions& options);

// True when a CUDA device can be used; otherwise false with the reason in *why (tests skip on
// it). Safe to call without a GPU.
bool CudaDeviceAvailable(std::string* why);

}  // namespace bms
