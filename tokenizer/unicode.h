// Unicode facts the tokenizer needs: the character classes of the GPT-2 split pattern (\p{L},
// \p{N}, \s = White_Space) and NFC normalization. Backed by ICU, with ASCII fast paths.
// All functions are thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace bms::unicode {

enum class CharClass : uint8_t { kLetter, kNumber, kSpace, kOther };

CharClass ClassifyNonAscii(char32_t c);

inline constexpr CharClass ClassifyAscii(unsigned char b) {
  if ((b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z')) return CharClass::kLetter;
  if (b >= '0' && b <= '9') return CharClass::kNumber;
  if (b == ' ' || (b >= '\t' && b <= '\r')) return CharClass::kSpace;
  return CharClass::kOther;
}

inline CharClass Classify(char32_t c) {
  return c < 0x80 ? ClassifyAscii(static_cast<unsigned char>(c)) : ClassifyNonAscii(c);
}

// Unicode White_Space (what Rust's char::is_whitespace and the regex `\s` use).
bool IsWhiteSpace(char32_t c);

// Whether `text` (valid UTF-8) is certainly already in NFC without looking it up: true when it
// has no character at or above U+0300 (the first one that can combine).
bool TriviallyNfc(std::string_view text);

// NFC of valid UTF-8 `text`, written to *out (replacing its content). Internal on ICU failure.
absl::Status ToNfc(std::string_view text, std::string* out);

}  // namespace bms::unicode
