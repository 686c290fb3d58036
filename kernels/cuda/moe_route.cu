// MoE routing on the device (kernels/cuda/ops.h): router selection (bias, sigmoid, first-index
// argmax, scale, routing counters) and the stable grouping by expert (counts, prefix sum,
// permutation; kernels/cuda/moe_group.cuh) in a single block, so no host sync is needed before
// the grouped GEMM.
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/moe_group.cuh"

namespace bms::cuda {
namespace {

constexpr int kMaxExperts = 64;
constexpr int kRouterThreads = 256;
constexpr int kGroupThreads = 1024;

__global__ void __launch_bounds__(kRouterThreads) RouterSelectKernel(RouterSelectParams p) {
  __shared__ int counts[kMaxExperts];
  for (int e = threadIdx.x; e < p.n_experts; e += kRouterThreads) counts[e] = 0;
  __syncthreads();
  const int t = blockIdx.x * kRouterThreads + threadIdx.x;
  if (t < p.n_tokens) {
    const float* row = p.logits + static_cast<int64_t>(t) * p.n_experts;
    int best = 0;
    float best_p = -1.f;
    for (int e = 0; e < p.n_experts; ++e) {
      const float x = row[e] + (p.bias ? p.bias[e] : 0.f);
      const float prob = 1.0f / (1.0f + expf(-x));
      if (prob > best_p) {
        best_p = prob;
        best = e;
      }
    }
    p.expert[t] = best;
    p.scale[t] = best_p;
    if (p.routing_counts && (!p.n_counted || t < *p.n_counted)) atomicAdd(&counts[best], 1);
  }
  __syncthreads();
  if (p.routing_counts) {
    for (int e = threadIdx.x; e < p.n_experts; e += kRouterThreads)
      if (counts[e]) atomicAdd(&p.routing_counts[e], static_cast<unsigned long long>(counts[e]));
  }
}

__global__ void __launch_bounds__(kGroupThreads) MoeGroupKernel(MoeGroupParams p) {
  __shared__ GroupSmem<kGroupThreads> sm;
  GroupRowsBlock<kGroupThreads>(p.expert, p.n_tokens, p.n_experts, /*limit=*/0, p.expert_offsets,
                                p.permutation, /*routing_counts=*/nullptr, sm);
}

}  // namespace

absl::Status RouterSelect(const RouterSelectParams& p, Stream stream) {
  if (p.n_tokens < 0 || p.n_experts <= 0 || p.n_experts > kMaxExperts || !p.logits || !p.expert ||
      !p.scale)
    return absl::InvalidArgumentError("RouterSelect: bad sizes or null pointer");
  if (p.n_tokens == 0) return absl::OkStatus();
  RouterSelectKernel<<<CeilDiv(p.n_tokens, kRouterThreads), kRouterThreads, 0, stream>>>(p);
  BMS_CUDA_CHECK_LAUNCH("RouterSelect");
  return absl::OkStatus();
}

absl::Status MoeGroup(const MoeGroupParams& p, Stream stream) {
  if (p.n_tokens < 0 || p.n_experts <= 0 || p.n_experts > kMaxExperts || !p.expert ||
      !p.expert_offsets || (p.n_tokens > 0 && !p.permutation))
    return absl::InvalidArgumentError("MoeGroup: bad sizes or null pointer");
  MoeGroupKernel<<<1, kGroupThreads, 0, stream>>>(p);
  BMS_CUDA_CHECK_LAUNCH("MoeGroup");
  return absl::OkStatus();
}

}  // namespace bms::cuda
