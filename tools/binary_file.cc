#include "tools/binary_file.h"

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace bms {

BinaryFile::BinaryFile(std::string path) : path_(std::move(path)) {
  f_ = std::fopen(path_.c_str(), "wb");
  if (f_ == nullptr) {
    status_ = absl::PermissionDeniedError(
        absl::StrCat("cannot create ", path_, ": ", std::strerror(errno)));
  }
}

BinaryFile::~BinaryFile() {
  if (f_ != nullptr) std::fclose(f_);
}

void BinaryFile::Write(const void* data, size_t n) {
  if (!status_.ok() || n == 0) return;
  if (std::fwrite(data, 1, n, f_) != n) {
    status_ =
        absl::DataLossError(absl::StrCat("write to ", path_, " failed: ", std::strerror(errno)));
    return;
  }
  offset_ += n;
}

void BinaryFile::WriteLE(uint64_t v, int bytes) {
  uint8_t b[8];
  for (int i = 0; i < bytes; ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
  Write(b, bytes);
}

absl::Status BinaryFile::Close() {
  if (f_ != nullptr) {
    if (std::fclose(f_) != 0 && status_.ok()) {
      status_ =
          absl::DataLossError(absl::StrCat("closing ", path_, " failed: ", std::strerror(errno)));
    }
    f_ = nullptr;
  }
  return status_;
}

}  // namespace bms
