// UTF-8 helpers for the tokenizer: validation, code point decoding, and lossy decoding that
// replaces each maximal invalid subsequence with one U+FFFD (Rust's String::from_utf8_lossy, which
// HF's ByteLevel decoder uses).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace bms::utf8 {

inline constexpr char kReplacement[] = "\xEF\xBF\xBD";  // U+FFFD

// Length of the UTF-8 sequence starting at s[i] if it is a complete, valid character; otherwise
// 0 (invalid) — and *maximal_subpart is set to the number of bytes forming the longest valid
// prefix of a character (>= 1), or to a negative value when that prefix reaches the end of `s`
// and so could still become valid with more bytes.
int ValidSequenceLength(std::string_view s, size_t i, int* maximal_subpart);

// The first byte offset of invalid UTF-8 in `s`, or npos when all of `s` is valid.
size_t FindInvalid(std::string_view s);

// Decodes the (valid) character at s[*i] and advances *i past it.
inline char32_t DecodeValid(std::string_view s, size_t* i) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data()) + *i;
  if (p[0] < 0x80) {
    *i += 1;
    return p[0];
  }
  if (p[0] < 0xE0) {
    *i += 2;
    return (char32_t(p[0] & 0x1F) << 6) | (p[1] & 0x3F);
  }
  if (p[0] < 0xF0) {
    *i += 3;
    return (char32_t(p[0] & 0x0F) << 12) | (char32_t(p[1] & 0x3F) << 6) | (p[2] & 0x3F);
  }
  *i += 4;
  return (char32_t(p[0] & 0x07) << 18) | (char32_t(p[1] & 0x3F) << 12) |
         (char32_t(p[2] & 0x3F) << 6) | (p[3] & 0x3F);
}

// Appends code point `c` as UTF-8.
void Append(char32_t c, std::string* out);

// Appends `bytes` to *out with every maximal invalid subsequence replaced by U+FFFD. When
// `hold_incomplete` is true, a trailing sequence that is a valid but incomplete prefix is not
// decoded; its length is returned (else 0 is returned).
size_t AppendLossy(std::string_view bytes, bool hold_incomplete, std::string* out);

}  // namespace bms::utf8
