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

// True when BMS_LEGACY_KERNELS=1 is set (read once): the previous conv / scan kernels run.
bool LegacySeqKernelsFromEnv();

// Decode (one token per sequence, p.n_tokens == p.batch): conv window update + output.
bool LaunchConvUpdate(const CausalConv1dParams& p, Stream stream);
// Prefill conv output (the window state is written by the caller's state kernel afterwards).
bool LaunchConvPrefillOut(const CausalConv1dParams& p, Stream stream);
// Decode selective state update (p.n_tokens == p.batch).
bool LaunchScanUpdate(const SelectiveScanParams& p, Stream stream);
// Chunked time-parallel selective scan over the packed varlen batch.
bool LaunchScanChunked(const SelectiveScanParams& p, Stream stream);

}  // namespace bms::cuda
