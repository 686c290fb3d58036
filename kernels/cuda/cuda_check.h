// CUDA error checking: every CUDA runtime / cuBLAS call's result becomes an absl::Status that
// names the call site (file:line) and the error string. For kernels/cuda/ and engine/cuda_*.cc
// only (includes CUDA headers).
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace bms::cuda {

inline absl::Status CudaErrorStatus(cudaError_t err, const char* what, const char* file, int line) {
  if (err == cudaSuccess) return absl::OkStatus();
  std::string msg = absl::StrCat(file, ":", line, ": ", what, " failed: ", cudaGetErrorName(err),
                                 " (", cudaGetErrorString(err), ")");
  if (err == cudaErrorMemoryAllocation) return absl::ResourceExhaustedError(msg);
  return absl::InternalError(msg);
}

inline absl::Status CublasErrorStatus(cublasStatus_t err, const char* what, const char* file,
                                      int line) {
  if (err == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return absl::InternalError(
      absl::StrCat(file, ":", line, ": ", what, " failed: cuBLAS status ", static_cast<int>(err)));
}

}  // namespace bms::cuda

#define BMS_CUDA_RETURN_IF_ERROR(expr)                                               \
  do {                                                                               \
    cudaError_t bms_cuda_err_ = (expr);                                              \
    if (bms_cuda_err_ != cudaSuccess)                                                \
      return ::bms::cuda::CudaErrorStatus(bms_cuda_err_, #expr, __FILE__, __LINE__); \
  } while (0)

#define BMS_CUBLAS_RETURN_IF_ERROR(expr)                                                 \
  do {                                                                                   \
    cublasStatus_t bms_cublas_err_ = (expr);                                             \
    if (bms_cublas_err_ != CUBLAS_STATUS_SUCCESS)                                        \
      return ::bms::cuda::CublasErrorStatus(bms_cublas_err_, #expr, __FILE__, __LINE__); \
  } while (0)

// After a kernel launch: the launch's own error (bad configuration, no device).
#define BMS_CUDA_CHECK_LAUNCH(name) BMS_CUDA_RETURN_IF_ERROR(cudaGetLastError())
