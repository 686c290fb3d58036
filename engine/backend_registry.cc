#include "engine/backend_registry.h"

#include "absl/strings/str_cat.h"
#include "engine/cpu_backend.h"
#ifdef BMS_HAVE_CUDA
#include "engine/cuda_backend.h"
#endif

namespace bms {

bool CudaBackendCompiled() {
#ifdef BMS_HAVE_CUDA
  return true;
#else
  return false;
#endif
}

absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(const std::string& name,
                                                       const ModelWeights& weights,
                                                       const BackendOptions& options) {
  if (name == "cpu") {
    absl::StatusOr<std::unique_ptr<CpuBackend>> b = CpuBackend::Create(weights, options);
    if (!b.ok()) return b.status();
    return std::unique_ptr<Backend>(std::move(*b));
  }
  if (name == "cuda") {
#ifdef BMS_HAVE_CUDA
    return CreateCudaBackend(weights, options);
#else
    return absl::FailedPreconditionError(
        "this build has no CUDA backend (rebuild with -DBMS_CUDA=ON on a machine with the CUDA "
        "toolkit, or use --backend cpu)");
#endif
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown backend '", name, "' (expected cpu or cuda)"));
}

}  // namespace bms
