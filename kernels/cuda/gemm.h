// GemmRunner: dense projections y[m, n] = x[m, k] @ w[n, k]^T through cuBLASLt with fp32
// accumulation (true fp32 math in fp32 mode: no TF32). The handle and workspace are created once;
// the algorithm for each distinct shape is chosen once (heuristic) and cached. CUDA-free header.
// Not thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <tuple>

#include "absl/status/statusor.h"
#include "kernels/cuda/ops.h"

namespace bms::cuda {

struct LinearParams {
  int m = 0;
  int n = 0;
  int k = 0;
  DType in_dtype = DType::kF32;   // of x and w
  DType out_dtype = DType::kF32;  // of y: in_dtype or kF32
  const void* x = nullptr;        // [m, k], row stride x_stride (0 = k)
  int64_t x_stride = 0;
  const void* w = nullptr;  // [n, k] contiguous
  void* y = nullptr;        // [m, n], row stride y_stride (0 = n)
  int64_t y_stride = 0;
};

// Small-M path (kernels/cuda/gemv.cu): one kernel streaming each weight row once, no split-K
// reduce, for m <= kSmallMMaxRows and weights up to kSmallMMaxWeightBytes (x_proj, dt_proj:
// cuBLASLt runs those as split-K + reduce or a 64x8 tile at 3-10 us; bigger weights stream
// faster through cuBLASLt). Needs k and the x row stride to be multiples of 4 bytes and 4-byte
// aligned x and w. GemmRunner::Linear uses it whenever SmallMLinearSupported (unless
// BMS_LEGACY_KERNELS=1).
inline constexpr int kSmallMMaxRows = 8;
inline constexpr int64_t kSmallMMaxWeightBytes = 4 << 20;
bool SmallMLinearSupported(const LinearParams& p);
absl::Status SmallMLinear(const LinearParams& p, Stream stream);

// Weight-streaming small-M path (kernels/cuda/grouped_gemv_stream.cu): bf16 in (bf16 or fp32
// out), m <= kSmallMMaxRows, k % 8 == 0, x row stride % 8 == 0, 16-byte aligned x and w; any
// weight size. Two adjacent columns per warp (k optionally split over 2-4 warps of a block,
// reduced in a fixed order), a persistent grid, 16-byte no-L1 loads: made for in_proj, out_proj
// and the LM head at decode. GemmRunner::Linear prefers it for m <= StreamLinearMaxRows() and
// weights too big for SmallMLinear.
bool StreamLinearSupported(const LinearParams& p);
absl::Status StreamLinear(const LinearParams& p, Stream stream);
// Rows up to which GemmRunner::Linear uses StreamLinear: 0 (never) by default: on the H100,
// timed back to back, cuBLASLt streamed in_proj / out_proj faster (bench/NOTES.md, gemv
// section). Read once from BMS_GEMV_STREAM (1 = every m <= kSmallMMaxRows, shapes SmallMLinear
// takes included; N > 1 = m <= N for weights beyond SmallMLinear's); the setter is for tests and
// benchmarks. Process-wide.
int StreamLinearMaxRows();
void SetStreamLinearMaxRows(int rows);
// StreamLinear's kernel: the per-warp cp.async ring (default; kernels/cuda/gemv_stream_pipe.cu,
// k up to ~13k) or the register-only one (also the fallback for longer k). For tests/benchmarks.
bool StreamLinearPipelined();
void SetStreamLinearPipelined(bool on);
// StreamLinear with the kernel chosen explicitly (ring: the cp.async ring when k fits).
absl::Status StreamLinearWith(const LinearParams& p, bool ring, Stream stream);

// BMS_GEMV_STREAM=auto (read once; off by default until run through the engine on a device):
// GemmRunner::Linear at m = 1 with weights beyond SmallMLinear's runs StreamLinearAutoPath's
// choice, a size rule from the H100 measurements (few columns: the ring kernel, one column per
// warp; very many columns (LM head): the register kernel; else cuBLASLt).
enum class SmallMPath : uint8_t { kCublas, kStreamRing, kStreamRegs };
SmallMPath StreamLinearAutoPath(const LinearParams& p);
bool StreamLinearAuto();
void SetStreamLinearAuto(bool on);

class GemmRunner {
 public:
  static absl::StatusOr<std::unique_ptr<GemmRunner>> Create(size_t workspace_bytes = 32 << 20);
  ~GemmRunner();
  GemmRunner(const GemmRunner&) = delete;
  GemmRunner& operator=(const GemmRunner&) = delete;

  // Enqueues the product on `stream`. m == 0 is a no-op. Small m goes to StreamLinear (when
  // enabled and supported) or SmallMLinear.
  absl::Status Linear(const LinearParams& p, Stream stream);
  // Always cuBLASLt (tests compare the two paths).
  absl::Status LinearCublas(const LinearParams& p, Stream stream);

 private:
  struct Plan;
  using Key = std::tuple<int, int, int, int64_t, int64_t, int, int, int>;
  GemmRunner() = default;
  absl::StatusOr<Plan*> GetPlan(const LinearParams& p, int alignment);

  void* handle_ = nullptr;     // cublasLtHandle_t
  void* workspace_ = nullptr;  // device
  size_t workspace_bytes_ = 0;
  std::map<Key, std::unique_ptr<Plan>> plans_;
};

}  // namespace bms::cuda
