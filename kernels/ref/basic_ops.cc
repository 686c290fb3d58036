// Reference ops: scalar helpers, embedding gather, residual add + RMSNorm / LayerNorm, Linear.
#include <cblas.h>

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/ref/ops.h"
#include "kernels/ref/thread_pool.h"
#include "kernels/ref/validate.h"

namespace bms::ref {

float Softplus(float x) { return x > 20.f ? x : std::log1p(std::exp(x)); }
float Silu(float x) { return x / (1.f + std::exp(-x)); }
float GeluErf(float x) { return 0.5f * x * (1.f + std::erf(x * 0.70710678118654752440f)); }

float Bf16RoundTrip(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, 4);
  if (std::isnan(x)) {
    bits = (bits | 0x00400000u) & 0xFFFF0000u;
  } else {
    bits = (bits + 0x7FFFu + ((bits >> 16) & 1u)) & 0xFFFF0000u;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

float LoadState(const void* base, StateStorage dtype, int64_t i) {
  if (dtype == StateStorage::kF32) return static_cast<const float*>(base)[i];
  uint32_t bits = static_cast<uint32_t>(static_cast<const uint16_t*>(base)[i]) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

void StoreState(void* base, StateStorage dtype, int64_t i, float v) {
  if (dtype == StateStorage::kF32) {
    static_cast<float*>(base)[i] = v;
    return;
  }
  float r = Bf16RoundTrip(v);
  uint32_t bits;
  std::memcpy(&bits, &r, 4);
  static_cast<uint16_t*>(base)[i] = static_cast<uint16_t>(bits >> 16);
}

absl::Status Embedding(const EmbeddingParams& p) {
  BMS_REF_RETURN_IF_ERROR(CheckPositive("Embedding", "n_tokens", p.n_tokens, /*allow_zero=*/true));
  BMS_REF_RETURN_IF_ERROR(CheckPositive("Embedding", "vocab_size", p.vocab_size));
  BMS_REF_RETURN_IF_ERROR(CheckPositive("Embedding", "d_model", p.d_model));
  if (p.n_tokens == 0) return absl::OkStatus();
  BMS_REF_RETURN_IF_ERROR(CheckPtr("Embedding", "tokens", p.tokens));
  BMS_REF_RETURN_IF_ERROR(CheckPtr("Embedding", "table", p.table));
  BMS_REF_RETURN_IF_ERROR(CheckPtr("Embedding", "out", p.out));
  for (int t = 0; t < p.n_tokens; ++t) {
    if (p.tokens[t] < 0 || p.tokens[t] >= p.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("Embedding: tokens[", t, "] = ", p.tokens[t],
                                                     " is outside [0, ", p.vocab_size, ")"));
    }
  }
  const size_t row_bytes = sizeof(float) * static_cast<size_t>(p.d_model);
  ParallelFor(p.pool, p.n_tokens, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      std::memcpy(p.out + t * p.d_model, p.table + static_cast<int64_t>(p.tokens[t]) * p.d_model,
                  row_bytes);
    }
  });
  return absl::OkStatus();
}

namespace {

absl::Status CheckAddNorm(const char* op, const AddNormParams& p) {
  BMS_REF_RETURN_IF_ERROR(CheckPositive(op, "n_tokens", p.n_tokens, /*allow_zero=*/true));
  BMS_REF_RETURN_IF_ERROR(CheckPositive(op, "d_model", p.d_model));
  if (p.n_tokens == 0) return absl::OkStatus();
  BMS_REF_RETURN_IF_ERROR(CheckPtr(op, "residual", p.residual));
  BMS_REF_RETURN_IF_ERROR(CheckPtr(op, "weight", p.weight));
  BMS_REF_RETURN_IF_ERROR(CheckPtr(op, "out", p.out));
  if (p.first_layer && p.h == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": first_layer needs h"));
  }
  if (!(p.eps > 0.f)) return absl::InvalidArgumentError(absl::StrCat(op, ": eps must be > 0"));
  return absl::OkStatus();
}

// residual row := (first ? h : residual + h) (or unchanged when h is null).
inline void AddResidualRow(const AddNormParams& p, int64_t t) {
  float* r = p.residual + t * p.d_model;
  if (p.h == nullptr) return;
  const float* h = p.h + t * p.d_model;
  if (p.first_layer) {
    std::memcpy(r, h, sizeof(float) * p.d_model);
  } else {
    for (int i = 0; i < p.d_model; ++i) r[i] += h[i];
  }
}

}  // namespace

absl::Status AddRmsNorm(const AddNormParams& p) {
  BMS_REF_RETURN_IF_ERROR(CheckAddNorm("AddRmsNorm", p));
  ParallelFor(p.pool, p.n_tokens, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      AddResidualRow(p, t);
      const float* r = p.residual + t * p.d_model;
      double ss = 0;
      for (int i = 0; i < p.d_model; ++i) ss += static_cast<double>(r[i]) * r[i];
      float inv = 1.f / std::sqrt(static_cast<float>(ss / p.d_model) + p.eps);
      float* o = p.out + t * p.d_model;
      for (int i = 0; i < p.d_model; ++i) o[i] = r[i] * inv * p.weight[i];
    }
  });
  return absl::OkStatus();
}

absl::Status AddLayerNorm(const AddNormParams& p) {
  BMS_REF_RETURN_IF_ERROR(CheckAddNorm("AddLayerNorm", p));
  ParallelFor(p.pool, p.n_tokens, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      AddResidualRow(p, t);
      const float* r = p.residual + t * p.d_model;
      double sum = 0;
      for (int i = 0; i < p.d_model; ++i) sum += r[i];
      double mean = sum / p.d_model;
      double var = 0;
      for (int i = 0; i < p.d_model; ++i) var += (r[i] - mean) * (r[i] - mean);
      var /= p.d_model;
      float inv = 1.f / std::sqrt(static_cast<float>(var) + p.eps);
      float m = static_cast<float>(mean);
      float* o = p.out + t * p.d_model;
      for (int i = 0; i < p.d_model; ++i) {
        o[i] = (r[i] - m) * inv * p.weight[i] + (p.bias ? p.bias[i] : 0.f);
      }
    }
  });
  return absl::OkStatus();
}

absl::Status Linear(const LinearParams& p) {
  BMS_REF_RETURN_IF_ERROR(CheckPositive("Linear", "m", p.m, /*allow_zero=*/true));
  BMS_REF_RETURN_IF_ERROR(CheckPositive("Linear", "n", p.n));
  BMS_REF_RETURN_IF_ERROR(CheckPositive("Linear", "k", p.k));
  if (p.m == 0) return absl::OkStatus();
  BMS_REF_RETURN_IF_ERROR(CheckPtr("Linear", "x", p.x));
  BMS_REF_RETURN_IF_ERROR(CheckPtr("Linear", "w", p.w));
  BMS_REF_RETURN_IF_ERROR(CheckPtr("Linear", "y", p.y));
  const int64_t ldx = p.x_stride ? p.x_stride : p.k;
  const int64_t ldy = p.y_stride ? p.y_stride : p.n;
  if (ldx < p.k) return absl::InvalidArgumentError("Linear: x_stride < k");
  if (ldy < p.n) return absl::InvalidArgumentError("Linear: y_stride < n");
  float beta = 0.f;
  if (p.m == 1) {  // one row (decode, single-token experts): GEMV reads w once, no packing
    if (p.bias != nullptr) std::memcpy(p.y, p.bias, sizeof(float) * p.n);
    cblas_sgemv(CblasRowMajor, CblasNoTrans, p.n, p.k, 1.f, p.w, p.k, p.x, 1,
                p.bias != nullptr ? 1.f : 0.f, p.y, 1);
    return absl::OkStatus();
  }
  if (p.bias != nullptr) {
    for (int i = 0; i < p.m; ++i) std::memcpy(p.y + i * ldy, p.bias, sizeof(float) * p.n);
    beta = 1.f;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, p.m, p.n, p.k, 1.f, p.x,
              static_cast<int>(ldx), p.w, p.k, beta, p.y, static_cast<int>(ldy));
  return absl::OkStatus();
}

}  // namespace bms::ref
