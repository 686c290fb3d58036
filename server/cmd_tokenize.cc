// `bmserve tokenize` and `bmserve detokenize`: text <-> token ids with a tokenizer.json (or the
// built-in byte fallback when --tokenizer is not given). Exit codes: 0 ok, 1 load/encode error,
// 2 bad flags.
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "nlohmann/json.hpp"
#include "server/commands.h"
#include "server/flags.h"
#include "tokenizer/tokenizer.h"

namespace bms {
namespace {

int Fail(const char* command, int code, const std::string& message) {
  std::fprintf(stderr, "%s: %s\n", command, message.c_str());
  return code;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& path) {
  if (path.empty()) return Tokenizer::ByteFallback();
  return Tokenizer::FromFile(path);
}

// "1, 2,3" -> ids; an empty string is no ids.
absl::StatusOr<std::vector<int32_t>> ParseIds(const std::string& text) {
  std::vector<int32_t> ids;
  if (absl::StripAsciiWhitespace(text).empty()) return ids;
  for (absl::string_view item : absl::StrSplit(text, ',')) {
    item = absl::StripAsciiWhitespace(item);
    int32_t id = 0;
    if (!absl::SimpleAtoi(item, &id)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--ids: '", std::string(item), "' is not a 32-bit integer token id"));
    }
    ids.push_back(id);
  }
  return ids;
}

}  // namespace

int TokenizeCommand(const Args& args) {
  constexpr const char* kName = "tokenize";
  std::string tokenizer_path, text, text_file;
  bool json = false, parse_special = false;
  FlagSet flags(kName);
  flags.String("tokenizer", &tokenizer_path,
               "HF tokenizer.json (byte-level BPE); empty: the built-in byte fallback");
  flags.String("text", &text, "the text to encode");
  flags.String("text-file", &text_file, "a file whose whole content is encoded");
  flags.Bool("json", &json, "print {\"ids\":[...],\"count\":n} instead of comma-separated ids");
  flags.Bool("parse-special", &parse_special,
             "match special tokens such as <|endoftext|> in the text (else they are plain text)");
  if (absl::Status s = flags.Parse(args); !s.ok()) return Fail(kName, 2, std::string(s.message()));
  if (flags.help_requested()) {
    std::printf("%s", flags.Usage().c_str());
    return 0;
  }
  if (flags.WasSet("text") == flags.WasSet("text-file")) {
    return Fail(kName, 2, "give exactly one of --text and --text-file");
  }
  if (flags.WasSet("text-file")) {
    std::ifstream in(text_file, std::ios::binary);
    if (!in) return Fail(kName, 1, "--text-file: cannot open '" + text_file + "'");
    std::ostringstream buf;
    buf << in.rdbuf();
    text = buf.str();
  }
  auto tokenizer = LoadTokenizer(tokenizer_path);
  if (!tokenizer.ok()) return Fail(kName, 1, std::string(tokenizer.status().message()));
  auto ids = (*tokenizer)->Encode(text, parse_special);
  if (!ids.ok()) return Fail(kName, 1, std::string(ids.status().message()));
  if (json) {
    nlohmann::ordered_json out = {{"ids", *ids}, {"count", ids->size()}};
    std::printf("%s\n", out.dump().c_str());
  } else {
    std::printf("%s\n", absl::StrJoin(*ids, ",").c_str());
  }
  return 0;
}

int DetokenizeCommand(const Args& args) {
  constexpr const char* kName = "detokenize";
  std::string tokenizer_path, ids_text;
  bool json = false, skip_special = false;
  FlagSet flags(kName);
  flags.String("tokenizer", &tokenizer_path,
               "HF tokenizer.json (byte-level BPE); empty: the built-in byte fallback");
  flags.String("ids", &ids_text, "comma-separated token ids, e.g. 12092,3645,2");
  flags.Bool("json", &json, "print {\"text\":\"...\"} instead of the raw text");
  flags.Bool("skip-special", &skip_special, "drop special tokens such as <|endoftext|>");
  if (absl::Status s = flags.Parse(args); !s.ok()) return Fail(kName, 2, std::string(s.message()));
  if (flags.help_requested()) {
    std::printf("%s", flags.Usage().c_str());
    return 0;
  }
  if (!flags.WasSet("ids")) return Fail(kName, 2, "--ids is required");
  auto ids = ParseIds(ids_text);
  if (!ids.ok()) return Fail(kName, 2, std::string(ids.status().message()));
  auto tokenizer = LoadTokenizer(tokenizer_path);
  if (!tokenizer.ok()) return Fail(kName, 1, std::string(tokenizer.status().message()));
  const std::string text = (*tokenizer)->Decode(*ids, skip_special);
  if (json) {
    std::printf("%s\n", nlohmann::json({{"text", text}}).dump().c_str());
  } else {
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fputc('\n', stdout);
  }
  return 0;
}

}  // namespace bms
