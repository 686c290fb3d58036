// Reference ops: causal depthwise conv1d over a packed varlen batch and its single-token update.
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/ref/ops.h"
#include "kernels/ref/thread_pool.h"
#include "kernels/ref/validate.h"

namespace bms::ref {

absl::Status CheckSeqs(const char* op, int batch, const int32_t* cu_seqlens, const int32_t* slots,
                       int n_slots) {
  if (cu_seqlens != nullptr) {
    if (cu_seqlens[0] != 0) {
      return absl::InvalidArgumentError(absl::StrCat(op, ": cu_seqlens[0] must be 0"));
    }
    for (int b = 0; b < batch; ++b) {
      if (cu_seqlens[b + 1] < cu_seqlens[b]) {
        return absl::InvalidArgumentError(
            absl::StrCat(op, ": cu_seqlens is decreasing at index ", b + 1));
      }
    }
  }
  std::vector<uint8_t> used(static_cast<size_t>(n_slots), 0);
  for (int b = 0; b < batch; ++b) {
    int s = slots[b];
    if (s < 0 || s >= n_slots) {
      return absl::InvalidArgumentError(
          absl::StrCat(op, ": slots[", b, "] = ", s, " is outside [0, ", n_slots, ")"));
    }
    if (used[s]) {
      return absl::InvalidArgumentError(
          absl::StrCat(op, ": slot ", s, " appears twice in one batch"));
    }
    used[s] = 1;
  }
  return absl::OkStatus();
}

namespace {

struct ConvCommon {
  int64_t x_stride, out_stride, slot_stride;
};

absl::Status CheckConv(const char* op, int batch, int d_inner, int d_conv, int n_slots,
                       const int32_t* slots, const float* x, int64_t x_stride, const float* weight,
                       float* out, int64_t out_stride, void* state, int64_t slot_stride,
                       ConvCommon* c) {
  BMS_REF_RETURN_IF_ERROR(CheckPositive(op, "batch", batch, /*allow_zero=*/true));
  BMS_REF_RETURN_IF_ERROR(CheckPositive(op, "d_inner", d_inner));
  if (d_conv < 2) return absl::InvalidArgumentError(absl::StrCat(op, ": d_conv must be >= 2"));
  BMS_REF_RETURN_IF_ERROR(CheckPositive(op, "n_slots", n_slots));
  BMS_REF_RETURN_IF_ERROR(CheckStride(op, "x_stride", x_stride, d_inner, &c->x_stride));
  BMS_REF_RETURN_IF_ERROR(CheckStride(op, "out_stride", out_stride, d_inner, &c->out_stride));
  BMS_REF_RETURN_IF_ERROR(CheckStride(op, "conv_state_slot_stride", slot_stride,
                                      static_cast<int64_t>(d_inner) * (d_conv - 1),
                                      &c->slot_stride));
  if (batch == 0) return absl::OkStatus();
  BMS_REF_RETURN_IF_ERROR(CheckPtr(op, "slots", slots));
  BMS_REF_RETURN_IF_ERROR(CheckPtr(op, "x", x));
  BMS_REF_RETURN_IF_ERROR(CheckPtr(op, "weight", weight));
  BMS_REF_RETURN_IF_ERROR(CheckPtr(op, "out", out));
  BMS_REF_RETURN_IF_ERROR(CheckPtr(op, "conv_state", state));
  return absl::OkStatus();
}

// The conv output for one channel given its window [d_conv] (oldest first).
inline float ConvPoint(const float* window, const float* w, float bias, int d_conv, bool silu) {
  float acc = bias;
  for (int k = 0; k < d_conv; ++k) acc += window[k] * w[k];
  return silu ? Silu(acc) : acc;
}

}  // namespace

absl::Status CausalConv1dVarlen(const CausalConv1dParams& p) {
  const char* op = "CausalConv1dVarlen";
  ConvCommon c;
  BMS_REF_RETURN_IF_ERROR(CheckConv(op, p.batch, p.d_inner, p.d_conv, p.n_slots, p.slots, p.x,
                                    p.x_stride, p.weight, p.out, p.out_stride, p.conv_state,
                                    p.conv_state_slot_stride, &c));
  if (p.batch == 0) return absl::OkStatus();
  BMS_REF_RETURN_IF_ERROR(CheckPtr(op, "cu_seqlens", p.cu_seqlens));
  BMS_REF_RETURN_IF_ERROR(CheckSeqs(op, p.batch, p.cu_seqlens, p.slots, p.n_slots));
  const int w = p.d_conv;
  const int64_t total = static_cast<int64_t>(p.batch) * p.d_inner;
  ParallelFor(
      p.pool, total,
      [&](int64_t begin, int64_t end) {
        std::vector<float> window(w);
        for (int64_t i = begin; i < end; ++i) {
          const int b = static_cast<int>(i / p.d_inner);
          const int ch = static_cast<int>(i % p.d_inner);
          const int t0 = p.cu_seqlens[b], t1 = p.cu_seqlens[b + 1];
          if (t1 == t0) continue;
          const int64_t sbase = p.slots[b] * c.slot_stride + static_cast<int64_t>(ch) * (w - 1);
          const bool init = p.has_initial_state != nullptr && p.has_initial_state[b] != 0;
          for (int k = 0; k < w - 1; ++k) {
            window[k] = init ? LoadState(p.conv_state, p.conv_state_dtype, sbase + k) : 0.f;
          }
          const float* wt = p.weight + static_cast<int64_t>(ch) * w;
          const float bias = p.bias ? p.bias[ch] : 0.f;
          for (int t = t0; t < t1; ++t) {
            window[w - 1] = p.x[t * c.x_stride + ch];
            p.out[t * c.out_stride + ch] = ConvPoint(window.data(), wt, bias, w, p.silu);
            for (int k = 0; k + 1 < w; ++k) window[k] = window[k + 1];
          }
          // After the shift, window[0 .. w-2] holds the last w-1 inputs.
          for (int k = 0; k < w - 1; ++k) {
            StoreState(p.conv_state, p.conv_state_dtype, sbase + k, window[k]);
          }
        }
      },
      /*min_chunk=*/64);
  return absl::OkStatus();
}

absl::Status CausalConv1dUpdate(const CausalConv1dUpdateParams& p) {
  const char* op = "CausalConv1dUpdate";
  ConvCommon c;
  BMS_REF_RETURN_IF_ERROR(CheckConv(op, p.batch, p.d_inner, p.d_conv, p.n_slots, p.slots, p.x,
                                    p.x_stride, p.weight, p.out, p.out_stride, p.conv_state,
                                    p.conv_state_slot_stride, &c));
  if (p.batch == 0) return absl::OkStatus();
  BMS_REF_RETURN_IF_ERROR(CheckSeqs(op, p.batch, nullptr, p.slots, p.n_slots));
  const int w = p.d_conv;
  const int64_t total = static_cast<int64_t>(p.batch) * p.d_inner;
  ParallelFor(
      p.pool, total,
      [&](int64_t begin, int64_t end) {
        std::vector<float> window(w);
        for (int64_t i = begin; i < end; ++i) {
          const int b = static_cast<int>(i / p.d_inner);
          const int ch = static_cast<int>(i % p.d_inner);
          const int64_t sbase = p.slots[b] * c.slot_stride + static_cast<int64_t>(ch) * (w - 1);
          for (int k = 0; k < w - 1; ++k) {
            window[k] = LoadState(p.conv_state, p.conv_state_dtype, sbase + k);
          }
          window[w - 1] = p.x[b * c.x_stride + ch];
          p.out[b * c.out_stride + ch] =
              ConvPoint(window.data(), p.weight + static_cast<int64_t>(ch) * w,
                        p.bias ? p.bias[ch] : 0.f, w, p.silu);
          for (int k = 0; k < w - 1; ++k) {
            StoreState(p.conv_state, p.conv_state_dtype, sbase + k, window[k + 1]);
          }
        }
      },
      /*min_chunk=*/64);
  return absl::OkStatus();
}

}  // namespace bms::ref
