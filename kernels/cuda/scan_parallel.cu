// Prefill selective scan that is parallel in time inside a warp and over channels across blocks
// (kernels/cuda/ops.h SelectiveScanVarlen; picked by the dispatch in conv_scan.cu).
//
// Grid (d_inner / 8, batch): a block of 8 warps owns 8 channels of one sequence; warp w scans
// channel c0 + w and its 32 lanes split each chunk of 32 * kItems tokens into runs of kItems
// consecutive tokens (the structure of state-spaces/mamba's selective_scan_fwd, with the time
// axis inside one warp). Per state n, a lane composes its run's pairs (a_t, b_t) =
// (exp(dt_t * A[n]), dt_t * u_t * B_t[n]) into one (a, b) while it runs the recurrence from a
// zero state (y_t += C_t[n] * h0_t, and keeps C_t[n] * prod a since the run's start), a 5-level
// shuffle scan composes the lanes, the carry (the state at the chunk start, kept by lane n of
// the warp: one register) gives every lane its start state h_s, and y_t += C_t[n] * prod a *
// h_s completes h_t = h0_t + prod a * h_s. One exp per (token, channel, state), fp32 throughout.
//
// Staging: every thread owns whole 8-byte pieces of the chunk's rows (u, dt, z of the block's 8
// channels; B and C). The u / dt / z pieces of chunk k + 1 are copied into raw shared rows by
// cp.async before chunk k is scanned (in flight during the scan), its B / C pieces are loaded
// into registers after the scan (in flight during the output), and all are converted and
// transposed to [channel][token] / [state][token] shared rows once chunk k is done. dt gets bias
// + softplus there; the D skip and the SiLU(z) gate are applied by the scanning lane; the output
// leaves as 8-byte row pieces. BMS_SCAN_PARALLEL_TILE picks 2 states per step (kNP, overlapping
// shuffle chains) or 4-token runs for long sequences, and the experimental fp32-B / C and
// vector-store tiles (A/B knobs; see LongTileFromEnv).
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "kernels/cuda/conv_scan_internal.cuh"
#include "kernels/cuda/cuda_check.h"

namespace bms::cuda {
namespace {

constexpr int kThreads = 256;  // 8 warps
constexpr int kCh = 8;         // channels per block (one warp each)
constexpr int kN = 16;         // d_state

template <typename T, int kItems_, int kNP_, bool kF32BC_ = false, bool kVecOut_ = false>
struct ParTile {
  static constexpr int kItems = kItems_;  // tokens per lane
  static constexpr int kNP = kNP_;        // states scanned at a time (independent chains)
  // B / C staged as fp32 (converted once per block in the staging instead of once per channel
  // in the scan: 8 warps read the same rows; 16 KB more shared memory per block).
  static constexpr bool kF32BC = kF32BC_ || sizeof(T) == 4;
  using BC = std::conditional_t<kF32BC, float, T>;
  // The gated output goes back to the shared g rows by 16-byte stores (scalar stores of a
  // lane's 8 contiguous tokens: 8-way bank conflicts). On with the fp32 B / C tiles too.
  static constexpr bool kVecOut = kVecOut_ || kF32BC_;
  // Blocks per SM the registers are capped for (80 / 64 registers): 3 blocks of 256 threads
  // hold a whole 2.8b layer (368 blocks) of one sequence in one wave on 132 SMs.
  static constexpr int kMinBlocks = kItems == 4 && kNP == 1 && sizeof(T) == 2 ? 4 : 3;
  static constexpr int kChunk = 32 * kItems;
  static constexpr int kRowF = kChunk + 4;               // fp32 shared row (+16 B)
  static constexpr int kRowT = kChunk + 16 / sizeof(T);  // T shared row (+16 B)
  static constexpr int kRowBC = kF32BC ? kRowF : kRowT;  // B / C shared row
  // fp32 B / C rows of 8-token runs are stored as two halves of 4-token pieces, lane-major
  // (token r at (r % 8 / 4) * 128 + r / 8 * 4 + r % 4): each 16-byte load of a warp reads 512
  // contiguous bytes (no bank conflicts; a lane's 32 contiguous bytes would be 2-way).
  static constexpr bool kSplitBC = kF32BC_ && sizeof(T) == 2 && kItems == 8;
  __device__ static int BCIdx(int r) {
    if constexpr (kSplitBC) return (r % 8 / 4) * 128 + r / 8 * 4 + r % 4;
    return r;
  }
  static constexpr int kPer = 8 / sizeof(T);                 // elements per 8-byte piece
  static constexpr int kChPieces = kCh / kPer;               // pieces per row of 8 channels
  static constexpr int kNPieces = kN / kPer;                 // pieces per row of 16 states
  static constexpr int kUP = kChunk * kChPieces / kThreads;  // u / dt / z pieces per thread
  static constexpr int kBP = kChunk * kNPieces / kThreads;   // B / C pieces per thread
  static_assert(kChunk * kChPieces % kThreads == 0 && kUP >= 1, "whole pieces per thread");
  static_assert(kItems % 4 == 0 || sizeof(T) == 4, "lane runs of whole 8-byte T vectors");
};

// Shared staging of one chunk: fp32 [channel][token] rows and raw T [state][token] rows.
template <typename T, typename Tile>
struct ParSmem {
  float dt[kCh][Tile::kRowF];  // dt after bias + softplus (0 past the chunk)
  float u[kCh][Tile::kRowF];
  float g[kCh][Tile::kRowF];  // SiLU(z); the scanning lane overwrites it with the output
  typename Tile::BC B[kN][Tile::kRowBC];
  typename Tile::BC C[kN][Tile::kRowBC];
  // Raw u / dt / z rows of the next chunk (cp.async; each thread reads back its own pieces).
  uint2 u_raw[Tile::kChunk][Tile::kChPieces];
  uint2 dt_raw[Tile::kChunk][Tile::kChPieces];
  uint2 z[Tile::kChunk][Tile::kChPieces];
};

// 8-byte asynchronous global -> shared copy (sm_80+), and the wait for all of a thread's copies.
__device__ __forceinline__ void CpAsync8(void* smem, const void* gmem) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 8;\n" ::"r"(dst), "l"(gmem));
}
__device__ __forceinline__ void CpAsyncWaitAll() {
  asm volatile("cp.async.wait_all;\n" ::: "memory");
}

// N consecutive elements of a 16-byte aligned shared row, as fp32.
template <typename T, int N>
__device__ __forceinline__ void LoadRun(const T* src, float (&dst)[N]) {
  if constexpr (N * sizeof(T) % 16 == 0) {
    LoadVec<T, N>(src, dst);
  } else {
    static_assert(N * sizeof(T) == 8, "8-byte runs");
    const uint2 raw = *reinterpret_cast<const uint2*>(src);
    const T* v = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int i = 0; i < N; ++i) dst[i] = ToF32(v[i]);
  }
}

// Lane j's 8 tokens of a split fp32 row (ParTile::kSplitBC): two 16-byte pieces.
__device__ __forceinline__ void LoadHalves(const float* row, int j, float (&dst)[8]) {
  const float4 lo = *reinterpret_cast<const float4*>(row + j * 4);
  const float4 hi = *reinterpret_cast<const float4*>(row + 128 + j * 4);
  dst[0] = lo.x, dst[1] = lo.y, dst[2] = lo.z, dst[3] = lo.w;
  dst[4] = hi.x, dst[5] = hi.y, dst[6] = hi.z, dst[7] = hi.w;
}

// softplus and SiLU of the staging: bf16 activations use the fast exp / log / divide (~2 ulp;
// once per (token, channel), next to 16 exps of the scan), fp32 activations the accurate ones
// of the reference (the fp32 backend is compared with the CPU one token for token).
template <typename T>
__device__ __forceinline__ float StageSoftplus(float x) {
  if constexpr (sizeof(T) == 4) return SoftplusF(x);
  return x > 20.f ? x : __logf(1.f + __expf(x));
}
template <typename T>
__device__ __forceinline__ float StageSilu(float x) {
  if constexpr (sizeof(T) == 4) return SiluF(x);
  return __fdividef(x, 1.f + __expf(-x));
}

template <typename T, typename S, typename Tile>
__global__ void __launch_bounds__(kThreads, Tile::kMinBlocks)
    ScanParallelKernel(SelectiveScanParams p) {
  constexpr int kItems = Tile::kItems, kChunk = Tile::kChunk, kPer = Tile::kPer;
  constexpr int kChPieces = Tile::kChPieces, kNPieces = Tile::kNPieces;
  constexpr int kUP = Tile::kUP, kBP = Tile::kBP, kNP = Tile::kNP;
  extern __shared__ __align__(16) unsigned char smem_bytes[];
  ParSmem<T, Tile>& sm = *reinterpret_cast<ParSmem<T, Tile>*>(smem_bytes);
  const int tid = threadIdx.x, w = tid / 32, j = tid % 32;
  const int c0 = blockIdx.x * kCh, c = c0 + w;
  const int b = blockIdx.y;
  const int start = p.cu_seqlens[b];
  const int len = p.cu_seqlens[b + 1] - start;
  if (len == 0) return;         // block-uniform
  const int slot = p.slots[b];  // < 0: padding row (zeros in, nothing stored)
  const bool init = slot >= 0 && p.has_initial_state && p.has_initial_state[b];
  S* state = static_cast<S*>(p.ssm_state) + (slot >= 0 ? slot : 0) * p.ssm_state_slot_stride +
             static_cast<int64_t>(c) * kN;
  // Lane n < 16 keeps state n of channel c: the carry and A[c][n] * log2(e).
  float carry = 0.f, a2_lane = 0.f;
  if (j < kN) {
    carry = init ? ToF32(state[j]) : 0.f;
    a2_lane = p.A[static_cast<int64_t>(c) * kN + j] * kLog2e;
  }

  const T* U = static_cast<const T*>(p.u);
  const T* Dt = static_cast<const T*>(p.delta);
  const T* Z = static_cast<const T*>(p.z);
  const T* Bg = static_cast<const T*>(p.B);
  const T* Cg = static_cast<const T*>(p.C);
  T* Out = static_cast<T*>(p.out);
  // Piece k of the u / dt / z rows: row tid / kChPieces + k * rows_per_k, channels sub * kPer..;
  // piece k of the B / C rows likewise with kNPieces. The channel sub-block is fixed per thread.
  constexpr int kURows = kThreads / kChPieces, kBRows = kThreads / kNPieces;
  const int u_row = tid / kChPieces, u_sub = tid % kChPieces;
  const int b_row = tid / kNPieces, b_sub = tid % kNPieces;
  uint2 pb[kBP], pc[kBP];
  auto prefetch_udz = [&](int t0) {
    const int n_chunk = min(kChunk, len - t0);
#pragma unroll
    for (int k = 0; k < kUP; ++k) {
      const int r = u_row + k * kURows;
      if (r < n_chunk) {  // rows past the chunk are not read back
        const int64_t row = start + t0 + r;
        const int ch = c0 + u_sub * kPer;
        CpAsync8(&sm.u_raw[r][u_sub], U + row * p.u_stride + ch);
        CpAsync8(&sm.dt_raw[r][u_sub], Dt + row * p.delta_stride + ch);
        if (Z) CpAsync8(&sm.z[r][u_sub], Z + row * p.z_stride + ch);
      }
    }
  };
  auto prefetch_bc = [&](int t0) {
    const int n_chunk = min(kChunk, len - t0);
#pragma unroll
    for (int k = 0; k < kBP; ++k) {
      const int r = b_row + k * kBRows;
      pb[k] = pc[k] = make_uint2(0, 0);
      if (r < n_chunk) {
        const int64_t row = start + t0 + r;
        pb[k] = *reinterpret_cast<const uint2*>(Bg + row * p.B_stride + b_sub * kPer);
        pc[k] = *reinterpret_cast<const uint2*>(Cg + row * p.C_stride + b_sub * kPer);
      }
    }
  };
  auto stage = [&](int t0) {
    const int n_chunk = min(kChunk, len - t0);
#pragma unroll
    for (int k = 0; k < kUP; ++k) {
      const int r = u_row + k * kURows;
      const uint2 zero = make_uint2(0, 0);
      const uint2 ur = r < n_chunk ? sm.u_raw[r][u_sub] : zero;
      const uint2 dr = r < n_chunk ? sm.dt_raw[r][u_sub] : zero;
      const uint2 zr = r < n_chunk && Z ? sm.z[r][u_sub] : zero;
      const T* uv = reinterpret_cast<const T*>(&ur);
      const T* dv = reinterpret_cast<const T*>(&dr);
      const T* zv = reinterpret_cast<const T*>(&zr);
#pragma unroll
      for (int e = 0; e < kPer; ++e) {
        const int lc = u_sub * kPer + e;
        float dt = 0.f;  // past the chunk: dt = 0 (a = 1, b = 0: identity steps)
        if (r < n_chunk) {
          dt = ToF32(dv[e]) + (p.delta_bias ? p.delta_bias[c0 + lc] : 0.f);
          if (p.delta_softplus) dt = StageSoftplus<T>(dt);
        }
        sm.dt[lc][r] = dt;
        sm.u[lc][r] = ToF32(uv[e]);
        sm.g[lc][r] = Z && r < n_chunk ? StageSilu<T>(ToF32(zv[e])) : 1.f;
      }
    }
#pragma unroll
    for (int k = 0; k < kBP; ++k) {
      const int r = b_row + k * kBRows;
      const T* bv = reinterpret_cast<const T*>(&pb[k]);
      const T* cv = reinterpret_cast<const T*>(&pc[k]);
#pragma unroll
      for (int e = 0; e < kPer; ++e) {
        if constexpr (Tile::kF32BC) {
          sm.B[b_sub * kPer + e][Tile::BCIdx(r)] = ToF32(bv[e]);
          sm.C[b_sub * kPer + e][Tile::BCIdx(r)] = ToF32(cv[e]);
        } else {
          sm.B[b_sub * kPer + e][r] = bv[e];
          sm.C[b_sub * kPer + e][r] = cv[e];
        }
      }
    }
  };

  prefetch_udz(0);
  prefetch_bc(0);
  for (int t0 = 0; t0 < len; t0 += kChunk) {
    const int n_chunk = min(kChunk, len - t0);
    const bool more = t0 + kChunk < len;
    CpAsyncWaitAll();  // this thread's z pieces of the chunk have landed
    __syncthreads();   // the previous chunk's scan and output no longer read shared memory
    stage(t0);
    __syncthreads();
    // The next chunk's u / dt / z rows (DRAM) are in flight during this chunk's scan; its B / C
    // rows (small, L2-resident: every block of the sequence reads them) during the output.
    if (more) prefetch_udz(t0 + kChunk);
    const int i0 = j * kItems;
    float dtv[kItems], duv[kItems], y[kItems];
    LoadRun<float, kItems>(&sm.dt[w][i0], dtv);
    LoadRun<float, kItems>(&sm.u[w][i0], duv);
    const float Dc = p.D ? p.D[c] : 0.f;
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      y[i] = Dc * duv[i];  // D skip
      duv[i] *= dtv[i];
    }
    // kNP states at a time: independent chains whose shuffles overlap.
#pragma unroll 1
    for (int n0 = 0; n0 < kN; n0 += kNP) {
      float a2[kNP], cin[kNP], ap[kNP], bp[kNP], q[kNP][kItems];
#pragma unroll
      for (int s = 0; s < kNP; ++s) {
        a2[s] = __shfl_sync(0xffffffffu, a2_lane, n0 + s);
        cin[s] = __shfl_sync(0xffffffffu, carry, n0 + s);
      }
#pragma unroll
      for (int s = 0; s < kNP; ++s) {
        float bv[kItems], cv[kItems];
        if constexpr (Tile::kSplitBC) {
          LoadHalves(sm.B[n0 + s], j, bv);
          LoadHalves(sm.C[n0 + s], j, cv);
        } else {
          LoadRun<typename Tile::BC, kItems>(&sm.B[n0 + s][i0], bv);
          LoadRun<typename Tile::BC, kItems>(&sm.C[n0 + s][i0], cv);
        }
        // The run from a zero state: h0 (y gets C * h0) and the decay product P since the run's
        // start; y later gets C * P * h_start (q = C * P) once the start state is known.
        ap[s] = 1.f;
        bp[s] = 0.f;
#pragma unroll
        for (int i = 0; i < kItems; ++i) {
          const float a = Exp2Ftz(dtv[i] * a2[s]);
          bp[s] = fmaf(a, bp[s], bv[i] * duv[i]);
          ap[s] *= a;
          y[i] = fmaf(cv[i], bp[s], y[i]);
          q[s][i] = cv[i] * ap[s];
        }
      }
      // Inclusive scan over the 32 lanes (earlier lanes first): (ao, bo) then (ap, bp).
#pragma unroll
      for (int off = 1; off < 32; off <<= 1) {
        float ao[kNP], bo[kNP];
#pragma unroll
        for (int s = 0; s < kNP; ++s) {
          ao[s] = __shfl_up_sync(0xffffffffu, ap[s], off);
          bo[s] = __shfl_up_sync(0xffffffffu, bp[s], off);
        }
        if (j >= off) {
#pragma unroll
          for (int s = 0; s < kNP; ++s) {
            bp[s] = fmaf(ap[s], bo[s], bp[s]);
            ap[s] *= ao[s];
          }
        }
      }
#pragma unroll
      for (int s = 0; s < kNP; ++s) {
        const float h_end = fmaf(ap[s], cin[s], bp[s]);  // the state after this lane's run
        float h = __shfl_up_sync(0xffffffffu, h_end, 1);
        if (j == 0) h = cin[s];
        const float next = __shfl_sync(0xffffffffu, h_end, 31);
        if (j == n0 + s) carry = next;
#pragma unroll
        for (int i = 0; i < kItems; ++i) y[i] = fmaf(q[s][i], h, y[i]);
      }
    }
    float g[kItems];
    LoadRun<float, kItems>(&sm.g[w][i0], g);
#pragma unroll
    for (int i = 0; i < kItems; ++i) y[i] *= g[i];
    if constexpr (Tile::kVecOut) {
      StoreVec<float, kItems>(&sm.g[w][i0], y);
    } else {
#pragma unroll
      for (int i = 0; i < kItems; ++i) sm.g[w][i0 + i] = y[i];
    }
    if (more) prefetch_bc(t0 + kChunk);
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kUP; ++k) {
      const int r = u_row + k * kURows;
      if (r >= n_chunk) continue;
      uint2 raw;
      T* v = reinterpret_cast<T*>(&raw);
#pragma unroll
      for (int e = 0; e < kPer; ++e) v[e] = FromF32<T>(sm.g[u_sub * kPer + e][r]);
      *reinterpret_cast<uint2*>(Out + (start + t0 + r) * static_cast<int64_t>(p.out_stride) + c0 +
                                u_sub * kPer) = raw;
    }
  }
  if (slot >= 0 && j < kN) state[j] = FromF32<S>(carry);
}

// Shared memory is dynamic (up to 54 KB per block: above the 48 KB static limit); the opt-in is
// set once per kernel (not a stream operation: safe while a graph is being captured).
template <typename T, typename S, int kItems, int kNP, bool kF32BC = false, bool kVecOut = false>
bool Launch(const SelectiveScanParams& p, Stream stream) {
  using Tile = ParTile<T, kItems, kNP, kF32BC, kVecOut>;
  constexpr int kSmem = sizeof(ParSmem<T, Tile>);
  static const bool attr_ok =
      cudaFuncSetAttribute(ScanParallelKernel<T, S, Tile>,
                           cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem) == cudaSuccess;
  if (!attr_ok) return false;
  ScanParallelKernel<T, S, Tile><<<dim3(p.d_inner / kCh, p.batch), kThreads, kSmem, stream>>>(p);
  return true;
}

// Tiling of the bf16 kernel for long sequences (mean >= 192 tokens): lane run (4 / 8 tokens) and
// states scanned at a time (1 / 2). BMS_SCAN_PARALLEL_TILE=8x2 (default), 8x1, 4x1 or 4x2, read
// once: an A/B knob for bms_kernel_bench_scan. H100, 1 x 2048 tokens at d_inner 2944: 8x2
// 114.9 us, 8x1 117.7, 4x2 130.1, 4x1 140.1 (bench/NOTES.md). Short sequences run 4 x 1.
// Also 8x2f / 8x4f (B / C staged as fp32, rows split for conflict-free loads, 16-byte output
// stores) and 8x2v (8x2 with the 16-byte output stores): the fp32 staging with a lane's 32
// contiguous bytes LOST on the H100 (142.2 / 155.9 us vs 115.1: 2x the shared wavefronts, short
// scoreboard stalls 2.3 -> 6.0 per issue); the split rows and 8x2v have not run on a device yet.
struct LongTile {
  int items = 8, states = 2;
  bool f32_bc = false;   // B / C staged as fp32 ("f" suffix: 8x2f, 8x4f)
  bool vec_out = false;  // 16-byte output stores to shared ("v" suffix: 8x2v; on with "f")
};
LongTile LongTileFromEnv() {
  static const LongTile tile = [] {
    LongTile t;
    const char* v = std::getenv("BMS_SCAN_PARALLEL_TILE");
    if (v == nullptr) return t;
    if (std::strcmp(v, "8x1") == 0) t.states = 1;
    if (std::strcmp(v, "4x1") == 0) t = {4, 1};
    if (std::strcmp(v, "4x2") == 0) t.items = 4;
    if (std::strcmp(v, "8x2f") == 0) t.f32_bc = true;
    if (std::strcmp(v, "8x4f") == 0) t = {8, 4, true};
    if (std::strcmp(v, "8x2v") == 0) t.vec_out = true;
    return t;
  }();
  return tile;
}

bool Aligned8(const void* ptr, int64_t stride, size_t elem) {
  return (reinterpret_cast<uintptr_t>(ptr) & 7) == 0 && (stride * elem) % 8 == 0;
}

}  // namespace

bool LaunchScanParallel(const SelectiveScanParams& p, Stream stream) {
  const size_t e = p.dtype == DType::kBF16 ? 2 : 4;
  if (p.d_state != kN || p.d_inner % kCh != 0 || !Aligned8(p.u, p.u_stride, e) ||
      !Aligned8(p.delta, p.delta_stride, e) || !Aligned8(p.B, p.B_stride, e) ||
      !Aligned8(p.C, p.C_stride, e) || !Aligned8(p.out, p.out_stride, e) ||
      (p.z && !Aligned8(p.z, p.z_stride, e)))
    return false;
  // Lane runs of 8 tokens (chunks of 256) when the sequences are long on average, else 4
  // (chunks of 128: short sequences leave fewer lanes idle). fp32 activations: 4 (the
  // prefetched B / C pieces of a chunk are twice as many registers).
  const bool long_seqs = p.n_tokens <= 0 || p.n_tokens >= 192 * p.batch;
  return DispatchState(p.ssm_state_dtype, [&](auto s) {
    using S = decltype(s);
    if (p.dtype != DType::kBF16) return Launch<float, S, 4, 1>(p, stream);
    const LongTile t = long_seqs ? LongTileFromEnv() : LongTile{4, 1};
    if (t.f32_bc && t.states == 4) return Launch<bf16, S, 8, 4, true>(p, stream);
    if (t.f32_bc) return Launch<bf16, S, 8, 2, true>(p, stream);
    if (t.vec_out) return Launch<bf16, S, 8, 2, false, true>(p, stream);
    if (t.items == 8 && t.states == 2) return Launch<bf16, S, 8, 2>(p, stream);
    if (t.items == 8) return Launch<bf16, S, 8, 1>(p, stream);
    if (t.states == 2) return Launch<bf16, S, 4, 2>(p, stream);
    return Launch<bf16, S, 4, 1>(p, stream);
  });
}

}  // namespace bms::cuda
