// Register-staged residual add + RMSNorm / LayerNorm of one row by one block, shared by the fast
// AddNorm kernel (elementwise.cu) and the fused norm + router kernel (router_fused.cu). Each
// thread holds kChunks float4 slices of the row (slice c = threadIdx.x + j * kThreads), so the
// row is read once with 16-byte loads, all loads of a thread are issued before any store, and
// the only block-wide step is one (RMS) or two (LayerNorm) sums. Internal to kernels/cuda/.
#pragma once

#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/pdl.cuh"

namespace bms::cuda {

__device__ __forceinline__ float4 Load4(const float* p) {
  return __ldg(reinterpret_cast<const float4*>(p));
}
__device__ __forceinline__ float4 Load4(const bf16* p) {
  const uint2 u = __ldg(reinterpret_cast<const uint2*>(p));
  const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u.x));
  const float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u.y));
  return make_float4(a.x, a.y, b.x, b.y);
}
__device__ __forceinline__ void Store4(float* p, float4 v) { *reinterpret_cast<float4*>(p) = v; }
__device__ __forceinline__ void Store4(bf16* p, float4 v) {
  __nv_bfloat162 a = __floats2bfloat162_rn(v.x, v.y), b = __floats2bfloat162_rn(v.z, v.w);
  uint2 u;
  u.x = *reinterpret_cast<uint32_t*>(&a);
  u.y = *reinterpret_cast<uint32_t*>(&b);
  *reinterpret_cast<uint2*>(p) = u;
}

// Sum over the block (kThreads threads, multiple of 32); scratch holds kThreads / 32 floats.
// Every thread gets the total, summed in a fixed order (deterministic).
template <int kThreads>
__device__ __forceinline__ float BlockSumFixed(float v, float* scratch) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float s = 0.f;
#pragma unroll
  for (int w = 0; w < kThreads / 32; ++w) s += scratch[w];
  return s;
}

// Normalizes row `i` of p (AddNormParams math); on return v[j] holds the fp32 normalized values
// of slice threadIdx.x + j * kThreads (slices past d_model / 4 are zero) and out row i is
// written in T. Residual row written back when p.write_residual.
template <typename T, bool kLayerNorm, int kThreads, int kChunks>
__device__ __forceinline__ void NormRow(const AddNormParams& p, int i, float4 (&v)[kChunks],
                                        float* scratch) {
  const int d = p.d_model, d4 = d / 4;
  float4 w[kChunks], b[kChunks];
  float sum = 0.f;
  // Weights first: they may be read before the previous kernel completes (kernels/cuda/pdl.cuh).
#pragma unroll
  for (int j = 0; j < kChunks; ++j) {
    const int c = threadIdx.x + j * kThreads;
    if (c < d4) {
      w[j] = Load4(p.weight + 4 * c);
      if (kLayerNorm && p.bias) b[j] = Load4(p.bias + 4 * c);
    }
  }
  PdlWait();  // rows, residual and h are earlier kernels' outputs
  const int64_t src = p.rows ? p.rows[i] : i;
  const T* __restrict__ h = p.h ? static_cast<const T*>(p.h) + src * d : nullptr;
  float* __restrict__ res = p.residual + src * d;
#pragma unroll
  for (int j = 0; j < kChunks; ++j) {
    const int c = threadIdx.x + j * kThreads;
    v[j] = make_float4(0.f, 0.f, 0.f, 0.f);
    if (c < d4 && !p.first_layer) v[j] = Load4(res + 4 * c);
  }
  if (h) {
#pragma unroll
    for (int j = 0; j < kChunks; ++j) {
      const int c = threadIdx.x + j * kThreads;
      if (c < d4) {
        const float4 x = Load4(h + 4 * c);
        v[j].x += x.x;
        v[j].y += x.y;
        v[j].z += x.z;
        v[j].w += x.w;
      }
    }
  }
#pragma unroll
  for (int j = 0; j < kChunks; ++j) {
    const int c = threadIdx.x + j * kThreads;
    if (c < d4 && p.write_residual) Store4(res + 4 * c, v[j]);
    if (kLayerNorm)
      sum += (v[j].x + v[j].y) + (v[j].z + v[j].w);
    else
      sum += (v[j].x * v[j].x + v[j].y * v[j].y) + (v[j].z * v[j].z + v[j].w * v[j].w);
  }
  sum = BlockSumFixed<kThreads>(sum, scratch);
  float mean = 0.f, inv;
  if (kLayerNorm) {
    mean = sum / d;
    float var = 0.f;
#pragma unroll
    for (int j = 0; j < kChunks; ++j) {
      const int c = threadIdx.x + j * kThreads;
      if (c < d4) {
        const float a = v[j].x - mean, bb = v[j].y - mean, cc = v[j].z - mean, dd = v[j].w - mean;
        var += (a * a + bb * bb) + (cc * cc + dd * dd);
      }
    }
    var = BlockSumFixed<kThreads>(var, scratch) / d;
    inv = 1.0f / sqrtf(var + p.eps);
  } else {
    inv = 1.0f / sqrtf(sum / d + p.eps);
  }
  T* __restrict__ out = static_cast<T*>(p.out) + static_cast<int64_t>(i) * d;
#pragma unroll
  for (int j = 0; j < kChunks; ++j) {
    const int c = threadIdx.x + j * kThreads;
    if (c < d4) {
      float4 y;
      y.x = (v[j].x - mean) * inv * w[j].x;
      y.y = (v[j].y - mean) * inv * w[j].y;
      y.z = (v[j].z - mean) * inv * w[j].z;
      y.w = (v[j].w - mean) * inv * w[j].w;
      if (kLayerNorm && p.bias) {
        y.x += b[j].x;
        y.y += b[j].y;
        y.z += b[j].z;
        y.w += b[j].w;
      }
      Store4(out + 4 * c, y);
      v[j] = y;
    } else {
      v[j] = make_float4(0.f, 0.f, 0.f, 0.f);
    }
  }
}

inline bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Whether the register-staged row kernels take these params (else the one-block-per-row
// shared-memory kernel runs).
inline bool FastNormShape(const AddNormParams& p, int max_d) {
  return p.d_model % 4 == 0 && p.d_model <= max_d && Aligned16(p.residual) && Aligned16(p.weight) &&
         (!p.bias || Aligned16(p.bias)) && (!p.h || Aligned16(p.h)) && Aligned16(p.out);
}

}  // namespace bms::cuda
