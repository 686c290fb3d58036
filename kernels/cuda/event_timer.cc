// CUDA-event timing (kernels/cuda/event_timer.h).
#include "kernels/cuda/event_timer.h"

#include <cuda_runtime.h>

#include "absl/strings/str_cat.h"

namespace bms::cuda {

absl::StatusOr<std::vector<float>> TimeEachCall(const std::function<absl::Status(int)>& fn,
                                                int reps, Stream stream) {
  if (reps <= 0) return absl::InvalidArgumentError("TimeEachCall: reps must be > 0");
  std::vector<cudaEvent_t> ev(2 * static_cast<size_t>(reps), nullptr);
  auto cleanup = [&] {
    for (cudaEvent_t e : ev)
      if (e) cudaEventDestroy(e);
  };
  for (auto& e : ev) {
    if (cudaError_t err = cudaEventCreate(&e); err != cudaSuccess) {
      cleanup();
      return absl::InternalError(absl::StrCat("cudaEventCreate: ", cudaGetErrorString(err)));
    }
  }
  absl::Status status;
  for (int r = 0; r < reps && status.ok(); ++r) {
    cudaEventRecord(ev[2 * r], stream);
    status = fn(r);
    cudaEventRecord(ev[2 * r + 1], stream);
  }
  if (cudaError_t err = cudaStreamSynchronize(stream); err != cudaSuccess && status.ok())
    status = absl::InternalError(absl::StrCat("cudaStreamSynchronize: ", cudaGetErrorString(err)));
  std::vector<float> us(reps, 0.f);
  for (int r = 0; r < reps && status.ok(); ++r) {
    float ms = 0.f;
    if (cudaError_t err = cudaEventElapsedTime(&ms, ev[2 * r], ev[2 * r + 1]); err != cudaSuccess)
      status = absl::InternalError(absl::StrCat("cudaEventElapsedTime: ", cudaGetErrorString(err)));
    us[r] = ms * 1000.f;
  }
  cleanup();
  if (!status.ok()) return status;
  return us;
}

}  // namespace bms::cuda
