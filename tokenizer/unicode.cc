// Unicode classes and NFC through ICU (see unicode.h).
#include "tokenizer/unicode.h"

#include <unicode/bytestream.h>
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace bms::unicode {

CharClass ClassifyNonAscii(char32_t c) {
  const uint32_t mask = U_GET_GC_MASK(static_cast<UChar32>(c));
  if (mask & U_GC_L_MASK) return CharClass::kLetter;
  if (mask & U_GC_N_MASK) return CharClass::kNumber;
  if (u_isUWhiteSpace(static_cast<UChar32>(c))) return CharClass::kSpace;
  return CharClass::kOther;
}

bool IsWhiteSpace(char32_t c) {
  if (c < 0x80) return ClassifyAscii(static_cast<unsigned char>(c)) == CharClass::kSpace;
  return u_isUWhiteSpace(static_cast<UChar32>(c));
}

bool TriviallyNfc(std::string_view text) {
  // U+0300 is the first code point whose UTF-8 lead byte is 0xCC; all below it are NFC-inert.
  // Continuation bytes are 0x80..0xBF, so any byte >= 0xCC is the lead of such a character.
  for (unsigned char b : text) {
    if (b >= 0xCC) return false;
  }
  return true;
}

absl::Status ToNfc(std::string_view text, std::string* out) {
  out->clear();
  UErrorCode err = U_ZERO_ERROR;
  const icu::Normalizer2* nfc = icu::Normalizer2::getNFCInstance(err);
  if (U_FAILURE(err) || nfc == nullptr) {
    return absl::InternalError(absl::StrCat("ICU NFC normalizer unavailable: ", u_errorName(err)));
  }
  icu::StringByteSink<std::string> sink(out, static_cast<int32_t>(text.size()));
  nfc->normalizeUTF8(0, icu::StringPiece(text.data(), static_cast<int32_t>(text.size())), sink,
                     nullptr, err);
  if (U_FAILURE(err)) {
    return absl::InternalError(absl::StrCat("ICU NFC normalization failed: ", u_errorName(err)));
  }
  return absl::OkStatus();
}

}  // namespace bms::unicode
