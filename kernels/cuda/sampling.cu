// Device-side sampling (kernels/cuda/sampling.h): one 512-thread block per logits row.
//
// Order: every token is ranked by (processed logit descending, id ascending), the host's order
// for top-N logprobs and (through the monotone weight exp((x - max) / T)) for top-k, top-p and a
// most-likely-first draw. A float maps to a 32-bit key that sorts in that order (OrderKey), and
// "the first element, in that order, at which a running quantity (count or probability mass)
// reaches a target" is found without sorting (Select): three radix passes (11, 11, 10 key bits)
// build a histogram of the quantity over the key digits of the still-matching elements in
// shared memory and pick the bin where the running sum crosses the target; the elements sharing
// the final key are then resolved by id with an ordered block scan (OrderedPick). Masses are
// summed in 2^-44 fixed point (integer atomics: the same result in any order); the host sums
// doubles, so a draw can differ only within ~1e-10 of a CDF boundary.
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/pdl.cuh"
#include "kernels/cuda/sampling.h"

namespace bms::cuda {
namespace {

using u64 = unsigned long long;

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr unsigned kFull = 0xffffffffu;
constexpr double kMassScale = 17592186044416.0;  // 2^44: fixed-point unit of probability mass

struct Pick {
  uint32_t key;
  int id;
  u64 cum;  // quantity summed up to and including the picked element
  int found;
};

struct Shared {
  u64 hist[2048];
  u64 warp_u64[kWarps];
  double warp_f64[kWarps];
  float warp_val[kWarps];
  int warp_idx[kWarps];
  u64 bcast_u64;
  double bcast_f64;
  int sel_bin;
  u64 sel_base;
  Pick pick;
  int top_n;
  uint32_t top_key[kMaxTopLogprobs];
  int top_id[kMaxTopLogprobs];
};

// Elements (key, id) <= (key, id) of the bound, inclusive.
struct Bound {
  uint32_t key;
  int id;
};
__device__ __forceinline__ bool InSet(uint32_t k, int i, Bound b) {
  return k < b.key || (k == b.key && i <= b.id);
}

// Larger x -> smaller key; -0 and +0 share a key (they compare equal on the host).
__device__ __forceinline__ uint32_t OrderKey(float x) {
  uint32_t b = x == 0.f ? 0u : __float_as_uint(x);
  const uint32_t ascending = (b & 0x80000000u) ? ~b : (b | 0x80000000u);
  return ~ascending;
}

__device__ u64 BlockSumU64(u64 v, Shared& sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(kFull, v, o);
  if (lane == 0) sh.warp_u64[warp] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    u64 t = 0;
    for (int w = 0; w < kWarps; ++w) t += sh.warp_u64[w];
    sh.bcast_u64 = t;
  }
  __syncthreads();
  const u64 r = sh.bcast_u64;
  __syncthreads();
  return r;
}

// Fixed reduction order: per-thread sums in index order, a fixed shuffle tree, warps in order.
__device__ double BlockSumF64(double v, Shared& sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(kFull, v, o);
  if (lane == 0) sh.warp_f64[warp] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    double t = 0;
    for (int w = 0; w < kWarps; ++w) t += sh.warp_f64[w];
    sh.bcast_f64 = t;
  }
  __syncthreads();
  const double r = sh.bcast_f64;
  __syncthreads();
  return r;
}

// Exclusive prefix sum over threads in thread order; *total gets the block's sum.
__device__ u64 BlockExclusiveScanU64(u64 v, u64* total, Shared& sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  u64 inc = v;
  for (int o = 1; o < 32; o <<= 1) {
    const u64 y = __shfl_up_sync(kFull, inc, o);
    if (lane >= o) inc += y;
  }
  if (lane == 31) sh.warp_u64[warp] = inc;
  __syncthreads();
  if (threadIdx.x == 0) {
    u64 run = 0;
    for (int w = 0; w < kWarps; ++w) {
      const u64 t = sh.warp_u64[w];
      sh.warp_u64[w] = run;
      run += t;
    }
    sh.bcast_u64 = run;
  }
  __syncthreads();
  const u64 excl = sh.warp_u64[warp] + inc - v;
  *total = sh.bcast_u64;
  __syncthreads();
  return excl;
}

// The largest value and the first index holding it (NaNs never win).
__device__ void BlockArgMax(const float* x, int V, Shared& sh, float* max_value, int* max_index) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float bv = -INFINITY;
  int bi = INT_MAX;
  for (int i = threadIdx.x; i < V; i += kThreads) {
    const float v = x[i];
    if (v > bv || (v == bv && i < bi)) bv = v, bi = i;
  }
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_down_sync(kFull, bv, o);
    const int oi = __shfl_down_sync(kFull, bi, o);
    if (ov > bv || (ov == bv && oi < bi)) bv = ov, bi = oi;
  }
  if (lane == 0) sh.warp_val[warp] = bv, sh.warp_idx[warp] = bi;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kWarps; ++w) {
      const float ov = sh.warp_val[w];
      const int oi = sh.warp_idx[w];
      if (ov > bv || (ov == bv && oi < bi)) bv = ov, bi = oi;
    }
    sh.warp_val[0] = bv;
    sh.warp_idx[0] = bi == INT_MAX ? 0 : bi;
  }
  __syncthreads();
  *max_value = sh.warp_val[0];
  *max_index = sh.warp_idx[0];
  __syncthreads();
}

// Among elements accepted by in_set(key, id), in id order, the first at which base + the running
// sum of q reaches the target (reached(c)). Each thread scans one contiguous id range.
template <class InSetFn, class QFn, class ReachedFn>
__device__ Pick OrderedPick(const float* x, int V, InSetFn in_set, QFn q, u64 base,
                            ReachedFn reached, Shared& sh) {
  const int chunk = (V + kThreads - 1) / kThreads;
  const int lo = min(V, static_cast<int>(threadIdx.x) * chunk), hi = min(V, lo + chunk);
  u64 local = 0;
  for (int i = lo; i < hi; ++i) {
    const float xi = x[i];
    if (in_set(OrderKey(xi), i)) local += q(xi);
  }
  if (threadIdx.x == 0) sh.pick.found = 0;  // ordered before any write by the scan's barriers
  u64 total;
  const u64 start = base + BlockExclusiveScanU64(local, &total, sh);
  if (!reached(start) && reached(start + local)) {
    u64 c = start;
    for (int i = lo; i < hi; ++i) {
      const float xi = x[i];
      const uint32_t k = OrderKey(xi);
      if (!in_set(k, i)) continue;
      const u64 qi = q(xi);
      if (qi == 0) continue;
      c += qi;
      if (reached(c)) {
        sh.pick = Pick{k, i, c, 1};
        break;
      }
    }
  }
  __syncthreads();
  const Pick r = sh.pick;
  __syncthreads();
  return r;
}

// Among elements within `bound`, in (key, id) order, the first at which the running sum of q
// reaches `target` (strict: sum > target, else sum >= target). found = 0 if it never does.
template <class QFn>
__device__ Pick Select(const float* x, int V, Bound bound, QFn q, double target, bool strict,
                       Shared& sh) {
  auto reached = [=](u64 c) {
    const double d = static_cast<double>(c);
    return strict ? d > target : d >= target;
  };
  uint32_t prefix = 0, mask = 0;
  u64 base = 0;
  for (int pass = 0; pass < 3; ++pass) {
    const int shift = pass == 0 ? 21 : (pass == 1 ? 10 : 0);
    const int n_bins = pass == 2 ? 1024 : 2048;
    for (int b = threadIdx.x; b < n_bins; b += kThreads) sh.hist[b] = 0;
    if (threadIdx.x == 0) sh.sel_bin = -1;
    __syncthreads();
    for (int i = threadIdx.x; i < V; i += kThreads) {
      const float xi = x[i];
      const uint32_t k = OrderKey(xi);
      if ((k & mask) != prefix || !InSet(k, i, bound)) continue;
      const u64 qi = q(xi);
      if (qi != 0) atomicAdd(&sh.hist[(k >> shift) & (n_bins - 1)], qi);
    }
    __syncthreads();
    const int per = n_bins / kThreads;
    const int first_bin = threadIdx.x * per;
    u64 local = 0;
    for (int j = 0; j < per; ++j) local += sh.hist[first_bin + j];
    u64 total;
    const u64 start = base + BlockExclusiveScanU64(local, &total, sh);
    if (!reached(start) && reached(start + local)) {
      u64 c = start;
      for (int j = 0; j < per; ++j) {
        const u64 h = sh.hist[first_bin + j];
        if (reached(c + h)) {
          sh.sel_bin = first_bin + j;
          sh.sel_base = c;
          break;
        }
        c += h;
      }
    }
    __syncthreads();
    const int bin = sh.sel_bin;
    const u64 bin_base = sh.sel_base;
    __syncthreads();
    if (bin < 0) return Pick{0, 0, 0, 0};
    prefix |= static_cast<uint32_t>(bin) << shift;
    mask |= static_cast<uint32_t>(n_bins - 1) << shift;
    base = bin_base;
  }
  const uint32_t key = prefix;
  return OrderedPick(
      x, V, [=](uint32_t k, int i) { return k == key && InSet(k, i, bound); }, q, base, reached,
      sh);
}

// Sum of q over the elements within `bound`.
template <class QFn>
__device__ u64 SumWithin(const float* x, int V, Bound bound, QFn q, Shared& sh) {
  u64 local = 0;
  for (int i = threadIdx.x; i < V; i += kThreads) {
    const float xi = x[i];
    if (InSet(OrderKey(xi), i, bound)) local += q(xi);
  }
  return BlockSumU64(local, sh);
}

// Steps 1-4 of engine/sampler.h, in place. Rounding as on the host: no FMA contraction.
__device__ void ProcessRow(float* x, int V, const SampleRowParams& rp, const SampleEntry* e) {
  if (rp.bias_end > rp.bias_begin) {
    // Entries are sorted stably by token: the first of each run adds the run in order.
    for (int j = rp.bias_begin + threadIdx.x; j < rp.bias_end; j += kThreads) {
      const int t = e[j].token;
      if ((j > rp.bias_begin && e[j - 1].token == t) || t < 0 || t >= V) continue;
      float v = x[t];
      for (int k = j; k < rp.bias_end && e[k].token == t; ++k) v = __fadd_rn(v, e[k].value);
      x[t] = v;
    }
    __syncthreads();
  }
  if (rp.mask_end > rp.mask_begin) {
    for (int j = rp.mask_begin + threadIdx.x; j < rp.mask_end; j += kThreads) {
      const int t = e[j].token;
      if (t >= 0 && t < V) x[t] = -INFINITY;
    }
    __syncthreads();
  }
  if (rp.count_end > rp.count_begin) {
    const float r = rp.repetition_penalty;
    for (int j = rp.count_begin + threadIdx.x; j < rp.count_end; j += kThreads) {
      const int t = e[j].token;
      const float count = e[j].value;
      if (t < 0 || t >= V || !(count > 0.f)) continue;
      float v = x[t];
      if (r != 1.0f) v = v > 0.f ? __fdiv_rn(v, r) : __fmul_rn(v, r);
      x[t] = __fsub_rn(v, __fadd_rn(__fmul_rn(rp.frequency_penalty, count), rp.presence_penalty));
    }
    __syncthreads();
  }
}

// Step 5 for T > 0 with a finite maximum: the host's FilteredDistribution / SampleUnfiltered
// followed by the draw.
__device__ int DrawToken(const float* x, int V, const SampleRowParams& rp, float max_value,
                         int argmax, Shared& sh) {
  const double inv_t = 1.0 / static_cast<double>(rp.temperature);
  const double mx = max_value;
  const double min_w = rp.min_p;
  // Kept after min_p: w > 0 and w >= min_p * max(p) (the maximum's weight is 1).
  auto mass = [=](float xi) -> u64 {
    const double w = exp((static_cast<double>(xi) - mx) * inv_t);
    return (w > 0 && w >= min_w) ? __double2ull_rn(w * kMassScale) : 0ull;
  };
  auto kept = [=](float xi) -> u64 {
    const double w = exp((static_cast<double>(xi) - mx) * inv_t);
    return (w > 0 && w >= min_w) ? 1ull : 0ull;
  };
  const Bound all{0xffffffffu, INT_MAX};
  // One pass for the kept mass and (only when top_k is set) the kept count.
  u64 local_count = 0, local_mass = 0;
  for (int i = threadIdx.x; i < V; i += kThreads) {
    const double w = exp((static_cast<double>(x[i]) - mx) * inv_t);  // as in mass / kept
    if (w > 0 && w >= min_w) {
      local_mass += __double2ull_rn(w * kMassScale);
      ++local_count;
    }
  }
  const u64 kept_mass = BlockSumU64(local_mass, sh);
  const u64 n_kept = rp.top_k > 0 ? BlockSumU64(local_count, sh) : 0;
  const bool top_k = rp.top_k > 0 && static_cast<u64>(rp.top_k) < n_kept;
  const bool top_p = rp.top_p < 1.0f;
  if (!top_k && !top_p) {
    // Draw in token-id order.
    const u64 total = kept_mass;
    const double target = rp.uniform * static_cast<double>(total);
    const Pick p = OrderedPick(
        x, V, [](uint32_t, int) { return true; }, mass, 0,
        [=](u64 c) { return static_cast<double>(c) > target; }, sh);
    return p.found ? p.id : argmax;
  }
  // Most likely first.
  Bound bound = all;
  if (top_k) {
    const Pick p = Select(x, V, all, kept, static_cast<double>(rp.top_k), false, sh);
    if (!p.found) return argmax;  // cannot happen: top_k < n_kept
    bound = Bound{p.key, p.id};
  }
  u64 total = top_k ? SumWithin(x, V, bound, mass, sh) : kept_mass;
  if (top_p) {
    const Pick p = Select(x, V, bound, mass,
                          static_cast<double>(rp.top_p) * static_cast<double>(total), false, sh);
    if (p.found) {
      bound = Bound{p.key, p.id};
      total = p.cum;
    }
  }
  const Pick p = Select(x, V, bound, mass, rp.uniform * static_cast<double>(total), true, sh);
  if (p.found) return p.id;
  return bound.id == INT_MAX ? argmax : bound.id;  // the host's "last kept token"
}

__global__ void __launch_bounds__(kThreads) SampleKernel(SampleParams p) {
  PdlLaunchDependents();
  PdlWait();  // before any read of earlier kernels' outputs or global write (kernels/cuda/pdl.cuh)
  __shared__ Shared sh;
  const int row = blockIdx.x;
  const SampleRowParams rp = p.rows[row];
  if (!rp.active) return;
  const int V = p.vocab_size;
  float* x = p.logits + static_cast<size_t>(row) * V;  // [V]

  ProcessRow(x, V, rp, p.entries);
  float max_value;
  int argmax;
  BlockArgMax(x, V, sh, &max_value, &argmax);
  int token = argmax;
  if (rp.temperature > 0.f && isfinite(max_value))
    token = DrawToken(x, V, rp, max_value, argmax, sh);

  if (rp.logprobs >= 0 && p.logprobs != nullptr) {
    const double mx = max_value;
    double local = 0;
    for (int i = threadIdx.x; i < V; i += kThreads) local += exp(static_cast<double>(x[i]) - mx);
    const double lse = mx + log(BlockSumF64(local, sh));
    SampleRowLogprobs* out = p.logprobs + row;
    const int n = min(min(static_cast<int>(rp.logprobs), kMaxTopLogprobs), V);
    if (n > 0) {
      const Pick last = Select(
          x, V, Bound{0xffffffffu, INT_MAX}, [](float) { return 1ull; }, n, false, sh);
      if (threadIdx.x == 0) sh.top_n = 0;
      __syncthreads();
      const Bound top{last.key, last.id};
      for (int i = threadIdx.x; i < V && last.found; i += kThreads) {
        const uint32_t k = OrderKey(x[i]);
        if (!InSet(k, i, top)) continue;
        const int s = atomicAdd(&sh.top_n, 1);
        if (s < kMaxTopLogprobs) sh.top_key[s] = k, sh.top_id[s] = i;
      }
      __syncthreads();
      if (threadIdx.x == 0) {
        const int m = min(sh.top_n, n);
        for (int a = 1; a < m; ++a) {  // insertion sort by (key, id)
          const uint32_t k = sh.top_key[a];
          const int id = sh.top_id[a];
          int b = a - 1;
          while (b >= 0 && (sh.top_key[b] > k || (sh.top_key[b] == k && sh.top_id[b] > id))) {
            sh.top_key[b + 1] = sh.top_key[b];
            sh.top_id[b + 1] = sh.top_id[b];
            --b;
          }
          sh.top_key[b + 1] = k;
          sh.top_id[b + 1] = id;
        }
        for (int a = 0; a < m; ++a) {
          out->top_ids[a] = sh.top_id[a];
          out->top_logprobs[a] = static_cast<float>(static_cast<double>(x[sh.top_id[a]]) - lse);
        }
        out->n_top = m;
      }
    } else if (threadIdx.x == 0) {
      out->n_top = 0;
    }
    if (threadIdx.x == 0) {
      out->token = token;
      out->logprob = static_cast<float>(static_cast<double>(x[token]) - lse);
    }
  }
  if (threadIdx.x == 0) p.tokens[row] = token;
}

}  // namespace

absl::Status SampleRows(const SampleParams& p, Stream stream) {
  if (p.n_rows < 0) return absl::InvalidArgumentError(absl::StrCat("n_rows = ", p.n_rows));
  if (p.n_rows == 0) return absl::OkStatus();
  // Fixed-point masses: vocab_size * 2^44 must fit in 64 bits.
  if (p.vocab_size < 1 || p.vocab_size > (1 << 19))
    return absl::InvalidArgumentError(
        absl::StrCat("vocab_size = ", p.vocab_size, " is outside [1, 524288]"));
  if (p.logits == nullptr || p.rows == nullptr || p.tokens == nullptr)
    return absl::InvalidArgumentError("SampleRows: logits, rows and tokens must be set");
  LaunchPdl(SampleKernel, p.n_rows, kThreads, 0, stream, p);
  BMS_CUDA_CHECK_LAUNCH("SampleKernel");
  return absl::OkStatus();
}

}  // namespace bms::cuda
