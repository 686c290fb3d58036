// CUDA-event timing for micro-benchmarks, behind a CUDA-free interface: runs a callable that
// enqueues work on a stream, brackets each call with events, and returns the GPU time of every
// call in microseconds. Used by bench/engine/bms_kernel_bench_scan.cc.
#pragma once

#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/cuda/ops.h"

namespace bms::cuda {

// Calls fn(rep) for rep in [0, reps), each bracketed by events on `stream`; synchronizes once at
// the end. The first error of fn or of a CUDA call is returned.
absl::StatusOr<std::vector<float>> TimeEachCall(const std::function<absl::Status(int)>& fn,
                                                int reps, Stream stream);

}  // namespace bms::cuda
