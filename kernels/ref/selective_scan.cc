// Reference ops: selective scan over a packed varlen batch and the single-token state update.
#include <cmath>
#include <vector>

#include "kernels/ref/ops.h"
#include "kernels/ref/thread_pool.h"
#include "kernels/ref/validate.h"

namespace bms::ref {
namespace {

struct ScanStrides {
  int64_t u, delta, B, C, z, out, slot;
};

// Validation shared by the varlen scan and the update (same field names).
template <typename P>
absl::Status CheckScan(const char* op, const P& p, ScanStrides* s) {
  BMS_REF_RETURN_IF_ERROR(CheckPositive(op, "batch", p.batch, /*allow_zero=*/true));
  BMS_REF_RETURN_IF_ERROR(CheckPositive(op, "d_inner", p.d_inner));
  BMS_REF_RETURN_IF_ERROR(CheckPositive(op, "d_state", p.d_state));
  BMS_REF_RETURN_IF_ERROR(CheckPositive(op, "n_slots", p.n_slots));
  BMS_REF_RETURN_IF_ERROR(CheckStride(op, "u_stride", p.u_stride, p.d_inner, &s->u));
  BMS_REF_RETURN_IF_ERROR(CheckStride(op, "delta_stride", p.delta_stride, p.d_inner, &s->delta));
  BMS_REF_RETURN_IF_ERROR(CheckStride(op, "B_stride", p.B_stride, p.d_state, &s->B));
  BMS_REF_RETURN_IF_ERROR(CheckStride(op, "C_stride", p.C_stride, p.d_state, &s->C));
  BMS_REF_RETURN_IF_ERROR(CheckStride(op, "z_stride", p.z_stride, p.d_inner, &s->z));
  BMS_REF_RETURN_IF_ERROR(CheckStride(op, "out_stride", p.out_stride, p.d_inner, &s->out));
  BMS_REF_RETURN_IF_ERROR(CheckStride(op, "ssm_state_slot_stride", p.ssm_state_slot_stride,
                                      static_cast<int64_t>(p.d_inner) * p.d_state, &s->slot));
  if (p.batch == 0) return absl::OkStatus();
  BMS_REF_RETURN_IF_ERROR(CheckPtr(op, "slots", p.slots));
  BMS_REF_RETURN_IF_ERROR(CheckPtr(op, "u", p.u));
  BMS_REF_RETURN_IF_ERROR(CheckPtr(op, "delta", p.delta));
  BMS_REF_RETURN_IF_ERROR(CheckPtr(op, "A", p.A));
  BMS_REF_RETURN_IF_ERROR(CheckPtr(op, "B", p.B));
  BMS_REF_RETURN_IF_ERROR(CheckPtr(op, "C", p.C));
  BMS_REF_RETURN_IF_ERROR(CheckPtr(op, "out", p.out));
  BMS_REF_RETURN_IF_ERROR(CheckPtr(op, "ssm_state", p.ssm_state));
  return absl::OkStatus();
}

// One recurrence step for one channel: updates h [d_state] and returns the gated output.
template <typename P>
inline float ScanStep(const P& p, const ScanStrides& s, int64_t row, int ch, float* h) {
  float dt = p.delta[row * s.delta + ch] + (p.delta_bias ? p.delta_bias[ch] : 0.f);
  if (p.delta_softplus) dt = Softplus(dt);
  const float u = p.u[row * s.u + ch];
  const float* a = p.A + static_cast<int64_t>(ch) * p.d_state;
  const float* bv = p.B + row * s.B;
  const float* cv = p.C + row * s.C;
  const float du = dt * u;
  float y = 0.f;
  for (int n = 0; n < p.d_state; ++n) {
    h[n] = h[n] * std::exp(dt * a[n]) + du * bv[n];
    y += h[n] * cv[n];
  }
  if (p.D) y += p.D[ch] * u;
  if (p.z) y *= Silu(p.z[row * s.z + ch]);
  return y;
}

}  // namespace

absl::Status SelectiveScanVarlen(const SelectiveScanParams& p) {
  const char* op = "SelectiveScanVarlen";
  ScanStrides s;
  BMS_REF_RETURN_IF_ERROR(CheckScan(op, p, &s));
  if (p.batch == 0) return absl::OkStatus();
  BMS_REF_RETURN_IF_ERROR(CheckPtr(op, "cu_seqlens", p.cu_seqlens));
  BMS_REF_RETURN_IF_ERROR(CheckSeqs(op, p.batch, p.cu_seqlens, p.slots, p.n_slots));
  const int64_t total = static_cast<int64_t>(p.batch) * p.d_inner;
  ParallelFor(
      p.pool, total,
      [&](int64_t begin, int64_t end) {
        std::vector<float> h(p.d_state);
        for (int64_t i = begin; i < end; ++i) {
          const int b = static_cast<int>(i / p.d_inner);
          const int ch = static_cast<int>(i % p.d_inner);
          const int t0 = p.cu_seqlens[b], t1 = p.cu_seqlens[b + 1];
          if (t1 == t0) continue;
          const int64_t sbase = p.slots[b] * s.slot + static_cast<int64_t>(ch) * p.d_state;
          const bool init = p.has_initial_state != nullptr && p.has_initial_state[b] != 0;
          for (int n = 0; n < p.d_state; ++n) {
            h[n] = init ? LoadState(p.ssm_state, p.ssm_state_dtype, sbase + n) : 0.f;
          }
          for (int t = t0; t < t1; ++t) p.out[t * s.out + ch] = ScanStep(p, s, t, ch, h.data());
          for (int n = 0; n < p.d_state; ++n) {
            StoreState(p.ssm_state, p.ssm_state_dtype, sbase + n, h[n]);
          }
        }
      },
      /*min_chunk=*/32);
  return absl::OkStatus();
}

absl::Status SelectiveStateUpdate(const SelectiveStateUpdateParams& p) {
  const char* op = "SelectiveStateUpdate";
  ScanStrides s;
  BMS_REF_RETURN_IF_ERROR(CheckScan(op, p, &s));
  if (p.batch == 0) return absl::OkStatus();
  BMS_REF_RETURN_IF_ERROR(CheckSeqs(op, p.batch, nullptr, p.slots, p.n_slots));
  const int64_t total = static_cast<int64_t>(p.batch) * p.d_inner;
  ParallelFor(
      p.pool, total,
      [&](int64_t begin, int64_t end) {
        std::vector<float> h(p.d_state);
        for (int64_t i = begin; i < end; ++i) {
          const int b = static_cast<int>(i / p.d_inner);
          const int ch = static_cast<int>(i % p.d_inner);
          const int64_t sbase = p.slots[b] * s.slot + static_cast<int64_t>(ch) * p.d_state;
          for (int n = 0; n < p.d_state; ++n) {
            h[n] = LoadState(p.ssm_state, p.ssm_state_dtype, sbase + n);
          }
          p.out[b * s.out + ch] = ScanStep(p, s, b, ch, h.data());
          for (int n = 0; n < p.d_state; ++n) {
            StoreState(p.ssm_state, p.ssm_state_dtype, sbase + n, h[n]);
          }
        }
      },
      /*min_chunk=*/32);
  return absl::OkStatus();
}

}  // namespace bms::ref
