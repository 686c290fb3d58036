// Internal to kernels/cuda/: the conv / scan kernel variants behind CausalConv1dVarlen and
// SelectiveScanVarlen (kernels/cuda/ops.h). The launchers in conv_scan.cu normalize the params
// (default strides) and pick a variant; each Launch* here enqueues one and returns false when
// the shape does not qualify (the caller then runs the previous kernel).
#pragma once

#include <cstdint>

#include "kernels/cuda/device_util.cuh"

namespace bms::cuda {

// 16-byte vector loads / stores of N consecutive elements converted to / from fp32.
template <typename T, int N>
__device__ __forceinline__ void LoadVec(const T* src, float (&dst)[N]) {
  constexpr int kPer = 16 / sizeof(T);
  static_assert(N % kPer == 0, "whole 16-byte vectors");
#pragma unroll
  for (int i = 0; i < N / kPer; ++i) {
    const uint4 raw = *reinterpret_cast<const uint4*>(src + i * kPer);
    const T* v = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int j = 0; j < kPer; ++j) dst[i * kPer + j] = ToF32(v[j]);
  }
}
template <typename T, int N>
__device__ __forceinline__ void StoreVec(T* dst, const float (&src)[N]) {
  constexpr int kPer = 16 / sizeof(T);
  static_assert(N % kPer == 0, "whole 16-byte vectors");
#pragma unroll
  for (int i = 0; i < N / kPer; ++i) {
    uint4 raw;
    T* v = reinterpret_cast<T*>(&raw);
#pragma unroll
    for (int j = 0; j < kPer; ++j) v[j] = FromF32<T>(src[i * kPer + j]);
    *reinterpret_cast<uint4*>(dst + i * kPer) = raw;
  }
}

inline bool SeqAligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

constexpr float kLog2e = 1.4426950408889634f;

// 2^x with the hardware approximation (2 ulp; results below 2^-126 flush to 0, harmless for a
// decay factor): one MUFU op instead of exp2f's denormal handling.
__device__ __forceinline__ float Exp2Ftz(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// The sequence that owns packed token t: the largest b with cu_seqlens[b] <= t.
__device__ __forceinline__ int OwnerSeq(const int32_t* cu_seqlens, int batch, int t) {
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

// True when BMS_LEGACY_KERNELS=1 is set (read once): the previous conv / scan kernels run.
bool LegacySeqKernelsFromEnv();

// Decode (one token per sequence, p.n_tokens == p.batch): conv window update + output.
bool LaunchConvUpdate(const CausalConv1dParams& p, Stream stream);
// Prefill conv output (the window state is written by the caller's state kernel afterwards).
bool LaunchConvPrefillOut(const CausalConv1dParams& p, Stream stream);
// Decode selective state update (p.n_tokens == p.batch).
bool LaunchScanUpdate(const SelectiveScanParams& p, Stream stream);
// Chunked time-parallel selective scan over the packed varlen batch (scan_prefill.cu; the
// previous prefill kernel: 16 lanes x 8 tokens per channel, 8 channels per block).
bool LaunchScanChunked(const SelectiveScanParams& p, Stream stream);
// Prefill scan with a warp per channel (32 lanes x 4 / 8 tokens), the next chunk's loads in
// flight during the scan (scan_parallel.cu). Needs d_inner % 8 == 0 and 8-byte aligned rows.
bool LaunchScanParallel(const SelectiveScanParams& p, Stream stream);

}  // namespace bms::cuda
