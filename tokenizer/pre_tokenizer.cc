// GPT-2 split pattern scanner (see pre_tokenizer.h).
#include "tokenizer/pre_tokenizer.h"

#include "tokenizer/unicode.h"
#include "tokenizer/utf8.h"

namespace bms {
namespace {

using unicode::CharClass;

struct CharAt {
  CharClass cls;
  size_t len;  // bytes
};

inline CharAt ClassAt(std::string_view s, size_t i) {
  const auto b = static_cast<unsigned char>(s[i]);
  if (b < 0x80) return {unicode::ClassifyAscii(b), 1};
  size_t j = i;
  const char32_t c = utf8::DecodeValid(s, &j);
  return {unicode::ClassifyNonAscii(c), j - i};
}

// End of the run of characters of class `cls` starting at `i` (whose class is `cls`).
inline size_t RunEnd(std::string_view s, size_t i, CharClass cls) {
  const size_t n = s.size();
  while (i < n) {
    const auto b = static_cast<unsigned char>(s[i]);
    if (b < 0x80) {
      if (unicode::ClassifyAscii(b) != cls) break;
      ++i;
      continue;
    }
    const CharAt c = ClassAt(s, i);
    if (c.cls != cls) break;
    i += c.len;
  }
  return i;
}

}  // namespace

size_t NextGpt2PreToken(std::string_view s, size_t i) {
  const size_t n = s.size();
  const char b = s[i];
  // 's|'t|'re|'ve|'m|'ll|'d
  if (b == '\'' && i + 1 < n) {
    const char c1 = s[i + 1];
    if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return i + 2;
    if (i + 2 < n) {
      const char c2 = s[i + 2];
      if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) {
        return i + 3;
      }
    }
  }
  // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: an optional U+0020 then a run of one class.
  const size_t j = (b == ' ' && i + 1 < n) ? i + 1 : i;
  const CharAt first = ClassAt(s, j);
  if (first.cls != CharClass::kSpace) return RunEnd(s, j + first.len, first.cls);
  // `\s+(?!\S)|\s+`: a whitespace run; when a non-space follows, the run minus its last character
  // (which may then prefix the next word), unless that leaves nothing.
  size_t k = i;
  size_t last_start = i;
  while (k < n) {
    const CharAt c = ClassAt(s, k);
    if (c.cls != CharClass::kSpace) break;
    last_start = k;
    k += c.len;
  }
  if (k == n || last_start == i) return k;
  return last_start;
}

}  // namespace bms
