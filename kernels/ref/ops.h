// Reference ops: the exact fp32 CPU implementation of every BlackMamba op (DESIGN.md §1), each a
// framework-free params struct plus one validating function returning absl::Status. The CPU
// backend composes them; the CUDA kernels take params shaped like these and are tested against
// them. Ops never allocate state and never compact it: they index state tensors by slot id.
//
// State layout (per Mamba layer; one slot per running sequence, plus the padding slot):
//   conv_state [n_slots, d_inner, d_conv - 1]  the last d_conv-1 conv INPUTS (x half of in_proj,
//                                             before the conv), oldest first; zeros before start
//   ssm_state  [n_slots, d_inner, d_state]     the SSM hidden state h
// The innermost dimension is contiguous; the channel stride is the innermost size; the slot
// stride is given per op (`*_slot_stride`, in elements) so a pool may place slots of one layer
// contiguously or interleave layers. Storage is fp32 or bf16 (StateStorage): ops load the
// state to fp32 before computing and round to bf16 (nearest-even) only when storing it back.
//
// Token-packed activations: rows of a [total_tokens, width] matrix with a row stride (elements)
// so an op can read one half of a wider matrix (x and z halves of in_proj, B and C of x_proj).
// A stride of 0 means "contiguous" (= the op's width).
//
// Ops are not thread-safe with respect to overlapping outputs; a `pool` (may be null = serial)
// parallelises the non-GEMM loops; GEMMs go through OpenBLAS sgemm. Results do not depend on the
// thread count (each element is computed by the same sequence of operations).
#pragma once

#include <cstdint>

#include "absl/status/status.h"

namespace bms::ref {

class ThreadPool;  // kernels/ref/thread_pool.h

enum class StateStorage : uint8_t { kF32, kBF16 };
enum class Activation : uint8_t { kGelu, kSilu };  // exact erf GELU; SiLU = x * sigmoid(x)

// ---------------------------------------------------------------------------------------------
// Embedding gather: out[t] = table[tokens[t]]. Token ids outside [0, vocab_size) are
// InvalidArgument (nothing is written).
struct EmbeddingParams {
  int n_tokens = 0;
  int vocab_size = 0;
  int d_model = 0;
  const int32_t* tokens = nullptr;  // [n_tokens]
  const float* table = nullptr;     // [vocab_size, d_model]
  float* out = nullptr;             // [n_tokens, d_model]
  ThreadPool* pool = nullptr;
};
absl::Status Embedding(const EmbeddingParams& p);

// ---------------------------------------------------------------------------------------------
// Residual add + norm, per token row:
//   residual = first_layer ? h : residual + h          (fp32)
//   RMSNorm:   out = residual / sqrt(mean(residual^2) + eps) * weight
//   LayerNorm: out = (residual - mean) / sqrt(var + eps) * weight + bias   (biased variance)
// h may be null: then residual is used as it is (no add; first_layer must be false).
struct AddNormParams {
  int n_tokens = 0;
  int d_model = 0;
  const float* h = nullptr;       // [n_tokens, d_model] previous layer's output (or null)
  float* residual = nullptr;      // [n_tokens, d_model] in/out
  bool first_layer = false;       // residual := h (old residual contents ignored)
  const float* weight = nullptr;  // [d_model]
  const float* bias = nullptr;    // [d_model] LayerNorm only; null = no bias
  float eps = 1e-5f;
  float* out = nullptr;  // [n_tokens, d_model]; may alias neither h nor residual
  ThreadPool* pool = nullptr;
};
absl::Status AddRmsNorm(const AddNormParams& p);
absl::Status AddLayerNorm(const AddNormParams& p);

// ---------------------------------------------------------------------------------------------
// Linear: y[m, n] = x[m, k] @ w[n, k]^T (+ bias[n]), through cblas_sgemm (sgemv when m == 1). Row
// strides in elements (0 = contiguous). y must not overlap x or w.
struct LinearParams {
  int m = 0;                 // rows (tokens)
  int n = 0;                 // output features
  int k = 0;                 // input features
  const float* x = nullptr;  // [m, k], row stride x_stride
  int64_t x_stride = 0;
  const float* w = nullptr;     // [n, k] contiguous (PyTorch Linear layout)
  const float* bias = nullptr;  // [n] or null
  float* y = nullptr;           // [m, n], row stride y_stride
  int64_t y_stride = 0;
};
absl::Status Linear(const LinearParams& p);

// ---------------------------------------------------------------------------------------------
// Causal depthwise conv1d over a packed varlen batch, fused bias + optional SiLU.
// Sequence b owns tokens [cu_seqlens[b], cu_seqlens[b+1]) and slot slots[b]. Its window starts
// from conv_state[slot] when has_initial_state[b] != 0, else from zeros (first chunk). For token
// t and channel c: out = act(bias[c] + sum_k window[c][k] * weight[c][k]) where window holds the
// d_conv inputs ending at t (oldest first). Afterwards conv_state[slot] holds the last d_conv-1
// inputs (including older state when the chunk is shorter than d_conv-1).
// Zero-length sequences are allowed (state untouched). Slots must be distinct and < n_slots.
struct CausalConv1dParams {
  int batch = 0;  // sequences
  int d_inner = 0;
  int d_conv = 0;
  int n_slots = 0;                             // slots in conv_state (incl. padding)
  const int32_t* cu_seqlens = nullptr;         // [batch + 1], cu_seqlens[0] == 0, non-decreasing
  const int32_t* slots = nullptr;              // [batch]
  const uint8_t* has_initial_state = nullptr;  // [batch]; null = all zeros
  const float* x = nullptr;                    // [total_tokens, d_inner], row stride x_stride
  int64_t x_stride = 0;
  const float* weight = nullptr;  // [d_inner, d_conv] (conv1d.weight [d_inner,1,w])
  const float* bias = nullptr;    // [d_inner] or null
  bool silu = true;
  float* out = nullptr;  // [total_tokens, d_inner], row stride out_stride
  int64_t out_stride = 0;
  void* conv_state = nullptr;  // [n_slots, d_inner, d_conv-1] of conv_state_dtype
  StateStorage conv_state_dtype = StateStorage::kF32;
  int64_t conv_state_slot_stride = 0;  // elements; 0 = d_inner * (d_conv - 1)
  ThreadPool* pool = nullptr;
};
absl::Status CausalConv1dVarlen(const CausalConv1dParams& p);

// Single-token conv update (decode): batch sequences, one token each (row b of x), always
// continuing from conv_state[slots[b]], which is shifted by one and gets x appended.
struct CausalConv1dUpdateParams {
  int batch = 0;
  int d_inner = 0;
  int d_conv = 0;
  int n_slots = 0;
  const int32_t* slots = nullptr;  // [batch], distinct
  const float* x = nullptr;        // [batch, d_inner], row stride x_stride
  int64_t x_stride = 0;
  const float* weight = nullptr;  // [d_inner, d_conv]
  const float* bias = nullptr;    // [d_inner] or null
  bool silu = true;
  float* out = nullptr;  // [batch, d_inner], row stride out_stride
  int64_t out_stride = 0;
  void* conv_state = nullptr;  // [n_slots, d_inner, d_conv-1]
  StateStorage conv_state_dtype = StateStorage::kF32;
  int64_t conv_state_slot_stride = 0;
  ThreadPool* pool = nullptr;
};
absl::Status CausalConv1dUpdate(const CausalConv1dUpdateParams& p);

// ---------------------------------------------------------------------------------------------
// Selective scan over a packed varlen batch (sequential in fp32, per sequence and channel):
//   dt  = softplus(delta[t,c] + delta_bias[c])   (softplus only when delta_softplus)
//   h   = h * exp(dt * A[c,:]) + (dt * u[t,c]) * B[t,:]
//   y   = sum_n h[n] * C[t,n] + D[c] * u[t,c]
//   out = z ? y * silu(z[t,c]) : y
// h starts from ssm_state[slot] when has_initial_state[b] != 0, else zeros; the final h is
// written to ssm_state[slot]. softplus(x) = log1p(exp(x)), and x itself for x > 20 (as PyTorch).
struct SelectiveScanParams {
  int batch = 0;
  int d_inner = 0;
  int d_state = 0;
  int n_slots = 0;
  const int32_t* cu_seqlens = nullptr;         // [batch + 1]
  const int32_t* slots = nullptr;              // [batch], distinct
  const uint8_t* has_initial_state = nullptr;  // [batch]; null = all zeros
  const float* u = nullptr;  // [total, d_inner] conv output (xc), row stride u_stride
  int64_t u_stride = 0;
  const float* delta = nullptr;  // [total, d_inner] dt_proj(dt_low) WITHOUT its bias
  int64_t delta_stride = 0;
  const float* delta_bias = nullptr;  // [d_inner] dt_proj.bias, or null
  bool delta_softplus = true;
  const float* A = nullptr;  // [d_inner, d_state] = -exp(A_log)
  const float* B = nullptr;  // [total, d_state], row stride B_stride
  int64_t B_stride = 0;
  const float* C = nullptr;  // [total, d_state], row stride C_stride
  int64_t C_stride = 0;
  const float* D = nullptr;  // [d_inner] or null
  const float* z = nullptr;  // [total, d_inner] gate, row stride z_stride; or null
  int64_t z_stride = 0;
  float* out = nullptr;  // [total, d_inner], row stride out_stride; may alias u
  int64_t out_stride = 0;
  void* ssm_state = nullptr;  // [n_slots, d_inner, d_state]
  StateStorage ssm_state_dtype = StateStorage::kF32;
  int64_t ssm_state_slot_stride = 0;  // elements; 0 = d_inner * d_state
  ThreadPool* pool = nullptr;
};
absl::Status SelectiveScanVarlen(const SelectiveScanParams& p);

// Single-token selective state update (decode): row b of every token-packed input belongs to
// sequence b, which always continues from ssm_state[slots[b]]. Same math as one scan step.
struct SelectiveStateUpdateParams {
  int batch = 0;
  int d_inner = 0;
  int d_state = 0;
  int n_slots = 0;
  const int32_t* slots = nullptr;  // [batch], distinct
  const float* u = nullptr;        // [batch, d_inner]
  int64_t u_stride = 0;
  const float* delta = nullptr;  // [batch, d_inner]
  int64_t delta_stride = 0;
  const float* delta_bias = nullptr;
  bool delta_softplus = true;
  const float* A = nullptr;  // [d_inner, d_state]
  const float* B = nullptr;  // [batch, d_state]
  int64_t B_stride = 0;
  const float* C = nullptr;  // [batch, d_state]
  int64_t C_stride = 0;
  const float* D = nullptr;  // [d_inner] or null
  const float* z = nullptr;  // [batch, d_inner] or null
  int64_t z_stride = 0;
  float* out = nullptr;  // [batch, d_inner]
  int64_t out_stride = 0;
  void* ssm_state = nullptr;  // [n_slots, d_inner, d_state]
  StateStorage ssm_state_dtype = StateStorage::kF32;
  int64_t ssm_state_slot_stride = 0;
  ThreadPool* pool = nullptr;
};
absl::Status SelectiveStateUpdate(const SelectiveStateUpdateParams& p);

// ---------------------------------------------------------------------------------------------
// MoE router (top-1): p = sigmoid(x @ weight^T + bias); expert[t] = argmax p (first index on
// ties); scale[t] = p[expert[t]].
struct RouterParams {
  int n_tokens = 0;
  int d_model = 0;
  int n_experts = 0;
  const float* x = nullptr;       // [n_tokens, d_model]
  const float* weight = nullptr;  // [n_experts, d_model]
  const float* bias = nullptr;    // [n_experts] or null
  int32_t* expert = nullptr;      // [n_tokens] out
  float* scale = nullptr;         // [n_tokens] out
  ThreadPool* pool = nullptr;
};
absl::Status Router(const RouterParams& p);

// Grouping by expert (count, exclusive prefix sum, stable permute): expert_offsets[e] is the
// first grouped row of expert e (expert_offsets[n_experts] = n_tokens); permutation[r] is the
// token index of grouped row r; tokens of one expert keep token order.
struct MoeGroupParams {
  int n_tokens = 0;
  int n_experts = 0;
  const int32_t* expert = nullptr;    // [n_tokens], each in [0, n_experts)
  int32_t* expert_offsets = nullptr;  // [n_experts + 1] out
  int32_t* permutation = nullptr;     // [n_tokens] out
};
absl::Status MoeGroup(const MoeGroupParams& p);

// MLP shared by experts and dense layers. gated: a = x @ fc1^T (+b1) is [2f]; out = fc2(act(a0)
// * a1) with a0 = a[:f], a1 = a[f:]. Not gated: out = fc2(act(x @ fc1^T (+b1))) with fc1 [f, d].
struct MlpShape {
  int d_model = 0;
  int ffn = 0;  // f
  bool gated = true;
  Activation activation = Activation::kGelu;
  int fc1_rows() const { return gated ? 2 * ffn : ffn; }
};

// Grouped expert MLP: for every grouped row r (expert e with expert_offsets[e] <= r <
// expert_offsets[e+1]) and its token t = permutation[r]:
//   out[t] = scale[t] * MLP_e(x[t])        (scale null = 1)
// writing rows in token order. Expert weights are stacked: fc1 [n_experts, fc1_rows, d_model],
// fc2 [n_experts, d_model, f], biases [n_experts, fc1_rows] / [n_experts, d_model] or null.
struct MoeExpertsParams {
  int n_tokens = 0;
  int n_experts = 0;
  MlpShape shape;
  const float* x = nullptr;                 // [n_tokens, d_model] in token order
  const int32_t* expert_offsets = nullptr;  // [n_experts + 1]
  const int32_t* permutation = nullptr;     // [n_tokens]
  const float* scale = nullptr;             // [n_tokens] or null
  const float* fc1 = nullptr;               // [n_experts, fc1_rows, d_model]
  const float* fc1_bias = nullptr;          // [n_experts, fc1_rows] or null
  const float* fc2 = nullptr;               // [n_experts, d_model, f]
  const float* fc2_bias = nullptr;          // [n_experts, d_model] or null
  float* out = nullptr;                     // [n_tokens, d_model] in token order
  ThreadPool* pool = nullptr;
};
absl::Status MoeExperts(const MoeExpertsParams& p);

// Dense MLP ("1" layers): out = MLP(x).
struct MlpParams {
  int n_tokens = 0;
  MlpShape shape;
  const float* x = nullptr;         // [n_tokens, d_model]
  const float* fc1 = nullptr;       // [fc1_rows, d_model]
  const float* fc1_bias = nullptr;  // [fc1_rows] or null
  const float* fc2 = nullptr;       // [d_model, f]
  const float* fc2_bias = nullptr;  // [d_model] or null
  float* out = nullptr;             // [n_tokens, d_model]
  ThreadPool* pool = nullptr;
};
absl::Status Mlp(const MlpParams& p);

// ---------------------------------------------------------------------------------------------
// Scalar helpers shared by the ops and their tests.
float Softplus(float x);       // log1p(exp(x)); x for x > 20
float Silu(float x);           // x / (1 + exp(-x))
float GeluErf(float x);        // 0.5 x (1 + erf(x / sqrt(2)))
float Bf16RoundTrip(float x);  // x rounded to bf16 (nearest-even) and back
float LoadState(const void* base, StateStorage dtype, int64_t i);
void StoreState(void* base, StateStorage dtype, int64_t i, float v);

}  // namespace bms::ref
