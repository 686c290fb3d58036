#include "server/chat_template.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "nlohmann/json.hpp"

namespace bms {
namespace {

constexpr char kContent[] = "{content}";

absl::Status CheckPattern(const std::string& key, const std::string& pattern) {
  size_t first = pattern.find(kContent);
  if (first == std::string::npos || pattern.find(kContent, first + 1) != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("chat template key '", key, "' must contain {content} exactly once"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> ChatTemplate::Apply(const std::vector<ChatMessage>& messages) const {
  std::string out = prefix;
  for (const ChatMessage& m : messages) {
    const std::string* pattern = nullptr;
    if (m.role == "system") pattern = &system;
    if (m.role == "user") pattern = &user;
    if (m.role == "assistant") pattern = &assistant;
    if (pattern == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("unknown message role '", m.role, "'"));
    }
    size_t at = pattern->find(kContent);
    absl::StrAppend(&out, pattern->substr(0, at), m.content,
                    pattern->substr(at + sizeof(kContent) - 1));
  }
  out += generation_prompt;
  return out;
}

absl::StatusOr<ChatTemplate> ChatTemplate::FromJsonText(const std::string& text) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("chat template: expected a JSON object");
  }
  ChatTemplate t;
  struct Key {
    const char* name;
    std::string* value;
    bool needs_content;
  } keys[] = {{"prefix", &t.prefix, false},
              {"system", &t.system, true},
              {"user", &t.user, true},
              {"assistant", &t.assistant, true},
              {"generation_prompt", &t.generation_prompt, false}};
  for (auto it = j.begin(); it != j.end(); ++it) {
    bool known = false;
    for (const Key& k : keys) known |= it.key() == k.name;
    if (!known) {
      return absl::InvalidArgumentError(
          absl::StrCat("chat template: unknown key '", it.key(), "'"));
    }
  }
  for (const Key& k : keys) {
    if (!j.contains(k.name)) continue;
    if (!j[k.name].is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat("chat template key '", k.name, "' must be a string"));
    }
    *k.value = j[k.name].get<std::string>();
    if (k.needs_content) {
      if (auto s = CheckPattern(k.name, *k.value); !s.ok()) return s;
    }
  }
  return t;
}

absl::StatusOr<ChatTemplate> ChatTemplate::FromFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open chat template file ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  auto t = FromJsonText(ss.str());
  if (!t.ok()) return absl::InvalidArgumentError(absl::StrCat(path, ": ", t.status().message()));
  return t;
}

}  // namespace bms
