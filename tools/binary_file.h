// BinaryFile: a small buffered output file for the checkpoint writers; remembers the first
// error (naming the path) and the running byte offset, so callers check once at the end.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace bms {

class BinaryFile {
 public:
  explicit BinaryFile(std::string path);
  ~BinaryFile();  // closes without reporting; call Close() to learn about errors
  BinaryFile(const BinaryFile&) = delete;
  BinaryFile& operator=(const BinaryFile&) = delete;

  void Write(const void* data, size_t n);
  void Write(std::string_view s) { Write(s.data(), s.size()); }
  void WriteLE(uint64_t v, int bytes);  // little-endian integer of `bytes` bytes
  uint64_t offset() const { return offset_; }
  // Flushes and closes; the first open/write/close error, if any.
  absl::Status Close();

 private:
  std::string path_;
  FILE* f_ = nullptr;
  uint64_t offset_ = 0;
  absl::Status status_;
};

}  // namespace bms
