// The built-in byte-level fallback tokenizer: id = byte value, plus <|endoftext|> = 256. Used
// for models that ship no tokenizer.json.
#include <memory>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace bms {
namespace {

constexpr int32_t kEndOfText = 256;
constexpr std::string_view kEndOfTextText = "<|endoftext|>";

class ByteFallbackTokenizer final : public Tokenizer {
 public:
  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text,
                                              bool parse_special) const override {
    if (const size_t bad = utf8::FindInvalid(text); bad != std::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat("text: invalid UTF-8 at byte offset ", bad));
    }
    std::vector<int32_t> ids;
    ids.reserve(text.size());
    size_t pos = 0;
    while (pos < text.size()) {
      const size_t special =
          parse_special ? text.find(kEndOfTextText, pos) : std::string_view::npos;
      const size_t end = special == std::string_view::npos ? text.size() : special;
      for (size_t i = pos; i < end; ++i) ids.push_back(static_cast<unsigned char>(text[i]));
      if (special == std::string_view::npos) break;
      ids.push_back(kEndOfText);
      pos = special + kEndOfTextText.size();
    }
    return ids;
  }

  std::string Decode(const std::vector<int32_t>& ids, bool skip_special) const override {
    std::string bytes;
    bytes.reserve(ids.size());
    for (int32_t id : ids) {
      if (id >= 0 && id < 256) {
        bytes.push_back(static_cast<char>(id));
      } else if (id == kEndOfText && !skip_special) {
        bytes += kEndOfTextText;
      }
    }
    std::string out;
    utf8::AppendLossy(bytes, /*hold_incomplete=*/false, &out);
    return out;
  }

  std::string TokenBytes(int32_t id) const override {
    if (id >= 0 && id < 256) return std::string(1, static_cast<char>(id));
    if (id == kEndOfText) return std::string(kEndOfTextText);
    return "";
  }
  bool IsSpecialToken(int32_t id) const override { return id == kEndOfText; }
  int vocab_size() const override { return 257; }
  int32_t eos_token_id() const override { return kEndOfText; }
  std::string name() const override { return "byte-fallback"; }
};

}  // namespace

std::unique_ptr<Tokenizer> Tokenizer::ByteFallback() {
  return std::make_unique<ByteFallbackTokenizer>();
}

}  // namespace bms
