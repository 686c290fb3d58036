// Configurable grouped expert GEMM tiles (bf16, ldmatrix + mma.sync m16n8k16, fp32 accumulate,
// a kStages-deep cp.async pipeline). One kernel template covers both ends of the M range:
// - large row tiles (128 x 128 weight rows) for prefill and big decode batches, where the
//   product is compute bound and tile reuse matters;
// - 16-row tiles with few weight rows per block and the k range of each stage split over the
//   block's warps (reduced through shared memory at the end), for decode batches where every
//   touched expert's weights must stream at full bandwidth: many blocks, wide k stages, several
//   stages in flight per block.
// Same tile scheduling (device-side expert offsets) and fused epilogues as grouped_gemm.cu.
#include <cooperative_groups.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "kernels/cuda/grouped_gemm_internal.cuh"
#include "kernels/cuda/pdl.cuh"

namespace bms::cuda {
namespace {

using grouped::CpAsync16;
using grouped::CpAsync16L2;
using grouped::CpAsyncCommit;
using grouped::CpAsyncWait;
using grouped::MmaBf16;

// kBM grouped rows x kBR weight rows per tile (gated: kBR / 2 columns of each half); warps
// kWM x kWN over (rows, weight rows) and kWK over the k range of a stage; kBK k per stage.
// kSplit > 1: the k range is split over a thread-block cluster of kSplit blocks (sm_90); the
// partial tiles are summed through distributed shared memory by the cluster's first block.
template <int kBM_, int kBR_, int kWM_, int kWN_, int kWK_, int kBK_, int kStages_, int kSplit_ = 1>
struct Cfg {
  static constexpr int kBM = kBM_, kBR = kBR_, kWM = kWM_, kWN = kWN_, kWK = kWK_, kBK = kBK_,
                       kStages = kStages_, kSplit = kSplit_;
  static constexpr int kThreads = 32 * kWM * kWN * kWK;
  static constexpr int kLd = kBK + 8;  // padded row: conflict-free ldmatrix
  static constexpr int kPipeBytes = kStages * (kBM + kBR) * kLd * 2;
};

__device__ __forceinline__ void LdMatrixX4(uint32_t* r, const void* smem) {
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}
__device__ __forceinline__ void LdMatrixX2(uint32_t* r, const void* smem) {
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(a));
}

template <GroupedEpilogue kEpi, class C>
struct Shape {
  static constexpr int kHalves = kEpi == GroupedEpilogue::kGatedAct ? 2 : 1;
  static constexpr int kBNc = C::kBR / kHalves;  // output columns per tile
  static constexpr int kWNc = kBNc / C::kWN;     // output columns per warp
  static constexpr int kNI = kWNc / 8;
  static constexpr int kTM = C::kBM / C::kWM;
  static constexpr int kMI = kTM / 16;
  static constexpr int kKW = C::kBK / C::kWK;  // k per warp per stage
  static constexpr int kAcc = kHalves * kMI * kNI * 4;
  static constexpr int kRedBytes = (C::kWK - 1) * C::kWM * C::kWN * kAcc * 32 * 4;
  // Cluster split: the block's partial tile, after kRedBytes.
  static constexpr int kPartBytes = C::kSplit > 1 ? C::kWM* C::kWN* kAcc * 32 * 4 : 0;
  static constexpr int kSmemBytes =
      C::kPipeBytes > kRedBytes + kPartBytes ? C::kPipeBytes : kRedBytes + kPartBytes;
  static_assert(kWNc % 8 == 0 && kTM % 16 == 0 && kKW % 16 == 0 && C::kBK % 8 == 0);
};

template <GroupedEpilogue kEpi, class C>
__global__ void __launch_bounds__(C::kThreads) GroupedGemmTiledKernel(GroupedGemmParams p) {
  PdlLaunchDependents();
  PdlWait();  // before any read of earlier kernels' outputs or global write (kernels/cuda/pdl.cuh)
  using S = Shape<kEpi, C>;
  constexpr int kHalves = S::kHalves, kMI = S::kMI, kNI = S::kNI;
  constexpr int kLd = C::kLd, kStages = C::kStages, kThreads = C::kThreads;
  constexpr int kChunksRow = C::kBK / 8;
  constexpr int kAIter = (C::kBM * kChunksRow + kThreads - 1) / kThreads;
  constexpr int kBIter = (C::kBR * kChunksRow + kThreads - 1) / kThreads;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* As = reinterpret_cast<bf16*>(smem_raw);  // [kStages][kBM][kLd]
  bf16* Bs = As + kStages * C::kBM * kLd;        // [kStages][kBR][kLd]

  const grouped::Tile tile = grouped::FindTile<C::kBM>(p.expert_offsets, p.n_experts, blockIdx.y);
  if (tile.expert < 0) return;
  const int n0 = blockIdx.x * S::kBNc;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int wk = warp / (C::kWM * C::kWN), wmn = warp % (C::kWM * C::kWN);
  const int wm = wmn / C::kWN, wn = wmn % C::kWN;
  const bf16* A = static_cast<const bf16*>(p.a);
  const bf16* W =
      static_cast<const bf16*>(p.w) + static_cast<int64_t>(tile.expert) * kHalves * p.n * p.k;

  // Per-thread source rows of the copies (null: zero fill).
  const bf16* a_src[kAIter];
  const bf16* b_src[kBIter];
#pragma unroll
  for (int i = 0; i < kAIter; ++i) {
    const int id = tid + i * kThreads, row = id / kChunksRow, r = tile.row_begin + row;
    a_src[i] = nullptr;
    if (row < C::kBM && r < tile.row_end) a_src[i] = A + (p.a_rows ? p.a_rows[r] : r) * p.lda;
  }
#pragma unroll
  for (int i = 0; i < kBIter; ++i) {
    const int id = tid + i * kThreads, row = id / kChunksRow;
    const int j = n0 + row % S::kBNc;
    b_src[i] = nullptr;
    if (row < C::kBR && j < p.n) b_src[i] = W + static_cast<int64_t>(row / S::kBNc * p.n + j) * p.k;
  }
  // k tiles [kt_begin, kt_end) of this block (all of them without a cluster split).
  const int n_k_total = (p.k + C::kBK - 1) / C::kBK;
  const int kt_begin = static_cast<int>(static_cast<int64_t>(n_k_total) * blockIdx.z / C::kSplit);
  const int kt_end =
      static_cast<int>(static_cast<int64_t>(n_k_total) * (blockIdx.z + 1) / C::kSplit);
  const int n_k_tiles = kt_end - kt_begin;
  auto issue = [&](int kt) {
    if (kt < n_k_tiles) {
      const int stage = kt % kStages, k0 = (kt_begin + kt) * C::kBK;
      bf16* as = As + stage * C::kBM * kLd;
      bf16* bs = Bs + stage * C::kBR * kLd;
#pragma unroll
      for (int i = 0; i < kAIter; ++i) {
        const int id = tid + i * kThreads, row = id / kChunksRow, c = (id % kChunksRow) * 8;
        if (row < C::kBM) {
          const bool ok = a_src[i] != nullptr && k0 + c < p.k;
          CpAsync16(as + row * kLd + c, ok ? a_src[i] + k0 + c : A, ok);
        }
      }
#pragma unroll
      for (int i = 0; i < kBIter; ++i) {
        const int id = tid + i * kThreads, row = id / kChunksRow, c = (id % kChunksRow) * 8;
        if (row < C::kBR) {
          const bool ok = b_src[i] != nullptr && k0 + c < p.k;
          CpAsync16L2(bs + row * kLd + c, ok ? b_src[i] + k0 + c : W, ok);
        }
      }
    }
    CpAsyncCommit();  // one group per call keeps the wait count uniform
  };

  float acc[kHalves][kMI][kNI][4] = {};
  auto compute = [&](int stage) {
    const bf16* as = As + stage * C::kBM * kLd;
    const bf16* bs = Bs + stage * C::kBR * kLd;
#pragma unroll
    for (int kk = 0; kk < S::kKW; kk += 16) {
      const int kc = wk * S::kKW + kk;
      uint32_t af[kMI][4];
#pragma unroll
      for (int mi = 0; mi < kMI; ++mi)
        LdMatrixX4(af[mi], as + (wm * S::kTM + mi * 16 + lane % 16) * kLd + kc + (lane / 16) * 8);
#pragma unroll
      for (int h = 0; h < kHalves; ++h) {
        const int rn = h * S::kBNc + wn * S::kWNc;
        if constexpr (kNI % 2 == 0) {
#pragma unroll
          for (int ni = 0; ni < kNI; ni += 2) {
            uint32_t b4[4];
            LdMatrixX4(b4, bs + (rn + ni * 8 + lane % 8 + (lane / 16) * 8) * kLd + kc +
                               ((lane / 8) % 2) * 8);
#pragma unroll
            for (int mi = 0; mi < kMI; ++mi) {
              MmaBf16(acc[h][mi][ni], af[mi], b4);
              MmaBf16(acc[h][mi][ni + 1], af[mi], b4 + 2);
            }
          }
        } else {
#pragma unroll
          for (int ni = 0; ni < kNI; ++ni) {
            uint32_t b2[2];
            LdMatrixX2(b2, bs + (rn + ni * 8 + lane % 8) * kLd + kc + ((lane / 8) % 2) * 8);
#pragma unroll
            for (int mi = 0; mi < kMI; ++mi) MmaBf16(acc[h][mi][ni], af[mi], b2);
          }
        }
      }
    }
  };

#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) issue(s);
  for (int kt = 0; kt < n_k_tiles; ++kt) {
    CpAsyncWait<kStages - 2>();  // tile kt has landed (this thread's copies)
    __syncthreads();             // ... everyone's; and stage (kt - 1) is no longer read
    issue(kt + kStages - 1);
    compute(kt % kStages);
  }

  float* flat = &acc[0][0][0][0];
  if constexpr (C::kWK > 1) {
    // Sum the k-split warps' partial tiles: warps with wk > 0 park theirs in shared memory.
    CpAsyncWait<0>();
    __syncthreads();
    float* red = reinterpret_cast<float*>(smem_raw);  // [kWK - 1][kWM * kWN][kAcc][32]
    if (wk > 0) {
      float* dst = red + ((wk - 1) * C::kWM * C::kWN + wmn) * S::kAcc * 32 + lane;
#pragma unroll
      for (int i = 0; i < S::kAcc; ++i) dst[i * 32] = flat[i];
    }
    __syncthreads();
    if (wk == 0) {
#pragma unroll
      for (int w = 1; w < C::kWK; ++w) {
        const float* src = red + ((w - 1) * C::kWM * C::kWN + wmn) * S::kAcc * 32 + lane;
#pragma unroll
        for (int i = 0; i < S::kAcc; ++i) flat[i] += src[i * 32];
      }
    }
  }
  if constexpr (C::kSplit > 1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    // Cluster split-K: every block parks its partial tile; block rank 0 sums them from the
    // other blocks' shared memory; the second barrier keeps those blocks alive until then.
    // Every thread of every block reaches both barriers.
    namespace cg = cooperative_groups;
    cg::cluster_group cluster = cg::this_cluster();
    float* part = reinterpret_cast<float*>(smem_raw + S::kRedBytes);  // [kWM*kWN][kAcc][32]
    if constexpr (C::kWK == 1) {
      CpAsyncWait<0>();
      __syncthreads();  // pipeline buffers no longer read (part overlaps them)
    }
    if (wk == 0) {
#pragma unroll
      for (int i = 0; i < S::kAcc; ++i) part[(wmn * S::kAcc + i) * 32 + lane] = flat[i];
    }
    cluster.sync();
    const bool leader = cluster.block_rank() == 0;
    if (leader && wk == 0) {
      for (int r = 1; r < C::kSplit; ++r) {
        const float* src = cluster.map_shared_rank(part, r);
#pragma unroll
        for (int i = 0; i < S::kAcc; ++i) flat[i] += src[(wmn * S::kAcc + i) * 32 + lane];
      }
    }
    cluster.sync();
    if (!leader) return;
#else
    __trap();  // launched only on sm_90+ (LaunchCfgEpi checks)
#endif
  }
  if (wk > 0) return;

  const int g = lane / 4, tq = lane % 4;
#pragma unroll
  for (int mi = 0; mi < kMI; ++mi) {
#pragma unroll
    for (int ni = 0; ni < kNI; ++ni) {
#pragma unroll
      for (int rh = 0; rh < 2; ++rh) {
        const int r = tile.row_begin + wm * S::kTM + mi * 16 + g + rh * 8;
        const int j = n0 + wn * S::kWNc + ni * 8 + 2 * tq;
        if (r < tile.row_end)
          grouped::StorePairBf16<kEpi>(p, tile.expert, r, j, acc[0][mi][ni][2 * rh],
                                       acc[0][mi][ni][2 * rh + 1], acc[kHalves - 1][mi][ni][2 * rh],
                                       acc[kHalves - 1][mi][ni][2 * rh + 1]);
      }
    }
  }
}

}  // namespace

bool TiledClustersSupported() {
  static const bool ok = [] {
    int dev = 0, major = 0;
    return cudaGetDevice(&dev) == cudaSuccess &&
           cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess &&
           major >= 9;
  }();
  return ok;
}

namespace {

bool ClustersSupported() { return TiledClustersSupported(); }

template <GroupedEpilogue kEpi, class C>
absl::Status LaunchCfgEpi(const GroupedGemmParams& p, Stream stream) {
  using S = Shape<kEpi, C>;
  static std::once_flag once;
  static cudaError_t attr_err = cudaSuccess;
  std::call_once(once, [] {
    attr_err = cudaFuncSetAttribute(GroupedGemmTiledKernel<kEpi, C>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, S::kSmemBytes);
  });
  if (attr_err != cudaSuccess)
    return absl::InternalError(
        absl::StrCat("GroupedGemm: shared memory attribute: ", cudaGetErrorString(attr_err)));
  // Non-empty row tiles: sum_e ceil(c_e / kBM) <= floor(n_rows / kBM) + (non-empty experts)
  // (tight grid), or the looser CeilDiv(n_rows, kBM) + n_experts (the validated default; every
  // grid row past the real tiles is a block that only reads the offsets and exits).
  const int64_t row_tiles = GroupedGemmTightGrid()
                                ? p.n_rows / C::kBM + std::min(p.n_experts, p.n_rows)
                                : CeilDiv(p.n_rows, C::kBM) + p.n_experts;
  if (row_tiles > 65535)
    return absl::InvalidArgumentError("GroupedGemm: too many rows for one launch");
  const dim3 grid(CeilDiv(p.n, S::kBNc), static_cast<unsigned>(row_tiles), C::kSplit);
  if constexpr (C::kSplit == 1) {
    LaunchPdl(GroupedGemmTiledKernel<kEpi, C>, grid, C::kThreads, S::kSmemBytes, stream, p);
  } else {
    if (!ClustersSupported())
      return absl::FailedPreconditionError("GroupedGemm: cluster variants need sm_90");
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = dim3(C::kThreads);
    cfg.dynamicSmemBytes = S::kSmemBytes;
    cfg.stream = stream;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = 1;
    attr[0].val.clusterDim.y = 1;
    attr[0].val.clusterDim.z = C::kSplit;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    BMS_CUDA_RETURN_IF_ERROR(cudaLaunchKernelEx(&cfg, GroupedGemmTiledKernel<kEpi, C>, p));
  }
  BMS_CUDA_CHECK_LAUNCH("GroupedGemmTiled");
  return absl::OkStatus();
}

template <class C>
absl::Status LaunchCfg(const GroupedGemmParams& p, Stream stream) {
  switch (p.epilogue) {
    case GroupedEpilogue::kGatedAct:
      return LaunchCfgEpi<GroupedEpilogue::kGatedAct, C>(p, stream);
    case GroupedEpilogue::kAct:
      return LaunchCfgEpi<GroupedEpilogue::kAct, C>(p, stream);
    case GroupedEpilogue::kScaleScatter:
      return LaunchCfgEpi<GroupedEpilogue::kScaleScatter, C>(p, stream);
  }
  return absl::InvalidArgumentError("GroupedGemm: bad epilogue");
}

struct Variant {
  const char* name;
  int rows_per_tile;
  absl::Status (*launch)(const GroupedGemmParams&, Stream);
};

// Candidates for the tuner (grouped_gemm.cu). Gated fc1 tiles hold kBR / 2 columns per half.
const Variant kVariants[] = {
    // Large M: 8 warps of 64 x 32, 4 stages of k 32 (80 KB shared).
    {"t128x128", 128, &LaunchCfg<Cfg<128, 128, 2, 4, 1, 32, 4>>},
    // Large M, narrower tiles (more blocks for narrow n): 8 warps of 32 x 32.
    {"t128x64", 128, &LaunchCfg<Cfg<128, 64, 4, 2, 1, 32, 4>>},
    // Large M, k 64 per stage (half the barriers), 3 stages (108 KB shared).
    {"t128x128b64", 128, &LaunchCfg<Cfg<128, 128, 2, 4, 1, 64, 3>>},
    // Medium M: 4 warps of 32 x 64, 4 stages of k 32.
    {"t64x128", 64, &LaunchCfg<Cfg<64, 128, 2, 2, 1, 32, 4>>},
    // Small M: 32 x 64, two k-split warp pairs, 4 stages of k 64.
    {"t32x64k2", 32, &LaunchCfg<Cfg<32, 64, 1, 2, 2, 64, 4>>},
    // Small M, 8 warps: 32 x 64, four k-split warp pairs, 4 stages of k 128 (104 KB shared).
    {"t32x64k4", 32, &LaunchCfg<Cfg<32, 64, 1, 2, 4, 128, 4>>},
    // Decode: 16 x 32, four k-split warps, 4 stages of k 128.
    {"t16x32k4", 16, &LaunchCfg<Cfg<16, 32, 1, 1, 4, 128, 4>>},
    // Decode, narrow: 16 x 16, four k-split warps, 5 stages of k 256 (many blocks for fc2).
    {"t16x16k4", 16, &LaunchCfg<Cfg<16, 16, 1, 1, 4, 256, 5>>},
    // Decode, 8 stages in flight per block.
    {"t16x32k4s8", 16, &LaunchCfg<Cfg<16, 32, 1, 1, 4, 128, 8>>},
    // Decode with the k range split over a cluster of 2 / 4 blocks (more blocks streaming when
    // few experts are touched; partial tiles summed through distributed shared memory).
    {"t16x32k4c2", 16, &LaunchCfg<Cfg<16, 32, 1, 1, 4, 128, 4, 2>>},
    {"t16x32k4c4", 16, &LaunchCfg<Cfg<16, 32, 1, 1, 4, 128, 4, 4>>},
    {"t16x16k4c4", 16, &LaunchCfg<Cfg<16, 16, 1, 1, 4, 128, 4, 4>>},
};

}  // namespace

namespace {
std::atomic<int> g_tight_grid{-1};  // -1: not yet read from BMS_GROUPED_TIGHT_GRID
}  // namespace

bool GroupedGemmTightGrid() {
  int v = g_tight_grid.load(std::memory_order_relaxed);
  if (v < 0) {
    const char* env = std::getenv("BMS_GROUPED_TIGHT_GRID");
    v = env != nullptr && std::strcmp(env, "1") == 0 ? 1 : 0;
    g_tight_grid.store(v, std::memory_order_relaxed);
  }
  return v == 1;
}
void SetGroupedGemmTightGrid(bool on) { g_tight_grid.store(on ? 1 : 0); }

int TiledVariantCount() { return static_cast<int>(sizeof(kVariants) / sizeof(kVariants[0])); }
const char* TiledVariantName(int i) { return kVariants[i].name; }
int TiledVariantRowsPerTile(int i) { return kVariants[i].rows_per_tile; }
absl::Status LaunchTiledVariant(int i, const GroupedGemmParams& p, Stream stream) {
  if (i < 0 || i >= TiledVariantCount())
    return absl::InvalidArgumentError("GroupedGemm: bad tiled variant");
  return kVariants[i].launch(p, stream);
}

}  // namespace bms::cuda
