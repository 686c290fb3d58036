// Small-M dense projection y[m, n] = x[m, k] @ w[n, k]^T for m <= 8 (decode), one kernel and no
// split-K reduce (kernels/cuda/gemm.h: SmallMLinear). A group of G threads (G a power of two,
// 1..256) owns one output column: its lanes stream the column's weight row with 16-byte (or
// 4-byte when k or the strides are not 16-byte multiples) loads, each load used for all m rows
// of x (read through L1), fp32 accumulation, then a fixed-order reduction over the group
// (shuffles, and shared memory across warps when G > 32): deterministic, one pass over the
// weights. G is chosen per shape so that each thread has a few loads in flight and the grid
// covers every SM.
#include <cuda_runtime.h>

#include <algorithm>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/pdl.cuh"

namespace bms::cuda {
namespace {

constexpr int kGemvThreads = 256;
constexpr int kUnroll = 4;  // weight loads in flight per thread

struct GemvArgs {
  int m, n, k, group;
  const void* x;
  int64_t x_stride;
  const void* w;
  void* y;
  int64_t y_stride;
};

// kBytes (16 or 4) bytes of T as floats.
template <typename T, int kBytes>
struct Vec {
  static constexpr int kN = kBytes / sizeof(T);
  float f[kN];
  __device__ __forceinline__ void Load(const T* p) {
    if constexpr (kBytes == 16) {
      const uint4 u = __ldg(reinterpret_cast<const uint4*>(p));
      Unpack(&u.x, 4);
    } else {
      const uint32_t u = __ldg(reinterpret_cast<const unsigned int*>(p));
      Unpack(&u, 1);
    }
  }
  __device__ __forceinline__ void Unpack(const uint32_t* words, int n_words) {
#pragma unroll
    for (int i = 0; i < kBytes / 4; ++i) {
      if constexpr (sizeof(T) == 4) {
        f[i] = __uint_as_float(words[i]);
      } else {
        const float2 v = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&words[i]));
        f[2 * i] = v.x;
        f[2 * i + 1] = v.y;
      }
    }
  }
};

template <typename T, typename TO, int kBytes, int kMaxM>
__global__ void __launch_bounds__(kGemvThreads) SmallMGemvKernel(GemvArgs a) {
  using V = Vec<T, kBytes>;
  __shared__ float red[kGemvThreads / 32][kMaxM];
  const int tid = threadIdx.x, G = a.group;
  const int g = tid & (G - 1);
  const int col = blockIdx.x * (kGemvThreads / G) + tid / G;
  const int n_vec = a.k / V::kN;
  float acc[kMaxM];
#pragma unroll
  for (int r = 0; r < kMaxM; ++r) acc[r] = 0.f;
  PdlLaunchDependents();
  const T* __restrict__ wrow = static_cast<const T*>(a.w) + static_cast<int64_t>(col) * a.k;
  // The first kUnroll weight loads are issued before PdlWait (weights only: they overlap the
  // previous kernel's drain under programmatic dependent launch, kernels/cuda/pdl.cuh).
  V wv[kUnroll];
  if (col < a.n) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u)
      if (g + u * G < n_vec) wv[u].Load(wrow + (g + u * G) * V::kN);
  }
  PdlWait();  // x is the previous kernel's output
  if (col < a.n) {
    const T* __restrict__ x = static_cast<const T*>(a.x);
    // kUnroll weight loads per thread issued before any use (memory-level parallelism even
    // when a thread has only 2-3 loads in all).
    for (int kv0 = g; kv0 < n_vec; kv0 += kUnroll * G) {
      if (kv0 != g) {
#pragma unroll
        for (int u = 0; u < kUnroll; ++u)
          if (kv0 + u * G < n_vec) wv[u].Load(wrow + (kv0 + u * G) * V::kN);
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int kv = kv0 + u * G;
        if (kv < n_vec) {
#pragma unroll
          for (int r = 0; r < kMaxM; ++r) {
            if (r < a.m) {
              V xv;
              xv.Load(x + r * a.x_stride + kv * V::kN);
#pragma unroll
              for (int e = 0; e < V::kN; ++e) acc[r] = fmaf(xv.f[e], wv[u].f[e], acc[r]);
            }
          }
        }
      }
    }
  }
  const int width = G < 32 ? G : 32;
#pragma unroll
  for (int r = 0; r < kMaxM; ++r)
    for (int o = width / 2; o > 0; o >>= 1) acc[r] += __shfl_xor_sync(0xffffffffu, acc[r], o);
  if (G > 32) {
    const int warp = tid / 32;
    if ((tid & 31) == 0) {
#pragma unroll
      for (int r = 0; r < kMaxM; ++r) red[warp][r] = acc[r];
    }
    __syncthreads();
    if (g == 0) {
#pragma unroll
      for (int r = 0; r < kMaxM; ++r) {
        float s = 0.f;
        for (int w = 0; w < G / 32; ++w) s += red[warp + w][r];
        acc[r] = s;
      }
    }
  }
  if (g == 0 && col < a.n) {
    TO* y = static_cast<TO*>(a.y);
#pragma unroll
    for (int r = 0; r < kMaxM; ++r)
      if (r < a.m) y[r * a.y_stride + col] = FromF32<TO>(acc[r]);
  }
}

int SmCount() {
  static const int sms = [] {
    int dev = 0, n = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
      n = 132;
    return std::max(n, 1);
  }();
  return sms;
}

bool Aligned(const void* p, int bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

// 16 when every row start of x and w is 16-byte aligned, else 4 (else 0: not supported).
int VecBytes(const LinearParams& p) {
  const int e = DTypeBytes(p.in_dtype);
  const int64_t xs = p.x_stride ? p.x_stride : p.k;
  for (int b : {16, 4}) {
    if (b < e) continue;
    if ((static_cast<int64_t>(p.k) * e) % b == 0 && (xs * e) % b == 0 && Aligned(p.x, b) &&
        Aligned(p.w, b))
      return b;
  }
  return 0;
}

template <typename T, typename TO, int kBytes>
void LaunchGemv(const GemvArgs& a, int blocks, Stream stream) {
  if (a.m == 1)
    LaunchPdl(SmallMGemvKernel<T, TO, kBytes, 1>, blocks, kGemvThreads, 0, stream, a);
  else if (a.m <= 4)
    LaunchPdl(SmallMGemvKernel<T, TO, kBytes, 4>, blocks, kGemvThreads, 0, stream, a);
  else
    LaunchPdl(SmallMGemvKernel<T, TO, kBytes, 8>, blocks, kGemvThreads, 0, stream, a);
}

}  // namespace

bool SmallMLinearSupported(const LinearParams& p) {
  if (p.m < 1 || p.m > kSmallMMaxRows || p.n <= 0 || p.k <= 0) return false;
  if (p.out_dtype != p.in_dtype && p.out_dtype != DType::kF32) return false;
  // Only small weights (x_proj, dt_proj): on the H100 this kernel streamed in_proj (17 MB) at
  // 1.4 TB/s and out_proj at 1.0 TB/s, slower than cuBLASLt's GEMV (bench/NOTES.md).
  const int64_t w_bytes = static_cast<int64_t>(p.n) * p.k * DTypeBytes(p.in_dtype);
  if (w_bytes > kSmallMMaxWeightBytes) return false;
  return VecBytes(p) != 0;
}

absl::Status SmallMLinear(const LinearParams& p, Stream stream) {
  if (!p.x || !p.w || !p.y || !SmallMLinearSupported(p))
    return absl::InvalidArgumentError("SmallMLinear: shape, dtype or alignment not supported");
  const int vb = VecBytes(p);
  const int per_vec = vb / DTypeBytes(p.in_dtype);
  const int n_vec = p.k / per_vec;
  // About 4 loads per thread, then more threads per column until the grid covers 2x the SMs.
  int group = 1;
  while (group < kGemvThreads && group * 4 < n_vec) group *= 2;
  while (group < kGemvThreads && group < n_vec &&
         static_cast<int64_t>(p.n) * group / kGemvThreads < 2 * SmCount())
    group *= 2;
  const int cols_per_block = kGemvThreads / group;
  const int blocks = CeilDiv(p.n, cols_per_block);
  const GemvArgs a{p.m,   p.n, p.k,
                   group, p.x, p.x_stride ? p.x_stride : p.k,
                   p.w,   p.y, p.y_stride ? p.y_stride : p.n};
  const bool f32_out = p.out_dtype == DType::kF32;
  if (p.in_dtype == DType::kF32) {
    if (vb == 16)
      LaunchGemv<float, float, 16>(a, blocks, stream);
    else
      LaunchGemv<float, float, 4>(a, blocks, stream);
  } else if (f32_out) {
    if (vb == 16)
      LaunchGemv<bf16, float, 16>(a, blocks, stream);
    else
      LaunchGemv<bf16, float, 4>(a, blocks, stream);
  } else {
    if (vb == 16)
      LaunchGemv<bf16, bf16, 16>(a, blocks, stream);
    else
      LaunchGemv<bf16, bf16, 4>(a, blocks, stream);
  }
  BMS_CUDA_CHECK_LAUNCH("SmallMLinear");
  return absl::OkStatus();
}

}  // namespace bms::cuda
