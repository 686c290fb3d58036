// CUDA runtime calls behind kernels/cuda/device_memory.h.
#include "kernels/cuda/device_memory.h"

#include <cuda_profiler_api.h>
#include <cuda_runtime.h>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_check.h"

namespace bms::cuda {

absl::StatusOr<DeviceBuffer> DeviceBuffer::Alloc(size_t bytes, const std::string& what) {
  DeviceBuffer b;
  if (bytes == 0) return b;
  const cudaError_t err = cudaMalloc(&b.ptr_, bytes);
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear the sticky allocation error
    b.ptr_ = nullptr;
    return absl::ResourceExhaustedError(absl::StrCat("cannot allocate ", bytes,
                                                     " bytes of GPU memory for ", what, ": ",
                                                     cudaGetErrorString(err)));
  }
  b.bytes_ = bytes;
  return b;
}

DeviceBuffer::~DeviceBuffer() {
  if (ptr_) cudaFree(ptr_);
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) {
  o.ptr_ = nullptr;
  o.bytes_ = 0;
}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    if (ptr_) cudaFree(ptr_);
    ptr_ = o.ptr_;
    bytes_ = o.bytes_;
    o.ptr_ = nullptr;
    o.bytes_ = 0;
  }
  return *this;
}

absl::Status CopyToDevice(void* dst, const void* src, size_t bytes) {
  if (bytes) BMS_CUDA_RETURN_IF_ERROR(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
  return absl::OkStatus();
}
absl::Status CopyToHost(void* dst, const void* src, size_t bytes) {
  if (bytes) BMS_CUDA_RETURN_IF_ERROR(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
  return absl::OkStatus();
}
absl::Status CopyDeviceToDevice(void* dst, const void* src, size_t bytes) {
  if (bytes) BMS_CUDA_RETURN_IF_ERROR(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice));
  return absl::OkStatus();
}
absl::Status CopyDeviceToDeviceAsync(void* dst, const void* src, size_t bytes, Stream stream) {
  if (bytes)
    BMS_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream));
  return absl::OkStatus();
}
absl::Status CopyToDeviceAsync(void* dst, const void* src, size_t bytes, Stream stream) {
  if (bytes)
    BMS_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream));
  return absl::OkStatus();
}
absl::Status CopyToHostAsync(void* dst, const void* src, size_t bytes, Stream stream) {
  if (bytes)
    BMS_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream));
  return absl::OkStatus();
}
absl::Status FillBytes(void* dst, int byte, size_t bytes, Stream stream) {
  if (bytes) BMS_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(dst, byte, bytes, stream));
  return absl::OkStatus();
}
absl::Status SynchronizeStream(Stream stream) {
  BMS_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  return absl::OkStatus();
}
void ProfilerStart() { cudaProfilerStart(); }
void ProfilerStop() { cudaProfilerStop(); }

absl::Status DeviceSynchronize() {
  BMS_CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());
  return absl::OkStatus();
}

absl::StatusOr<void*> AllocHost(size_t bytes) {
  void* p = nullptr;
  BMS_CUDA_RETURN_IF_ERROR(cudaMallocHost(&p, bytes));
  return p;
}
void FreeHost(void* p) {
  if (p) cudaFreeHost(p);
}

absl::StatusOr<Stream> CreateStream() {
  cudaStream_t s = nullptr;
  BMS_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  return s;
}
void DestroyStream(Stream s) {
  if (s) cudaStreamDestroy(s);
}

absl::Status MemInfo(size_t* free_bytes, size_t* total_bytes) {
  BMS_CUDA_RETURN_IF_ERROR(cudaMemGetInfo(free_bytes, total_bytes));
  return absl::OkStatus();
}

std::string DeviceDescription() {
  int dev = 0;
  cudaDeviceProp prop{};
  if (cudaGetDevice(&dev) != cudaSuccess || cudaGetDeviceProperties(&prop, dev) != cudaSuccess)
    return "unknown device";
  return absl::StrCat(prop.name, " (sm_", prop.major, prop.minor, ", ", prop.multiProcessorCount,
                      " SMs)");
}

bool DeviceAvailable(std::string* why) {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    cudaGetLastError();
    if (why) *why = absl::StrCat("no usable CUDA device: ", cudaGetErrorString(err));
    return false;
  }
  if (n == 0) {
    if (why) *why = "no CUDA device present";
    return false;
  }
  return true;
}

}  // namespace bms::cuda
