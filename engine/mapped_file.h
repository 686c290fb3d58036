// MappedFile: a read-only memory mapping of a whole file, shared by the HostTensors that point
// into it (HostTensor::owner holds the shared_ptr, so the mapping lives as long as any tensor).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace bms {

class MappedFile {
 public:
  // Maps `path` read-only. NotFound if it cannot be opened; an empty file maps to size() == 0.
  static absl::StatusOr<std::shared_ptr<const MappedFile>> Open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::string path_;
};

// A view of `size` bytes at `data` (inside `file`) as a HostTensor-ready buffer: when `data` is
// suitably aligned for `align` the result aliases the mapping (zero copy, keeps `file` alive);
// otherwise the bytes are copied into an owned, aligned buffer.
std::shared_ptr<const void> AliasOrCopy(const std::shared_ptr<const MappedFile>& file,
                                        const uint8_t* data, size_t size, size_t align,
                                        const void** out_data);

}  // namespace bms
