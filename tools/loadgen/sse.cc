#include "tools/loadgen/sse.h"

#include "nlohmann/json.hpp"

namespace bms::loadgen {

void SseParser::Feed(std::string_view bytes) {
  for (char c : bytes) {
    if (skip_lf_) {
      skip_lf_ = false;
      if (c == '\n') continue;
    }
    if (c == '\r' || c == '\n') {
      skip_lf_ = c == '\r';
      Line(line_);
      line_.clear();
    } else {
      line_.push_back(c);
    }
  }
}

void SseParser::Line(std::string_view line) {
  if (line.empty()) {
    if (has_data_) on_event_(data_);
    data_.clear();
    has_data_ = false;
    return;
  }
  if (line[0] == ':') return;  // comment
  const size_t colon = line.find(':');
  std::string_view field = line.substr(0, colon);
  std::string_view value = colon == std::string_view::npos ? "" : line.substr(colon + 1);
  if (!value.empty() && value[0] == ' ') value.remove_prefix(1);
  if (field != "data") return;
  if (has_data_) data_.push_back('\n');
  data_.append(value);
  has_data_ = true;
}

StreamChunk ParseStreamChunk(const std::string& data) {
  using json = nlohmann::json;
  StreamChunk c;
  if (data == "[DONE]") {
    c.done = true;
    return c;
  }
  json j = json::parse(data, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    c.error = "stream data is not a JSON object: " + data.substr(0, 200);
    return c;
  }
  if (auto e = j.find("error"); e != j.end()) {
    c.error = e->is_object() && e->contains("message") && (*e)["message"].is_string()
                  ? (*e)["message"].get<std::string>()
                  : e->dump();
    return c;
  }
  if (auto u = j.find("usage"); u != j.end() && u->is_object()) {
    c.usage_completion_tokens = u->value("completion_tokens", int64_t{-1});
    c.usage_prompt_tokens = u->value("prompt_tokens", int64_t{-1});
  }
  if (auto ch = j.find("choices"); ch != j.end() && ch->is_array()) {
    for (const json& choice : *ch) {
      if (!choice.is_object()) continue;
      if (auto t = choice.find("text"); t != choice.end() && t->is_string()) {
        c.text += t->get<std::string>();
      }
      if (auto lp = choice.find("logprobs"); lp != choice.end() && lp->is_object()) {
        if (auto toks = lp->find("tokens"); toks != lp->end() && toks->is_array()) {
          c.tokens = std::max<int64_t>(c.tokens, 0) + static_cast<int64_t>(toks->size());
        }
      }
    }
  }
  c.content = !c.text.empty() || c.tokens > 0;
  return c;
}

}  // namespace bms::loadgen
