// Weight-streaming GEMV through a per-warp cp.async ring in shared memory (decode: grouped
// expert GEMM variants "spipe_*" and the dense StreamLinear; registered and dispatched by
// grouped_gemv_stream.cu). A work item is one output column (gated fc1: both halves' rows; dense:
// one or two adjacent columns) of one expert; every warp of a persistent grid walks its items
// (item = global warp + i * total warps) and keeps the next kStages - 1 items' weight rows in
// flight (16-byte cp.async.cg with a 256-byte L2 prefetch hint, coalesced) while it computes the
// current one from shared memory, so each SM has ~100+ KB of weight loads outstanding without
// spending registers on them. All rows of an item's expert are computed from the same shared
// copy in passes of kR rows (x rows through L1): each weight byte is read once per step.
// Reduction: warp butterfly in a fixed order, lane i stores row i: deterministic, no atomics, no
// block barriers (warps only __syncwarp), capturable.
#include <algorithm>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/grouped_gemm_internal.cuh"
#include "kernels/cuda/pdl.cuh"

namespace bms::cuda {

bool GemvL2Hint();  // grouped_gemv_stream.cu

namespace {

constexpr int kPipeWarps = 4;
constexpr int kPipeThreads = 32 * kPipeWarps;
constexpr int kStages = 3;
constexpr int kMaxBlockSmem = 160 << 10;

template <bool kHint>
__device__ __forceinline__ void CpAsync16(void* smem, const void* gmem) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  if constexpr (kHint)
    asm volatile("cp.async.cg.shared.global.L2::256B [%0], [%1], 16;\n" ::"r"(dst), "l"(gmem));
  else
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(gmem));
}
__device__ __forceinline__ void Commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void WaitPrior() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kStages - 1));
}

// Copies kH weight rows (n_vec 16-byte vectors each) into slot (row h at slot + h * n_vec).
template <int kH, bool kHint>
__device__ __forceinline__ void IssueRows(uint4* slot, const bf16* const (&rows)[kH], int n_vec,
                                          int lane) {
#pragma unroll
  for (int h = 0; h < kH; ++h)
    for (int v = lane; v < n_vec; v += 32) CpAsync16<kHint>(slot + h * n_vec + v, rows[h] + v * 8);
}

// acc[h][i] = sum over k of x_i * w_h (this lane's vectors, then the warp butterfly).
template <int kH, int kR>
__device__ __forceinline__ void DotRows(float (&acc)[kH][kR], const uint4* slot,
                                        const bf16* const (&xrow)[kR], int nr, int n_vec,
                                        int lane) {
#pragma unroll
  for (int h = 0; h < kH; ++h)
#pragma unroll
    for (int i = 0; i < kR; ++i) acc[h][i] = 0.f;
#pragma unroll 2
  for (int v = lane; v < n_vec; v += 32) {
    uint4 w[kH];
#pragma unroll
    for (int h = 0; h < kH; ++h) w[h] = slot[h * n_vec + v];
#pragma unroll
    for (int i = 0; i < kR; ++i) {
      if (i < nr) {
        const uint4 a = __ldg(reinterpret_cast<const uint4*>(xrow[i]) + v);
#pragma unroll
        for (int h = 0; h < kH; ++h) acc[h][i] = grouped::Dot8Bf16(a, w[h], acc[h][i]);
      }
    }
  }
#pragma unroll
  for (int h = 0; h < kH; ++h)
#pragma unroll
    for (int i = 0; i < kR; ++i)
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) acc[h][i] += __shfl_xor_sync(0xffffffffu, acc[h][i], o);
}

// ---- grouped ----
template <GroupedEpilogue kEpi, int kR, bool kHint>
__global__ void __launch_bounds__(kPipeThreads) GroupedPipeKernel(GroupedGemmParams p) {
  constexpr int kH = kEpi == GroupedEpilogue::kGatedAct ? 2 : 1;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int n_vec = p.k / 8;
  uint4* ring = reinterpret_cast<uint4*>(smem_raw) + warp * kStages * kH * n_vec;
  PdlLaunchDependents();
  PdlWait();  // the touched experts (offsets) come from the routing kernel (kernels/cuda/pdl.cuh)
  int touched = 0;
  for (int base = 0; base < p.n_experts; base += 32) {
    const int e = base + lane;
    touched += __popc(__ballot_sync(
        0xffffffffu, e < p.n_experts && p.expert_offsets[e] < p.expert_offsets[e + 1]));
  }
  const int64_t total = static_cast<int64_t>(touched) * p.n;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kPipeWarps + warp;
  const int64_t step = static_cast<int64_t>(gridDim.x) * kPipeWarps;
  const bf16* A = static_cast<const bf16*>(p.a);
  auto rows_of = [&](int64_t item, int* e, int* j, const bf16*(&rows)[kH]) {
    *e = grouped::TouchedExpert(p.expert_offsets, p.n_experts, static_cast<int>(item / p.n), lane);
    *j = static_cast<int>(item % p.n);
#pragma unroll
    for (int h = 0; h < kH; ++h)
      rows[h] = static_cast<const bf16*>(p.w) +
                ((static_cast<int64_t>(*e) * kH + h) * p.n + *j) * static_cast<int64_t>(p.k);
  };
  auto issue = [&](int64_t i) {  // the warp's i-th item into slot i % kStages
    const int64_t item = first + i * step;
    if (item < total) {
      int e, j;
      const bf16* rows[kH];
      rows_of(item, &e, &j, rows);
      IssueRows<kH, kHint>(ring + (i % kStages) * kH * n_vec, rows, n_vec, lane);
    }
    Commit();  // one group per call keeps the wait count uniform
  };
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) issue(s);
  for (int64_t i = 0; first + i * step < total; ++i) {
    issue(i + kStages - 1);
    WaitPrior();   // the i-th item has landed (this lane's copies) ...
    __syncwarp();  // ... and every lane's
    int e, j;
    const bf16* rows[kH];
    rows_of(first + i * step, &e, &j, rows);
    const uint4* slot = ring + (i % kStages) * kH * n_vec;
    const int begin = p.expert_offsets[e], end = p.expert_offsets[e + 1];
    for (int r0 = begin; r0 < end; r0 += kR) {
      const int nr = min(kR, end - r0);
      const bf16* xrow[kR];
#pragma unroll
      for (int t = 0; t < kR; ++t) {
        const int r = r0 + min(t, nr - 1);
        xrow[t] = A + static_cast<int64_t>(p.a_rows ? p.a_rows[r] : r) * p.lda;
      }
      float acc[kH][kR];
      DotRows<kH, kR>(acc, slot, xrow, nr, n_vec, lane);
#pragma unroll
      for (int t = 0; t < kR; ++t)
        if (lane == t && t < nr)
          grouped::StoreOut<kEpi, bf16>(p, e, r0 + t, j, acc[0][t], acc[kH - 1][t]);
    }
    __syncwarp();  // the slot is refilled by the next iteration's issue
  }
  asm volatile("cp.async.wait_all;\n" ::);
}

template <typename K>
int BlocksPerSm(K kernel, int smem) {
  int b = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&b, kernel, kPipeThreads, smem) !=
          cudaSuccess ||
      b < 1) {
    (void)cudaGetLastError();
    b = 1;
  }
  return b;
}

int Sms() {
  static const int sms = [] {
    int dev = 0, n = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
      n = 132;
    return std::max(n, 1);
  }();
  return sms;
}

// The smem limit of a kernel raised once (a static per launcher instantiation).
#define BMS_PIPE_ALLOW_SMEM(kernel)                                                               \
  do {                                                                                            \
    static const cudaError_t attr_err =                                                           \
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kMaxBlockSmem); \
    if (attr_err != cudaSuccess)                                                                  \
      return absl::InternalError(                                                                 \
          absl::StrCat("gemv pipe: shared memory attribute: ", cudaGetErrorString(attr_err)));    \
  } while (0)

template <GroupedEpilogue kEpi, int kR, bool kHint>
absl::Status LaunchGroupedPipe(const GroupedGemmParams& p, Stream stream) {
  constexpr int kH = kEpi == GroupedEpilogue::kGatedAct ? 2 : 1;
  auto kernel = GroupedPipeKernel<kEpi, kR, kHint>;
  const int smem = kPipeWarps * kStages * kH * (p.k / 8) * 16;
  if (smem > kMaxBlockSmem)
    return absl::InvalidArgumentError("GroupedGemm: k too large for the spipe variants");
  BMS_PIPE_ALLOW_SMEM(kernel);
  const int64_t items = static_cast<int64_t>(p.n) * std::min(p.n_rows, p.n_experts);
  const int64_t want = (items + kPipeWarps - 1) / kPipeWarps;
  const int blocks = static_cast<int>(
      std::max<int64_t>(1, std::min<int64_t>(want, int64_t{BlocksPerSm(kernel, smem)} * Sms())));
  LaunchPdl(kernel, blocks, kPipeThreads, smem, stream, p);
  BMS_CUDA_CHECK_LAUNCH("GroupedGemvPipe");
  return absl::OkStatus();
}

template <GroupedEpilogue kEpi, int kR>
absl::Status LaunchGroupedPipeH(const GroupedGemmParams& p, Stream stream) {
  return GemvL2Hint() ? LaunchGroupedPipe<kEpi, kR, true>(p, stream)
                      : LaunchGroupedPipe<kEpi, kR, false>(p, stream);
}

template <int kR>
absl::Status LaunchGroupedPipeCfg(const GroupedGemmParams& p, Stream stream) {
  switch (p.epilogue) {
    case GroupedEpilogue::kGatedAct:
      return LaunchGroupedPipeH<GroupedEpilogue::kGatedAct, kR>(p, stream);
    case GroupedEpilogue::kAct:
      return LaunchGroupedPipeH<GroupedEpilogue::kAct, kR>(p, stream);
    case GroupedEpilogue::kScaleScatter:
      return LaunchGroupedPipeH<GroupedEpilogue::kScaleScatter, kR>(p, stream);
  }
  return absl::InvalidArgumentError("GroupedGemm: bad epilogue");
}

// ---- dense: items of kH adjacent columns, all m rows in one pass ----
struct PipeDenseArgs {
  int m, n, k;
  const bf16* x;
  int64_t x_stride;
  const bf16* w;
  void* y;
  int64_t y_stride;
};

template <typename TO, int kH, bool kHint>
__global__ void __launch_bounds__(kPipeThreads) DensePipeKernel(PipeDenseArgs a) {
  constexpr int kR = kSmallMMaxRows;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int n_vec = a.k / 8;
  uint4* ring = reinterpret_cast<uint4*>(smem_raw) + warp * kStages * kH * n_vec;
  const int total = (a.n + kH - 1) / kH;
  const int first = blockIdx.x * kPipeWarps + warp, step = gridDim.x * kPipeWarps;
  const bf16* xrow[kR];
#pragma unroll
  for (int t = 0; t < kR; ++t) xrow[t] = a.x + min(t, a.m - 1) * a.x_stride;
  auto rows_of = [&](int item, const bf16*(&rows)[kH]) {
#pragma unroll
    for (int h = 0; h < kH; ++h)
      rows[h] = a.w + static_cast<int64_t>(min(item * kH + h, a.n - 1)) * a.k;
  };
  auto issue = [&](int i) {
    const int item = first + i * step;
    if (item < total) {
      const bf16* rows[kH];
      rows_of(item, rows);
      IssueRows<kH, kHint>(ring + (i % kStages) * kH * n_vec, rows, n_vec, lane);
    }
    Commit();
  };
  // The ring's first stages (weights only) are issued before PdlWait: under programmatic
  // dependent launch they stream while the previous kernel drains (kernels/cuda/pdl.cuh).
  PdlLaunchDependents();
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) issue(s);
  PdlWait();  // x is the previous kernel's output
  for (int i = 0; first + i * step < total; ++i) {
    issue(i + kStages - 1);
    WaitPrior();
    __syncwarp();
    const int j0 = (first + i * step) * kH;
    float acc[kH][kR];
    DotRows<kH, kR>(acc, ring + (i % kStages) * kH * n_vec, xrow, a.m, n_vec, lane);
    TO* y = static_cast<TO*>(a.y);
#pragma unroll
    for (int t = 0; t < kR; ++t) {
      if (lane == t && t < a.m) {
#pragma unroll
        for (int h = 0; h < kH; ++h)
          if (j0 + h < a.n) y[t * a.y_stride + j0 + h] = FromF32<TO>(acc[h][t]);
      }
    }
    __syncwarp();
  }
  asm volatile("cp.async.wait_all;\n" ::);
}

template <typename TO, int kH, bool kHint>
absl::Status LaunchDensePipeK(const PipeDenseArgs& a, Stream stream) {
  auto kernel = DensePipeKernel<TO, kH, kHint>;
  const int smem = kPipeWarps * kStages * kH * (a.k / 8) * 16;
  BMS_PIPE_ALLOW_SMEM(kernel);
  const int items = (a.n + kH - 1) / kH;
  const int want = CeilDiv(items, kPipeWarps);
  const int blocks = std::max(1, std::min(want, BlocksPerSm(kernel, smem) * Sms()));
  LaunchPdl(kernel, blocks, kPipeThreads, smem, stream, a);
  BMS_CUDA_CHECK_LAUNCH("StreamLinear(pipe)");
  return absl::OkStatus();
}
template <typename TO, int kH>
absl::Status LaunchDensePipe(const PipeDenseArgs& a, Stream stream) {
  return GemvL2Hint() ? LaunchDensePipeK<TO, kH, true>(a, stream)
                      : LaunchDensePipeK<TO, kH, false>(a, stream);
}

}  // namespace

int PipeVariantCount() { return 2; }
const char* PipeVariantName(int i) { return i == 0 ? "spipe_r4" : "spipe_r8"; }
bool PipeVariantFits(const GroupedGemmParams& p) {
  const int h = p.epilogue == GroupedEpilogue::kGatedAct ? 2 : 1;
  return kPipeWarps * kStages * h * (p.k / 8) * 16 <= kMaxBlockSmem;
}
absl::Status LaunchPipeVariant(int i, const GroupedGemmParams& p, Stream stream) {
  return i == 0 ? LaunchGroupedPipeCfg<4>(p, stream) : LaunchGroupedPipeCfg<8>(p, stream);
}

// Dense: two columns per item when the ring fits, one when only that fits; false: neither.
bool PipeLinearFits(const LinearParams& p) {
  return kPipeWarps * kStages * (p.k / 8) * 16 <= kMaxBlockSmem;
}
absl::Status PipeLinear(const LinearParams& p, Stream stream) {
  const PipeDenseArgs a{p.m,
                        p.n,
                        p.k,
                        static_cast<const bf16*>(p.x),
                        p.x_stride ? p.x_stride : p.k,
                        static_cast<const bf16*>(p.w),
                        p.y,
                        p.y_stride ? p.y_stride : p.n};
  // Two columns per item unless that leaves fewer than ~8 warps of work per SM.
  const bool two =
      2 * kPipeWarps * kStages * (p.k / 8) * 16 <= kMaxBlockSmem && (p.n + 1) / 2 >= 8 * Sms();
  if (p.out_dtype == DType::kF32)
    return two ? LaunchDensePipe<float, 2>(a, stream) : LaunchDensePipe<float, 1>(a, stream);
  return two ? LaunchDensePipe<bf16, 2>(a, stream) : LaunchDensePipe<bf16, 1>(a, stream);
}

}  // namespace bms::cuda
