// UTF-8 helpers (see utf8.h).
#include "tokenizer/utf8.h"

namespace bms::utf8 {

int ValidSequenceLength(std::string_view s, size_t i, int* maximal_subpart) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  const unsigned char b0 = p[i];
  if (b0 < 0x80) return 1;
  int len;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    if (b0 == 0xE0) lo = 0xA0;  // no overlong forms
    if (b0 == 0xED) hi = 0x9F;  // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;  // <= U+10FFFF
  } else {
    *maximal_subpart = 1;  // a continuation byte or C0, C1, F5..FF: never valid
    return 0;
  }
  for (int k = 1; k < len; ++k) {
    if (i + k >= n) {
      *maximal_subpart = -k;  // valid so far, but the input ends
      return 0;
    }
    const unsigned char b = p[i + k];
    const bool ok = (k == 1) ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xBF);
    if (!ok) {
      *maximal_subpart = k;
      return 0;
    }
  }
  return len;
}

size_t FindInvalid(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    // ASCII fast path, 8 bytes at a time.
    while (i + 8 <= n) {
      uint64_t w;
      __builtin_memcpy(&w, p + i, 8);
      if (w & 0x8080808080808080ull) break;
      i += 8;
    }
    if (i >= n) break;
    if (p[i] < 0x80) {
      ++i;
      continue;
    }
    int subpart = 0;
    const int len = ValidSequenceLength(s, i, &subpart);
    if (len == 0) return i;
    i += len;
  }
  return std::string_view::npos;
}

void Append(char32_t c, std::string* out) {
  if (c < 0x80) {
    out->push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (c >> 6)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (c >> 12)));
    out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (c >> 18)));
    out->push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

size_t AppendLossy(std::string_view bytes, bool hold_incomplete, std::string* out) {
  const size_t n = bytes.size();
  size_t i = 0;
  size_t run_start = 0;  // start of the valid run not yet copied
  while (i < n) {
    if (static_cast<unsigned char>(bytes[i]) < 0x80) {
      ++i;
      continue;
    }
    int subpart = 0;
    const int len = ValidSequenceLength(bytes, i, &subpart);
    if (len > 0) {
      i += len;
      continue;
    }
    out->append(bytes.substr(run_start, i - run_start));
    if (subpart < 0 && hold_incomplete) return n - i;
    out->append(kReplacement);
    i += subpart < 0 ? static_cast<size_t>(-subpart) : static_cast<size_t>(subpart);
    run_start = i;
  }
  out->append(bytes.substr(run_start, n - run_start));
  return 0;
}

}  // namespace bms::utf8
