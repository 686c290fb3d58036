// Decode (one token per sequence) kernels of the Mamba mixer, slot-indexed: the causal conv1d
// window update (+ bias + SiLU) and the selective state update (+ D skip + SiLU(z) gate). Each
// touches its slot's state exactly once (one read, one write) with 16-byte accesses; both are
// bandwidth kernels (the fp32 SSM state is 64 bytes per channel per slot). The conv and the scan
// cannot share one kernel: x_proj / dt_proj (GEMMs over the conv output) sit between them.
#include "kernels/cuda/conv_scan_internal.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/pdl.cuh"

namespace bms::cuda {
namespace {

constexpr int kConvUpdThreads = 128;
constexpr int kConvUpdCh = 8;  // channels per thread (16 B of bf16 x, 48/96 B of window)
constexpr int kW = 4;          // d_conv of the fast path
constexpr int kW1 = kW - 1;

// One thread per (sequence, group of 8 channels). kVec: every group is whole and 16-byte
// aligned (vector loads); otherwise scalar loads with a tail check.
template <typename T, typename S, bool kVec>
__global__ void __launch_bounds__(kConvUpdThreads) ConvUpdateKernel(CausalConv1dParams p) {
  PdlLaunchDependents();
  PdlWait();  // every block, before any read of x / slots / state (kernels/cuda/pdl.cuh)
  const int c0 = (blockIdx.x * kConvUpdThreads + threadIdx.x) * kConvUpdCh;
  const int b = blockIdx.y;
  if (c0 >= p.d_inner) return;
  const int nc = min(kConvUpdCh, p.d_inner - c0);
  const int slot = p.slots[b];  // < 0: padding row (zeros in, nothing stored)
  const bool init = slot >= 0 && p.has_initial_state && p.has_initial_state[b];
  const int64_t row = p.cu_seqlens[b];
  S* state = static_cast<S*>(p.conv_state) + (slot >= 0 ? slot : 0) * p.conv_state_slot_stride +
             static_cast<int64_t>(c0) * kW1;
  const T* x = static_cast<const T*>(p.x) + row * p.x_stride + c0;
  T* out = static_cast<T*>(p.out) + row * p.out_stride + c0;
  float win[kConvUpdCh * kW1], xv[kConvUpdCh], wt[kConvUpdCh * kW];
  if constexpr (kVec) {
    if (init) {
      LoadVec<S, kConvUpdCh * kW1>(state, win);
    } else {
#pragma unroll
      for (int i = 0; i < kConvUpdCh * kW1; ++i) win[i] = 0.f;
    }
    LoadVec<T, kConvUpdCh>(x, xv);
    LoadVec<float, kConvUpdCh * kW>(p.weight + static_cast<int64_t>(c0) * kW, wt);
  } else {
#pragma unroll
    for (int i = 0; i < kConvUpdCh; ++i) {
      const bool ok = i < nc;
      xv[i] = ok ? ToF32(x[i]) : 0.f;
#pragma unroll
      for (int k = 0; k < kW1; ++k) win[i * kW1 + k] = ok && init ? ToF32(state[i * kW1 + k]) : 0.f;
#pragma unroll
      for (int k = 0; k < kW; ++k) wt[i * kW + k] = ok ? p.weight[(c0 + i) * kW + k] : 0.f;
    }
  }
  float o[kConvUpdCh];
#pragma unroll
  for (int i = 0; i < kConvUpdCh; ++i) {
    float acc = 0.f;
#pragma unroll
    for (int k = 0; k < kW1; ++k) acc += win[i * kW1 + k] * wt[i * kW + k];
    acc += xv[i] * wt[i * kW + kW1];
    if (p.bias) acc += p.bias[min(c0 + i, p.d_inner - 1)];
    o[i] = p.silu ? SiluF(acc) : acc;
  }
  // The new window: the old one shifted by one, the new input last.
  float nw[kConvUpdCh * kW1];
#pragma unroll
  for (int i = 0; i < kConvUpdCh; ++i) {
#pragma unroll
    for (int k = 0; k < kW1 - 1; ++k) nw[i * kW1 + k] = win[i * kW1 + k + 1];
    nw[i * kW1 + kW1 - 1] = xv[i];
  }
  if constexpr (kVec) {
    StoreVec<T, kConvUpdCh>(out, o);
    if (slot >= 0) StoreVec<S, kConvUpdCh * kW1>(state, nw);
  } else {
    for (int i = 0; i < nc; ++i) {
      out[i] = FromF32<T>(o[i]);
      if (slot >= 0)
        for (int k = 0; k < kW1; ++k) state[i * kW1 + k] = FromF32<S>(nw[i * kW1 + k]);
    }
  }
}

constexpr int kUpdThreads = 128;
constexpr int kUpdState = 16;

// Grid (channel blocks, batch). A thread owns 16 bytes of one channel's state (4 fp32 or 8 bf16
// values), so a channel is 4 (fp32) or 2 (bf16) adjacent lanes; y is a shuffle reduction over
// them. Lanes past d_inner load a valid channel's data and store nothing.
template <typename T, typename S>
__global__ void __launch_bounds__(kUpdThreads) ScanUpdateKernel(SelectiveScanParams p) {
  PdlLaunchDependents();
  PdlWait();  // every block, before any read of earlier kernels' outputs (kernels/cuda/pdl.cuh)
  constexpr int kPer = 16 / sizeof(S);
  constexpr int kSub = kUpdState / kPer;
  constexpr int kChPerBlock = kUpdThreads / kSub;
  const int b = blockIdx.y;
  const int c = blockIdx.x * kChPerBlock + threadIdx.x / kSub;
  const int q = threadIdx.x % kSub, n0 = q * kPer;
  const bool active = c < p.d_inner;
  const int cc = active ? c : p.d_inner - 1;
  const int slot = p.slots[b];  // < 0: padding row (zeros in, nothing stored)
  const bool init = slot >= 0 && p.has_initial_state && p.has_initial_state[b];
  const int64_t row = p.cu_seqlens[b];
  S* state = static_cast<S*>(p.ssm_state) + (slot >= 0 ? slot : 0) * p.ssm_state_slot_stride +
             static_cast<int64_t>(cc) * kUpdState + n0;
  float h[kPer], A[kPer];
  if (init) {
    LoadVec<S, kPer>(state, h);
  } else {
#pragma unroll
    for (int i = 0; i < kPer; ++i) h[i] = 0.f;
  }
  LoadVec<float, kPer>(p.A + static_cast<int64_t>(cc) * kUpdState + n0, A);
  const T* Bg = static_cast<const T*>(p.B) + row * p.B_stride + n0;
  const T* Cg = static_cast<const T*>(p.C) + row * p.C_stride + n0;
  const float u = ToF32(static_cast<const T*>(p.u)[row * p.u_stride + cc]);
  float dt = ToF32(static_cast<const T*>(p.delta)[row * p.delta_stride + cc]) +
             (p.delta_bias ? p.delta_bias[cc] : 0.f);
  if (p.delta_softplus) dt = SoftplusF(dt);
  const float du = dt * u;
  float y = 0.f;
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    h[i] = h[i] * expf(dt * A[i]) + du * ToF32(Bg[i]);
    y += h[i] * ToF32(Cg[i]);
  }
#pragma unroll
  for (int o = kSub / 2; o > 0; o >>= 1) y += __shfl_xor_sync(0xffffffffu, y, o, kSub);
  if (!active) return;
  if (q == 0) {
    const float gate = p.z ? SiluF(ToF32(static_cast<const T*>(p.z)[row * p.z_stride + c])) : 1.f;
    static_cast<T*>(p.out)[row * p.out_stride + c] =
        FromF32<T>((y + (p.D ? p.D[c] : 0.f) * u) * gate);
  }
  if (slot >= 0) StoreVec<S, kPer>(state, h);
}

}  // namespace

bool LaunchConvUpdate(const CausalConv1dParams& p, Stream stream) {
  if (p.d_conv != kW || p.n_tokens != p.batch) return false;
  const bool vec = p.d_inner % kConvUpdCh == 0 && p.x_stride % 8 == 0 && p.out_stride % 8 == 0 &&
                   p.conv_state_slot_stride % 8 == 0 && SeqAligned16(p.x) && SeqAligned16(p.out) &&
                   SeqAligned16(p.conv_state) && SeqAligned16(p.weight);
  const dim3 grid(CeilDiv(CeilDiv(p.d_inner, kConvUpdCh), kConvUpdThreads), p.batch);
  DispatchDType(p.dtype, [&](auto t) {
    using T = decltype(t);
    return DispatchState(p.conv_state_dtype, [&](auto s) {
      using S = decltype(s);
      if (vec)
        LaunchPdl(ConvUpdateKernel<T, S, true>, grid, kConvUpdThreads, 0, stream, p);
      else
        LaunchPdl(ConvUpdateKernel<T, S, false>, grid, kConvUpdThreads, 0, stream, p);
      return 0;
    });
  });
  return true;
}

bool LaunchScanUpdate(const SelectiveScanParams& p, Stream stream) {
  if (p.n_tokens != p.batch || p.d_state != kUpdState) return false;
  if (p.ssm_state_slot_stride % 8 != 0 || !SeqAligned16(p.ssm_state) || !SeqAligned16(p.A))
    return false;
  DispatchDType(p.dtype, [&](auto t) {
    using T = decltype(t);
    return DispatchState(p.ssm_state_dtype, [&](auto s) {
      using S = decltype(s);
      constexpr int kChPerBlock = kUpdThreads / (kUpdState / (16 / sizeof(S)));
      LaunchPdl(ScanUpdateKernel<T, S>, dim3(CeilDiv(p.d_inner, kChPerBlock), p.batch),
                kUpdThreads, 0, stream, p);
      return 0;
    });
  });
  return true;
}

}  // namespace bms::cuda
