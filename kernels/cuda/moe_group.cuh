// Stable grouping of rows by expert id inside one thread block, shared by MoeGroup
// (kernels/cuda/moe_route.cu) and the last block of AddRmsNormRoute (router_fused.cu): expert
// counts, the exclusive prefix sum (expert_offsets), the stable (token-order) permutation and
// the routing counters of rows < limit. Warp w owns the contiguous rows
// [w * seg, (w + 1) * seg) and walks them 32 at a time twice (counts, then positions; equal ids
// found with __match_any_sync), so the block needs only two __syncthreads and no walk over all
// rows by one thread. Integer counts only: the result is deterministic. Internal to kernels/cuda/.
#pragma once

#include "kernels/cuda/device_util.cuh"

namespace bms::cuda {

inline constexpr int kGroupMaxExperts = 64;

template <int kThreads>
struct GroupSmem {
  static constexpr int kWarps = kThreads / 32;
  int warp_counts[kWarps][kGroupMaxExperts];   // rows of warp w's segment per expert
  int warp_counted[kWarps][kGroupMaxExperts];  // of those, rows < limit
  int warp_base[kWarps][kGroupMaxExperts];     // next grouped position of warp w per expert
  int offsets[kGroupMaxExperts];
};

// Groups rows [0, n_rows) whose expert ids are expert[t] (read with __ldcg: written by other
// blocks of the same kernel, or by this block before a __syncthreads). n_experts <= 64.
// routing_counts (or null) gets the per-expert count of rows < limit added.
template <int kThreads>
__device__ void GroupRowsBlock(const int32_t* expert, int n_rows, int n_experts, int limit,
                               int32_t* expert_offsets, int32_t* permutation,
                               unsigned long long* routing_counts, GroupSmem<kThreads>& sm) {
  constexpr int kWarps = kThreads / 32;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const unsigned lanes_below = (1u << lane) - 1u;
  const int seg = (n_rows + kWarps - 1) / kWarps;
  const int begin = min(n_rows, warp * seg), end = min(n_rows, begin + seg);
  for (int e = lane; e < n_experts; e += 32) {
    sm.warp_counts[warp][e] = 0;
    sm.warp_counted[warp][e] = 0;
  }
  __syncwarp();
  // Pass 1: per-warp counts (the leader of each group of equal ids adds the group's size).
  for (int t0 = begin; t0 < end; t0 += 32) {
    const int t = t0 + lane;
    const int e = t < end ? __ldcg(expert + t) : -1;
    const unsigned same = __match_any_sync(0xffffffffu, e);
    const unsigned in_limit = __ballot_sync(0xffffffffu, t < end && t < limit);
    if (e >= 0 && (same & lanes_below) == 0) {
      sm.warp_counts[warp][e] += __popc(same);
      sm.warp_counted[warp][e] += __popc(same & in_limit);
    }
    __syncwarp();
  }
  __syncthreads();
  // Exclusive prefix over experts by warp 0 (lane handles experts lane and lane + 32).
  if (warp == 0) {
    int tot[2] = {0, 0}, cnt[2] = {0, 0};
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int e = lane + 32 * h;
      if (e < n_experts)
        for (int w = 0; w < kWarps; ++w) {
          tot[h] += sm.warp_counts[w][e];
          cnt[h] += sm.warp_counted[w][e];
        }
    }
    int carry = 0;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      int incl = tot[h];
      for (int o = 1; o < 32; o <<= 1) {
        const int v = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += v;
      }
      const int e = lane + 32 * h;
      if (e < n_experts) {
        sm.offsets[e] = carry + incl - tot[h];
        expert_offsets[e] = carry + incl - tot[h];
        if (routing_counts && cnt[h])
          atomicAdd(&routing_counts[e], static_cast<unsigned long long>(cnt[h]));
      }
      carry += __shfl_sync(0xffffffffu, incl, 31);
    }
    if (lane == 0) expert_offsets[n_experts] = carry;
  }
  __syncthreads();
  // Pass 2: positions = expert offset + rows of earlier warps + rows earlier in this warp.
  for (int e = lane; e < n_experts; e += 32) {
    int base = sm.offsets[e];
    for (int w = 0; w < warp; ++w) base += sm.warp_counts[w][e];
    sm.warp_base[warp][e] = base;
  }
  __syncwarp();
  for (int t0 = begin; t0 < end; t0 += 32) {
    const int t = t0 + lane;
    const int e = t < end ? __ldcg(expert + t) : -1;
    const unsigned same = __match_any_sync(0xffffffffu, e);
    if (e >= 0) permutation[sm.warp_base[warp][e] + __popc(same & lanes_below)] = t;
    __syncwarp();
    if (e >= 0 && (same & lanes_below) == 0) sm.warp_base[warp][e] += __popc(same);
    __syncwarp();
  }
}

}  // namespace bms::cuda
