// Helpers shared by the kernel micro-benchmarks (bms_kernel_bench_linear, _moe, _sampling, _scan
// and bench/decode_kernels/bms_kernel_bench_decode): bf16 conversion (round to nearest even),
// random device tensors (bf16 uniform, or small finite 16-bit patterns), a random top-1 expert
// routing, the median of timed samples, Fail, and BENCH_CHECK, which prints a failed status with
// its place and makes Main return 1. Header-only; CUDA-free interface (kernels/cuda/device_memory.h).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/cuda/device_memory.h"

#define BENCH_CHECK(expr)                                                                   \
  do {                                                                                      \
    const absl::Status bench_s_ = (expr);                                                   \
    if (!bench_s_.ok()) {                                                                   \
      std::fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, bench_s_.ToString().c_str()); \
      return 1;                                                                             \
    }                                                                                       \
  } while (0)

namespace bms::kernel_bench {

inline uint16_t ToBf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return static_cast<uint16_t>((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
}

inline float FromBf16(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// n bf16 values uniform in [-scale, scale], uploaded in 4 Mi-element chunks (the host buffer is
// reused, so huge tensors repeat a chunk's values: fine for timing).
inline absl::StatusOr<cuda::DeviceBuffer> RandomBf16(size_t n, float scale, std::mt19937_64& rng) {
  auto buf = cuda::DeviceBuffer::Alloc(n * 2, "bench");
  if (!buf.ok()) return buf.status();
  constexpr size_t kChunk = 1 << 22;
  std::vector<uint16_t> h(std::min(n, kChunk));
  std::uniform_real_distribution<float> u(-scale, scale);
  for (auto& v : h) v = ToBf16(u(rng));
  for (size_t off = 0; off < n; off += kChunk) {
    const size_t len = std::min(kChunk, n - off);
    if (absl::Status s = cuda::CopyToDevice(buf->as<uint16_t>() + off, h.data(), len * 2); !s.ok())
      return s;
  }
  return buf;
}

inline float Median(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Prints a failed status; Main returns its value (1).
inline int Fail(const absl::Status& s) {
  std::fprintf(stderr, "error: %s\n", s.ToString().c_str());
  return 1;
}

// `bytes` of 16-bit words 0x3c00 + [0, 0x200): small finite values in both fp32 and bf16 views.
inline absl::StatusOr<cuda::DeviceBuffer> RandomSmallFinite(size_t bytes, const char* what,
                                                            uint32_t seed) {
  auto b = cuda::DeviceBuffer::Alloc(bytes, what);
  if (!b.ok()) return b.status();
  std::vector<uint16_t> h(bytes / 2);
  std::mt19937 rng(seed);
  for (auto& x : h) x = static_cast<uint16_t>(0x3c00 + rng() % 0x200);
  if (auto s = cuda::CopyToDevice(b->get(), h.data(), h.size() * 2); !s.ok()) return s;
  return b;
}

// A random top-1 routing of m tokens over n_experts, grouped as the MoE kernels read it:
// offsets[e] .. offsets[e + 1] are expert e's rows of perm (token ids, stable order).
struct RandomRouting {
  std::vector<int32_t> expert;   // [m]
  std::vector<int32_t> offsets;  // [n_experts + 1]
  std::vector<int32_t> perm;     // [m]
  int touched = 0;               // experts with at least one token

  RandomRouting(int m, int n_experts, std::mt19937_64& rng)
      : expert(m), offsets(n_experts + 1, 0), perm(m) {
    for (auto& e : expert) e = static_cast<int32_t>(rng() % n_experts);
    for (int t = 0; t < m; ++t) ++offsets[expert[t] + 1];
    for (int e = 0; e < n_experts; ++e) offsets[e + 1] += offsets[e];
    std::vector<int32_t> fill(offsets.begin(), offsets.end() - 1);
    for (int t = 0; t < m; ++t) perm[fill[expert[t]]++] = t;
    for (int e = 0; e < n_experts; ++e) touched += offsets[e + 1] > offsets[e];
  }
};

}  // namespace bms::kernel_bench
