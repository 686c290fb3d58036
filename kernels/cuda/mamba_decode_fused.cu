// Decode Mamba mixer between in_proj and out_proj in two kernels (MambaDecodeConvXProj,
// MambaDecodeScan in kernels/cuda/ops.h):
//  (a) ConvXProjKernel: per 64-channel block and 4 rows, the conv window update (+ bias + SiLU)
//      -> xc, then that block's share of x_proj (xc[:, block] @ x_proj[:, block]^T) written as
//      fp32 partial sums [n_blocks, batch, xdbl];
//  (b) ScanDtKernel: the fixed-order sum of those partials (or the rows of a GEMM's dbc), dt_proj
//      for the block's channels (weights staged in shared memory), bias, softplus, the selective
//      state update, D skip and SiLU(z) gate -> y.
// Every reduction runs in a fixed order (deterministic); each slot's conv window and SSM state is
// read and written once with 16-byte accesses; slot < 0 rows read zeros and store no state.
// (b) after (a) is a programmatic dependent launch: (a) allows it at its start, (b) loads its
// state, z and dt_proj rows, then waits for (a) (griddepcontrol) before reading xc / partials.
// Measured (bench/NOTES.md): 6-9% faster decode steps at batch 1-8 on the H100 with PDL, none
// without; at batch >= 16 the partial sums (re-read by every scan block) lose to the GEMMs.
#include <algorithm>
#include <cstdlib>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/conv_scan_internal.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/pdl.cuh"

namespace bms::cuda {
namespace {

constexpr int kW = 4;  // d_conv
constexpr int kW1 = kW - 1;
constexpr int kState = 16;  // d_state
constexpr int kACh = 64;    // channels per conv / x_proj block (one partial block)
constexpr int kAThreads = 128;
constexpr int kARows = 4;  // rows per conv / x_proj block
constexpr int kAGroups = kACh / 8;
constexpr int kBThreads = 128;
constexpr int kMaxXdbl = 160;  // dt_rank + 2 * d_state (shared memory: <= 43 KB per block)
constexpr int kMaxDtRank = 128;
constexpr int kMaxPartialBlocks = 64;  // partial blocks summed with every load in flight

// Programmatic dependent launch (sm_90): the dependent kernel's prologue overlaps this kernel;
// GridDependencyWait blocks until the previous kernel of the stream has completed and its
// memory is visible (a no-op when the launch carried no programmatic dependency).
__device__ __forceinline__ void GridDependencyWait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void AllowDependentLaunch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

__device__ __forceinline__ bool SeqAligned16Dev(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15) == 0;
}

int XDbl(const MambaDecodeParams& p) { return p.dt_rank + 2 * p.d_state; }

// Grid (d_inner / kACh, ceil(batch / kARows)). Threads [0, kARows * 8) each update 8 channels of
// one row's conv window; then every thread owns x_proj outputs o = tid, tid + 128, ... and sums
// the block's 64 channels for all kARows rows (weights read once per block, 16-byte loads).
template <typename T, typename S>
__global__ void __launch_bounds__(kAThreads) ConvXProjKernel(MambaDecodeParams p) {
  __shared__ float xs[kARows][kACh];  // xc of the block, rounded to T
  const int blk = blockIdx.x, c_base = blk * kACh, r0 = blockIdx.y * kARows, tid = threadIdx.x;
  const int xdbl = p.dt_rank + 2 * p.d_state;
  const T* xw = static_cast<const T*>(p.x_proj);
  float wv[kACh];  // the thread's first x_proj row slice, loaded before the conv
  if (tid < xdbl) LoadVec<T, kACh>(xw + static_cast<int64_t>(tid) * p.d_inner + c_base, wv);
  // When this kernel is itself a programmatic dependent launch (BMS_PDL, kernels/cuda/pdl.cuh),
  // xz / slots / state are read only after the wait, and MambaDecodeScan (which reads z and the
  // SSM state before ITS wait) is allowed to start only after it: the in_proj kernel has then
  // completed.
  GridDependencyWait();
  AllowDependentLaunch();  // MambaDecodeScan may start its prologue (it waits for our results)
  if (tid < kARows * kAGroups) {
    const int lr = tid / kAGroups, c0 = c_base + (tid % kAGroups) * 8, b = r0 + lr;
    float o[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) o[i] = 0.f;
    if (b < p.batch) {
      const int slot = p.slots[b];
      const bool init = slot >= 0 && p.has_initial_state && p.has_initial_state[b];
      S* state = static_cast<S*>(p.conv_state) + (slot >= 0 ? slot : 0) * p.conv_state_slot_stride +
                 static_cast<int64_t>(c0) * kW1;
      float win[8 * kW1], xv[8], wt[8 * kW];
      if (init) {
        LoadVec<S, 8 * kW1>(state, win);
      } else {
#pragma unroll
        for (int i = 0; i < 8 * kW1; ++i) win[i] = 0.f;
      }
      LoadVec<T, 8>(static_cast<const T*>(p.xz) + b * p.xz_stride + c0, xv);
      LoadVec<float, 8 * kW>(p.conv_weight + static_cast<int64_t>(c0) * kW, wt);
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        float acc = 0.f;
#pragma unroll
        for (int k = 0; k < kW1; ++k) acc += win[i * kW1 + k] * wt[i * kW + k];
        acc += xv[i] * wt[i * kW + kW1];
        if (p.conv_bias) acc += p.conv_bias[c0 + i];
        o[i] = ToF32(FromF32<T>(SiluF(acc)));
      }
      StoreVec<T, 8>(static_cast<T*>(p.xc) + static_cast<int64_t>(b) * p.d_inner + c0, o);
      if (slot >= 0) {
        float nw[8 * kW1];
#pragma unroll
        for (int i = 0; i < 8; ++i) {
#pragma unroll
          for (int k = 0; k < kW1 - 1; ++k) nw[i * kW1 + k] = win[i * kW1 + k + 1];
          nw[i * kW1 + kW1 - 1] = xv[i];
        }
        StoreVec<S, 8 * kW1>(state, nw);
      }
    }
#pragma unroll
    for (int i = 0; i < 8; ++i) xs[lr][c0 - c_base + i] = o[i];
  }
  __syncthreads();
  for (int o = tid; o < xdbl; o += kAThreads) {
    float acc[kARows];
#pragma unroll
    for (int r = 0; r < kARows; ++r) acc[r] = 0.f;
    if (o != tid) LoadVec<T, kACh>(xw + static_cast<int64_t>(o) * p.d_inner + c_base, wv);
#pragma unroll
    for (int r = 0; r < kARows; ++r) {
#pragma unroll
      for (int i = 0; i < kACh; ++i) acc[r] += wv[i] * xs[r][i];
    }
#pragma unroll
    for (int r = 0; r < kARows; ++r)
      if (r0 + r < p.batch)
        p.partials[(static_cast<int64_t>(blk) * p.batch + r0 + r) * xdbl + o] = acc[r];
  }
}

// Grid (d_inner / kCh, ceil(batch / kRows)); kCh = 32 channels (fp32 state) or 64 (bf16): a
// thread owns 16 bytes of one channel's state, a channel is kSub = 4 or 2 adjacent lanes.
// Shared memory: the block's dt_proj rows [kCh][ws] (ws = dt_rank | 1: odd, no bank conflicts)
// and the rows' x_proj outputs [kRows][xdbl] (dt_low | B | C, rounded to T as a GEMM would
// store them). dt = the kSub lanes' partial dot products over k = q, q + kSub, ... summed by a
// butterfly (every lane gets the same value), rounded to T, + bias, softplus.
template <typename T, typename S, int kRows, bool kFromPartials>
__global__ void __launch_bounds__(kBThreads) ScanDtKernel(MambaDecodeParams p, int n_blocks) {
  constexpr int kPer = 16 / sizeof(S);
  constexpr int kSub = kState / kPer;
  constexpr int kCh = kBThreads / kSub;
  extern __shared__ float smem[];
  const int r = p.dt_rank, xdbl = r + 2 * kState, ws = r | 1;
  float* s_w = smem;               // [kCh][ws]
  float* s_dbc = smem + kCh * ws;  // [kRows][xdbl]
  const int tid = threadIdx.x, c_base = blockIdx.x * kCh, r0 = blockIdx.y * kRows;
  const int n_rows = min(kRows, p.batch - r0);
  const int lc = tid / kSub, q = tid % kSub, n0 = q * kPer, c = c_base + lc;
  const T* xc = static_cast<const T*>(p.xc);
  const T* z = static_cast<const T*>(p.xz) + p.d_inner;
  constexpr int kG = kRows < 4 ? kRows : 4;  // rows whose state loads are in flight together
  // The state / u / z of rows [g0, g0 + kG): issued before they are needed (the first group
  // before the shared-memory staging, the next group while the current one computes).
  auto load_group = [&](int g0, float(&h)[kG][kPer], float(&u)[kG], float(&zg)[kG],
                        int(&slot)[kG]) {
#pragma unroll
    for (int j = 0; j < kG; ++j) {
      const int lr = g0 + j;
      const bool valid = lr < n_rows;
      const int b = r0 + (valid ? lr : 0);
      slot[j] = valid ? p.slots[b] : -1;
      const bool init = slot[j] >= 0 && p.has_initial_state && p.has_initial_state[b];
      if (init) {
        LoadVec<S, kPer>(static_cast<const S*>(p.ssm_state) + slot[j] * p.ssm_state_slot_stride +
                             static_cast<int64_t>(c) * kState + n0,
                         h[j]);
      } else {
#pragma unroll
        for (int i = 0; i < kPer; ++i) h[j][i] = 0.f;
      }
      zg[j] = ToF32(z[b * p.xz_stride + c]);
    }
  };
  // xc (u) is the previous kernel's output: read only after GridDependencyWait.
  auto load_u = [&](int g0, float(&u)[kG]) {
#pragma unroll
    for (int j = 0; j < kG; ++j) {
      const int b = r0 + (g0 + j < n_rows ? g0 + j : 0);
      u[j] = ToF32(xc[static_cast<int64_t>(b) * p.d_inner + c]);
    }
  };
  float h[kG][kPer], u[kG], zg[kG];
  int slot[kG];
  load_group(0, h, u, zg, slot);  // state, z and slots: not written by the previous kernel
  float A[kPer];
  LoadVec<float, kPer>(p.A + static_cast<int64_t>(c) * kState + n0, A);
  const float Dc = p.D ? p.D[c] : 0.f, bias = p.dt_bias ? p.dt_bias[c] : 0.f;

  // dt_proj rows of the block: a contiguous [kCh, r] slice, 16-byte loads when aligned.
  const T* dtw = static_cast<const T*>(p.dt_proj) + static_cast<int64_t>(c_base) * r;
  if (SeqAligned16Dev(dtw) && (kCh * r) % (16 / sizeof(T)) == 0) {
    constexpr int kV = 16 / sizeof(T);
    for (int v = tid; v < kCh * r / kV; v += kBThreads) {
      float w[kV];
      LoadVec<T, kV>(dtw + v * kV, w);
#pragma unroll
      for (int j = 0; j < kV; ++j) {
        const int i = v * kV + j;
        s_w[(i / r) * ws + i % r] = w[j];
      }
    }
  } else {
    for (int i = tid; i < kCh * r; i += kBThreads) s_w[(i / r) * ws + i % r] = ToF32(dtw[i]);
  }
  GridDependencyWait();  // the conv / x_proj kernel (or GEMM) has completed from here on
  load_u(0, u);
  for (int i = tid; i < n_rows * xdbl; i += kBThreads) {
    const int lr = i / xdbl, o = i % xdbl, b = r0 + lr;
    float v = 0.f;
    if constexpr (kFromPartials) {
      const float* src = p.partials + static_cast<int64_t>(b) * xdbl + o;
      const int64_t step = static_cast<int64_t>(p.batch) * xdbl;
      if (n_blocks <= kMaxPartialBlocks) {
        float part[kMaxPartialBlocks];  // every load in flight, then the fixed-order sum
#pragma unroll
        for (int k = 0; k < kMaxPartialBlocks; ++k) part[k] = k < n_blocks ? src[k * step] : 0.f;
#pragma unroll
        for (int k = 0; k < kMaxPartialBlocks; ++k) v += part[k];
      } else {
        for (int k = 0; k < n_blocks; ++k) v += src[k * step];
      }
      v = ToF32(FromF32<T>(v));
    } else {
      v = ToF32(static_cast<const T*>(p.dbc)[static_cast<int64_t>(b) * xdbl + o]);
    }
    s_dbc[lr * xdbl + o] = v;
  }
  __syncthreads();
  const float* wrow = s_w + lc * ws;
  for (int g0 = 0; g0 < n_rows; g0 += kG) {
    float hn[kG][kPer], un[kG], zn[kG];
    int sn[kG];
    const bool more = g0 + kG < n_rows;  // block-uniform
    if (kRows > kG && more) {
      load_group(g0 + kG, hn, un, zn, sn);
      load_u(g0 + kG, un);
    }
#pragma unroll
    for (int j = 0; j < kG; ++j) {
      const int lr = g0 + j;
      if (lr >= n_rows) break;  // block-uniform
      const float* row = s_dbc + lr * xdbl;
      // Four accumulators over k = q + kSub * (4i + a), combined in a fixed order.
      float d4[4] = {0.f, 0.f, 0.f, 0.f};
      int k = q;
      for (; k + 3 * kSub < r; k += 4 * kSub) {
#pragma unroll
        for (int a = 0; a < 4; ++a) d4[a] += wrow[k + a * kSub] * row[k + a * kSub];
      }
      for (int a = 0; k < r; k += kSub, ++a) d4[a] += wrow[k] * row[k];
      float dt = (d4[0] + d4[1]) + (d4[2] + d4[3]);
#pragma unroll
      for (int o = kSub / 2; o > 0; o >>= 1) dt += __shfl_xor_sync(0xffffffffu, dt, o, kSub);
      dt = SoftplusF(ToF32(FromF32<T>(dt)) + bias);
      const float du = dt * u[j];
      float y = 0.f;
#pragma unroll
      for (int i = 0; i < kPer; ++i) {
        h[j][i] = h[j][i] * expf(dt * A[i]) + du * row[r + n0 + i];
        y += h[j][i] * row[r + kState + n0 + i];
      }
#pragma unroll
      for (int o = kSub / 2; o > 0; o >>= 1) y += __shfl_xor_sync(0xffffffffu, y, o, kSub);
      const int b = r0 + lr;
      if (q == 0)
        static_cast<T*>(p.out)[static_cast<int64_t>(b) * p.d_inner + c] =
            FromF32<T>((y + Dc * u[j]) * SiluF(zg[j]));
      if (slot[j] >= 0)
        StoreVec<S, kPer>(static_cast<S*>(p.ssm_state) + slot[j] * p.ssm_state_slot_stride +
                              static_cast<int64_t>(c) * kState + n0,
                          h[j]);
    }
    if (kRows > kG && more) {
#pragma unroll
      for (int j = 0; j < kG; ++j) {
#pragma unroll
        for (int i = 0; i < kPer; ++i) h[j][i] = hn[j][i];
        u[j] = un[j];
        zg[j] = zn[j];
        slot[j] = sn[j];
      }
    }
  }
}

int EnvInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  return end != nullptr && *end == '\0' ? static_cast<int>(x) : fallback;
}

absl::Status CheckParams(const MambaDecodeParams& p, const char* what) {
  if (p.batch < 0 || !p.slots || !p.xz || !p.xc || !p.out || !p.conv_state || !p.ssm_state ||
      !p.conv_weight || !p.x_proj || !p.dt_proj || !p.A)
    return absl::InvalidArgumentError(absl::StrCat(what, ": bad sizes or null pointer"));
  if (!MambaDecodeSupported(p))
    return absl::InvalidArgumentError(
        absl::StrCat(what,
                     ": needs d_conv 4, d_state 16, d_inner % 64 == 0, dt_rank <= 128, 16-byte "
                     "aligned rows and states"));
  return absl::OkStatus();
}

}  // namespace

bool MambaDecodeFusedEnabled() {
  static const bool on = EnvInt("BMS_MAMBA_DECODE_FUSED", 1) != 0;
  return on && !LegacyKernels();
}

int MambaDecodePartialMaxBatch() {
  static const int v = std::clamp(EnvInt("BMS_MAMBA_PARTIAL_MAX", 8), 0, 256);
  return v;
}

int MambaDecodePartialMinBatch() {
  static const int v = std::max(EnvInt("BMS_MAMBA_PARTIAL_MIN", 1), 1);
  return v;
}

bool MambaDecodePdl() {
  static const bool on = EnvInt("BMS_MAMBA_PDL", 1) != 0;
  return on;
}

int MambaDecodeFusedScanMaxBatch() {
  static const int v = std::max(EnvInt("BMS_MAMBA_FUSED_SCAN_MAX", 0), 0);
  return v;
}

int MambaDecodePartialBlocks(int d_inner) { return d_inner / kACh; }

size_t MambaDecodePartialFloats(int batch, int d_inner, int xdbl) {
  return static_cast<size_t>(MambaDecodePartialBlocks(d_inner)) * batch * xdbl;
}

bool MambaDecodeSupported(const MambaDecodeParams& p) {
  const int64_t xz_stride = p.xz_stride ? p.xz_stride : 2 * int64_t{p.d_inner};
  const int64_t conv_stride =
      p.conv_state_slot_stride ? p.conv_state_slot_stride : int64_t{p.d_inner} * kW1;
  const int64_t ssm_stride =
      p.ssm_state_slot_stride ? p.ssm_state_slot_stride : int64_t{p.d_inner} * kState;
  return p.d_conv == kW && p.d_state == kState && p.d_inner > 0 && p.d_inner % kACh == 0 &&
         p.dt_rank > 0 && p.dt_rank <= kMaxDtRank && XDbl(p) <= kMaxXdbl && xz_stride % 8 == 0 &&
         conv_stride % 8 == 0 && ssm_stride % 8 == 0 && SeqAligned16(p.xz) && SeqAligned16(p.xc) &&
         SeqAligned16(p.x_proj) && SeqAligned16(p.conv_weight) && SeqAligned16(p.conv_state) &&
         SeqAligned16(p.ssm_state) && SeqAligned16(p.A);
}

namespace {
MambaDecodeParams Normalized(const MambaDecodeParams& in) {
  MambaDecodeParams p = in;
  if (p.xz_stride == 0) p.xz_stride = 2 * int64_t{p.d_inner};
  if (p.conv_state_slot_stride == 0) p.conv_state_slot_stride = int64_t{p.d_inner} * kW1;
  if (p.ssm_state_slot_stride == 0) p.ssm_state_slot_stride = int64_t{p.d_inner} * kState;
  return p;
}
}  // namespace

absl::Status MambaDecodeConvXProj(const MambaDecodeParams& p_in, Stream stream) {
  if (absl::Status st = CheckParams(p_in, "MambaDecodeConvXProj"); !st.ok()) return st;
  if (!p_in.partials) return absl::InvalidArgumentError("MambaDecodeConvXProj: partials is null");
  if (p_in.batch == 0) return absl::OkStatus();
  const MambaDecodeParams p = Normalized(p_in);
  const dim3 grid(MambaDecodePartialBlocks(p.d_inner), CeilDiv(p.batch, kARows));
  if (grid.y > 65535) return absl::InvalidArgumentError("MambaDecodeConvXProj: batch too large");
  DispatchDType(p.dtype, [&](auto t) {
    using T = decltype(t);
    return DispatchState(p.conv_state_dtype, [&](auto s) {
      using S = decltype(s);
      LaunchPdl(ConvXProjKernel<T, S>, grid, kAThreads, 0, stream, p);
      return 0;
    });
  });
  BMS_CUDA_CHECK_LAUNCH("MambaDecodeConvXProj");
  return absl::OkStatus();
}

absl::Status MambaDecodeScan(const MambaDecodeParams& p_in, Stream stream) {
  if (absl::Status st = CheckParams(p_in, "MambaDecodeScan"); !st.ok()) return st;
  if (!p_in.partials && !p_in.dbc)
    return absl::InvalidArgumentError("MambaDecodeScan: needs partials or dbc");
  if (p_in.batch == 0) return absl::OkStatus();
  const MambaDecodeParams p = Normalized(p_in);
  const int n_blocks = MambaDecodePartialBlocks(p.d_inner), xdbl = XDbl(p);
  const bool partials = p.partials != nullptr;
  cudaError_t launch_error = cudaSuccess;
  DispatchDType(p.dtype, [&](auto t) {
    using T = decltype(t);
    return DispatchState(p.ssm_state_dtype, [&](auto s) {
      using S = decltype(s);
      constexpr int kCh = kBThreads / (kState / (16 / sizeof(S)));
      auto launch = [&](auto rows_tag) {
        constexpr int kRows = decltype(rows_tag)::value;
        const dim3 grid(p.d_inner / kCh, CeilDiv(p.batch, kRows));
        const size_t smem = sizeof(float) * (kCh * (p.dt_rank | 1) + kRows * xdbl);
        if (partials && MambaDecodePdl()) {
          cudaLaunchConfig_t cfg = {};
          cfg.gridDim = grid;
          cfg.blockDim = dim3(kBThreads);
          cfg.dynamicSmemBytes = smem;
          cfg.stream = stream;
          cudaLaunchAttribute attr[1];
          attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
          attr[0].val.programmaticStreamSerializationAllowed = 1;
          cfg.attrs = attr;
          cfg.numAttrs = 1;
          launch_error = cudaLaunchKernelEx(&cfg, ScanDtKernel<T, S, kRows, true>, p, n_blocks);
        } else if (partials) {
          ScanDtKernel<T, S, kRows, true><<<grid, kBThreads, smem, stream>>>(p, n_blocks);
        } else {
          ScanDtKernel<T, S, kRows, false><<<grid, kBThreads, smem, stream>>>(p, n_blocks);
        }
      };
      if (p.batch < 16)
        launch(std::integral_constant<int, 1>{});
      else if (p.batch < 256)
        launch(std::integral_constant<int, 4>{});
      else
        launch(std::integral_constant<int, 16>{});
      return 0;
    });
  });
  if (launch_error != cudaSuccess)
    return absl::InternalError(
        absl::StrCat("MambaDecodeScan: cudaLaunchKernelEx: ", cudaGetErrorString(launch_error)));
  BMS_CUDA_CHECK_LAUNCH("MambaDecodeScan");
  return absl::OkStatus();
}

}  // namespace bms::cuda
