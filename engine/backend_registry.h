// Backend registry: creates a backend by name. This is the one place that knows whether the
// CUDA backend was compiled in (BMS_HAVE_CUDA); everything else asks CudaBackendCompiled().
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/backend.h"
#include "engine/model_weights.h"

namespace bms {

// name: "cpu" or "cuda". Errors: InvalidArgument for an unknown name (listing the valid ones);
// FailedPrecondition "this build has no CUDA backend" for "cuda" in a CPU-only build; otherwise
// whatever the backend's own creation returns (bad weights, no GPU, out of memory).
absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(const std::string& name,
                                                       const ModelWeights& weights,
                                                       const BackendOptions& options);

// True when this binary was built with the CUDA backend (a GPU may still be absent).
bool CudaBackendCompiled();

}  // namespace bms
