// Mamba mixer's sequence ops over a packed varlen batch, slot-indexed (kernels/cuda/ops.h):
// causal depthwise conv1d (+ bias + SiLU) with its window state, and the selective scan with
// its SSM state. The launchers pick the decode kernels (kernels/cuda/mamba_decode.cu) or the
// prefill kernels (conv: kernels/cuda/scan_prefill.cu; scan: the parallel scan of
// kernels/cuda/scan_parallel.cu, else the chunked scan of scan_prefill.cu); the previous general
// kernels below remain the fallback for other shapes and the `legacy` / BMS_LEGACY_KERNELS=1
// choice.
#include <cstdlib>
#include <cstring>

#include "kernels/cuda/conv_scan_internal.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_util.cuh"

namespace bms::cuda {
namespace {

constexpr int kConvThreads = 128;
constexpr int kScanState = 16;    // d_state: one thread per (channel, state)
constexpr int kScanChannels = 8;  // channels per block
constexpr int kScanThreads = kScanState * kScanChannels;
constexpr int kScanChunk = 32;  // time steps staged in shared memory at a time

// Grid (packed token, channel group of kConvThreads). Reads the old window state only.
template <typename T, typename S>
__global__ void __launch_bounds__(kConvThreads) ConvOutKernel(CausalConv1dParams p) {
  const int t = blockIdx.x;
  const int b = OwnerSeq(p.cu_seqlens, p.batch, t);
  const int start = p.cu_seqlens[b];
  const int pos = t - start;
  const int slot = p.slots[b];  // < 0: a padding row with no state (reads zeros)
  const bool init = slot >= 0 && p.has_initial_state && p.has_initial_state[b];
  const int w = p.d_conv;
  const S* state =
      static_cast<const S*>(p.conv_state) + (init ? slot : 0) * p.conv_state_slot_stride;
  const T* x = static_cast<const T*>(p.x);
  T* out = static_cast<T*>(p.out) + static_cast<int64_t>(t) * p.out_stride;
  // Grid (tokens, channel groups): a decode step of a few tokens still spreads over many SMs.
  for (int c = blockIdx.y * kConvThreads + threadIdx.x; c < p.d_inner;
       c += kConvThreads * gridDim.y) {
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
  if (len == 0 || p.slots[b] < 0) return;  // a padding row (slot < 0) writes no state
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

// Grid (channel groups, batch); a block of 128 threads covers kScanChannels = 8 channels and one
// thread owns one (channel, state) pair: its fp32 state lives in a register for the whole
// sequence, and y = sum_n h[n] * C[n] is a 16-lane shuffle reduction. Per chunk of kScanChunk
// time steps the block stages B, C and the per-channel step inputs (dt after bias + softplus,
// dt * u, u, SiLU(z)) in shared memory, walks the steps in order, and writes the chunk's
// outputs back from shared memory.
template <typename T, typename S>
__global__ void __launch_bounds__(kScanThreads) ScanKernel(SelectiveScanParams p) {
  __shared__ float Bs[kScanChunk][kScanState];
  __shared__ float Cs[kScanChunk][kScanState];
  __shared__ float dts[kScanChunk][kScanChannels];
  __shared__ float dus[kScanChunk][kScanChannels];
  __shared__ float us[kScanChunk][kScanChannels];
  __shared__ float gates[kScanChunk][kScanChannels];
  __shared__ float ys[kScanChunk][kScanChannels];
  const int tid = threadIdx.x;
  const int n = tid % kScanState, lc = tid / kScanState;  // state, local channel
  const int c0 = blockIdx.x * kScanChannels;
  const int c = c0 + lc;
  const int b = blockIdx.y;
  const int start = p.cu_seqlens[b];
  const int len = p.cu_seqlens[b + 1] - start;
  if (len == 0) return;  // block-uniform
  const bool active = c < p.d_inner;
  const int slot = p.slots[b];  // < 0: a padding row: starts from zeros, stores no state
  const bool init = slot >= 0 && p.has_initial_state && p.has_initial_state[b];
  S* state = static_cast<S*>(p.ssm_state) + (slot >= 0 ? slot : 0) * p.ssm_state_slot_stride +
             static_cast<int64_t>(c) * kScanState + n;
  float h = 0.f, A = 0.f, Dc = 0.f;
  if (active) {
    h = init ? ToF32(*state) : 0.f;
    A = p.A[c * kScanState + n];
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
    __syncthreads();  // the previous chunk's shared data is no longer read
    for (int i = tid; i < n_chunk * kScanState; i += kScanThreads) {
      const int64_t row = start + t0 + i / kScanState;
      Bs[i / kScanState][i % kScanState] = ToF32(Bg[row * p.B_stride + i % kScanState]);
      Cs[i / kScanState][i % kScanState] = ToF32(Cg[row * p.C_stride + i % kScanState]);
    }
    for (int i = tid; i < n_chunk * kScanChannels; i += kScanThreads) {
      const int tt = i / kScanChannels, lch = i % kScanChannels, ch = c0 + lch;
      float dt = 0.f, u = 0.f, gate = 0.f;  // channels past d_inner: zeros, never stored
      if (ch < p.d_inner) {
        const int64_t row = start + t0 + tt;
        u = ToF32(U[row * p.u_stride + ch]);
        dt = ToF32(Dt[row * p.delta_stride + ch]) + (p.delta_bias ? p.delta_bias[ch] : 0.f);
        if (p.delta_softplus) dt = SoftplusF(dt);
        gate = Z ? SiluF(ToF32(Z[row * p.z_stride + ch])) : 1.f;
      }
      dts[tt][lch] = dt;
      dus[tt][lch] = dt * u;
      us[tt][lch] = u;
      gates[tt][lch] = gate;
    }
    __syncthreads();
    // Every lane takes part (the shuffles need the full warp); inactive channels compute zeros.
    for (int tt = 0; tt < n_chunk; ++tt) {
      h = h * expf(dts[tt][lc] * A) + dus[tt][lc] * Bs[tt][n];
      float y = h * Cs[tt][n];
#pragma unroll
      for (int o = kScanState / 2; o > 0; o >>= 1) y += __shfl_xor_sync(0xffffffffu, y, o);
      if (n == 0) ys[tt][lc] = (y + Dc * us[tt][lc]) * gates[tt][lc];
    }
    __syncthreads();
    for (int i = tid; i < n_chunk * kScanChannels; i += kScanThreads) {
      const int tt = i / kScanChannels, ch = c0 + i % kScanChannels;
      if (ch < p.d_inner)
        Out[(start + t0 + tt) * p.out_stride + ch] = FromF32<T>(ys[tt][i % kScanChannels]);
    }
  }
  if (active && slot >= 0) *state = FromF32<S>(h);
}

}  // namespace

bool LegacySeqKernelsFromEnv() {
  static const bool legacy = [] {
    const char* v = std::getenv("BMS_LEGACY_KERNELS");
    return v != nullptr && std::strcmp(v, "1") == 0;
  }();
  return legacy;
}

namespace {

// The prefill scan kernel a call runs first (it falls back when the shape does not qualify):
// the params' choice, else BMS_SCAN_PREFILL=parallel|chunked (read once), else kDefaultPrefill
// (the parallel scan: 2.8x the chunked one at 1 x 2048 tokens on the H100, bench/NOTES.md).
ScanPrefillKernel PrefillKernel(const SelectiveScanParams& p) {
  constexpr ScanPrefillKernel kDefaultPrefill = ScanPrefillKernel::kParallel;
  static const ScanPrefillKernel from_env = [] {
    const char* v = std::getenv("BMS_SCAN_PREFILL");
    if (v != nullptr && std::strcmp(v, "parallel") == 0) return ScanPrefillKernel::kParallel;
    if (v != nullptr && std::strcmp(v, "chunked") == 0) return ScanPrefillKernel::kChunked;
    return kDefaultPrefill;
  }();
  return p.prefill_kernel != ScanPrefillKernel::kDefault ? p.prefill_kernel : from_env;
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
  const bool legacy = p.legacy || LegacySeqKernelsFromEnv();
  if (!legacy && LaunchConvUpdate(p, stream)) {
    BMS_CUDA_CHECK_LAUNCH("CausalConv1dVarlen (decode)");
    return absl::OkStatus();
  }
  const bool fast_out = !legacy && LaunchConvPrefillOut(p, stream);
  DispatchDType(p.dtype, [&](auto t) {
    using T = decltype(t);
    return DispatchState(p.conv_state_dtype, [&](auto s) {
      using S = decltype(s);
      if (p.n_tokens > 0 && !fast_out)
        ConvOutKernel<T, S>
            <<<dim3(p.n_tokens, CeilDiv(p.d_inner, kConvThreads)), kConvThreads, 0, stream>>>(p);
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
  if (!p.legacy && !LegacySeqKernelsFromEnv() &&
      (LaunchScanUpdate(p, stream) ||
       (PrefillKernel(p) == ScanPrefillKernel::kParallel && LaunchScanParallel(p, stream)) ||
       LaunchScanChunked(p, stream))) {
    BMS_CUDA_CHECK_LAUNCH("SelectiveScanVarlen");
    return absl::OkStatus();
  }
  DispatchDType(p.dtype, [&](auto t) {
    using T = decltype(t);
    return DispatchState(p.ssm_state_dtype, [&](auto s) {
      using S = decltype(s);
      ScanKernel<T, S>
          <<<dim3(CeilDiv(p.d_inner, kScanChannels), p.batch), kScanThreads, 0, stream>>>(p);
      return 0;
    });
  });
  BMS_CUDA_CHECK_LAUNCH("SelectiveScanVarlen");
  return absl::OkStatus();
}

}  // namespace bms::cuda
