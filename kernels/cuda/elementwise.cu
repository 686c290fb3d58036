// Embedding gather, fused residual add + RMSNorm / LayerNorm, and bias add (kernels/cuda/ops.h).
// AddNorm has two kernels: the register-staged one (norm_row.cuh: one block of kFastThreads
// per row, 16-byte loads, every load issued before any store) for d_model % 4 == 0 and aligned
// rows, and the original shared-memory one (also selected by BMS_LEGACY_KERNELS=1).
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/norm_row.cuh"
#include "kernels/cuda/pdl.cuh"

namespace bms::cuda {
namespace {

constexpr int kNormThreads = 256;

template <typename T>
__global__ void EmbeddingKernel(const int32_t* __restrict__ tokens, const T* __restrict__ table,
                                T* __restrict__ out, int d_model) {
  PdlLaunchDependents();
  PdlWait();  // tokens and out may belong to earlier kernels
  const int64_t t = blockIdx.x;
  const T* src = table + static_cast<int64_t>(tokens[t]) * d_model;
  T* dst = out + t * d_model;
  for (int i = threadIdx.x; i < d_model; i += blockDim.x) dst[i] = src[i];
}

// Block-wide sum over kNormThreads threads.
__device__ float BlockSum(float v, float* scratch) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float s = 0.f;
  for (int w = 0; w < kNormThreads / 32; ++w) s += scratch[w];
  return s;
}

// One block per output row; the row is staged in dynamic shared memory (d_model floats).
template <typename T, bool kLayerNorm>
__global__ void __launch_bounds__(kNormThreads) AddNormKernel(AddNormParams p) {
  extern __shared__ float row[];
  __shared__ float scratch[kNormThreads / 32];
  PdlLaunchDependents();
  PdlWait();  // rows, residual and h are earlier kernels' outputs
  const int i = blockIdx.x;
  const int64_t src = p.rows ? p.rows[i] : i;
  const int d = p.d_model;
  const T* h = p.h ? static_cast<const T*>(p.h) + src * d : nullptr;
  float* res = p.residual + src * d;
  float sum = 0.f;
  for (int c = threadIdx.x; c < d; c += kNormThreads) {
    float r = p.first_layer ? 0.f : res[c];
    if (h) r = p.first_layer ? ToF32(h[c]) : r + ToF32(h[c]);
    row[c] = r;
    if (p.write_residual) res[c] = r;
    sum += kLayerNorm ? r : r * r;
  }
  sum = BlockSum(sum, scratch);
  float mean = 0.f, inv;
  if (kLayerNorm) {
    mean = sum / d;
    float var = 0.f;
    for (int c = threadIdx.x; c < d; c += kNormThreads) {
      const float x = row[c] - mean;
      var += x * x;
    }
    var = BlockSum(var, scratch) / d;
    inv = 1.0f / sqrtf(var + p.eps);
  } else {
    inv = 1.0f / sqrtf(sum / d + p.eps);
  }
  T* out = static_cast<T*>(p.out) + static_cast<int64_t>(i) * d;
  for (int c = threadIdx.x; c < d; c += kNormThreads) {
    float y = (row[c] - mean) * inv * p.weight[c];
    if (kLayerNorm && p.bias) y += p.bias[c];
    out[c] = FromF32<T>(y);
    if (p.out_f32) p.out_f32[static_cast<int64_t>(i) * d + c] = y;
  }
}

constexpr int kFastThreads = 128;
constexpr int kFastMaxChunks = 8;  // d_model <= 4 * 128 * 8 = 4096

template <typename T, bool kLayerNorm, int kChunks>
__global__ void __launch_bounds__(kFastThreads) FastAddNormKernel(AddNormParams p) {
  __shared__ float scratch[kFastThreads / 32];
  float4 v[kChunks];
  const int i = blockIdx.x;
  PdlLaunchDependents();
  NormRow<T, kLayerNorm, kFastThreads, kChunks>(p, i, v, scratch);  // runs PdlWait
  if (p.out_f32) {
    float* out = p.out_f32 + static_cast<int64_t>(i) * p.d_model;
#pragma unroll
    for (int j = 0; j < kChunks; ++j) {
      const int c = threadIdx.x + j * kFastThreads;
      if (c < p.d_model / 4) Store4(out + 4 * c, v[j]);
    }
  }
}

template <typename T, bool kLayerNorm>
void LaunchFastAddNorm(const AddNormParams& p, int chunks, Stream stream) {
  switch (chunks) {
#define BMS_FAST_NORM_CASE(C)                                                      \
  case C:                                                                          \
    LaunchPdl(FastAddNormKernel<T, kLayerNorm, C>, p.n_rows, kFastThreads, 0, stream, p); \
    break;
    BMS_FAST_NORM_CASE(1)
    BMS_FAST_NORM_CASE(2)
    BMS_FAST_NORM_CASE(3)
    BMS_FAST_NORM_CASE(4)
    BMS_FAST_NORM_CASE(6)
    default:
      LaunchPdl(FastAddNormKernel<T, kLayerNorm, kFastMaxChunks>, p.n_rows, kFastThreads, 0, stream,
                p);
#undef BMS_FAST_NORM_CASE
  }
}

template <typename T>
__global__ void AddBiasKernel(T* y, int64_t stride, int n, const float* bias) {
  const int64_t r = blockIdx.x;
  for (int j = threadIdx.x; j < n; j += blockDim.x)
    y[r * stride + j] = FromF32<T>(ToF32(y[r * stride + j]) + bias[j]);
}

template <bool kLayerNorm>
absl::Status LaunchAddNorm(const AddNormParams& p, Stream stream) {
  if (p.n_rows < 0 || p.d_model <= 0 || !p.residual || !p.weight || !p.out)
    return absl::InvalidArgumentError("AddNorm: bad sizes or null pointer");
  if (p.write_residual && p.rows)
    return absl::InvalidArgumentError("AddNorm: write_residual needs rows == null");
  if (p.first_layer && !p.h) return absl::InvalidArgumentError("AddNorm: first_layer needs h");
  if (p.n_rows == 0) return absl::OkStatus();
  if (!LegacyKernels() && FastNormShape(p, 4 * kFastThreads * kFastMaxChunks) &&
      (!p.out_f32 || Aligned16(p.out_f32))) {
    int chunks = CeilDiv(p.d_model / 4, kFastThreads);
    if (chunks == 5) chunks = 6;
    if (chunks > 6) chunks = kFastMaxChunks;
    DispatchDType(p.dtype, [&](auto t) {
      LaunchFastAddNorm<decltype(t), kLayerNorm>(p, chunks, stream);
      return 0;
    });
    BMS_CUDA_CHECK_LAUNCH("AddNorm");
    return absl::OkStatus();
  }
  const size_t smem = sizeof(float) * p.d_model;
  if (smem > 48 * 1024) return absl::InvalidArgumentError("AddNorm: d_model too large");
  DispatchDType(p.dtype, [&](auto t) {
    using T = decltype(t);
    LaunchPdl(AddNormKernel<T, kLayerNorm>, p.n_rows, kNormThreads, smem, stream, p);
    return 0;
  });
  BMS_CUDA_CHECK_LAUNCH("AddNorm");
  return absl::OkStatus();
}

}  // namespace

bool LegacyKernels() {
  static const bool legacy = [] {
    const char* v = std::getenv("BMS_LEGACY_KERNELS");
    return v != nullptr && std::strcmp(v, "1") == 0;
  }();
  return legacy;
}

absl::Status Embedding(const EmbeddingParams& p, Stream stream) {
  if (p.n_tokens < 0 || p.d_model <= 0 || !p.tokens || !p.table || !p.out)
    return absl::InvalidArgumentError("Embedding: bad sizes or null pointer");
  if (p.n_tokens == 0) return absl::OkStatus();
  DispatchDType(p.dtype, [&](auto t) {
    using T = decltype(t);
    LaunchPdl(EmbeddingKernel<T>, p.n_tokens, 128, 0, stream, p.tokens,
              static_cast<const T*>(p.table), static_cast<T*>(p.out), p.d_model);
    return 0;
  });
  BMS_CUDA_CHECK_LAUNCH("Embedding");
  return absl::OkStatus();
}

absl::Status AddRmsNorm(const AddNormParams& p, Stream stream) {
  return LaunchAddNorm<false>(p, stream);
}
absl::Status AddLayerNorm(const AddNormParams& p, Stream stream) {
  return LaunchAddNorm<true>(p, stream);
}

absl::Status AddBias(int m, int n, DType dtype, void* y, int64_t y_stride, const float* bias,
                     Stream stream) {
  if (m < 0 || n <= 0 || !y || !bias) return absl::InvalidArgumentError("AddBias: bad args");
  if (m == 0) return absl::OkStatus();
  if (y_stride == 0) y_stride = n;
  DispatchDType(dtype, [&](auto t) {
    using T = decltype(t);
    AddBiasKernel<T><<<m, 256, 0, stream>>>(static_cast<T*>(y), y_stride, n, bias);
    return 0;
  });
  BMS_CUDA_CHECK_LAUNCH("AddBias");
  return absl::OkStatus();
}

}  // namespace bms::cuda
