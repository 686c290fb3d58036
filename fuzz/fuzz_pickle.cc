// libFuzzer target: the restricted torch pickle reader (ParseTorchStateDict). Any byte string
// must give a state dict or an error naming the problem; never a crash, hang or huge allocation.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "engine/pickle_reader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto dict = bms::ParseTorchStateDict(std::string_view(reinterpret_cast<const char*>(data), size));
  if (dict.ok()) {
    for (const auto& [name, t] : *dict) {
      if (t.shape.size() != t.stride.size() || t.storage_numel < 0 || t.storage_offset < 0) {
        __builtin_trap();
      }
    }
  }
  return 0;
}
