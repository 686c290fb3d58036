// BMS_RETURN_IF_ERROR(expr): evaluates an absl::Status expression and returns it from the
// enclosing function when it is not ok. Shared by the engine's backends (they were five copies).
#pragma once

#include "absl/status/status.h"

#define BMS_RETURN_IF_ERROR(expr)              \
  do {                                         \
    ::absl::Status _bms_status = (expr);       \
    if (!_bms_status.ok()) return _bms_status; \
  } while (0)
