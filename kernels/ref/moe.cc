// Reference ops: top-1 MoE router, grouping by expert, grouped expert MLP, dense MLP.
#include <cmath>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/ref/ops.h"
#include "kernels/ref/thread_pool.h"
#include "kernels/ref/validate.h"

namespace bms::ref {
namespace {

absl::Status CheckShape(const char* op, const MlpShape& s) {
  BMS_REF_RETURN_IF_ERROR(CheckPositive(op, "shape.d_model", s.d_model));
  BMS_REF_RETURN_IF_ERROR(CheckPositive(op, "shape.ffn", s.ffn));
  return absl::OkStatus();
}

// out[m, d_model] = MLP(x[m, d_model]) for one weight set (m > 0, arguments already checked).
absl::Status MlpRows(const MlpShape& s, int m, const float* x, const float* fc1,
                     const float* fc1_bias, const float* fc2, const float* fc2_bias, float* out,
                     ThreadPool* pool) {
  const int rows1 = s.fc1_rows();
  std::vector<float> a(static_cast<size_t>(m) * rows1);  // [m, fc1_rows]
  BMS_REF_RETURN_IF_ERROR(Linear(
      {.m = m, .n = rows1, .k = s.d_model, .x = x, .w = fc1, .bias = fc1_bias, .y = a.data()}));
  std::vector<float> g(static_cast<size_t>(m) * s.ffn);  // [m, f]
  const bool gelu = s.activation == Activation::kGelu;
  ParallelFor(
      pool, m,
      [&](int64_t b, int64_t e) {
        for (int64_t r = b; r < e; ++r) {
          const float* ar = a.data() + r * rows1;
          float* gr = g.data() + r * s.ffn;
          for (int j = 0; j < s.ffn; ++j) {
            float v = gelu ? GeluErf(ar[j]) : Silu(ar[j]);
            gr[j] = s.gated ? v * ar[s.ffn + j] : v;
          }
        }
      },
      /*min_chunk=*/4);
  return Linear(
      {.m = m, .n = s.d_model, .k = s.ffn, .x = g.data(), .w = fc2, .bias = fc2_bias, .y = out});
}

}  // namespace

absl::Status Router(const RouterParams& p) {
  const char* op = "Router";
  BMS_REF_RETURN_IF_ERROR(CheckPositive(op, "n_tokens", p.n_tokens, /*allow_zero=*/true));
  BMS_REF_RETURN_IF_ERROR(CheckPositive(op, "d_model", p.d_model));
  BMS_REF_RETURN_IF_ERROR(CheckPositive(op, "n_experts", p.n_experts));
  if (p.n_tokens == 0) return absl::OkStatus();
  BMS_REF_RETURN_IF_ERROR(CheckPtr(op, "x", p.x));
  BMS_REF_RETURN_IF_ERROR(CheckPtr(op, "weight", p.weight));
  BMS_REF_RETURN_IF_ERROR(CheckPtr(op, "expert", p.expert));
  BMS_REF_RETURN_IF_ERROR(CheckPtr(op, "scale", p.scale));
  std::vector<float> logits(static_cast<size_t>(p.n_tokens) * p.n_experts);  // [n, E]
  BMS_REF_RETURN_IF_ERROR(Linear({.m = p.n_tokens,
                                  .n = p.n_experts,
                                  .k = p.d_model,
                                  .x = p.x,
                                  .w = p.weight,
                                  .bias = p.bias,
                                  .y = logits.data()}));
  for (int t = 0; t < p.n_tokens; ++t) {
    const float* l = logits.data() + static_cast<int64_t>(t) * p.n_experts;
    int best = 0;
    float best_p = 1.f / (1.f + std::exp(-l[0]));
    for (int e = 1; e < p.n_experts; ++e) {
      float pe = 1.f / (1.f + std::exp(-l[e]));
      if (pe > best_p) {
        best = e;
        best_p = pe;
      }
    }
    p.expert[t] = best;
    p.scale[t] = best_p;
  }
  return absl::OkStatus();
}

absl::Status MoeGroup(const MoeGroupParams& p) {
  const char* op = "MoeGroup";
  BMS_REF_RETURN_IF_ERROR(CheckPositive(op, "n_tokens", p.n_tokens, /*allow_zero=*/true));
  BMS_REF_RETURN_IF_ERROR(CheckPositive(op, "n_experts", p.n_experts));
  BMS_REF_RETURN_IF_ERROR(CheckPtr(op, "expert_offsets", p.expert_offsets));
  if (p.n_tokens > 0) {
    BMS_REF_RETURN_IF_ERROR(CheckPtr(op, "expert", p.expert));
    BMS_REF_RETURN_IF_ERROR(CheckPtr(op, "permutation", p.permutation));
  }
  std::vector<int32_t> count(p.n_experts, 0);
  for (int t = 0; t < p.n_tokens; ++t) {
    if (p.expert[t] < 0 || p.expert[t] >= p.n_experts) {
      return absl::InvalidArgumentError(absl::StrCat(op, ": expert[", t, "] = ", p.expert[t],
                                                     " is outside [0, ", p.n_experts, ")"));
    }
    ++count[p.expert[t]];
  }
  p.expert_offsets[0] = 0;
  for (int e = 0; e < p.n_experts; ++e) p.expert_offsets[e + 1] = p.expert_offsets[e] + count[e];
  std::vector<int32_t> next(p.expert_offsets, p.expert_offsets + p.n_experts);
  for (int t = 0; t < p.n_tokens; ++t) p.permutation[next[p.expert[t]]++] = t;
  return absl::OkStatus();
}

absl::Status MoeExperts(const MoeExpertsParams& p) {
  const char* op = "MoeExperts";
  BMS_REF_RETURN_IF_ERROR(CheckPositive(op, "n_tokens", p.n_tokens, /*allow_zero=*/true));
  BMS_REF_RETURN_IF_ERROR(CheckPositive(op, "n_experts", p.n_experts));
  BMS_REF_RETURN_IF_ERROR(CheckShape(op, p.shape));
  if (p.n_tokens == 0) return absl::OkStatus();
  BMS_REF_RETURN_IF_ERROR(CheckPtr(op, "x", p.x));
  BMS_REF_RETURN_IF_ERROR(CheckPtr(op, "expert_offsets", p.expert_offsets));
  BMS_REF_RETURN_IF_ERROR(CheckPtr(op, "permutation", p.permutation));
  BMS_REF_RETURN_IF_ERROR(CheckPtr(op, "fc1", p.fc1));
  BMS_REF_RETURN_IF_ERROR(CheckPtr(op, "fc2", p.fc2));
  BMS_REF_RETURN_IF_ERROR(CheckPtr(op, "out", p.out));
  if (p.expert_offsets[0] != 0 || p.expert_offsets[p.n_experts] != p.n_tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": expert_offsets must run from 0 to n_tokens"));
  }
  for (int e = 0; e < p.n_experts; ++e) {
    if (p.expert_offsets[e + 1] < p.expert_offsets[e]) {
      return absl::InvalidArgumentError(absl::StrCat(op, ": expert_offsets decreasing at ", e));
    }
  }
  for (int r = 0; r < p.n_tokens; ++r) {
    if (p.permutation[r] < 0 || p.permutation[r] >= p.n_tokens) {
      return absl::InvalidArgumentError(absl::StrCat(op, ": permutation[", r, "] out of range"));
    }
  }
  const MlpShape& s = p.shape;
  const int d = s.d_model;
  const int64_t fc1_size = static_cast<int64_t>(s.fc1_rows()) * d;
  const int64_t fc2_size = static_cast<int64_t>(d) * s.ffn;
  std::vector<float> xe, ye;
  for (int e = 0; e < p.n_experts; ++e) {
    const int r0 = p.expert_offsets[e], r1 = p.expert_offsets[e + 1];
    const int m = r1 - r0;
    if (m == 0) continue;
    xe.resize(static_cast<size_t>(m) * d);  // [m, d_model] gathered rows
    ye.resize(static_cast<size_t>(m) * d);
    for (int r = 0; r < m; ++r) {
      std::memcpy(xe.data() + static_cast<int64_t>(r) * d,
                  p.x + static_cast<int64_t>(p.permutation[r0 + r]) * d, sizeof(float) * d);
    }
    BMS_REF_RETURN_IF_ERROR(MlpRows(
        s, m, xe.data(), p.fc1 + e * fc1_size,
        p.fc1_bias ? p.fc1_bias + static_cast<int64_t>(e) * s.fc1_rows() : nullptr,
        p.fc2 + e * fc2_size, p.fc2_bias ? p.fc2_bias + static_cast<int64_t>(e) * d : nullptr,
        ye.data(), p.pool));
    for (int r = 0; r < m; ++r) {
      const int t = p.permutation[r0 + r];
      const float sc = p.scale ? p.scale[t] : 1.f;
      float* o = p.out + static_cast<int64_t>(t) * d;
      const float* y = ye.data() + static_cast<int64_t>(r) * d;
      for (int i = 0; i < d; ++i) o[i] = sc * y[i];
    }
  }
  return absl::OkStatus();
}

absl::Status Mlp(const MlpParams& p) {
  const char* op = "Mlp";
  BMS_REF_RETURN_IF_ERROR(CheckPositive(op, "n_tokens", p.n_tokens, /*allow_zero=*/true));
  BMS_REF_RETURN_IF_ERROR(CheckShape(op, p.shape));
  if (p.n_tokens == 0) return absl::OkStatus();
  BMS_REF_RETURN_IF_ERROR(CheckPtr(op, "x", p.x));
  BMS_REF_RETURN_IF_ERROR(CheckPtr(op, "fc1", p.fc1));
  BMS_REF_RETURN_IF_ERROR(CheckPtr(op, "fc2", p.fc2));
  BMS_REF_RETURN_IF_ERROR(CheckPtr(op, "out", p.out));
  return MlpRows(p.shape, p.n_tokens, p.x, p.fc1, p.fc1_bias, p.fc2, p.fc2_bias, p.out, p.pool);
}

}  // namespace bms::ref
