// Device helpers shared by the .cu files: dtype load/store, state storage, activations, and the
// dtype dispatch used by the launchers. Internal to kernels/cuda/.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/ops.h"

namespace bms::cuda {

using bf16 = __nv_bfloat16;

__device__ __forceinline__ float ToF32(float v) { return v; }
__device__ __forceinline__ float ToF32(bf16 v) { return __bfloat162float(v); }
template <typename T>
__device__ __forceinline__ T FromF32(float v);
template <>
__device__ __forceinline__ float FromF32<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ bf16 FromF32<bf16>(float v) {
  return __float2bfloat16_rn(v);
}

// Activations, written as the reference writes them (kernels/ref).
__device__ __forceinline__ float SiluF(float x) { return x / (1.0f + expf(-x)); }
__device__ __forceinline__ float GeluErfF(float x) {
  return 0.5f * x * (1.0f + erff(x * 0.70710678118654752440f));
}
__device__ __forceinline__ float SoftplusF(float x) { return x > 20.0f ? x : log1pf(expf(x)); }
__device__ __forceinline__ float ApplyAct(Activation a, float x) {
  return a == Activation::kGelu ? GeluErfF(x) : SiluF(x);
}

// Dispatch a functor templated on the element type of a compute dtype.
template <typename F>
auto DispatchDType(DType t, F&& f) {
  if (t == DType::kBF16) return f(bf16{});
  return f(float{});
}
template <typename F>
auto DispatchState(StateStorage s, F&& f) {
  if (s == StateStorage::kBF16) return f(bf16{});
  return f(float{});
}

inline int CeilDiv(int64_t a, int64_t b) { return static_cast<int>((a + b - 1) / b); }

}  // namespace bms::cuda
