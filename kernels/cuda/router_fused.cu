// Fused residual add + RMSNorm + top-1 MoE routing + grouping by expert in one launch
// (AddRmsNormRoute, kernels/cuda/ops.h). One block of kThreads per row: the register-staged norm
// (norm_row.cuh) leaves the fp32 normalized row in registers; the block computes the n_experts
// router dot products from it (fixed-order reductions: deterministic), then bias, sigmoid,
// first-index argmax and scale. The last block to finish (atomic ticket after a fence) reads all
// rows' experts and writes the expert offsets, the stable permutation and the routing counters,
// then resets the ticket, so the whole routing is one kernel instead of norm + router GEMM
// (+ reduce) + RouterSelect + MoeGroup.
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/norm_row.cuh"

namespace bms::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxExperts = 64;
constexpr int kExpertGroup = 8;  // experts whose partial sums a thread carries at once
constexpr int kMaxChunks = 8;    // d_model <= 4 * 256 * 8 = 8192

// Grouping of all rows by expert (the last block): counts, offsets, stable permutation and the
// routing counters (rows < n_counted).
__device__ void GroupRows(const AddNormRouteParams& p, int n_rows, int (&counts)[kMaxExperts],
                          int (&cursor)[kMaxExperts], int (&warp_counts)[kWarps][kMaxExperts]) {
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int n_e = p.n_experts;
  __shared__ int counted[kMaxExperts];
  __shared__ int limit;
  for (int e = tid; e < n_e; e += kThreads) {
    counts[e] = 0;
    counted[e] = 0;
  }
  if (tid == 0) limit = p.n_counted ? *p.n_counted : n_rows;
  __syncthreads();
  for (int t = tid; t < n_rows; t += kThreads) {
    const int e = __ldcg(p.expert + t);
    atomicAdd(&counts[e], 1);
    if (t < limit) atomicAdd(&counted[e], 1);
  }
  __syncthreads();
  if (tid == 0) {
    int acc = 0;
    for (int e = 0; e < n_e; ++e) {
      p.expert_offsets[e] = acc;
      cursor[e] = acc;
      acc += counts[e];
    }
    p.expert_offsets[n_e] = acc;
  }
  if (p.routing_counts)
    for (int e = tid; e < n_e; e += kThreads)
      if (counted[e]) atomicAdd(&p.routing_counts[e], static_cast<unsigned long long>(counted[e]));
  const unsigned lanes_below = (1u << lane) - 1u;
  for (int base = 0; base < n_rows; base += kThreads) {
    for (int i = tid; i < kWarps * kMaxExperts; i += kThreads) (&warp_counts[0][0])[i] = 0;
    __syncthreads();
    const int t = base + tid;
    const int e = t < n_rows ? __ldcg(p.expert + t) : -1;
    const unsigned same = __match_any_sync(0xffffffffu, e);
    const int rank = __popc(same & lanes_below);
    if (e >= 0 && rank == 0) warp_counts[warp][e] = __popc(same);
    __syncthreads();
    if (e >= 0) {
      int before = 0;
      for (int w = 0; w < warp; ++w) before += warp_counts[w][e];
      p.permutation[cursor[e] + before + rank] = t;
    }
    __syncthreads();
    for (int x = tid; x < n_e; x += kThreads) {
      int add = 0;
      for (int w = 0; w < kWarps; ++w) add += warp_counts[w][x];
      cursor[x] += add;
    }
    __syncthreads();
  }
}

template <typename T, int kChunks>
__global__ void __launch_bounds__(kThreads) AddNormRouteKernel(AddNormRouteParams p) {
  __shared__ float scratch[kWarps];
  __shared__ float logit_parts[kWarps][kMaxExperts];
  __shared__ int counts[kMaxExperts];
  __shared__ int cursor[kMaxExperts];
  __shared__ int warp_counts[kWarps][kMaxExperts];
  __shared__ bool is_last;
  const int i = blockIdx.x, tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int d = p.norm.d_model, d4 = d / 4, n_e = p.n_experts;
  float4 v[kChunks];
  NormRow<T, false, kThreads, kChunks>(p.norm, i, v, scratch);

  // Router logits: thread partial dot products for kExpertGroup experts at a time, reduced over
  // the warp by shuffles, then over the warps (fixed order) below.
  for (int e0 = 0; e0 < n_e; e0 += kExpertGroup) {
    float part[kExpertGroup];
#pragma unroll
    for (int g = 0; g < kExpertGroup; ++g) part[g] = 0.f;
#pragma unroll
    for (int j = 0; j < kChunks; ++j) {
      const int c = tid + j * kThreads;
      if (c < d4) {
#pragma unroll
        for (int g = 0; g < kExpertGroup; ++g) {
          if (e0 + g < n_e) {
            const float4 w = Load4(p.router + static_cast<int64_t>(e0 + g) * d + 4 * c);
            part[g] += (v[j].x * w.x + v[j].y * w.y) + (v[j].z * w.z + v[j].w * w.w);
          }
        }
      }
    }
#pragma unroll
    for (int g = 0; g < kExpertGroup; ++g) {
      float s = part[g];
      for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
      if (lane == 0 && e0 + g < n_e) logit_parts[warp][e0 + g] = s;
    }
  }
  __syncthreads();
  if (tid == 0) {
    int best = 0;
    float best_p = -1.f;
    for (int e = 0; e < n_e; ++e) {
      float x = 0.f;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) x += logit_parts[w][e];
      if (p.router_bias) x += p.router_bias[e];
      const float prob = 1.0f / (1.0f + expf(-x));
      if (prob > best_p) {
        best_p = prob;
        best = e;
      }
    }
    p.expert[i] = best;
    p.scale[i] = best_p;
    __threadfence();  // the expert id is visible device-wide before the ticket is taken
    const unsigned ticket = atomicAdd(p.ticket, 1u);
    is_last = ticket == gridDim.x - 1;
  }
  __syncthreads();
  if (!is_last) return;
  __threadfence();
  GroupRows(p, gridDim.x, counts, cursor, warp_counts);
  if (tid == 0) *p.ticket = 0u;
}

}  // namespace

bool AddRmsNormRouteSupported(const AddNormRouteParams& p) {
  return p.norm.rows == nullptr && p.n_experts > 0 && p.n_experts <= kMaxExperts &&
         FastNormShape(p.norm, 4 * kThreads * kMaxChunks) && p.router && Aligned16(p.router);
}

absl::Status AddRmsNormRoute(const AddNormRouteParams& p, Stream stream) {
  const AddNormParams& n = p.norm;
  if (n.n_rows < 0 || n.d_model <= 0 || !n.residual || !n.weight || !n.out || !p.router ||
      !p.expert || !p.scale || !p.expert_offsets || !p.ticket || (n.n_rows > 0 && !p.permutation))
    return absl::InvalidArgumentError("AddRmsNormRoute: bad sizes or null pointer");
  if (n.first_layer && !n.h)
    return absl::InvalidArgumentError("AddRmsNormRoute: first_layer needs h");
  if (!AddRmsNormRouteSupported(p))
    return absl::InvalidArgumentError(
        "AddRmsNormRoute: needs rows == null, d_model % 4 == 0 and <= 8192, 16-byte aligned "
        "rows and 1..64 experts");
  if (n.n_rows == 0) return absl::OkStatus();
  const int chunks = CeilDiv(n.d_model / 4, kThreads);
  DispatchDType(n.dtype, [&](auto t) {
    using T = decltype(t);
    switch (chunks) {
      case 1:
        AddNormRouteKernel<T, 1><<<n.n_rows, kThreads, 0, stream>>>(p);
        break;
      case 2:
        AddNormRouteKernel<T, 2><<<n.n_rows, kThreads, 0, stream>>>(p);
        break;
      case 3:
      case 4:
        AddNormRouteKernel<T, 4><<<n.n_rows, kThreads, 0, stream>>>(p);
        break;
      default:
        AddNormRouteKernel<T, kMaxChunks><<<n.n_rows, kThreads, 0, stream>>>(p);
    }
    return 0;
  });
  BMS_CUDA_CHECK_LAUNCH("AddRmsNormRoute");
  return absl::OkStatus();
}

}  // namespace bms::cuda
