// Device helpers shared by the grouped expert GEMM kernels (grouped_gemm.cu: fp32, legacy MMA,
// small-row GEMV, dispatch and the variant tuner; grouped_gemm_tiled.cu: the configurable
// ldmatrix + mma.sync kernels; grouped_gemm_wgmma.cu: the Hopper wgmma kernels). Internal to
// kernels/cuda/.
#pragma once

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_util.cuh"

namespace bms::cuda::grouped {

struct Tile {
  int expert = -1;
  int row_begin = 0;  // first grouped row of this tile
  int row_end = 0;    // one past the expert's last grouped row
};

// The tile-th non-empty row tile (kTileM rows) over all experts, in expert order (expert = -1:
// none). Grids are sized CeilDiv(n_rows, kTileM) + n_experts, an upper bound for any routing.
template <int kTileM>
__device__ __forceinline__ Tile FindTile(const int32_t* offsets, int n_experts, int tile) {
  Tile t;
  for (int e = 0; e < n_experts; ++e) {
    const int begin = offsets[e], end = offsets[e + 1];
    const int tiles = (end - begin + kTileM - 1) / kTileM;
    if (tile < tiles) {
      t.expert = e;
      t.row_begin = begin + tile * kTileM;
      t.row_end = end;
      return t;
    }
    tile -= tiles;
  }
  return t;
}

// One output element of grouped row r, column j of expert e (acc0: first half, acc1: gate half).
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

// Two adjacent bf16 outputs (j even, j + 1 may be past n): one 4-byte store when aligned.
template <GroupedEpilogue kEpi>
__device__ __forceinline__ void StorePairBf16(const GroupedGemmParams& p, int e, int r, int j,
                                              float a0, float a1, float g0, float g1) {
  if (j >= p.n) return;
  float v0, v1;
  int64_t row = r;
  if constexpr (kEpi == GroupedEpilogue::kGatedAct) {
    const float* b = p.bias ? p.bias + static_cast<int64_t>(e) * 2 * p.n : nullptr;
    const bool two = j + 1 < p.n;
    v0 = ApplyAct(p.activation, a0 + (b ? b[j] : 0.f)) * (g0 + (b ? b[p.n + j] : 0.f));
    v1 = two ? ApplyAct(p.activation, a1 + (b ? b[j + 1] : 0.f)) * (g1 + (b ? b[p.n + j + 1] : 0.f))
             : 0.f;
  } else if constexpr (kEpi == GroupedEpilogue::kAct) {
    const float* b = p.bias ? p.bias + static_cast<int64_t>(e) * p.n : nullptr;
    v0 = ApplyAct(p.activation, a0 + (b ? b[j] : 0.f));
    v1 = j + 1 < p.n ? ApplyAct(p.activation, a1 + (b ? b[j + 1] : 0.f)) : 0.f;
  } else {
    const float* b = p.bias ? p.bias + static_cast<int64_t>(e) * p.n : nullptr;
    row = p.out_rows ? p.out_rows[r] : r;
    const float s = p.scale ? p.scale[row] : 1.f;
    v0 = (a0 + (b ? b[j] : 0.f)) * s;
    v1 = j + 1 < p.n ? (a1 + (b ? b[j + 1] : 0.f)) * s : 0.f;
  }
  bf16* out = static_cast<bf16*>(p.out) + row * p.ldo + j;
  if (j + 1 < p.n && p.ldo % 2 == 0 && (reinterpret_cast<uintptr_t>(p.out) & 3) == 0) {
    *reinterpret_cast<__nv_bfloat162*>(out) = __floats2bfloat162_rn(v0, v1);
  } else {
    out[0] = __float2bfloat16_rn(v0);
    if (j + 1 < p.n) out[1] = __float2bfloat16_rn(v1);
  }
}

__device__ __forceinline__ void MmaBf16(float* c, const uint32_t* a, const uint32_t* b) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// 16-byte global -> shared copy that bypasses registers (zero-fill when !valid).
__device__ __forceinline__ void CpAsync16(void* smem, const void* gmem, bool valid) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem),
               "r"(valid ? 16 : 0));
}
// The same with a 256-byte L2 prefetch hint (streams of weight rows: longer DRAM bursts).
__device__ __forceinline__ void CpAsync16L2(void* smem, const void* gmem, bool valid) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global.L2::256B [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem),
               "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int kPending>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

// sum_i a[i] * w[i] over 8 bf16 pairs packed in two uint4, added to acc (bf16 -> fp32 is a shift
// or a mask). Used by the streaming GEMV kernels (grouped_gemv_stream.cu, gemv_stream_pipe.cu).
__device__ __forceinline__ float Dot8Bf16(const uint4& a, const uint4& w, float acc) {
  const uint32_t av[4] = {a.x, a.y, a.z, a.w}, wv[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    acc = fmaf(__uint_as_float(av[i] << 16), __uint_as_float(wv[i] << 16), acc);
    acc = fmaf(__uint_as_float(av[i] & 0xffff0000u), __uint_as_float(wv[i] & 0xffff0000u), acc);
  }
  return acc;
}

// The q-th touched expert (non-empty offset range) in expert order, warp-uniform; -1 if none.
// Every lane of the warp must call it (ballots).
__device__ __forceinline__ int TouchedExpert(const int32_t* offsets, int n_experts, int q,
                                             int lane) {
  for (int base = 0; base < n_experts; base += 32) {
    const int e = base + lane;
    const bool ne = e < n_experts && offsets[e] < offsets[e + 1];
    unsigned mask = __ballot_sync(0xffffffffu, ne);
    const int cnt = __popc(mask);
    if (q < cnt) {
      for (int i = 0; i < q; ++i) mask &= mask - 1;
      return base + __ffs(mask) - 1;
    }
    q -= cnt;
  }
  return -1;
}

}  // namespace bms::cuda::grouped

namespace bms::cuda {
// Tiled ldmatrix + mma.sync variants (grouped_gemm_tiled.cu), bf16 with k % 8 == 0 and 16-byte
// aligned rows only. Index i in [0, TiledVariantCount()).
int TiledVariantCount();
const char* TiledVariantName(int i);
int TiledVariantRowsPerTile(int i);
absl::Status LaunchTiledVariant(int i, const GroupedGemmParams& p, Stream stream);
// Whether the cluster split-K variants can run (sm_90+).
bool TiledClustersSupported();

// Hopper warpgroup-MMA variants (grouped_gemm_wgmma.cu), same operand requirements as the tiled
// ones; they run only on compute capability 9.0 (WgmmaSupported). Index i in
// [0, WgmmaVariantCount()).
int WgmmaVariantCount();
const char* WgmmaVariantName(int i);
int WgmmaVariantRowsPerTile(int i);
absl::Status LaunchWgmmaVariant(int i, const GroupedGemmParams& p, Stream stream);
bool WgmmaSupported();
// Whether GroupedGemmTuner times the wgmma variants (yes unless BMS_GROUPED_WGMMA=0; read once).
bool WgmmaTunerEnabled();
}  // namespace bms::cuda
