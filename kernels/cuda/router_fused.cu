// Fused residual add + RMSNorm + top-1 MoE routing + grouping by expert in one launch
// (AddRmsNormRoute, kernels/cuda/ops.h). One block of kThreads per row: the register-staged norm
// (norm_row.cuh) leaves the fp32 normalized row in registers; the block computes the n_experts
// router dot products from it (fixed-order reductions: deterministic), then bias, sigmoid,
// first-index argmax and scale. The only block (one row), or else the last block to finish
// (atomic ticket after a fence), groups all rows by expert with the shared block routine
// (moe_group.cuh: warps own contiguous row ranges, two block barriers) and writes the expert
// offsets, the stable permutation and the routing counters, then resets the ticket, so the whole
// routing is one kernel instead of norm + router GEMM (+ reduce) + RouterSelect + MoeGroup.
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/moe_group.cuh"
#include "kernels/cuda/norm_row.cuh"

namespace bms::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxExperts = 64;
constexpr int kExpertGroup = 8;  // experts whose partial sums a thread carries at once
constexpr int kMaxChunks = 8;    // d_model <= 4 * 256 * 8 = 8192

// One block per row. kPrefetch (n_experts <= kExpertGroup and d_model <= 2048): the router
// weights of the thread's slices are loaded before the norm, so their latency overlaps the
// norm's. Logits: per-thread partial dot products, warp shuffles, then warp 0 sums the warps in
// a fixed order (lane = expert), applies bias and sigmoid and takes the first-index argmax with
// a butterfly. Grouping (moe_group.cuh) by the only block, or by the last block to finish.
template <typename T, int kChunks, bool kPrefetch>
__global__ void __launch_bounds__(kThreads) AddNormRouteKernel(AddNormRouteParams p) {
  __shared__ float scratch[kWarps];
  __shared__ float logit_parts[kWarps][kMaxExperts];
  __shared__ GroupSmem<kThreads> group;
  __shared__ bool is_last;
  const int i = blockIdx.x, tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int d = p.norm.d_model, d4 = d / 4, n_e = p.n_experts;
  float4 wpre[kPrefetch ? kChunks : 1][kExpertGroup];
  if constexpr (kPrefetch) {
#pragma unroll
    for (int j = 0; j < kChunks; ++j) {
      const int c = tid + j * kThreads;
#pragma unroll
      for (int g = 0; g < kExpertGroup; ++g)
        wpre[j][g] = c < d4 && g < n_e ? Load4(p.router + static_cast<int64_t>(g) * d + 4 * c)
                                       : make_float4(0.f, 0.f, 0.f, 0.f);
    }
  }
  PdlLaunchDependents();
  float4 v[kChunks];
  NormRow<T, false, kThreads, kChunks>(p.norm, i, v, scratch);
  // NormRow ran PdlWait: earlier kernels' outputs (n_counted included) are visible from here.
  const int limit = p.n_counted ? *p.n_counted : static_cast<int>(gridDim.x);

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
            const float4 w = kPrefetch ? wpre[kPrefetch ? j : 0][g]
                                       : Load4(p.router + static_cast<int64_t>(e0 + g) * d + 4 * c);
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
  if (warp == 0) {
    float best_p = -1.f;
    int best = 0;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int e = lane + 32 * h;
      if (e < n_e) {
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
    }
    // First index among equal maxima (the reference's strict '>' scan in expert order).
    for (int o = 16; o > 0; o >>= 1) {
      const float op = __shfl_xor_sync(0xffffffffu, best_p, o);
      const int oe = __shfl_xor_sync(0xffffffffu, best, o);
      if (op > best_p || (op == best_p && oe < best)) {
        best_p = op;
        best = oe;
      }
    }
    if (lane == 0) {
      p.expert[i] = best;
      p.scale[i] = best_p;
      if (gridDim.x > 1) {
        __threadfence();  // the expert id is visible device-wide before the ticket is taken
        const unsigned ticket = atomicAdd(p.ticket, 1u);
        is_last = ticket == gridDim.x - 1;
      } else {
        is_last = true;
      }
    }
  }
  __syncthreads();
  if (!is_last) return;
  if (gridDim.x > 1) __threadfence();
  GroupRowsBlock<kThreads>(p.expert, gridDim.x, n_e, limit, p.expert_offsets, p.permutation,
                           p.routing_counts, group);
  if (tid == 0 && gridDim.x > 1) *p.ticket = 0u;
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
        if (p.n_experts <= kExpertGroup)
          LaunchPdl(AddNormRouteKernel<T, 1, true>, n.n_rows, kThreads, 0, stream, p);
        else
          LaunchPdl(AddNormRouteKernel<T, 1, false>, n.n_rows, kThreads, 0, stream, p);
        break;
      case 2:
        if (p.n_experts <= kExpertGroup)
          LaunchPdl(AddNormRouteKernel<T, 2, true>, n.n_rows, kThreads, 0, stream, p);
        else
          LaunchPdl(AddNormRouteKernel<T, 2, false>, n.n_rows, kThreads, 0, stream, p);
        break;
      case 3:
      case 4:
        LaunchPdl(AddNormRouteKernel<T, 4, false>, n.n_rows, kThreads, 0, stream, p);
        break;
      default:
        LaunchPdl(AddNormRouteKernel<T, kMaxChunks, false>, n.n_rows, kThreads, 0, stream, p);
    }
    return 0;
  });
  BMS_CUDA_CHECK_LAUNCH("AddRmsNormRoute");
  return absl::OkStatus();
}

}  // namespace bms::cuda
