#include "engine/host_tensor.h"

#include <cmath>

#include "absl/strings/str_join.h"

namespace bms {

const char* DTypeName(DType t) {
  switch (t) {
    case DType::kF32:
      return "F32";
    case DType::kBF16:
      return "BF16";
    case DType::kF16:
      return "F16";
  }
  return "?";
}

float BF16ToF32(uint16_t v) {
  uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t F32ToBF16(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  if (std::isnan(v)) return static_cast<uint16_t>((bits >> 16) | 0x40);
  uint32_t rounding = 0x7FFF + ((bits >> 16) & 1);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

float F16ToF32(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1F;
  uint32_t mant = h & 0x3FF;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do {
        ++e;
        mant <<= 1;
      } while ((mant & 0x400) == 0);
      bits = sign | (static_cast<uint32_t>(127 - 15 - e) << 23) | ((mant & 0x3FF) << 13);
    }
  } else if (exp == 0x1F) {
    bits = sign | 0x7F800000 | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t F32ToF16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000;
  uint32_t absx = x & 0x7FFFFFFF;
  if (absx >= 0x7F800000)
    return static_cast<uint16_t>(sign | 0x7C00 | (absx > 0x7F800000 ? 0x200 : 0));
  if (absx >= 0x477FF000) return static_cast<uint16_t>(sign | 0x7C00);  // overflow -> inf
  if (absx < 0x38800000) {                                              // subnormal or zero in f16
    if (absx < 0x33000000) return static_cast<uint16_t>(sign);
    uint32_t e = absx >> 23;
    uint32_t m = (absx & 0x7FFFFF) | 0x800000;
    uint32_t shift = 126 - e;  // 113 + 13 - e
    uint32_t half = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1);
    uint32_t mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1))) ++half;
    return static_cast<uint16_t>(sign | half);
  }
  uint32_t h = ((absx >> 13) - (112u << 10));
  uint32_t rem = absx & 0x1FFF;
  if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) ++h;
  return static_cast<uint16_t>(sign | h);
}

std::string HostTensor::ShapeString() const { return "[" + absl::StrJoin(shape, ", ") + "]"; }

float HostTensor::At(int64_t i) const {
  switch (dtype) {
    case DType::kF32:
      return static_cast<const float*>(data)[i];
    case DType::kBF16:
      return BF16ToF32(static_cast<const uint16_t*>(data)[i]);
    case DType::kF16:
      return F16ToF32(static_cast<const uint16_t*>(data)[i]);
  }
  return 0.f;
}

std::vector<float> HostTensor::ToF32() const {
  std::vector<float> out(static_cast<size_t>(numel()));
  if (dtype == DType::kF32) {
    if (!out.empty()) std::memcpy(out.data(), data, out.size() * 4);
  } else {
    for (size_t i = 0; i < out.size(); ++i) out[i] = At(static_cast<int64_t>(i));
  }
  return out;
}

HostTensor HostTensor::FromF32(std::vector<float> values, std::vector<int64_t> shape) {
  auto buf = std::make_shared<std::vector<float>>(std::move(values));
  HostTensor t;
  t.dtype = DType::kF32;
  t.shape = std::move(shape);
  t.data = buf->data();
  t.owner = buf;
  return t;
}

HostTensor HostTensor::Convert(const std::vector<float>& values, std::vector<int64_t> shape,
                               DType dtype) {
  if (dtype == DType::kF32) return FromF32(values, std::move(shape));
  auto buf = std::make_shared<std::vector<uint16_t>>(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    (*buf)[i] = dtype == DType::kBF16 ? F32ToBF16(values[i]) : F32ToF16(values[i]);
  }
  HostTensor t;
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.data = buf->data();
  t.owner = buf;
  return t;
}

}  // namespace bms
