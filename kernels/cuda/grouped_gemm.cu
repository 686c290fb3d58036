// Grouped expert GEMM (kernels/cuda/ops.h): one launch covers every expert; each block finds
// its expert and row range from the device-side expert_offsets, so the launch needs no host
// sync and is CUDA-graph friendly (grid sized for the worst case, idle tiles exit). bf16 runs on
// tensor cores (mma.sync m16n8k16, fp32 accumulate); fp32 runs a SIMT FMA kernel for the exact
// mode. Epilogues: gated activation (both halves of fc1 computed by the same tile), plain
// activation, and routing-scale + un-permute (rows land in token order).
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_util.cuh"

namespace bms::cuda {
namespace {

constexpr int kBM = 64;
constexpr int kBN = 64;

struct Tile {
  int expert = -1;
  int row_begin = 0;  // first grouped row of this tile
  int row_end = 0;    // one past the expert's last grouped row
};

// The tile-th non-empty row tile over all experts, in expert order (expert = -1: none).
__device__ __forceinline__ Tile FindTile(const int32_t* offsets, int n_experts, int tile) {
  Tile t;
  for (int e = 0; e < n_experts; ++e) {
    const int begin = offsets[e], end = offsets[e + 1];
    const int tiles = (end - begin + kBM - 1) / kBM;
    if (tile < tiles) {
      t.expert = e;
      t.row_begin = begin + tile * kBM;
      t.row_end = end;
      return t;
    }
    tile -= tiles;
  }
  return t;
}

template <GroupedEpilogue kEpi, typename T>
__device__ __forceinline__ void StoreOut(const GroupedGemmParams& p, int e, int r, int j,
                                         float acc0, float acc1) {
  T* out = static_cast<T*>(p.out);
  if constexpr (kEpi == GroupedEpilogue::kGatedAct) {
    const float* b = p.bias ? p.bias + static_cast<int64_t>(e) * 2 * p.n : nullptr;
    const float a0 = acc0 + (b ? b[j] : 0.f), a1 = acc1 + (b ? b[p.n + j] : 0.f);
    out[r * p.ldo + j] = FromF32<T>(ApplyAct(p.activation, a0) * a1);
  } else if constexpr (kEpi == GroupedEpilogue::kAct) {
    const float* b = p.bias ? p.bias + static_cast<int64_t>(e) * p.n : nullptr;
    out[r * p.ldo + j] = FromF32<T>(ApplyAct(p.activation, acc0 + (b ? b[j] : 0.f)));
  } else {
    const float* b = p.bias ? p.bias + static_cast<int64_t>(e) * p.n : nullptr;
    const int64_t tok = p.out_rows ? p.out_rows[r] : r;
    const float s = p.scale ? p.scale[tok] : 1.f;
    out[tok * p.ldo + j] = FromF32<T>((acc0 + (b ? b[j] : 0.f)) * s);
  }
}

// ---- bf16 tensor-core kernel: 128 threads = 2x2 warps, each a 32 x 32 tile (per half). ----
constexpr int kMmaBK = 32;
constexpr int kMmaLd = kMmaBK + 8;  // padded row (bf16): conflict-free 32-bit fragment loads
constexpr int kMmaThreads = 128;

__device__ __forceinline__ void MmaBf16(float* c, const uint32_t* a, const uint32_t* b) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

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

// 16-byte global -> shared copy that bypasses registers (zero-fill when !valid).
__device__ __forceinline__ void CpAsync16(void* smem, const void* gmem, bool valid) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem),
               "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int kPending>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

// kAsync (k % 8 == 0, 16-byte aligned rows): a kMmaStages-deep cp.async pipeline. Otherwise one
// stage filled through registers with element-wise loads at the k tail.
constexpr int kMmaStages = 3;

template <GroupedEpilogue kEpi, bool kAsync>
__global__ void __launch_bounds__(kMmaThreads) GroupedGemmMmaKernel(GroupedGemmParams p) {
  constexpr int kHalves = kEpi == GroupedEpilogue::kGatedAct ? 2 : 1;
  constexpr int kBRows = kHalves * kBN;
  constexpr int kAChunks = kBM * kMmaBK / 8 / kMmaThreads;     // 2
  constexpr int kBChunks = kBRows * kMmaBK / 8 / kMmaThreads;  // 2 or 4
  constexpr int kStages = kAsync ? kMmaStages : 1;
  __shared__ __align__(16) bf16 As[kStages][kBM][kMmaLd];
  __shared__ __align__(16) bf16 Bs[kStages][kBRows][kMmaLd];

  const Tile tile = FindTile(p.expert_offsets, p.n_experts, blockIdx.y);
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
  constexpr int kHalves = kEpi == GroupedEpilogue::kGatedAct ? 2 : 1;
  constexpr int kBRows = kHalves * kBN;
  __shared__ float As[kF32BK][kBM + 4];
  __shared__ float Bs[kF32BK][kBRows + 4];
  const Tile tile = FindTile(p.expert_offsets, p.n_experts, blockIdx.y);
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
constexpr int kGemvMaxRows =
    8;  // n_rows (host) at or below this use this kernel (measured:
        // faster than the MMA kernel at 1 and 8 rows, 1.4-2x slower at 32-64)

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

template <GroupedEpilogue kEpi>
void LaunchGrouped(const GroupedGemmParams& p, bool vec, Stream stream) {
  if (p.dtype == DType::kBF16 && vec && p.n_rows <= kGemvMaxRows) {
    GroupedGemvKernel<kEpi>
        <<<dim3(CeilDiv(p.n, kGemvWarps), p.n_experts), kGemvWarps * 32, 0, stream>>>(p);
    return;
  }
  const dim3 grid(CeilDiv(p.n, kBN), CeilDiv(p.n_rows, kBM) + p.n_experts);
  if (p.dtype == DType::kBF16 && vec)
    GroupedGemmMmaKernel<kEpi, true><<<grid, kMmaThreads, 0, stream>>>(p);
  else if (p.dtype == DType::kBF16)
    GroupedGemmMmaKernel<kEpi, false><<<grid, kMmaThreads, 0, stream>>>(p);
  else
    GroupedGemmF32Kernel<kEpi><<<grid, kF32Threads, 0, stream>>>(p);
}

}  // namespace

absl::Status GroupedGemm(const GroupedGemmParams& p_in, Stream stream) {
  GroupedGemmParams p = p_in;
  if (p.n_rows < 0 || p.n_experts <= 0 || p.n <= 0 || p.k <= 0 || !p.expert_offsets || !p.a ||
      !p.w || !p.out)
    return absl::InvalidArgumentError("GroupedGemm: bad sizes or null pointer");
  if (p.n_rows == 0) return absl::OkStatus();
  if (p.lda == 0) p.lda = p.k;
  if (p.ldo == 0) p.ldo = p.n;
  if (CeilDiv(p.n_rows, kBM) + p.n_experts > 65535)
    return absl::InvalidArgumentError("GroupedGemm: too many rows for one launch");
  const bool vec = p.k % 8 == 0 && p.lda % 8 == 0 && reinterpret_cast<uintptr_t>(p.a) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(p.w) % 16 == 0;
  switch (p.epilogue) {
    case GroupedEpilogue::kGatedAct:
      LaunchGrouped<GroupedEpilogue::kGatedAct>(p, vec, stream);
      break;
    case GroupedEpilogue::kAct:
      LaunchGrouped<GroupedEpilogue::kAct>(p, vec, stream);
      break;
    case GroupedEpilogue::kScaleScatter:
      LaunchGrouped<GroupedEpilogue::kScaleScatter>(p, vec, stream);
      break;
  }
  BMS_CUDA_CHECK_LAUNCH("GroupedGemm");
  return absl::OkStatus();
}

}  // namespace bms::cuda
