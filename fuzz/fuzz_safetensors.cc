// libFuzzer target: safetensors parsing (header length, JSON header, dtypes, shapes, offsets).
// The input is written to a private temporary file and read with ReadSafetensors; any input must
// give tensors inside the file or an error, never a crash or an out-of-bounds read.
#include <fcntl.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "engine/safetensors.h"

namespace {

const std::string& TempPath() {
  static const std::string path = [] {
    const char* dir = std::getenv("TMPDIR");
    return std::string(dir && *dir ? dir : "/tmp") + "/bms_fuzz_" + std::to_string(getpid()) +
           ".safetensors";
  }();
  return path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = TempPath();
  int fd = open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY, 0600);
  if (fd < 0) return 0;
  size_t done = 0;
  while (done < size) {
    ssize_t n = write(fd, data + done, size - done);
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  close(fd);
  auto tensors = bms::ReadSafetensors(path);
  if (tensors.ok()) {
    for (const auto& [name, t] : *tensors) {
      // Touch the first and last byte of every tensor: they must lie inside the mapping.
      if (t.nbytes() > 0) {
        volatile uint8_t a = static_cast<const uint8_t*>(t.data)[0];
        volatile uint8_t b = static_cast<const uint8_t*>(t.data)[t.nbytes() - 1];
        (void)a;
        (void)b;
      }
    }
  }
  unlink(path.c_str());
  return 0;
}
