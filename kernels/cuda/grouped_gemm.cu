// Grouped expert GEMM (kernels/cuda/ops.h): one launch covers every expert; each block finds
// its expert and row range from the device-side expert_offsets, so the launch needs no host
// sync and is CUDA-graph friendly (grid sized for the worst case, idle tiles exit). bf16 runs on
// tensor cores (mma.sync m16n8k16, fp32 accumulate); fp32 runs a SIMT FMA kernel for the exact
// mode. Epilogues: gated activation (both halves of fc1 computed by the same tile), plain
// activation, and routing-scale + un-permute (rows land in token order).
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/grouped_gemm_internal.cuh"
#include "kernels/cuda/pdl.cuh"

namespace bms::cuda {

// Weight-streaming GEMV variants for 1..~16 rows per expert (grouped_gemv_stream.cu), bf16 with
// k % 8 == 0 and 16-byte aligned rows. Index i in [0, StreamVariantCount()).
int StreamVariantCount();
const char* StreamVariantName(int i);
absl::Status LaunchStreamVariant(int i, const GroupedGemmParams& p, Stream stream);
namespace {

using grouped::CpAsync16;
using grouped::CpAsyncCommit;
using grouped::CpAsyncWait;
using grouped::FindTile;
using grouped::MmaBf16;
using grouped::StoreOut;
using grouped::Tile;

constexpr int kBM = 64;
constexpr int kBN = 64;

// ---- bf16 tensor-core kernel: 128 threads = 2x2 warps, each a 32 x 32 tile (per half). ----
constexpr int kMmaBK = 32;
constexpr int kMmaLd = kMmaBK + 8;  // padded row (bf16): conflict-free 32-bit fragment loads
constexpr int kMmaThreads = 128;

// Loads 8 consecutive k elements of one row (zeros past k or for an invalid row).
__device__ __forceinline__ uint4 Load8(const bf16* row, int kc, int k, bool vec) {
  if (row == nullptr) return make_uint4(0, 0, 0, 0);
  if (vec && kc + 8 <= k) return *reinterpret_cast<const uint4*>(row + kc);
  union {
    uint4 v;
    bf16 h[8];
  } u;
#pragma unroll
  for (int i = 0; i < 8; ++i) u.h[i] = kc + i < k ? row[kc + i] : __float2bfloat16_rn(0.f);
  return u.v;
}

// kAsync (k % 8 == 0, 16-byte aligned rows): a kMmaStages-deep cp.async pipeline. Otherwise one
// stage filled through registers with element-wise loads at the k tail.
constexpr int kMmaStages = 3;

template <GroupedEpilogue kEpi, bool kAsync>
__global__ void __launch_bounds__(kMmaThreads) GroupedGemmMmaKernel(GroupedGemmParams p) {
  PdlLaunchDependents();
  PdlWait();  // before any read of earlier kernels' outputs or global write (kernels/cuda/pdl.cuh)
  constexpr int kHalves = kEpi == GroupedEpilogue::kGatedAct ? 2 : 1;
  constexpr int kBRows = kHalves * kBN;
  constexpr int kAChunks = kBM * kMmaBK / 8 / kMmaThreads;     // 2
  constexpr int kBChunks = kBRows * kMmaBK / 8 / kMmaThreads;  // 2 or 4
  constexpr int kStages = kAsync ? kMmaStages : 1;
  __shared__ __align__(16) bf16 As[kStages][kBM][kMmaLd];
  __shared__ __align__(16) bf16 Bs[kStages][kBRows][kMmaLd];

  const Tile tile = FindTile<kBM>(p.expert_offsets, p.n_experts, blockIdx.y);
  if (tile.expert < 0) return;
  const int n0 = blockIdx.x * kBN;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int g = lane / 4, tq = lane % 4;
  const int wm = warp / 2, wn = warp % 2;
  const bf16* A = static_cast<const bf16*>(p.a);
  const bf16* W =
      static_cast<const bf16*>(p.w) + static_cast<int64_t>(tile.expert) * kBRows / kBN * p.n * p.k;

  // Per-thread source rows for the loads (null = zero fill).
  const bf16* a_src[kAChunks];
  const bf16* b_src[kBChunks];
#pragma unroll
  for (int i = 0; i < kAChunks; ++i) {
    const int r = tile.row_begin + (tid + i * kMmaThreads) / 4;
    a_src[i] = nullptr;
    if (r < tile.row_end) a_src[i] = A + (p.a_rows ? p.a_rows[r] : r) * p.lda;
  }
#pragma unroll
  for (int i = 0; i < kBChunks; ++i) {
    const int row = (tid + i * kMmaThreads) / 4;
    const int j = n0 + row % kBN;
    b_src[i] = j < p.n ? W + static_cast<int64_t>(row / kBN * p.n + j) * p.k : nullptr;
  }

  float acc[kHalves][2][4][4] = {};
  auto compute = [&](int stage) {
#pragma unroll
    for (int kk = 0; kk < kMmaBK; kk += 16) {
      uint32_t af[2][4];
#pragma unroll
      for (int mi = 0; mi < 2; ++mi) {
        const int rm = wm * 32 + mi * 16;
        af[mi][0] = *reinterpret_cast<const uint32_t*>(&As[stage][rm + g][kk + 2 * tq]);
        af[mi][1] = *reinterpret_cast<const uint32_t*>(&As[stage][rm + g + 8][kk + 2 * tq]);
        af[mi][2] = *reinterpret_cast<const uint32_t*>(&As[stage][rm + g][kk + 2 * tq + 8]);
        af[mi][3] = *reinterpret_cast<const uint32_t*>(&As[stage][rm + g + 8][kk + 2 * tq + 8]);
      }
#pragma unroll
      for (int h = 0; h < kHalves; ++h) {
#pragma unroll
        for (int ni = 0; ni < 4; ++ni) {
          const int rn = h * kBN + wn * 32 + ni * 8;
          uint32_t bfr[2];
          bfr[0] = *reinterpret_cast<const uint32_t*>(&Bs[stage][rn + g][kk + 2 * tq]);
          bfr[1] = *reinterpret_cast<const uint32_t*>(&Bs[stage][rn + g][kk + 2 * tq + 8]);
#pragma unroll
          for (int mi = 0; mi < 2; ++mi) MmaBf16(acc[h][mi][ni], af[mi], bfr);
        }
      }
    }
  };
  const int n_k_tiles = (p.k + kMmaBK - 1) / kMmaBK;

  if constexpr (kAsync) {
    // Issues the copies of k-tile kt into stage kt % kStages (nothing past the last tile).
    auto issue = [&](int kt) {
      if (kt < n_k_tiles) {
        const int stage = kt % kStages, k0 = kt * kMmaBK;
#pragma unroll
        for (int i = 0; i < kAChunks; ++i) {
          const int id = tid + i * kMmaThreads, kc = k0 + (id % 4) * 8;
          const bool ok = a_src[i] != nullptr && kc < p.k;
          CpAsync16(&As[stage][id / 4][(id % 4) * 8], ok ? a_src[i] + kc : A, ok);
        }
#pragma unroll
        for (int i = 0; i < kBChunks; ++i) {
          const int id = tid + i * kMmaThreads, kc = k0 + (id % 4) * 8;
          const bool ok = b_src[i] != nullptr && kc < p.k;
          CpAsync16(&Bs[stage][id / 4][(id % 4) * 8], ok ? b_src[i] + kc : W, ok);
        }
      }
      CpAsyncCommit();  // one group per call keeps the wait count uniform
    };
#pragma unroll
    for (int s = 0; s < kStages - 1; ++s) issue(s);
    for (int kt = 0; kt < n_k_tiles; ++kt) {
      CpAsyncWait<kStages - 2>();  // tile kt has landed (this thread's copies)
      __syncthreads();             // ... everyone's; and stage (kt - 1) is no longer read
      issue(kt + kStages - 1);
      compute(kt % kStages);
    }
  } else {
    uint4 a_reg[kAChunks], b_reg[kBChunks];
    auto load_global = [&](int k0) {
#pragma unroll
      for (int i = 0; i < kAChunks; ++i)
        a_reg[i] = Load8(a_src[i], k0 + ((tid + i * kMmaThreads) % 4) * 8, p.k, false);
#pragma unroll
      for (int i = 0; i < kBChunks; ++i)
        b_reg[i] = Load8(b_src[i], k0 + ((tid + i * kMmaThreads) % 4) * 8, p.k, false);
    };
    load_global(0);
    for (int kt = 0; kt < n_k_tiles; ++kt) {
#pragma unroll
      for (int i = 0; i < kAChunks; ++i) {
        const int id = tid + i * kMmaThreads;
        *reinterpret_cast<uint4*>(&As[0][id / 4][(id % 4) * 8]) = a_reg[i];
      }
#pragma unroll
      for (int i = 0; i < kBChunks; ++i) {
        const int id = tid + i * kMmaThreads;
        *reinterpret_cast<uint4*>(&Bs[0][id / 4][(id % 4) * 8]) = b_reg[i];
      }
      __syncthreads();
      if (kt + 1 < n_k_tiles) load_global((kt + 1) * kMmaBK);
      compute(0);
      __syncthreads();
    }
  }

#pragma unroll
  for (int mi = 0; mi < 2; ++mi) {
#pragma unroll
    for (int ni = 0; ni < 4; ++ni) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int r = tile.row_begin + wm * 32 + mi * 16 + g + (i >= 2 ? 8 : 0);
        const int j = n0 + wn * 32 + ni * 8 + 2 * tq + (i & 1);
        if (r < tile.row_end && j < p.n)
          StoreOut<kEpi, bf16>(p, tile.expert, r, j, acc[0][mi][ni][i],
                               acc[kHalves - 1][mi][ni][i]);
      }
    }
  }
}

// ---- fp32 SIMT kernel: 256 threads, each 4 rows x 4 columns (per half). ----
constexpr int kF32BK = 16;
constexpr int kF32Threads = 256;

template <GroupedEpilogue kEpi>
__global__ void __launch_bounds__(kF32Threads) GroupedGemmF32Kernel(GroupedGemmParams p) {
  PdlLaunchDependents();
  PdlWait();  // before any read of earlier kernels' outputs or global write (kernels/cuda/pdl.cuh)
  constexpr int kHalves = kEpi == GroupedEpilogue::kGatedAct ? 2 : 1;
  constexpr int kBRows = kHalves * kBN;
  __shared__ float As[kF32BK][kBM + 4];
  __shared__ float Bs[kF32BK][kBRows + 4];
  const Tile tile = FindTile<kBM>(p.expert_offsets, p.n_experts, blockIdx.y);
  if (tile.expert < 0) return;
  const int n0 = blockIdx.x * kBN;
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const float* A = static_cast<const float*>(p.a);
  const float* W =
      static_cast<const float*>(p.w) + static_cast<int64_t>(tile.expert) * kHalves * p.n * p.k;
  float acc[kHalves][4][4] = {};
  for (int k0 = 0; k0 < p.k; k0 += kF32BK) {
    for (int id = tid; id < kBM * kF32BK; id += kF32Threads) {
      const int row = id / kF32BK, kk = id % kF32BK, r = tile.row_begin + row;
      float v = 0.f;
      if (r < tile.row_end && k0 + kk < p.k) v = A[(p.a_rows ? p.a_rows[r] : r) * p.lda + k0 + kk];
      As[kk][row] = v;
    }
    for (int id = tid; id < kBRows * kF32BK; id += kF32Threads) {
      const int row = id / kF32BK, kk = id % kF32BK, j = n0 + row % kBN;
      float v = 0.f;
      if (j < p.n && k0 + kk < p.k)
        v = W[static_cast<int64_t>(row / kBN * p.n + j) * p.k + k0 + kk];
      Bs[kk][row] = v;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kF32BK; ++kk) {
      float a[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) a[i] = As[kk][ty * 4 + i];
#pragma unroll
      for (int h = 0; h < kHalves; ++h) {
#pragma unroll
        for (int jj = 0; jj < 4; ++jj) {
          const float b = Bs[kk][h * kBN + tx * 4 + jj];
#pragma unroll
          for (int i = 0; i < 4; ++i) acc[h][i][jj] = fmaf(a[i], b, acc[h][i][jj]);
        }
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
#pragma unroll
    for (int jj = 0; jj < 4; ++jj) {
      const int r = tile.row_begin + ty * 4 + i, j = n0 + tx * 4 + jj;
      if (r < tile.row_end && j < p.n)
        StoreOut<kEpi, float>(p, tile.expert, r, j, acc[0][i][jj], acc[kHalves - 1][i][jj]);
    }
  }
}

// ---- bf16 small-batch kernel (decode): one warp per output column j of one expert, 16-byte
// weight loads along k, up to kGemvRows grouped rows per pass (weights re-read from L2 for the
// rest). Every weight row of a touched expert is read once per pass by one warp, so a decode
// step streams the touched experts at close to memory bandwidth; the MMA kernel above needs
// row tiles of 64 and reaches only n/64 blocks per expert when rows are few. ----
constexpr int kGemvWarps = 8;
constexpr int kGemvRows = 8;
// (Variant "gemv": the default for <= 8 rows until the 16-row k-split tiles of
// grouped_gemm_tiled.cu measured faster at 1 and 8 rows; it is 1.4-2x slower at 32-64 rows.)

__device__ __forceinline__ float Dot8(const uint4& a, const uint4& w) {
  const __nv_bfloat162* a2 = reinterpret_cast<const __nv_bfloat162*>(&a);
  const __nv_bfloat162* w2 = reinterpret_cast<const __nv_bfloat162*>(&w);
  float s = 0.f;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 x = __bfloat1622float2(a2[i]), y = __bfloat1622float2(w2[i]);
    s = fmaf(x.x, y.x, s);
    s = fmaf(x.y, y.y, s);
  }
  return s;
}

template <GroupedEpilogue kEpi>
__global__ void __launch_bounds__(kGemvWarps * 32) GroupedGemvKernel(GroupedGemmParams p) {
  PdlLaunchDependents();
  PdlWait();  // before any read of earlier kernels' outputs or global write (kernels/cuda/pdl.cuh)
  constexpr int kHalves = kEpi == GroupedEpilogue::kGatedAct ? 2 : 1;
  const int e = blockIdx.y;
  const int begin = p.expert_offsets[e], end = p.expert_offsets[e + 1];
  if (begin >= end) return;  // block-uniform
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int j = blockIdx.x * kGemvWarps + warp;
  if (j >= p.n) return;  // warp-uniform
  const bf16* A = static_cast<const bf16*>(p.a);
  const bf16* W0 =
      static_cast<const bf16*>(p.w) + (static_cast<int64_t>(e) * kHalves * p.n + j) * p.k;
  const bf16* W1 = W0 + static_cast<int64_t>(p.n) * p.k;  // gated: the second half's row j
  for (int r0 = begin; r0 < end; r0 += kGemvRows) {
    const int nr = min(kGemvRows, end - r0);
    const bf16* arow[kGemvRows];
#pragma unroll
    for (int i = 0; i < kGemvRows; ++i) {
      const int r = r0 + min(i, nr - 1);
      arow[i] = A + static_cast<int64_t>(p.a_rows ? p.a_rows[r] : r) * p.lda;
    }
    float acc0[kGemvRows], acc1[kGemvRows];
#pragma unroll
    for (int i = 0; i < kGemvRows; ++i) acc0[i] = acc1[i] = 0.f;
#pragma unroll 2
    for (int kc = lane * 8; kc < p.k; kc += 256) {
      const uint4 w0 = *reinterpret_cast<const uint4*>(W0 + kc);
      uint4 w1 = w0;
      if constexpr (kHalves == 2) w1 = *reinterpret_cast<const uint4*>(W1 + kc);
#pragma unroll
      for (int i = 0; i < kGemvRows; ++i) {
        if (i < nr) {
          const uint4 a = *reinterpret_cast<const uint4*>(arow[i] + kc);
          acc0[i] += Dot8(a, w0);
          if constexpr (kHalves == 2) acc1[i] += Dot8(a, w1);
        }
      }
    }
#pragma unroll
    for (int i = 0; i < kGemvRows; ++i) {
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) {
        acc0[i] += __shfl_xor_sync(0xffffffffu, acc0[i], o);
        if constexpr (kHalves == 2) acc1[i] += __shfl_xor_sync(0xffffffffu, acc1[i], o);
      }
      if (lane == 0 && i < nr)
        StoreOut<kEpi, bf16>(p, e, r0 + i, j, acc0[i], kHalves == 2 ? acc1[i] : acc0[i]);
    }
  }
}

constexpr int kVariantMma = 0, kVariantGemv = 1, kFirstTiled = 2;
// The wgmma variants follow the tiled ones.
int FirstWgmma() { return kFirstTiled + TiledVariantCount(); }
bool IsWgmma(int v) { return v >= FirstWgmma() && v < FirstWgmma() + WgmmaVariantCount(); }
// The weight-streaming GEMV variants (grouped_gemv_stream.cu) follow the wgmma ones.
int FirstStream() { return FirstWgmma() + WgmmaVariantCount(); }
bool IsStream(int v) { return v >= FirstStream() && v < FirstStream() + StreamVariantCount(); }

bool IsVec(const GroupedGemmParams& p) {
  return p.k % 8 == 0 && p.lda % 8 == 0 && reinterpret_cast<uintptr_t>(p.a) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(p.w) % 16 == 0;
}
bool IsFast(const GroupedGemmParams& p) { return p.dtype == DType::kBF16 && IsVec(p); }

template <GroupedEpilogue kEpi>
absl::Status LaunchLegacy(const GroupedGemmParams& p, bool vec, bool gemv, Stream stream) {
  if (gemv) {
    LaunchPdl(GroupedGemvKernel<kEpi>, dim3(CeilDiv(p.n, kGemvWarps), p.n_experts),
              kGemvWarps * 32, 0, stream, p);
    BMS_CUDA_CHECK_LAUNCH("GroupedGemv");
    return absl::OkStatus();
  }
  if (CeilDiv(p.n_rows, kBM) + p.n_experts > 65535)
    return absl::InvalidArgumentError("GroupedGemm: too many rows for one launch");
  const dim3 grid(CeilDiv(p.n, kBN), CeilDiv(p.n_rows, kBM) + p.n_experts);
  if (p.dtype == DType::kBF16 && vec)
    LaunchPdl(GroupedGemmMmaKernel<kEpi, true>, grid, kMmaThreads, 0, stream, p);
  else if (p.dtype == DType::kBF16)
    LaunchPdl(GroupedGemmMmaKernel<kEpi, false>, grid, kMmaThreads, 0, stream, p);
  else
    LaunchPdl(GroupedGemmF32Kernel<kEpi>, grid, kF32Threads, 0, stream, p);
  BMS_CUDA_CHECK_LAUNCH("GroupedGemm");
  return absl::OkStatus();
}

// p validated and defaulted, n_rows > 0, variant in range.
absl::Status RunVariant(const GroupedGemmParams& p, int variant, Stream stream) {
  const bool vec = IsVec(p), fast = p.dtype == DType::kBF16 && vec;
  if (fast && IsStream(variant)) return LaunchStreamVariant(variant - FirstStream(), p, stream);
  if (fast && IsWgmma(variant)) {
    if (WgmmaSupported()) return LaunchWgmmaVariant(variant - FirstWgmma(), p, stream);
    variant = GroupedGemmHeuristicVariant(p);  // not a Hopper GPU: the size rule's choice
  }
  if (fast && variant >= kFirstTiled) return LaunchTiledVariant(variant - kFirstTiled, p, stream);
  const bool gemv = fast && variant == kVariantGemv;
  switch (p.epilogue) {
    case GroupedEpilogue::kGatedAct:
      return LaunchLegacy<GroupedEpilogue::kGatedAct>(p, vec, gemv, stream);
    case GroupedEpilogue::kAct:
      return LaunchLegacy<GroupedEpilogue::kAct>(p, vec, gemv, stream);
    case GroupedEpilogue::kScaleScatter:
      return LaunchLegacy<GroupedEpilogue::kScaleScatter>(p, vec, gemv, stream);
  }
  return absl::InvalidArgumentError("GroupedGemm: bad epilogue");
}

absl::Status Normalize(GroupedGemmParams* p) {
  if (p->n_rows < 0 || p->n_experts <= 0 || p->n <= 0 || p->k <= 0 || !p->expert_offsets || !p->a ||
      !p->w || !p->out)
    return absl::InvalidArgumentError("GroupedGemm: bad sizes or null pointer");
  if (p->lda == 0) p->lda = p->k;
  if (p->ldo == 0) p->ldo = p->n;
  if (p->variant >= GroupedGemmVariantCount())
    return absl::InvalidArgumentError(absl::StrCat(
        "GroupedGemm: variant ", p->variant, " out of range [0, ", GroupedGemmVariantCount(), ")"));
  return absl::OkStatus();
}

}  // namespace

int GroupedGemmVariantCount() { return FirstStream() + StreamVariantCount(); }

const char* GroupedGemmVariantName(int v) {
  if (v == kVariantMma) return "mma64";
  if (v == kVariantGemv) return "gemv";
  if (IsWgmma(v)) return WgmmaVariantName(v - FirstWgmma());
  if (IsStream(v)) return StreamVariantName(v - FirstStream());
  if (v >= kFirstTiled && v < GroupedGemmVariantCount()) return TiledVariantName(v - kFirstTiled);
  return "?";
}

bool GroupedGemmVariantApplies(const GroupedGemmParams& p, int v) {
  if (v < 0 || v >= GroupedGemmVariantCount()) return false;
  if (IsWgmma(v)) return IsFast(p) && WgmmaSupported();
  return v == kVariantMma || IsFast(p);
}

namespace {
int TiledByName(const char* name) {
  for (int i = 0; i < TiledVariantCount(); ++i)
    if (std::strcmp(TiledVariantName(i), name) == 0) return kFirstTiled + i;
  return kVariantMma;
}
int WgmmaByName(const char* name) {
  for (int i = 0; i < WgmmaVariantCount(); ++i)
    if (std::strcmp(WgmmaVariantName(i), name) == 0) return FirstWgmma() + i;
  return TiledByName("t128x128b64");
}
int SmCount() {
  static const int count = [] {
    int dev = 0, n = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
      n = 132;
    return n;
  }();
  return count;
}
}  // namespace

// From the H100 measurements in bench/NOTES.md (gemm section), 2.8b shapes: 16-row k-split
// tiles stream the weights best up to 64 rows (the narrower one, k split over a 4-block
// cluster, when the wider one would leave SMs idle); beyond, 128 x 128 tiles with k 64 per stage,
// except the plain (fc2-like) product up to 512 rows, where 32-row k-split tiles keep more blocks
// streaming.
int GroupedGemmHeuristicVariant(const GroupedGemmParams& p) {
  if (!IsFast(p)) return kVariantMma;
  if (p.n_rows <= 64) {
    const int cols = p.epilogue == GroupedEpilogue::kGatedAct ? 16 : 32;  // t16x32k4's tile
    const int64_t blocks =
        static_cast<int64_t>(CeilDiv(p.n, cols)) * std::min(p.n_rows, p.n_experts);
    if (blocks >= SmCount()) return TiledByName("t16x32k4");
    return TiledByName(TiledClustersSupported() ? "t16x16k4c4" : "t16x16k4");
  }
  // Hopper from 256 rows (32 per expert at 8 experts): the wgmma tiles, by the H100 runs in
  // bench/NOTES.md "wgmma variants" (64-row tiles where 128-row ones leave SMs idle; TMA-fed
  // weight tiles from 2048 rows).
  if (p.n_rows >= 256 && WgmmaSupported()) {
    const bool gated = p.epilogue == GroupedEpilogue::kGatedAct;
    if (p.n_rows < 512) return WgmmaByName(gated ? "wg64x128" : "wg64x64");
    if (!gated && p.n_rows < 2048) return WgmmaByName("wg128x128");
    return WgmmaByName(p.n_rows < 2048 ? "wg128x256" : "wg128x256t");
  }
  if (p.n_rows <= 512 && p.epilogue != GroupedEpilogue::kGatedAct) return TiledByName("t32x64k4");
  return TiledByName("t128x128b64");
}

absl::Status GroupedGemm(const GroupedGemmParams& p_in, Stream stream) {
  GroupedGemmParams p = p_in;
  if (absl::Status s = Normalize(&p); !s.ok()) return s;
  if (p.n_rows == 0) return absl::OkStatus();
  int v = p.variant;
  if (v < 0) v = p.tuner ? p.tuner->Choose(p, stream) : GroupedGemmHeuristicVariant(p);
  return RunVariant(p, v, stream);
}

// ---- tuner ----
struct GroupedGemmTuner::Impl {
  using Key = std::tuple<int, int, int, int, int, int>;  // n, k, epilogue, experts, fast, rows
  struct Entry {
    int variant = 0;
    std::vector<float> us;  // per variant, < 0: not applicable / failed
  };
  bool timing = true;
  mutable std::mutex mu;
  std::map<Key, Entry> cache;
  int32_t* d_offsets = nullptr;
  int offsets_cap = 0;
  cudaEvent_t ev[2] = {nullptr, nullptr};
  static constexpr size_t kScratchBytes = size_t{96} << 20;  // > L2 (50 MB on H100)
  void* scratch = nullptr;

  ~Impl() {
    if (d_offsets) cudaFree(d_offsets);
    if (scratch) cudaFree(scratch);
    for (cudaEvent_t e : ev)
      if (e) cudaEventDestroy(e);
  }
  static int Bucket(int rows) {
    int b = 1;
    while (b < rows) b *= 2;
    return b;
  }
  // Times every applicable variant on p with uniform routing; false on any CUDA failure.
  bool Tune(const GroupedGemmParams& p, Stream stream, Entry* out) {
    if (cudaStreamSynchronize(stream) != cudaSuccess) return false;
    if (!ev[0] &&
        (cudaEventCreate(&ev[0]) != cudaSuccess || cudaEventCreate(&ev[1]) != cudaSuccess))
      return false;
    if (offsets_cap < p.n_experts + 1) {
      if (d_offsets) cudaFree(d_offsets);
      d_offsets = nullptr;
      if (cudaMalloc(&d_offsets, (p.n_experts + 1) * sizeof(int32_t)) != cudaSuccess) return false;
      offsets_cap = p.n_experts + 1;
    }
    // Two routings of the same row count: uniform, and uneven (expert e gets a share in
    // proportion to 4 + (e * 5) % 4, i.e. 4..7: -28%..+27% around the mean, as real routing is).
    // A variant is scored by the sum of both, so a tile that fills the GPU in exactly one wave
    // under uniform routing only (and spills a second wave otherwise) does not win on that.
    std::vector<int32_t> offs[2];
    for (int r = 0; r < 2; ++r) {
      offs[r].assign(p.n_experts + 1, 0);
      int64_t total = 0, acc = 0;
      for (int e = 0; e < p.n_experts; ++e) total += r == 0 ? 1 : 4 + (e * 5) % 4;
      for (int e = 0; e < p.n_experts; ++e) {
        acc += r == 0 ? 1 : 4 + (e * 5) % 4;
        offs[r][e + 1] = static_cast<int32_t>(p.n_rows * acc / total);
      }
    }
    if (!scratch && cudaMalloc(&scratch, kScratchBytes) != cudaSuccess) {
      (void)cudaGetLastError();
      scratch = nullptr;  // time with a warm L2 instead
    }
    GroupedGemmParams q = p;
    q.expert_offsets = d_offsets;
    if (cudaMemcpy(d_offsets, offs[0].data(), offs[0].size() * sizeof(int32_t),
                   cudaMemcpyHostToDevice) != cudaSuccess)
      return false;
    out->us.assign(GroupedGemmVariantCount(), -1.f);
    float best = 0.f;
    out->variant = -1;
    for (int v = 0; v < GroupedGemmVariantCount(); ++v) {
      if (!GroupedGemmVariantApplies(q, v)) continue;
      if (v == kVariantGemv && q.n_rows > 64) continue;  // re-reads weights per 8 rows
      // Candidates that lost by >= 1.5x in every H100 run at these sizes are not timed (keeps
      // the one-time tuning of a class short): 16-row tiles beyond 256 rows, 64/128-row tiles
      // at <= 8 rows.
      // wgmma tiles (64 / 128 rows): timed from 32 rows unless BMS_GROUPED_WGMMA=0.
      if (IsWgmma(v) && (!WgmmaTunerEnabled() || q.n_rows < 32)) continue;
      // Streaming GEMV variants: slower than the 16-row tiles once every expert has a row (H100,
      // bench/NOTES.md gemv section: 1.07-1.4x at 8 tokens, 2.4-3.5x at 64): timed up to 2
      // rows per expert only.
      if (IsStream(v) && q.n_rows > 2 * q.n_experts) continue;
      if (v >= kFirstTiled && !IsWgmma(v) && !IsStream(v)) {
        const int tile_rows = TiledVariantRowsPerTile(v - kFirstTiled);
        if ((tile_rows <= 16 && q.n_rows > 256) || (tile_rows >= 64 && q.n_rows <= 8)) continue;
      }
      if (!RunVariant(q, v, stream).ok()) {
        (void)cudaGetLastError();
        continue;
      }
      // Each rep with a cold L2 (the scratch write evicts the weights), as in a model step
      // where every layer's experts differ; the median of the reps, summed over both routings
      // (reps of one routing back to back: its offsets are copied in on the stream).
      constexpr int kReps = 3;
      out->us[v] = 0.f;
      for (int r = 0; r < 2; ++r) {
        if (cudaMemcpyAsync(d_offsets, offs[r].data(), offs[r].size() * sizeof(int32_t),
                            cudaMemcpyHostToDevice, stream) != cudaSuccess)
          return false;
        float rep_ms[kReps];
        for (int i = 0; i < kReps; ++i) {
          if (scratch) (void)cudaMemsetAsync(scratch, i, kScratchBytes, stream);
          (void)cudaEventRecord(ev[0], stream);
          (void)RunVariant(q, v, stream);
          (void)cudaEventRecord(ev[1], stream);
          if (cudaEventSynchronize(ev[1]) != cudaSuccess) return false;
          (void)cudaEventElapsedTime(&rep_ms[i], ev[0], ev[1]);
        }
        std::sort(rep_ms, rep_ms + kReps);
        out->us[v] += rep_ms[kReps / 2] * 1000.f;
      }
      if (out->variant < 0 || out->us[v] < best) {
        best = out->us[v];
        out->variant = v;
      }
    }
    return out->variant >= 0 && cudaGetLastError() == cudaSuccess;
  }
};

GroupedGemmTuner::GroupedGemmTuner(bool timing) : impl_(std::make_unique<Impl>()) {
  impl_->timing = timing;
}
GroupedGemmTuner::~GroupedGemmTuner() = default;

int GroupedGemmTuner::Choose(const GroupedGemmParams& p_in, Stream stream) {
  GroupedGemmParams p = p_in;
  if (!Normalize(&p).ok() || p.n_rows == 0 || !IsFast(p)) return GroupedGemmHeuristicVariant(p);
  const Impl::Key key{p.n,         p.k, static_cast<int>(p.epilogue),
                      p.n_experts, 1,   Impl::Bucket(p.n_rows)};
  std::lock_guard<std::mutex> lock(impl_->mu);
  auto it = impl_->cache.find(key);
  if (it != impl_->cache.end()) return it->second.variant;
  Impl::Entry entry;
  entry.variant = GroupedGemmHeuristicVariant(p);
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  const bool capturing = cudaStreamIsCapturing(stream, &capture) != cudaSuccess ||
                         capture != cudaStreamCaptureStatusNone;
  if (impl_->timing && !capturing) {
    Impl::Entry tuned;
    if (impl_->Tune(p, stream, &tuned))
      entry = std::move(tuned);
    else
      (void)cudaGetLastError();
    if (impl_->scratch) {  // not held between tunings
      (void)cudaStreamSynchronize(stream);
      cudaFree(impl_->scratch);
      impl_->scratch = nullptr;
    }
  }
  impl_->cache.emplace(key, entry);
  return entry.variant;
}

std::string GroupedGemmTuner::Describe() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  std::string s;
  for (const auto& [key, e] : impl_->cache) {
    const auto& [n, k, epi, experts, fast, rows] = key;
    absl::StrAppend(&s, "n=", n, " k=", k, " epi=", epi, " experts=", experts, " rows<=", rows,
                    ": ", GroupedGemmVariantName(e.variant));
    for (size_t v = 0; v < e.us.size(); ++v)
      if (e.us[v] >= 0)
        absl::StrAppend(&s, " ", GroupedGemmVariantName(static_cast<int>(v)), "=",
                        static_cast<int>(e.us[v] + 0.5f), "us");
    s += "\n";
  }
  return s;
}

absl::StatusOr<std::vector<float>> TimeOnStream(const std::function<absl::Status()>& fn, int reps,
                                                Stream stream) {
  cudaEvent_t ev[2];
  BMS_CUDA_RETURN_IF_ERROR(cudaEventCreate(&ev[0]));
  if (cudaError_t err = cudaEventCreate(&ev[1]); err != cudaSuccess) {
    cudaEventDestroy(ev[0]);
    return CudaErrorStatus(err, "cudaEventCreate", __FILE__, __LINE__);
  }
  std::vector<float> us;
  absl::Status status;
  for (int i = 0; i < reps && status.ok(); ++i) {
    (void)cudaEventRecord(ev[0], stream);
    status = fn();
    if (!status.ok()) break;
    (void)cudaEventRecord(ev[1], stream);
    float ms = 0.f;
    if (cudaError_t err = cudaEventSynchronize(ev[1]); err != cudaSuccess)
      status = CudaErrorStatus(err, "cudaEventSynchronize", __FILE__, __LINE__);
    else
      (void)cudaEventElapsedTime(&ms, ev[0], ev[1]);
    us.push_back(ms * 1000.f);
  }
  cudaEventDestroy(ev[0]);
  cudaEventDestroy(ev[1]);
  if (!status.ok()) return status;
  return us;
}

}  // namespace bms::cuda
