// Mamba mixer's sequence ops over a packed varlen batch, slot-indexed (kernels/cuda/ops.h):
// causal depthwise conv1d (+ bias + SiLU) with its window state, and the selective scan with
// its SSM state. Decode is the one-token-per-sequence case of the same kernels.
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_util.cuh"

namespace bms::cuda {
namespace {

constexpr int kConvThreads = 128;
constexpr int kScanThreads = 32;  // one warp: more blocks (SMs) for one long prompt
constexpr int kScanState = 16;    // d_state held in registers
constexpr int kScanChunk = 32;    // time steps of B and C staged in shared memory
constexpr int kScanPrefetch = 8;  // time steps of u, dt, z loaded ahead

// The sequence that owns packed token t: the largest b with cu_seqlens[b] <= t.
__device__ __forceinline__ int FindSeq(const int32_t* cu_seqlens, int batch, int t) {
  int lo = 0, hi = batch - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (cu_seqlens[mid] <= t)
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}

// One block per packed token; threads stride over channels. Reads the old window state only.
template <typename T, typename S>
__global__ void __launch_bounds__(kConvThreads) ConvOutKernel(CausalConv1dParams p) {
  const int t = blockIdx.x;
  const int b = FindSeq(p.cu_seqlens, p.batch, t);
  const int start = p.cu_seqlens[b];
  const int pos = t - start;
  const bool init = p.has_initial_state && p.has_initial_state[b];
  const int w = p.d_conv;
  const S* state = static_cast<const S*>(p.conv_state) + p.slots[b] * p.conv_state_slot_stride;
  const T* x = static_cast<const T*>(p.x);
  T* out = static_cast<T*>(p.out) + static_cast<int64_t>(t) * p.out_stride;
  for (int c = threadIdx.x; c < p.d_inner; c += kConvThreads) {
    float acc = 0.f;
    for (int k = 0; k < w; ++k) {
      const int q = pos - (w - 1) + k;  // input position relative to the chunk start
      float v;
      if (q >= 0)
        v = ToF32(x[static_cast<int64_t>(start + q) * p.x_stride + c]);
      else
        v = init ? ToF32(state[c * (w - 1) + q + w - 1]) : 0.f;
      acc += v * p.weight[c * w + k];
    }
    if (p.bias) acc += p.bias[c];
    out[c] = FromF32<T>(p.silu ? SiluF(acc) : acc);
  }
}

// One thread per (sequence, channel): the new window = the last d_conv-1 inputs. Writing
// index j reads old index len + j > j, so the in-place forward pass is safe.
template <typename T, typename S>
__global__ void __launch_bounds__(kConvThreads) ConvStateKernel(CausalConv1dParams p) {
  const int c = blockIdx.x * kConvThreads + threadIdx.x;
  const int b = blockIdx.y;
  if (c >= p.d_inner) return;
  const int start = p.cu_seqlens[b];
  const int len = p.cu_seqlens[b + 1] - start;
  if (len == 0) return;
  const bool init = p.has_initial_state && p.has_initial_state[b];
  const int w1 = p.d_conv - 1;
  S* state = static_cast<S*>(p.conv_state) + p.slots[b] * p.conv_state_slot_stride + c * w1;
  const T* x = static_cast<const T*>(p.x);
  for (int j = 0; j < w1; ++j) {
    const int q = len - w1 + j;
    float v;
    if (q >= 0)
      v = ToF32(x[static_cast<int64_t>(start + q) * p.x_stride + c]);
    else
      v = init ? ToF32(state[q + w1]) : 0.f;
    state[j] = FromF32<S>(v);
  }
}

// Grid (channel blocks, batch); one thread per channel keeps the 16 fp32 states in registers
// and walks the sequence's tokens in order; B and C rows are staged through shared memory.
template <typename T, typename S>
__global__ void __launch_bounds__(kScanThreads) ScanKernel(SelectiveScanParams p) {
  __shared__ float Bs[kScanChunk][kScanState];
  __shared__ float Cs[kScanChunk][kScanState];
  const int c = blockIdx.x * kScanThreads + threadIdx.x;
  const int b = blockIdx.y;
  const int start = p.cu_seqlens[b];
  const int len = p.cu_seqlens[b + 1] - start;
  if (len == 0) return;  // block-uniform
  const bool active = c < p.d_inner;
  const bool init = p.has_initial_state && p.has_initial_state[b];
  S* state = static_cast<S*>(p.ssm_state) + p.slots[b] * p.ssm_state_slot_stride +
             static_cast<int64_t>(c) * kScanState;
  float h[kScanState], A[kScanState];
  float dbias = 0.f, Dc = 0.f;
  if (active) {
#pragma unroll
    for (int n = 0; n < kScanState; ++n) {
      h[n] = init ? ToF32(state[n]) : 0.f;
      A[n] = p.A[c * kScanState + n];
    }
    if (p.delta_bias) dbias = p.delta_bias[c];
    if (p.D) Dc = p.D[c];
  }
  const T* U = static_cast<const T*>(p.u);
  const T* Dt = static_cast<const T*>(p.delta);
  const T* Bg = static_cast<const T*>(p.B);
  const T* Cg = static_cast<const T*>(p.C);
  const T* Z = static_cast<const T*>(p.z);
  T* Out = static_cast<T*>(p.out);
  for (int t0 = 0; t0 < len; t0 += kScanChunk) {
    const int n_chunk = min(kScanChunk, len - t0);
    __syncthreads();
    for (int i = threadIdx.x; i < n_chunk * kScanState; i += kScanThreads) {
      const int64_t row = start + t0 + i / kScanState;
      Bs[i / kScanState][i % kScanState] = ToF32(Bg[row * p.B_stride + i % kScanState]);
      Cs[i / kScanState][i % kScanState] = ToF32(Cg[row * p.C_stride + i % kScanState]);
    }
    __syncthreads();
    if (!active) continue;
    // Per-step inputs are loaded kScanPrefetch steps at a time so their loads overlap; the
    // recurrence itself runs in time order with the same arithmetic as the reference.
    for (int s0 = 0; s0 < n_chunk; s0 += kScanPrefetch) {
      float uv[kScanPrefetch], dv[kScanPrefetch], zv[kScanPrefetch];
#pragma unroll
      for (int i = 0; i < kScanPrefetch; ++i) {
        uv[i] = dv[i] = zv[i] = 0.f;
        if (s0 + i < n_chunk) {
          const int64_t row = start + t0 + s0 + i;
          uv[i] = ToF32(U[row * p.u_stride + c]);
          dv[i] = ToF32(Dt[row * p.delta_stride + c]);
          if (Z) zv[i] = ToF32(Z[row * p.z_stride + c]);
        }
      }
#pragma unroll
      for (int i = 0; i < kScanPrefetch; ++i) {
        if (s0 + i >= n_chunk) break;
        const int tt = s0 + i;
        const float u = uv[i];
        float dt = dv[i] + dbias;
        if (p.delta_softplus) dt = SoftplusF(dt);
        const float du = dt * u;
        float y = 0.f;
#pragma unroll
        for (int n = 0; n < kScanState; ++n) {
          h[n] = h[n] * expf(dt * A[n]) + du * Bs[tt][n];
          y += h[n] * Cs[tt][n];
        }
        y += Dc * u;
        if (Z) y *= SiluF(zv[i]);
        Out[(start + t0 + tt) * p.out_stride + c] = FromF32<T>(y);
      }
    }
  }
  if (active) {
#pragma unroll
    for (int n = 0; n < kScanState; ++n) state[n] = FromF32<S>(h[n]);
  }
}

}  // namespace

absl::Status CausalConv1dVarlen(const CausalConv1dParams& p_in, Stream stream) {
  CausalConv1dParams p = p_in;
  if (p.batch < 0 || p.n_tokens < 0 || p.d_inner <= 0 || p.d_conv < 2 || p.d_conv > 16 ||
      !p.cu_seqlens || !p.slots || !p.x || !p.weight || !p.out || !p.conv_state)
    return absl::InvalidArgumentError("CausalConv1dVarlen: bad sizes or null pointer");
  if (p.batch == 0) return absl::OkStatus();
  if (p.x_stride == 0) p.x_stride = p.d_inner;
  if (p.out_stride == 0) p.out_stride = p.d_inner;
  if (p.conv_state_slot_stride == 0) p.conv_state_slot_stride = int64_t{p.d_inner} * (p.d_conv - 1);
  DispatchDType(p.dtype, [&](auto t) {
    using T = decltype(t);
    return DispatchState(p.conv_state_dtype, [&](auto s) {
      using S = decltype(s);
      if (p.n_tokens > 0) ConvOutKernel<T, S><<<p.n_tokens, kConvThreads, 0, stream>>>(p);
      ConvStateKernel<T, S>
          <<<dim3(CeilDiv(p.d_inner, kConvThreads), p.batch), kConvThreads, 0, stream>>>(p);
      return 0;
    });
  });
  BMS_CUDA_CHECK_LAUNCH("CausalConv1dVarlen");
  return absl::OkStatus();
}

absl::Status SelectiveScanVarlen(const SelectiveScanParams& p_in, Stream stream) {
  SelectiveScanParams p = p_in;
  if (p.d_state != kScanState)
    return absl::InvalidArgumentError("SelectiveScanVarlen: d_state must be 16");
  if (p.batch < 0 || p.d_inner <= 0 || !p.cu_seqlens || !p.slots || !p.u || !p.delta || !p.A ||
      !p.B || !p.C || !p.out || !p.ssm_state)
    return absl::InvalidArgumentError("SelectiveScanVarlen: bad sizes or null pointer");
  if (p.batch == 0) return absl::OkStatus();
  if (p.batch > 65535) return absl::InvalidArgumentError("SelectiveScanVarlen: batch > 65535");
  if (p.u_stride == 0) p.u_stride = p.d_inner;
  if (p.delta_stride == 0) p.delta_stride = p.d_inner;
  if (p.B_stride == 0) p.B_stride = p.d_state;
  if (p.C_stride == 0) p.C_stride = p.d_state;
  if (p.z_stride == 0) p.z_stride = p.d_inner;
  if (p.out_stride == 0) p.out_stride = p.d_inner;
  if (p.ssm_state_slot_stride == 0) p.ssm_state_slot_stride = int64_t{p.d_inner} * p.d_state;
  DispatchDType(p.dtype, [&](auto t) {
    using T = decltype(t);
    return DispatchState(p.ssm_state_dtype, [&](auto s) {
      using S = decltype(s);
      ScanKernel<T, S>
          <<<dim3(CeilDiv(p.d_inner, kScanThreads), p.batch), kScanThreads, 0, stream>>>(p);
      return 0;
    });
  });
  BMS_CUDA_CHECK_LAUNCH("SelectiveScanVarlen");
  return absl::OkStatus();
}

}  // namespace bms::cuda
