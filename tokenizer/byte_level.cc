// GPT-2 byte-to-unicode mapping (see byte_level.h).
#include "tokenizer/byte_level.h"

#include <array>
#include <cstdint>

#include "tokenizer/utf8.h"

namespace bms {
namespace {

constexpr size_t kMappedLimit = 256 + 68;  // mapped code points are below U+0144

// code point -> byte, -1 when the code point is not the image of a byte.
std::array<int16_t, kMappedLimit> BuildUnicodeToByte() {
  std::array<int16_t, kMappedLimit> map;
  map.fill(-1);
  int shifted = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
    const int cp = printable ? b : 256 + shifted++;
    map[static_cast<size_t>(cp)] = static_cast<int16_t>(b);
  }
  return map;
}

}  // namespace

std::string ByteLevelTokenToBytes(std::string_view token) {
  static const std::array<int16_t, kMappedLimit> kUnicodeToByte = BuildUnicodeToByte();
  std::string out;
  out.reserve(token.size());
  if (utf8::FindInvalid(token) != std::string_view::npos) return std::string(token);
  size_t i = 0;
  while (i < token.size()) {
    const char32_t c = utf8::DecodeValid(token, &i);
    if (c >= kMappedLimit || kUnicodeToByte[c] < 0) return std::string(token);
    out.push_back(static_cast<char>(kUnicodeToByte[c]));
  }
  return out;
}

}  // namespace bms
