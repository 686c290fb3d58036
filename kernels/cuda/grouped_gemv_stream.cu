// Weight-streaming GEMV kernels for decode (1..~16 rows per expert, dense m <= 8), bf16 with
// 16-byte aligned rows and k % 8 == 0:
// - grouped expert GEMM variants "sgemv_*" (registered in grouped_gemm.cu's variant list);
// - the dense small-M Linear (kernels/cuda/gemm.h StreamLinear).
// One work item is one output column (two weight rows: both halves of a gated fc1 column, or two
// adjacent dense columns) of one expert. kS warps of a block share an item, each streaming an
// interleaved 1/kS of its k range: every lane issues kU 16-byte weight loads per weight row
// (ld.global.nc.L1::no_allocate, 256-byte L2 prefetch) before using any, so a warp keeps
// kH * kU * 512 bytes in flight. The grid is persistent (the resident blocks of the whole GPU)
// and walks the items in a block-uniform loop; the grouped items are counted on the device from
// the expert offsets (only touched experts' columns exist), so one expert's 22.8 MB at batch 1
// is spread over every SM and untouched experts cost nothing. All rows of the item's expert are
// processed with the weights kept in registers (k fits one chunk: 32 * kU * kS 16-byte vectors)
// in passes of kR rows (x rows read through L1), so each weight byte is read once per step.
// Partial sums: warp butterfly (xor shuffles), then warps 1..kS-1 through shared memory summed
// by warp 0 in a fixed order: deterministic, no atomics, capturable.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/grouped_gemm_internal.cuh"
#include "kernels/cuda/pdl.cuh"

namespace bms::cuda {

// The cp.async-ring kernels (gemv_stream_pipe.cu).
int PipeVariantCount();
const char* PipeVariantName(int i);
bool PipeVariantFits(const GroupedGemmParams& p);
absl::Status LaunchPipeVariant(int i, const GroupedGemmParams& p, Stream stream);
bool PipeLinearFits(const LinearParams& p);
absl::Status PipeLinear(const LinearParams& p, Stream stream);
bool GemvL2Hint();

namespace {

constexpr int kWarps = 4;  // per block
constexpr int kThreads = kWarps * 32;
constexpr int kMinBlocks = 4;  // per SM: at most 128 registers per thread

template <bool kHint>
__device__ __forceinline__ uint4 LoadStream(const void* p) {
  uint4 v;
  if constexpr (kHint)
    asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
  else
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
  return v;
}

// The per-warp streaming core: kH weight rows, kU vectors per lane per row per chunk, kR rows of
// x per pass, the k range split over kS warps (this warp: s).
template <int kH, int kU, int kR, int kS, bool kHint = true>
struct Core {
  uint4 w[kH][kU];
  float acc[kH][kR];

  __device__ __forceinline__ static int Vec(int c, int s, int u, int lane) {
    return ((c * kS + s) * kU + u) * 32 + lane;
  }
  __device__ __forceinline__ void Load(const bf16* const (&wrow)[kH], int n_vec, int c, int s,
                                       int lane) {
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const int v = Vec(c, s, u, lane);
#pragma unroll
      for (int h = 0; h < kH; ++h)
        w[h][u] = v < n_vec ? LoadStream<kHint>(wrow[h] + v * 8) : make_uint4(0, 0, 0, 0);
    }
  }
  __device__ __forceinline__ void Zero() {
#pragma unroll
    for (int h = 0; h < kH; ++h)
#pragma unroll
      for (int i = 0; i < kR; ++i) acc[h][i] = 0.f;
  }
  __device__ __forceinline__ void Fma(const bf16* const (&xrow)[kR], int nr, int n_vec, int c,
                                      int s, int lane) {
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const int v = Vec(c, s, u, lane);
      if (v < n_vec) {
#pragma unroll
        for (int i = 0; i < kR; ++i) {
          if (i < nr) {
            const uint4 a = __ldg(reinterpret_cast<const uint4*>(xrow[i] + v * 8));
#pragma unroll
            for (int h = 0; h < kH; ++h) acc[h][i] = grouped::Dot8Bf16(a, w[h][u], acc[h][i]);
          }
        }
      }
    }
  }
  // Butterfly over the warp (every lane ends with the same sums), then warps s > 0 of the item
  // hand theirs to warp 0 through red (kS - 1 slots of kH * kR floats per item slot). Block-wide
  // barriers: every thread of the block must call this.
  __device__ __forceinline__ void Reduce(float* red, int slot, int s, int lane) {
#pragma unroll
    for (int h = 0; h < kH; ++h)
#pragma unroll
      for (int i = 0; i < kR; ++i)
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) acc[h][i] += __shfl_xor_sync(0xffffffffu, acc[h][i], o);
    if constexpr (kS > 1) {
      float* mine = red + (slot * (kS - 1) + (s - 1)) * kH * kR;
      if (s > 0 && lane == 0) {
#pragma unroll
        for (int h = 0; h < kH; ++h)
#pragma unroll
          for (int i = 0; i < kR; ++i) mine[h * kR + i] = acc[h][i];
      }
      __syncthreads();
      if (s == 0) {
        for (int t = 0; t < kS - 1; ++t) {
          const float* src = red + (slot * (kS - 1) + t) * kH * kR;
#pragma unroll
          for (int h = 0; h < kH; ++h)
#pragma unroll
            for (int i = 0; i < kR; ++i) acc[h][i] += src[h * kR + i];
        }
      }
      __syncthreads();
    }
  }
};

// ---- grouped ----

__device__ __forceinline__ int TouchedCount(const int32_t* offsets, int n_experts, int lane) {
  int cnt = 0;
  for (int base = 0; base < n_experts; base += 32) {
    const int e = base + lane;
    cnt += __popc(__ballot_sync(0xffffffffu, e < n_experts && offsets[e] < offsets[e + 1]));
  }
  return cnt;
}

template <GroupedEpilogue kEpi, int kU, int kR, int kS>
__global__ void __launch_bounds__(kThreads, kMinBlocks) GroupedStreamKernel(GroupedGemmParams p) {
  constexpr int kH = kEpi == GroupedEpilogue::kGatedAct ? 2 : 1;
  constexpr int kItemsPerBlock = kWarps / kS;
  __shared__ float red[kS > 1 ? kItemsPerBlock * (kS - 1) * kH * kR : 1];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int slot = warp / kS, s = warp % kS;
  const int n_vec = p.k / 8;
  const int n_chunks = (n_vec + 32 * kU * kS - 1) / (32 * kU * kS);
  PdlLaunchDependents();
  PdlWait();  // the touched experts (offsets) come from the routing kernel (kernels/cuda/pdl.cuh)
  const int64_t total =
      static_cast<int64_t>(TouchedCount(p.expert_offsets, p.n_experts, lane)) * p.n;
  const bf16* A = static_cast<const bf16*>(p.a);
  for (int64_t base = static_cast<int64_t>(blockIdx.x) * kItemsPerBlock; base < total;
       base += static_cast<int64_t>(gridDim.x) * kItemsPerBlock) {
    const int64_t item = base + slot;
    const bool active = item < total;  // block-uniform loop; inactive slots join the barriers
    int e = 0, j = 0, begin = 0, end = 0;
    if (active) {
      e = grouped::TouchedExpert(p.expert_offsets, p.n_experts, static_cast<int>(item / p.n), lane);
      j = static_cast<int>(item % p.n);
      begin = p.expert_offsets[e];
      end = p.expert_offsets[e + 1];
    }
    const int n_pass = (end - begin + kR - 1) / kR;  // 0 when inactive
    // Every slot of the block runs the same number of passes (barriers inside Reduce).
    int passes = n_pass;
    if constexpr (kS > 1) {
      // Slots are independent items; only the kS warps of one slot need the same count, and
      // they share the item. Barriers are block-wide, so take the block maximum.
      __shared__ int max_pass;
      if (threadIdx.x == 0) max_pass = 0;
      __syncthreads();
      if (lane == 0 && s == 0) atomicMax(&max_pass, n_pass);
      __syncthreads();
      passes = max_pass;
      __syncthreads();
    }
    const bf16* wrow[kH];
#pragma unroll
    for (int h = 0; h < kH; ++h)
      wrow[h] = static_cast<const bf16*>(p.w) +
                ((static_cast<int64_t>(e) * kH + h) * p.n + j) * static_cast<int64_t>(p.k);
    Core<kH, kU, kR, kS> core;
    for (int pass = 0; pass < passes; ++pass) {
      const int r0 = begin + pass * kR;
      const int nr = pass < n_pass ? min(kR, end - r0) : 0;
      const bf16* xrow[kR];
#pragma unroll
      for (int i = 0; i < kR; ++i) {
        const int r = r0 + min(i, max(nr - 1, 0));
        xrow[i] = nr > 0 ? A + static_cast<int64_t>(p.a_rows ? p.a_rows[r] : r) * p.lda : A;
      }
      core.Zero();
      for (int c = 0; c < n_chunks; ++c) {
        if (nr > 0 && (n_chunks > 1 || pass == 0)) core.Load(wrow, n_vec, c, s, lane);
        if (nr > 0) core.Fma(xrow, nr, n_vec, c, s, lane);
      }
      core.Reduce(red, slot, s, lane);
      if (s == 0) {
#pragma unroll
        for (int i = 0; i < kR; ++i)
          if (lane == i && i < nr)
            grouped::StoreOut<kEpi, bf16>(p, e, r0 + i, j, core.acc[0][i], core.acc[kH - 1][i]);
      }
    }
  }
}

int SmCount() {
  static const int sms = [] {
    int dev = 0, n = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
      n = 132;
    return std::max(n, 1);
  }();
  return sms;
}

// Resident blocks per SM of a kernel (1 on failure). Callers cache it per kernel.
template <typename K>
int QueryOccupancy(K kernel) {
  int b = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&b, kernel, kThreads, 0) == cudaSuccess &&
      b > 0)
    return b;
  (void)cudaGetLastError();
  return 1;
}

template <GroupedEpilogue kEpi, int kU, int kR, int kS>
absl::Status LaunchGrouped(const GroupedGemmParams& p, Stream stream) {
  auto kernel = GroupedStreamKernel<kEpi, kU, kR, kS>;
  static const int occupancy = QueryOccupancy(kernel);
  const int64_t max_items = static_cast<int64_t>(p.n) * std::min(p.n_rows, p.n_experts);
  const int64_t want = (max_items + kWarps / kS - 1) / (kWarps / kS);
  const int blocks = static_cast<int>(
      std::max<int64_t>(1, std::min<int64_t>(want, int64_t{occupancy} * SmCount())));
  LaunchPdl(kernel, blocks, kThreads, 0, stream, p);
  BMS_CUDA_CHECK_LAUNCH("GroupedGemvStream");
  return absl::OkStatus();
}

// kU: 8 vectors per lane per row (gated: 2 rows), 16 for one-row items when k needs it.
template <GroupedEpilogue kEpi, int kR, int kS>
absl::Status LaunchGroupedU(const GroupedGemmParams& p, Stream stream) {
  constexpr bool kGated = kEpi == GroupedEpilogue::kGatedAct;
  if constexpr (!kGated) {
    if (p.k / 8 > 32 * 8 * kS) return LaunchGrouped<kEpi, 16, kR, kS>(p, stream);
  }
  return LaunchGrouped<kEpi, 8, kR, kS>(p, stream);
}

template <int kR, int kS>
absl::Status LaunchGroupedCfg(const GroupedGemmParams& p, Stream stream) {
  switch (p.epilogue) {
    case GroupedEpilogue::kGatedAct:
      return LaunchGroupedU<GroupedEpilogue::kGatedAct, kR, kS>(p, stream);
    case GroupedEpilogue::kAct:
      return LaunchGroupedU<GroupedEpilogue::kAct, kR, kS>(p, stream);
    case GroupedEpilogue::kScaleScatter:
      return LaunchGroupedU<GroupedEpilogue::kScaleScatter, kR, kS>(p, stream);
  }
  return absl::InvalidArgumentError("GroupedGemm: bad epilogue");
}

// The ring variants; where k is too long for their shared memory, the register kernel.
template <int kPipe, int kR>
absl::Status LaunchPipeOrRegs(const GroupedGemmParams& p, Stream stream) {
  if (PipeVariantFits(p)) return LaunchPipeVariant(kPipe, p, stream);
  return LaunchGroupedCfg<kR, 1>(p, stream);
}

struct StreamVariant {
  const char* name;
  absl::Status (*launch)(const GroupedGemmParams&, Stream);
};
// rN: rows per pass (x rows per weight load); sN: warps splitting one column's k range.
const StreamVariant kStreamVariants[] = {
    {"sgemv_r4", &LaunchGroupedCfg<4, 1>},
    {"sgemv_r8", &LaunchGroupedCfg<8, 1>},
    {"sgemv_r4s2", &LaunchGroupedCfg<4, 2>},
    {"sgemv_r2s4", &LaunchGroupedCfg<2, 4>},
    // cp.async ring per warp (gemv_stream_pipe.cu), 4 / 8 rows per pass.
    {"spipe_r4", &LaunchPipeOrRegs<0, 4>},
    {"spipe_r8", &LaunchPipeOrRegs<1, 8>},
};

// ---- dense ----

struct DenseArgs {
  int m, n, k;
  const bf16* x;
  int64_t x_stride;
  const bf16* w;
  void* y;
  int64_t y_stride;
};

// Items: pairs of adjacent columns (j, j + 1), all m rows in one pass.
template <typename TO, int kS, bool kHint>
__global__ void __launch_bounds__(kThreads, kMinBlocks) DenseStreamKernel(DenseArgs a) {
  constexpr int kH = 2, kU = 8, kR = kSmallMMaxRows;
  constexpr int kItemsPerBlock = kWarps / kS;
  __shared__ float red[kS > 1 ? kItemsPerBlock * (kS - 1) * kH * kR : 1];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int slot = warp / kS, s = warp % kS;
  const int n_vec = a.k / 8;
  const int n_chunks = (n_vec + 32 * kU * kS - 1) / (32 * kU * kS);
  const int total = (a.n + 1) / 2;
  const bf16* xrow[kR];
#pragma unroll
  for (int i = 0; i < kR; ++i) xrow[i] = a.x + min(i, a.m - 1) * a.x_stride;
  Core<kH, kU, kR, kS, kHint> core;
  // The first item's first weight chunk is loaded before PdlWait (weights only: it overlaps the
  // previous kernel's drain under programmatic dependent launch, kernels/cuda/pdl.cuh).
  PdlLaunchDependents();
  const int first = blockIdx.x * kItemsPerBlock;
  if (first < total && first + slot < total) {
    const int j = 2 * (first + slot);
    const bf16* wrow[kH] = {a.w + static_cast<int64_t>(j) * a.k,
                            a.w + static_cast<int64_t>(min(j + 1, a.n - 1)) * a.k};
    core.Load(wrow, n_vec, 0, s, lane);
  }
  PdlWait();  // x is the previous kernel's output
  for (int base = first; base < total; base += gridDim.x * kItemsPerBlock) {
    const int item = base + slot;
    const int nr = item < total ? a.m : 0;
    const int j = 2 * min(item, total - 1);
    const bf16* wrow[kH] = {a.w + static_cast<int64_t>(j) * a.k,
                            a.w + static_cast<int64_t>(min(j + 1, a.n - 1)) * a.k};
    core.Zero();
    for (int c = 0; c < n_chunks; ++c) {
      if (nr > 0) {
        if (base != first || c != 0) core.Load(wrow, n_vec, c, s, lane);
        core.Fma(xrow, nr, n_vec, c, s, lane);
      }
    }
    core.Reduce(red, slot, s, lane);
    if (s == 0) {
      TO* y = static_cast<TO*>(a.y);
#pragma unroll
      for (int i = 0; i < kR; ++i) {
        if (lane == i && i < nr) {
          y[i * a.y_stride + j] = FromF32<TO>(core.acc[0][i]);
          if (j + 1 < a.n) y[i * a.y_stride + j + 1] = FromF32<TO>(core.acc[1][i]);
        }
      }
    }
  }
}

template <typename TO, int kS, bool kHint>
void LaunchDenseK(const DenseArgs& a, Stream stream) {
  auto kernel = DenseStreamKernel<TO, kS, kHint>;
  static const int occupancy = QueryOccupancy(kernel);
  const int items = (a.n + 1) / 2;
  const int want = CeilDiv(items, kWarps / kS);
  const int blocks = std::max(1, std::min(want, occupancy * SmCount()));
  LaunchPdl(kernel, blocks, kThreads, 0, stream, a);
}

template <typename TO, int kS>
void LaunchDense(const DenseArgs& a, Stream stream) {
  if (GemvL2Hint())
    LaunchDenseK<TO, kS, true>(a, stream);
  else
    LaunchDenseK<TO, kS, false>(a, stream);
}

template <typename TO>
void LaunchDenseS(const DenseArgs& a, int split, Stream stream) {
  if (split == 4)
    LaunchDense<TO, 4>(a, stream);
  else if (split == 2)
    LaunchDense<TO, 2>(a, stream);
  else
    LaunchDense<TO, 1>(a, stream);
}

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

int StreamVariantCount() {
  return static_cast<int>(sizeof(kStreamVariants) / sizeof(kStreamVariants[0]));
}
const char* StreamVariantName(int i) { return kStreamVariants[i].name; }
absl::Status LaunchStreamVariant(int i, const GroupedGemmParams& p, Stream stream) {
  if (i < 0 || i >= StreamVariantCount())
    return absl::InvalidArgumentError("GroupedGemm: bad stream variant");
  return kStreamVariants[i].launch(p, stream);
}

bool StreamLinearSupported(const LinearParams& p) {
  const int64_t xs = p.x_stride ? p.x_stride : p.k;
  return p.m >= 1 && p.m <= kSmallMMaxRows && p.n > 0 && p.k > 0 && p.in_dtype == DType::kBF16 &&
         (p.out_dtype == DType::kBF16 || p.out_dtype == DType::kF32) && p.k % 8 == 0 &&
         xs % 8 == 0 && Aligned16(p.x) && Aligned16(p.w);
}

int StreamLinearSplit(const LinearParams& p) {
  // Enough warps for about 12 per SM; a split warp still has >= 2 vectors per lane.
  const int64_t items = (p.n + 1) / 2;
  int split = 1;
  while (split < 4 && items * split < int64_t{12} * SmCount() && p.k / 8 >= 32 * 2 * split * 2)
    split *= 2;
  return split;
}

namespace {
std::atomic<bool> g_pipelined{true};
}  // namespace

// The 256-byte L2 prefetch hint on the dense and ring kernels' weight loads: on unless
// BMS_GEMV_L2HINT=0 (read once; an A/B switch for the benchmark).
bool GemvL2Hint() {
  static const bool on = [] {
    const char* env = std::getenv("BMS_GEMV_L2HINT");
    return env == nullptr || std::strcmp(env, "0") != 0;
  }();
  return on;
}
bool StreamLinearPipelined() { return g_pipelined.load(std::memory_order_relaxed); }
void SetStreamLinearPipelined(bool on) { g_pipelined.store(on); }

absl::Status StreamLinear(const LinearParams& p, Stream stream) {
  return StreamLinearWith(p, StreamLinearPipelined(), stream);
}

// H100 (bench/NOTES.md, gemv section), m = 1, timed back to back: out_proj [1472, 2944] ring
// 10.7 us vs cuBLASLt split-K + reduce 13.8; LM head [50304, 1472] registers 57.0 vs 58.7 (87%
// of copy bandwidth); in_proj [5888, 1472] cuBLASLt 10.0 vs 13.1 / 14.4.
SmallMPath StreamLinearAutoPath(const LinearParams& p) {
  if (p.m != 1 || !StreamLinearSupported(p)) return SmallMPath::kCublas;
  const int64_t sms = SmCount();
  // Few columns: one column per warp puts the whole matrix in flight at once.
  if ((p.n + 1) / 2 < 8 * sms && PipeLinearFits(p)) return SmallMPath::kStreamRing;
  if (p.n >= 64 * sms) return SmallMPath::kStreamRegs;  // long persistent stream
  return SmallMPath::kCublas;
}

absl::Status StreamLinearWith(const LinearParams& p, bool ring, Stream stream) {
  if (!p.x || !p.w || !p.y || !StreamLinearSupported(p))
    return absl::InvalidArgumentError("StreamLinear: shape, dtype or alignment not supported");
  const DenseArgs a{p.m,
                    p.n,
                    p.k,
                    static_cast<const bf16*>(p.x),
                    p.x_stride ? p.x_stride : p.k,
                    static_cast<const bf16*>(p.w),
                    p.y,
                    p.y_stride ? p.y_stride : p.n};
  if (ring && PipeLinearFits(p)) return PipeLinear(p, stream);
  const int split = StreamLinearSplit(p);
  if (p.out_dtype == DType::kF32)
    LaunchDenseS<float>(a, split, stream);
  else
    LaunchDenseS<bf16>(a, split, stream);
  BMS_CUDA_CHECK_LAUNCH("StreamLinear");
  return absl::OkStatus();
}

}  // namespace bms::cuda
