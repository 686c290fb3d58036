// CUDA ops: the device versions of kernels/ref/ops.h (same math, same state layout), each a
// framework-free params struct plus one validating launcher that enqueues on a stream and
// returns absl::Status (launch errors carry file:line). Activations and large weights are of one
// compute dtype (fp32 or bf16); norms, biases, A, D and conv weights are always fp32; the
// residual stream is fp32; state is fp32 or bf16 storage with fp32 math. All pointers are
// device pointers unless a comment says otherwise. This header is CUDA-free (streams are passed
// as the opaque CUstream_st*), so engine code and tests can include it.
// Launchers do not synchronize; they never allocate. Not thread-safe per stream.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/ref/ops.h"

struct CUstream_st;

namespace bms::cuda {

using Stream = CUstream_st*;
using ref::Activation;
using ref::StateStorage;

enum class DType : uint8_t { kF32, kBF16 };  // compute dtype of activations and big weights
inline int DTypeBytes(DType t) { return t == DType::kF32 ? 4 : 2; }

// out[t] = table[tokens[t]]. Tokens must already be validated (< vocab_size).
struct EmbeddingParams {
  int n_tokens = 0;
  int d_model = 0;
  DType dtype = DType::kF32;
  const int32_t* tokens = nullptr;  // [n_tokens]
  const void* table = nullptr;      // [vocab_size, d_model]
  void* out = nullptr;              // [n_tokens, d_model]
};
absl::Status Embedding(const EmbeddingParams& p, Stream stream);

// Residual add + RMSNorm / LayerNorm (ref::AddNormParams math). Output row i reads residual
// row src = rows ? rows[i] : i:  r = (first_layer ? h[src] : residual[src] + h[src]) (h null:
// no add); out[i] = norm(r). When write_residual, r is stored back to residual[src] (rows must
// then be null).
struct AddNormParams {
  int n_rows = 0;
  int d_model = 0;
  DType dtype = DType::kF32;  // of h and out
  const void* h = nullptr;    // [*, d_model] or null
  float* residual = nullptr;  // [*, d_model]
  bool first_layer = false;
  bool write_residual = true;
  const int32_t* rows = nullptr;  // [n_rows] or null
  const float* weight = nullptr;  // [d_model]
  const float* bias = nullptr;    // [d_model] LayerNorm only, or null
  float eps = 1e-5f;
  void* out = nullptr;       // [n_rows, d_model]
  float* out_f32 = nullptr;  // [n_rows, d_model] optional fp32 copy of out (router input)
};
absl::Status AddRmsNorm(const AddNormParams& p, Stream stream);
absl::Status AddLayerNorm(const AddNormParams& p, Stream stream);

// Fused residual add + RMSNorm + top-1 MoE routing for the norm in front of a MoE layer, in ONE
// launch (one block per row): the AddNormParams math (out_f32 ignored: the fp32 normalized row
// stays in registers), then the fp32 router GEMV on that row (n_experts dot products), bias,
// sigmoid, first-index argmax and scale (RouterSelectParams math), and the grouping by expert
// (MoeGroupParams math: counts, exclusive prefix sum, stable permutation) done by the last block
// to finish (atomic ticket). Routing counters: rows < *n_counted only (all rows when null).
// Needs d_model % 4 == 0, d_model <= 8192, 16-byte aligned row pointers, n_experts <= 64 and
// rows == null; AddRmsNormRouteSupported says whether a shape qualifies.
struct AddNormRouteParams {
  AddNormParams norm;  // rows must be null; out_f32 is not written
  int n_experts = 0;
  const float* router = nullptr;                 // [n_experts, d_model] fp32
  const float* router_bias = nullptr;            // [n_experts] or null
  int32_t* expert = nullptr;                     // [n_rows]
  float* scale = nullptr;                        // [n_rows]
  unsigned long long* routing_counts = nullptr;  // [n_experts] accumulated, or null
  const int32_t* n_counted = nullptr;            // device [1] or null
  int32_t* expert_offsets = nullptr;             // [n_experts + 1]
  int32_t* permutation = nullptr;                // [n_rows]
  unsigned int* ticket = nullptr;  // device [1]: zero before the first launch; left zero
};
bool AddRmsNormRouteSupported(const AddNormRouteParams& p);
absl::Status AddRmsNormRoute(const AddNormRouteParams& p, Stream stream);

// True when BMS_LEGACY_KERNELS=1 is set in the environment (read once): AddNorm, GemmRunner and
// the CUDA backend then use the previous kernels (one-block-per-row norm, cuBLASLt for every
// GEMM, separate router GEMM / RouterSelect / MoeGroup) for A/B measurements.
bool LegacyKernels();

// y[m, n] += bias[n] (y of dtype, row stride y_stride elements; 0 = n).
absl::Status AddBias(int m, int n, DType dtype, void* y, int64_t y_stride, const float* bias,
                     Stream stream);

// Causal depthwise conv1d over a packed varlen batch (ref::CausalConv1dParams math), fused bias
// and SiLU; reads each sequence's window from conv_state[slot] (zeros for a first chunk) and
// writes the new window back. Slots must be distinct except the padding slot. Single-token
// decode is the case cu_seqlens = [0, 1, ..., batch]: n_tokens == batch selects the decode
// kernel (one read and one write of each window, 16-byte accesses), which requires exactly one
// token per sequence. d_conv == 4 with 16-byte aligned x/out rows and d_inner % 8 == 0 runs the
// vectorized prefill kernel; other shapes, `legacy`, or BMS_LEGACY_KERNELS=1 in the environment
// run the previous kernels (for A/B measurements).
struct CausalConv1dParams {
  int batch = 0;
  int n_tokens = 0;  // total packed tokens = cu_seqlens[batch] (host-side value)
  int d_inner = 0;
  int d_conv = 0;
  int n_slots = 0;
  DType dtype = DType::kF32;                   // of x and out
  const int32_t* cu_seqlens = nullptr;         // [batch + 1]
  const int32_t* slots = nullptr;              // [batch]; < 0: no state (zeros in, nothing stored)
  const uint8_t* has_initial_state = nullptr;  // [batch]; null = all zeros
  const void* x = nullptr;                     // [n_tokens, d_inner], row stride x_stride
  int64_t x_stride = 0;
  const float* weight = nullptr;  // [d_inner, d_conv]
  const float* bias = nullptr;    // [d_inner] or null
  bool silu = true;
  void* out = nullptr;  // [n_tokens, d_inner], row stride out_stride
  int64_t out_stride = 0;
  void* conv_state = nullptr;  // [n_slots, d_inner, d_conv - 1]
  StateStorage conv_state_dtype = StateStorage::kF32;
  int64_t conv_state_slot_stride = 0;  // 0 = d_inner * (d_conv - 1)
  bool legacy = false;                 // force the previous kernels
};
absl::Status CausalConv1dVarlen(const CausalConv1dParams& p, Stream stream);

// Selective scan over a packed varlen batch (ref::SelectiveScanParams math): softplus(dt+bias),
// exp(dt*A), fp32 recurrence per (sequence, channel) over time with the state in registers,
// fused D skip and SiLU(z) gate; initial state from the slot (zeros for a first chunk), final
// state to the slot. Decode is the 1-token-per-sequence case. d_state must be 16.
// Kernels: n_tokens == batch (decode; exactly one token per sequence) runs the state-update
// kernel (each slot's state read and written once with 16-byte accesses); otherwise a prefill
// scan parallel in time (`prefill_kernel`: a warp per channel scanning chunks of 128 / 256
// tokens, or the previous chunked kernel; the carry passed between chunks in registers).
// `legacy` or BMS_LEGACY_KERNELS=1 runs the previous sequential kernel.
// Prefill selective-scan kernels: kParallel = a warp per channel, 32 lanes along time
// (kernels/cuda/scan_parallel.cu); kChunked = the previous chunked kernel (scan_prefill.cu).
enum class ScanPrefillKernel { kDefault, kParallel, kChunked };
struct SelectiveScanParams {
  int batch = 0;
  int n_tokens = 0;  // host-side cu_seqlens[batch]; 0 = unknown (never the decode kernel)
  int d_inner = 0;
  int d_state = 0;
  int n_slots = 0;
  DType dtype = DType::kF32;  // of u, delta, B, C, z, out
  const int32_t* cu_seqlens = nullptr;
  const int32_t* slots = nullptr;  // [batch]; < 0: no state (zeros in, nothing stored)
  const uint8_t* has_initial_state = nullptr;
  const void* u = nullptr;
  int64_t u_stride = 0;
  const void* delta = nullptr;
  int64_t delta_stride = 0;
  const float* delta_bias = nullptr;
  bool delta_softplus = true;
  const float* A = nullptr;  // [d_inner, d_state]
  const void* B = nullptr;
  int64_t B_stride = 0;
  const void* C = nullptr;
  int64_t C_stride = 0;
  const float* D = nullptr;
  const void* z = nullptr;
  int64_t z_stride = 0;
  void* out = nullptr;
  int64_t out_stride = 0;
  void* ssm_state = nullptr;  // [n_slots, d_inner, d_state]
  StateStorage ssm_state_dtype = StateStorage::kF32;
  int64_t ssm_state_slot_stride = 0;
  bool legacy = false;  // force the previous kernel
  // Prefill (not decode) kernel: kDefault = BMS_SCAN_PREFILL (parallel | chunked) or the
  // built-in choice; shapes a kernel does not support fall back to the next one.
  ScanPrefillKernel prefill_kernel = ScanPrefillKernel::kDefault;
};
absl::Status SelectiveScanVarlen(const SelectiveScanParams& p, Stream stream);

// Decode Mamba mixer between in_proj and out_proj, one token per sequence (rows = batch), in two
// kernels (kernels/cuda/mamba_decode_fused.cu), same math as CausalConv1dVarlen + x_proj GEMM +
// dt_proj GEMM + SelectiveScanVarlen with activations rounded to dtype where those store them:
//   xc = SiLU(conv1d window update of x + conv_bias)        conv_state[slot] read/written once
//   dbc = xc @ x_proj^T                                     [batch, dt_rank + 2*d_state]
//   dt = softplus(dbc[:, :dt_rank] @ dt_proj^T + dt_bias)
//   out = (selective state update . C + D * xc) * SiLU(z)   ssm_state[slot] read/written once
// MambaDecodeConvXProj: conv + x_proj as fp32 partial sums per 64-channel block into `partials`
// ([MambaDecodePartialBlocks(d_inner), batch, xdbl]). MambaDecodeScan: the fixed-order sum of
// `partials` when non-null, else the x_proj output rows `dbc` (e.g. from a GEMM after
// CausalConv1dVarlen wrote xc), then dt_proj, softplus, the state update, D skip and gate.
// Slots < 0: no state (zeros in, nothing stored). Deterministic. MambaDecodeSupported says
// whether a shape qualifies (d_conv 4, d_state 16, d_inner % 64 == 0, dt_rank <= 128, 16-byte
// aligned rows / weights / states).
struct MambaDecodeParams {
  int batch = 0;
  int d_inner = 0;
  int d_conv = 0;
  int d_state = 0;
  int dt_rank = 0;
  DType dtype = DType::kF32;                   // of xz, xc, dbc, out and the projections
  const int32_t* slots = nullptr;              // [batch]
  const uint8_t* has_initial_state = nullptr;  // [batch]; null = all zeros
  const void* xz = nullptr;                    // [batch, 2*d_inner] = x | z, row stride xz_stride
  int64_t xz_stride = 0;                       // 0 = 2 * d_inner
  const float* conv_weight = nullptr;          // [d_inner, d_conv]
  const float* conv_bias = nullptr;            // [d_inner] or null
  void* conv_state = nullptr;                  // [n_slots, d_inner, d_conv - 1]
  StateStorage conv_state_dtype = StateStorage::kF32;
  int64_t conv_state_slot_stride = 0;  // 0 = d_inner * (d_conv - 1)
  const void* x_proj = nullptr;        // [dt_rank + 2*d_state, d_inner]
  const void* dt_proj = nullptr;       // [d_inner, dt_rank]
  const float* dt_bias = nullptr;      // [d_inner] or null
  const float* A = nullptr;            // [d_inner, d_state]
  const float* D = nullptr;            // [d_inner] or null
  void* ssm_state = nullptr;           // [n_slots, d_inner, d_state]
  StateStorage ssm_state_dtype = StateStorage::kF32;
  int64_t ssm_state_slot_stride = 0;  // 0 = d_inner * d_state
  void* xc = nullptr;                 // [batch, d_inner] conv output (written by ConvXProj)
  float* partials = nullptr;          // [MambaDecodePartialFloats(batch, ...)] or null
  const void* dbc = nullptr;          // [batch, dt_rank + 2*d_state] (when partials is null)
  void* out = nullptr;                // [batch, d_inner]
};
bool MambaDecodeSupported(const MambaDecodeParams& p);
int MambaDecodePartialBlocks(int d_inner);
size_t MambaDecodePartialFloats(int batch, int d_inner, int xdbl);
absl::Status MambaDecodeConvXProj(const MambaDecodeParams& p, Stream stream);
absl::Status MambaDecodeScan(const MambaDecodeParams& p, Stream stream);
// Backend dispatch knobs (environment, read once; defaults from the H100 A/B in bench/NOTES.md
// "decode mixer + routing (session 3)"): MambaDecodeFusedEnabled (BMS_MAMBA_DECODE_FUSED,
// default 1; BMS_LEGACY_KERNELS=1 also turns it off); the partial-sum path for
// MambaDecodePartialMinBatch() <= batch <= MambaDecodePartialMaxBatch() (BMS_MAMBA_PARTIAL_MIN
// / _MAX, default 1..8); x_proj as a GEMM + the fused dt_proj/scan kernel up to
// MambaDecodeFusedScanMaxBatch (BMS_MAMBA_FUSED_SCAN_MAX, default 0: it lost to the unfused
// kernels at every batch); other batches run the unfused kernels. MambaDecodePdl (BMS_MAMBA_PDL,
// default 1): MambaDecodeScan after MambaDecodeConvXProj is a programmatic dependent launch.
bool MambaDecodeFusedEnabled();
int MambaDecodePartialMinBatch();
int MambaDecodePartialMaxBatch();
int MambaDecodeFusedScanMaxBatch();
bool MambaDecodePdl();

// Router selection from router GEMM output: p = sigmoid(logits + bias); expert = argmax p
// (first index on ties); scale = p[expert]. Also adds the per-expert token counts to
// routing_counts (may be null) for metrics.
struct RouterSelectParams {
  int n_tokens = 0;
  int n_experts = 0;
  const float* logits = nullptr;                 // [n_tokens, n_experts] fp32
  const float* bias = nullptr;                   // [n_experts] or null
  int32_t* expert = nullptr;                     // [n_tokens]
  float* scale = nullptr;                        // [n_tokens]
  unsigned long long* routing_counts = nullptr;  // [n_experts] accumulated
  const int32_t* n_counted = nullptr;  // device [1] or null: only rows < *n_counted are counted
};
absl::Status RouterSelect(const RouterSelectParams& p, Stream stream);

// Device-side grouping by expert (ref::MoeGroupParams): counts, exclusive prefix sum and a
// stable permutation, in one single-block kernel (no host sync). n_experts <= 64.
struct MoeGroupParams {
  int n_tokens = 0;
  int n_experts = 0;
  const int32_t* expert = nullptr;    // [n_tokens]
  int32_t* expert_offsets = nullptr;  // [n_experts + 1]
  int32_t* permutation = nullptr;     // [n_tokens]
};
absl::Status MoeGroup(const MoeGroupParams& p, Stream stream);

// Grouped expert GEMM over all experts in ONE launch: each tile finds its expert and row range
// from the device-side expert_offsets. Grouped row r of expert e computes
//   acc[j] = sum_k A[r, k] * W_e[j, k]
// with A row r read from a[a_rows ? a_rows[r] : r] (gather fused in the load), and an epilogue:
//   kGatedAct: out[r, j] = act(acc[j] + b[j]) * (acc[ffn + j] + b[ffn + j])   j < ffn
//   kAct:      out[r, j] = act(acc[j] + b[j])
//   kScaleScatter: out[t, j] = scale[t] * (acc[j] + b[j]) with t = out_rows[r] (un-permute)
// bf16 uses tensor cores (mma.sync m16n8k16, fp32 accumulate); fp32 uses fp32 FMA.
// bf16 with k % 8 == 0 and 16-byte aligned a/w/lda has several kernel variants (tile shapes from
// 16-row weight-streaming tiles for decode to 128 x 128 tiles for prefill); `variant` forces one,
// otherwise `tuner` picks (timed once per shape class), otherwise a fixed size heuristic.
class GroupedGemmTuner;
enum class GroupedEpilogue : uint8_t { kGatedAct, kAct, kScaleScatter };
struct GroupedGemmParams {
  int n_rows = 0;  // total grouped rows (= expert_offsets[n_experts]; host-side value)
  int n_experts = 0;
  int n = 0;  // output columns (ffn for kGatedAct)
  int k = 0;
  DType dtype = DType::kF32;
  GroupedEpilogue epilogue = GroupedEpilogue::kAct;
  Activation activation = Activation::kGelu;
  const int32_t* expert_offsets = nullptr;  // [n_experts + 1]
  const void* a = nullptr;                  // rows of k, row stride lda
  int64_t lda = 0;
  const int32_t* a_rows = nullptr;    // [n_rows] or null
  const void* w = nullptr;            // [n_experts, w_rows, k] (w_rows = 2n gated, else n)
  const float* bias = nullptr;        // [n_experts, w_rows] or null
  const float* scale = nullptr;       // [tokens] (kScaleScatter) or null = 1
  const int32_t* out_rows = nullptr;  // [n_rows] (kScaleScatter) or null
  void* out = nullptr;                // row stride ldo
  int64_t ldo = 0;
  int variant = -1;                   // kernel variant (see below); -1 = tuner / heuristic
  GroupedGemmTuner* tuner = nullptr;  // host object; null = heuristic choice
};
absl::Status GroupedGemm(const GroupedGemmParams& p, Stream stream);

// Kernel variants of GroupedGemm: 0 = the 64 x 64 MMA kernel (also the path for bf16 operands
// that are not 16-byte aligned), 1 = one warp per column (decode), 2.. = tiled ldmatrix kernels.
// fp32 always runs the fp32 kernel (the variant is ignored). Names are for logs and benchmarks.
int GroupedGemmVariantCount();
const char* GroupedGemmVariantName(int variant);
// Whether `variant` runs as itself for p (bf16, aligned); otherwise GroupedGemm falls back.
bool GroupedGemmVariantApplies(const GroupedGemmParams& p, int variant);
// The deterministic size heuristic used without a tuner (or while a stream is being captured).
int GroupedGemmHeuristicVariant(const GroupedGemmParams& p);

// Picks a GroupedGemm variant per shape class (n, k, epilogue, n_experts, dtype, rows rounded up
// to a power of two) by timing every applicable variant once on the device, on the caller's
// operands with a uniform and an uneven routing (same row count; scored by the sum), and caches
// the winner. With timing off, or
// when the stream is being captured into a CUDA graph and the class is new, the heuristic
// choice is cached instead (so a class never changes its variant afterwards). Owned by one
// backend; thread-safe.
class GroupedGemmTuner {
 public:
  explicit GroupedGemmTuner(bool timing = true);
  ~GroupedGemmTuner();
  GroupedGemmTuner(const GroupedGemmTuner&) = delete;
  GroupedGemmTuner& operator=(const GroupedGemmTuner&) = delete;

  // The variant for p (tunes on first sight of its class; synchronizes `stream` then).
  int Choose(const GroupedGemmParams& p, Stream stream);
  // One line per cached class: "n=.. k=.. epi=.. rows<=..: variant (us per variant ...)".
  std::string Describe() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Row-tile grid of the tiled variants: tight (floor(n_rows / tile) + min(experts, n_rows) rows
// of blocks: at 1 row one block row instead of n_experts + 1) or the default loose bound. Read
// once from BMS_GROUPED_TIGHT_GRID=1 (default off until it has passed gpu_moe_test on a device);
// the setter is for tests and benchmarks. Process-wide.
bool GroupedGemmTightGrid();
void SetGroupedGemmTightGrid(bool on);

// Benchmark helper: runs fn (which enqueues work on `stream`) reps times, each call bracketed by
// CUDA events; returns the GPU time of each call in microseconds.
absl::StatusOr<std::vector<float>> TimeOnStream(const std::function<absl::Status()>& fn, int reps,
                                                Stream stream);

}  // namespace bms::cuda
