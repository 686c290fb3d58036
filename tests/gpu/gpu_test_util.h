// Helpers for the GPU tests: skip without a device, a per-run random seed (printed; override
// with BMS_TEST_SEED), device vectors of fp32 or bf16 (poisoned with NaN on creation), and the
// normalized error ||a - b|| / ||b|| used to compare with the CPU reference.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "engine/host_tensor.h"
#include "engine/model_weights.h"
#include "gtest/gtest.h"
#include "kernels/cuda/device_memory.h"
#include "kernels/cuda/ops.h"
#include "kernels/ref/ops.h"

namespace bms::gpu_test {

#define BMS_SKIP_WITHOUT_GPU()                                      \
  do {                                                              \
    std::string why_;                                               \
    if (!::bms::cuda::DeviceAvailable(&why_)) GTEST_SKIP() << why_; \
  } while (0)

#define BMS_ASSERT_OK(expr)                  \
  do {                                       \
    const ::absl::Status st_ = (expr);       \
    ASSERT_TRUE(st_.ok()) << st_.ToString(); \
  } while (0)

// A fresh seed per test (printed), or BMS_TEST_SEED when set.
inline uint64_t TestSeed() {
  uint64_t seed = std::random_device{}();
  if (const char* s = std::getenv("BMS_TEST_SEED")) seed = std::strtoull(s, nullptr, 10);
  std::cout << "[ seed ] " << seed << " (rerun with BMS_TEST_SEED=" << seed << ")" << std::endl;
  return seed;
}

inline std::vector<float> RandomVector(std::mt19937_64& rng, size_t n, float lo, float hi) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// Rounds every value to bf16 (so the CPU reference sees exactly the GPU's bf16 inputs).
inline std::vector<float> RoundBf16(std::vector<float> v) {
  for (float& x : v) x = ref::Bf16RoundTrip(x);
  return v;
}

inline double NormalizedError(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double d = static_cast<double>(got[i]) - want[i];
    if (std::isnan(got[i])) return INFINITY;
    num += d * d;
    den += static_cast<double>(want[i]) * want[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

// A device array of fp32 or bf16 values (or raw int32 / bytes), created NaN-poisoned.
class DevArray {
 public:
  DevArray(size_t n, cuda::DType dtype) : n_(n), dtype_(dtype) {
    auto b = cuda::DeviceBuffer::Alloc(std::max<size_t>(n, 1) * cuda::DTypeBytes(dtype), "test");
    EXPECT_TRUE(b.ok()) << b.status();
    if (b.ok()) buf_ = std::move(*b);
    EXPECT_TRUE(cuda::FillBytes(buf_.get(), 0xFF, buf_.size()).ok());
    EXPECT_TRUE(cuda::DeviceSynchronize().ok());
  }
  DevArray(const std::vector<float>& v, cuda::DType dtype) : DevArray(v.size(), dtype) { Set(v); }

  void Set(const std::vector<float>& v) {
    if (dtype_ == cuda::DType::kF32) {
      EXPECT_TRUE(cuda::CopyToDevice(buf_.get(), v.data(), v.size() * 4).ok());
    } else {
      std::vector<uint16_t> h(v.size());
      for (size_t i = 0; i < v.size(); ++i) h[i] = F32ToBF16(v[i]);
      EXPECT_TRUE(cuda::CopyToDevice(buf_.get(), h.data(), h.size() * 2).ok());
    }
  }
  std::vector<float> Get() const {
    EXPECT_TRUE(cuda::DeviceSynchronize().ok());
    std::vector<float> out(n_);
    if (dtype_ == cuda::DType::kF32) {
      EXPECT_TRUE(cuda::CopyToHost(out.data(), buf_.get(), n_ * 4).ok());
    } else {
      std::vector<uint16_t> h(n_);
      EXPECT_TRUE(cuda::CopyToHost(h.data(), buf_.get(), n_ * 2).ok());
      for (size_t i = 0; i < n_; ++i) out[i] = BF16ToF32(h[i]);
    }
    return out;
  }
  // Raw bytes (state buffers compared bit for bit).
  std::vector<uint8_t> Bytes() const {
    EXPECT_TRUE(cuda::DeviceSynchronize().ok());
    std::vector<uint8_t> out(n_ * cuda::DTypeBytes(dtype_));
    EXPECT_TRUE(cuda::CopyToHost(out.data(), buf_.get(), out.size()).ok());
    return out;
  }
  void* get() const { return buf_.get(); }
  float* f32() const { return buf_.as<float>(); }
  size_t size() const { return n_; }

 private:
  size_t n_;
  cuda::DType dtype_;
  cuda::DeviceBuffer buf_;
};

// A device copy of host integers / bytes.
template <typename T>
class DevInts {
 public:
  explicit DevInts(const std::vector<T>& v) {
    auto b = cuda::DeviceBuffer::Alloc(std::max<size_t>(v.size(), 1) * sizeof(T), "test ints");
    EXPECT_TRUE(b.ok()) << b.status();
    if (b.ok()) buf_ = std::move(*b);
    EXPECT_TRUE(cuda::CopyToDevice(buf_.get(), v.data(), v.size() * sizeof(T)).ok());
  }
  explicit DevInts(size_t n) {
    auto b = cuda::DeviceBuffer::Alloc(std::max<size_t>(n, 1) * sizeof(T), "test ints");
    EXPECT_TRUE(b.ok()) << b.status();
    if (b.ok()) buf_ = std::move(*b);
    EXPECT_TRUE(cuda::FillBytes(buf_.get(), 0xFF, buf_.size()).ok());
  }
  std::vector<T> Get(size_t n) const {
    EXPECT_TRUE(cuda::DeviceSynchronize().ok());
    std::vector<T> out(n);
    EXPECT_TRUE(cuda::CopyToHost(out.data(), buf_.get(), n * sizeof(T)).ok());
    return out;
  }
  T* get() const { return buf_.as<T>(); }

 private:
  cuda::DeviceBuffer buf_;
};

// A small four-layer model with every layer kind the graph, PDL and engine tests need: Mamba,
// MoE, Mamba, then `last` (a dense MLP by default).
inline ModelConfig SmallMoe(LayerKind last = LayerKind::kDenseMlp) {
  ModelConfig c = *ModelConfig::Preset("tiny");
  c.num_layers = 4;
  c.d_model = 128;
  c.ffn_hidden_size = 256;
  c.vocab_size = 1024;
  c.layers = {LayerKind::kMamba, LayerKind::kMoe, LayerKind::kMamba, last};
  return c;
}

// The weights the CUDA backend stores in bf16 (GEMM operands) rounded to bf16; norms, biases,
// A, D, conv weights and the router stay fp32 as on the GPU. An fp32 CPU backend on these
// weights is the reference that isolates the GPU's activation precision from weight rounding.
inline ModelWeights RoundGemmWeightsToBf16(const ModelWeights& w) {
  TensorMap m = FlattenWeights(w);
  for (auto& [name, t] : m) {
    const bool gemm = name == "embedding.word_embeddings.weight" ||
                      name.ends_with("in_proj.weight") || name.ends_with("x_proj.weight") ||
                      name.ends_with("dt_proj.weight") || name.ends_with("out_proj.weight") ||
                      name.ends_with("linear_fc1.weight") || name.ends_with("linear_fc2.weight");
    if (gemm) t = HostTensor::FromF32(RoundBf16(t.ToF32()), t.shape);
  }
  return *BindWeights(w.config, m);
}

inline const char* DTypeLabel(cuda::DType t) { return t == cuda::DType::kF32 ? "f32" : "bf16"; }
// Tolerance on the normalized error: fp32 math vs the fp32 reference, or bf16 activations.
inline double Tolerance(cuda::DType t) { return t == cuda::DType::kF32 ? 1e-5 : 1e-2; }

}  // namespace bms::gpu_test
