// Device memory helpers with a CUDA-free interface: an owning device buffer, synchronous copies,
// byte fills (0xFF poisons fp32 and bf16 as NaN), stream creation and device queries. Used by the
// CUDA backend and the GPU tests. Every failure is an absl::Status naming the call site.
#pragma once

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/cuda/ops.h"

namespace bms::cuda {

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  // ResourceExhausted names `what` and the size when the allocation does not fit.
  static absl::StatusOr<DeviceBuffer> Alloc(size_t bytes, const std::string& what);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& o) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* get() const { return ptr_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  size_t size() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

absl::Status CopyToDevice(void* dst, const void* src, size_t bytes);
absl::Status CopyToHost(void* dst, const void* src, size_t bytes);
absl::Status CopyDeviceToDevice(void* dst, const void* src, size_t bytes);
// Enqueued on `stream`, so later work on that stream sees it (a plain CopyDeviceToDevice runs on
// the legacy default stream, which a non-blocking stream does not wait for).
absl::Status CopyDeviceToDeviceAsync(void* dst, const void* src, size_t bytes, Stream stream);
absl::Status CopyToDeviceAsync(void* dst, const void* src, size_t bytes, Stream stream);
absl::Status CopyToHostAsync(void* dst, const void* src, size_t bytes, Stream stream);
absl::Status FillBytes(void* dst, int byte, size_t bytes, Stream stream = nullptr);
absl::Status SynchronizeStream(Stream stream);
absl::Status DeviceSynchronize();

// Pinned host memory (for async copies); freed with FreeHost.
absl::StatusOr<void*> AllocHost(size_t bytes);
void FreeHost(void* p);

absl::StatusOr<Stream> CreateStream();
void DestroyStream(Stream s);

// Free and total memory of the current device.
absl::Status MemInfo(size_t* free_bytes, size_t* total_bytes);
// The device's name and compute capability, e.g. "NVIDIA H100 80GB HBM3 (sm_90)".
std::string DeviceDescription();
// True when a CUDA device is usable; otherwise false and the reason in *why.
bool DeviceAvailable(std::string* why);

// Brackets a region for a profiler started with collection off (ncu --profile-from-start off).
void ProfilerStart();
void ProfilerStop();

}  // namespace bms::cuda
