// Argument checks shared by the reference ops (internal to kernels/ref): each returns
// InvalidArgument naming the op and the params field.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

#define BMS_REF_RETURN_IF_ERROR(expr)          \
  do {                                         \
    ::absl::Status _bms_status = (expr);       \
    if (!_bms_status.ok()) return _bms_status; \
  } while (0)

namespace bms::ref {

inline absl::Status CheckPtr(const char* op, const char* field, const void* ptr) {
  if (ptr != nullptr) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(op, ": ", field, " is null"));
}

inline absl::Status CheckPositive(const char* op, const char* field, int64_t v,
                                  bool allow_zero = false) {
  if (v > 0 || (allow_zero && v == 0)) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(op, ": ", field, " = ", v, allow_zero ? " must be >= 0" : " must be > 0"));
}

// A row stride (0 = width) must cover the row width.
inline absl::Status CheckStride(const char* op, const char* field, int64_t stride, int64_t width,
                                int64_t* resolved) {
  *resolved = stride == 0 ? width : stride;
  if (*resolved >= width) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(op, ": ", field, " = ", stride, " is smaller than the row width ", width));
}

// cu_seqlens must start at 0 and be non-decreasing; slots in [0, n_slots) and distinct.
absl::Status CheckSeqs(const char* op, int batch, const int32_t* cu_seqlens, const int32_t* slots,
                       int n_slots);

}  // namespace bms::ref
