// HostTensor: a read-only, typed, shaped view of tensor bytes in host memory (a memory-mapped
// checkpoint or an owned buffer), kept alive by a shared owner. Weights travel as HostTensors
// from the loaders to the backends, which convert them to their compute dtype once at start-up.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace bms {

enum class DType { kF32, kBF16, kF16 };

inline size_t DTypeSize(DType t) { return t == DType::kF32 ? 4 : 2; }
const char* DTypeName(DType t);  // "F32", "BF16", "F16" (safetensors spelling)

// Scalar conversions (round-to-nearest-even for the narrowing ones).
float BF16ToF32(uint16_t v);
uint16_t F32ToBF16(float v);
float F16ToF32(uint16_t v);
uint16_t F32ToF16(float v);

struct HostTensor {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;         // numel() elements of dtype, little-endian, contiguous
  std::shared_ptr<const void> owner;  // keeps `data` alive (mmap region or buffer)

  int64_t numel() const {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    return n;
  }
  size_t nbytes() const { return static_cast<size_t>(numel()) * DTypeSize(dtype); }
  bool empty() const { return data == nullptr; }
  std::string ShapeString() const;  // e.g. "[50304, 1472]"

  // Element i converted to fp32; and the whole tensor converted to fp32.
  float At(int64_t i) const;
  std::vector<float> ToF32() const;

  // An owned fp32 tensor / an owned tensor converted from fp32 values to `dtype`.
  static HostTensor FromF32(std::vector<float> values, std::vector<int64_t> shape);
  static HostTensor Convert(const std::vector<float>& values, std::vector<int64_t> shape,
                            DType dtype);
};

}  // namespace bms
