// Loading a HF `tokenizers` JSON file into a BpeTokenizer, and choosing a model's tokenizer.
// Only byte-level BPE pipelines are accepted; anything else is InvalidArgument naming the field.
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "tokenizer/bpe_tokenizer.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

namespace bms {
namespace {

using Json = nlohmann::json;

// Ids index dense tables; real vocabularies stay far below this.
constexpr int64_t kMaxTokenId = (int64_t{1} << 21) - 1;

absl::Status Unsupported(const std::string& field, const Json& value) {
  return absl::InvalidArgumentError(
      absl::StrCat("tokenizer JSON: ", field, " ", value.dump().substr(0, 200),
                   " is not supported (only byte-level BPE: GPT-2 / GPT-NeoX style)"));
}

std::string TypeOf(const Json& j) {
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string()) return "";
  return j["type"].get<std::string>();
}

// Flattens {"type":"Sequence", <key>: [...]} into its members.
std::vector<Json> Members(const Json& j, const char* key) {
  if (TypeOf(j) == "Sequence" && j.contains(key) && j[key].is_array()) {
    return std::vector<Json>(j[key].begin(), j[key].end());
  }
  return {j};
}

absl::Status ParseNormalizer(const Json& root, BpeTokenizerOptions* options) {
  if (!root.contains("normalizer") || root["normalizer"].is_null()) return absl::OkStatus();
  for (const Json& n : Members(root["normalizer"], "normalizers")) {
    if (TypeOf(n) != "NFC") return Unsupported("normalizer", n);
    options->nfc = true;
  }
  return absl::OkStatus();
}

absl::Status ParsePreTokenizer(const Json& root, BpeTokenizerOptions* options) {
  if (!root.contains("pre_tokenizer") || root["pre_tokenizer"].is_null()) {
    return Unsupported("pre_tokenizer", nullptr);
  }
  const std::vector<Json> parts = Members(root["pre_tokenizer"], "pretokenizers");
  if (parts.size() != 1 || TypeOf(parts[0]) != "ByteLevel") {
    return Unsupported("pre_tokenizer", root["pre_tokenizer"]);
  }
  options->add_prefix_space = parts[0].value("add_prefix_space", false);
  options->use_regex = parts[0].value("use_regex", true);
  return absl::OkStatus();
}

absl::Status ParseDecoder(const Json& root) {
  if (!root.contains("decoder") || root["decoder"].is_null()) {
    return Unsupported("decoder", nullptr);
  }
  const std::vector<Json> parts = Members(root["decoder"], "decoders");
  if (parts.size() != 1 || TypeOf(parts[0]) != "ByteLevel") {
    return Unsupported("decoder", root["decoder"]);
  }
  return absl::OkStatus();
}

absl::StatusOr<BpeModel> ParseModel(const Json& root) {
  if (!root.contains("model") || !root["model"].is_object()) {
    return absl::InvalidArgumentError("tokenizer JSON: missing object field 'model'");
  }
  const Json& model = root["model"];
  const std::string type = TypeOf(model);
  if (type != "BPE" && !(type.empty() && model.contains("merges"))) {
    return Unsupported("model.type", model.value("type", Json()));
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (model.contains(key) && !model[key].is_null() && model[key] != "") {
      return Unsupported(absl::StrCat("model.", key), model[key]);
    }
  }
  if (model.value("byte_fallback", false)) return Unsupported("model.byte_fallback", true);
  if (model.contains("dropout") && model["dropout"].is_number() &&
      model["dropout"].get<double>() > 0) {
    return Unsupported("model.dropout", model["dropout"]);
  }
  if (!model.contains("vocab") || !model["vocab"].is_object()) {
    return absl::InvalidArgumentError("tokenizer JSON: model.vocab must be an object");
  }
  if (!model.contains("merges") || !model["merges"].is_array()) {
    return absl::InvalidArgumentError("tokenizer JSON: model.merges must be an array");
  }
  absl::flat_hash_map<std::string, int32_t> vocab;
  vocab.reserve(model["vocab"].size());
  for (const auto& [token, id] : model["vocab"].items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > kMaxTokenId) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer JSON: model.vocab[\"", token,
                                                     "\"] is not an id in [0, ", kMaxTokenId, "]"));
    }
    vocab[ByteLevelTokenToBytes(token)] = id.get<int32_t>();
  }
  std::vector<std::pair<std::string, std::string>> merges;
  merges.reserve(model["merges"].size());
  size_t index = 0;
  for (const Json& m : model["merges"]) {
    std::string a, b;
    if (m.is_string()) {  // "a b"
      const std::string s = m.get<std::string>();
      const size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
        return absl::InvalidArgumentError(
            absl::StrCat("tokenizer JSON: model.merges[", index, "] \"", s, "\" is not \"a b\""));
      }
      a = s.substr(0, space);
      b = s.substr(space + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      a = m[0].get<std::string>();
      b = m[1].get<std::string>();
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("tokenizer JSON: model.merges[", index, "] is not \"a b\" or [a, b]"));
    }
    merges.emplace_back(ByteLevelTokenToBytes(a), ByteLevelTokenToBytes(b));
    ++index;
  }
  return BpeModel::Create(std::move(vocab), merges, model.value("ignore_merges", false));
}

absl::StatusOr<std::vector<AddedToken>> ParseAddedTokens(const Json& root, bool nfc) {
  std::vector<AddedToken> added;
  if (!root.contains("added_tokens") || root["added_tokens"].is_null()) return added;
  if (!root["added_tokens"].is_array()) {
    return absl::InvalidArgumentError("tokenizer JSON: added_tokens must be an array");
  }
  size_t index = 0;
  for (const Json& t : root["added_tokens"]) {
    if (!t.is_object() || !t.contains("id") || !t["id"].is_number_integer() ||
        t["id"].get<int64_t>() < 0 || t["id"].get<int64_t>() > kMaxTokenId ||
        !t.contains("content") || !t["content"].is_string()) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer JSON: added_tokens[", index,
                                                     "] needs an id in [0, ", kMaxTokenId,
                                                     "] and a content"));
    }
    AddedToken a;
    a.id = t["id"].get<int32_t>();
    a.content = t["content"].get<std::string>();
    a.special = t.value("special", false);
    a.single_word = t.value("single_word", false);
    a.lstrip = t.value("lstrip", false);
    a.rstrip = t.value("rstrip", false);
    a.normalized = t.value("normalized", !a.special);
    if (a.normalized && nfc) {
      std::string normalized;
      absl::Status s = unicode::ToNfc(a.content, &normalized);
      if (!s.ok()) return s;
      a.content = std::move(normalized);
    }
    added.push_back(std::move(a));
    ++index;
  }
  return added;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(std::string_view text, std::string name) {
  Json root = Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object()) {
    return absl::InvalidArgumentError("tokenizer JSON: not a JSON object");
  }
  BpeTokenizerOptions options;
  absl::Status s = ParseNormalizer(root, &options);
  if (s.ok()) s = ParsePreTokenizer(root, &options);
  if (s.ok()) s = ParseDecoder(root);
  if (!s.ok()) return s;
  absl::StatusOr<BpeModel> model = ParseModel(root);
  if (!model.ok()) return model.status();
  absl::StatusOr<std::vector<AddedToken>> added = ParseAddedTokens(root, options.nfc);
  if (!added.ok()) return added.status();
  return std::make_unique<BpeTokenizer>(std::move(name), *std::move(model), *added, options);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJsonText(std::string_view json_text) {
  try {
    return FromJson(json_text, "tokenizer JSON");
  } catch (const std::exception& e) {  // nlohmann type errors on malformed fields
    return absl::InvalidArgumentError(absl::StrCat("tokenizer JSON: ", e.what()));
  }
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("tokenizer file '", path, "': cannot open"));
  std::ostringstream buf;
  buf << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("tokenizer file '", path, "': read error"));
  try {
    absl::StatusOr<std::unique_ptr<Tokenizer>> t = FromJson(buf.str(), path);
    if (!t.ok()) {
      return absl::Status(t.status().code(),
                          absl::StrCat("tokenizer file '", path, "': ", t.status().message()));
    }
    return t;
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer file '", path, "': ", e.what()));
  }
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizerForModel(
    const std::string& model_dir, const std::string& tokenizer_flag) {
  if (!tokenizer_flag.empty()) return Tokenizer::FromFile(tokenizer_flag);
  if (!model_dir.empty()) {
    const std::filesystem::path candidate = std::filesystem::path(model_dir) / "tokenizer.json";
    std::error_code ec;
    if (std::filesystem::is_regular_file(candidate, ec)) {
      return Tokenizer::FromFile(candidate.string());
    }
  }
  return Tokenizer::ByteFallback();
}

}  // namespace bms
