#include "server/openai_response.h"

#include "absl/strings/str_format.h"

namespace bms {
namespace {

using nlohmann::json;

json ChatTokenJson(const Tokenizer& tok, int32_t id, float logprob) {
  std::string bytes = tok.TokenBytes(id);
  json b = json::array();
  for (unsigned char c : bytes) b.push_back(static_cast<int>(c));
  return json{{"token", TokenDisplay(tok, id)}, {"logprob", logprob}, {"bytes", std::move(b)}};
}

}  // namespace

bool IsValidUtf8(const std::string& s) {
  size_t i = 0, n = s.size();
  while (i < n) {
    unsigned char c = s[i];
    int len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    if (len == 0 || i + len > n) return false;
    if (len == 2 && c < 0xC2) return false;
    for (int k = 1; k < len; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    if (len == 3) {
      unsigned char c1 = s[i + 1];
      if ((c == 0xE0 && c1 < 0xA0) || (c == 0xED && c1 >= 0xA0)) return false;
    }
    if (len == 4) {
      unsigned char c1 = s[i + 1];
      if ((c == 0xF0 && c1 < 0x90) || c > 0xF4 || (c == 0xF4 && c1 >= 0x90)) return false;
    }
    i += len;
  }
  return true;
}

std::string TokenDisplay(const Tokenizer& tok, int32_t id) {
  std::string bytes = tok.TokenBytes(id);
  if (IsValidUtf8(bytes)) return bytes;
  std::string out = "bytes:";
  for (unsigned char c : bytes) out += absl::StrFormat("\\x%02x", c);
  return out;
}

json ErrorJson(const ApiError& e) {
  return json{{"error",
               {{"message", e.message},
                {"type", e.type},
                {"param", e.param.empty() ? json(nullptr) : json(e.param)},
                {"code", e.code.empty() ? json(nullptr) : json(e.code)}}}};
}

json UsageJson(int64_t prompt_tokens, int64_t completion_tokens) {
  return json{{"prompt_tokens", prompt_tokens},
              {"completion_tokens", completion_tokens},
              {"total_tokens", prompt_tokens + completion_tokens}};
}

json FinishReasonJson(FinishReason r) {
  if (r == FinishReason::kNone) return nullptr;
  if (r == FinishReason::kError) return "abort";  // errors are reported as an error object
  return FinishReasonName(r);
}

json CompletionChoiceJson(const Tokenizer& tok, const ChoicePiece& p, bool logprobs) {
  json lp = nullptr;
  if (logprobs) {
    json tokens = json::array(), token_lps = json::array(), tops = json::array(),
         offsets = json::array();
    size_t offset = p.text_offset;
    for (const TokenLogprob& t : p.logprobs) {
      tokens.push_back(TokenDisplay(tok, t.token));
      token_lps.push_back(t.logprob);
      json top = json::object();
      // Most likely first: on a display-string collision the likelier entry stays.
      for (const auto& [id, v] : t.top) top.emplace(TokenDisplay(tok, id), v);
      tops.push_back(std::move(top));
      offsets.push_back(offset);
      offset += tok.TokenBytes(t.token).size();
    }
    lp = json{{"tokens", std::move(tokens)},
              {"token_logprobs", std::move(token_lps)},
              {"top_logprobs", std::move(tops)},
              {"text_offset", std::move(offsets)}};
  }
  return json{{"index", p.index},
              {"text", p.text},
              {"logprobs", std::move(lp)},
              {"finish_reason", FinishReasonJson(p.finish)}};
}

json ChatChoiceJson(const Tokenizer& tok, const ChoicePiece& p, bool logprobs, bool delta) {
  json lp = nullptr;
  if (logprobs) {
    json content = json::array();
    for (const TokenLogprob& t : p.logprobs) {
      json item = ChatTokenJson(tok, t.token, t.logprob);
      json top = json::array();
      for (const auto& [id, v] : t.top) top.push_back(ChatTokenJson(tok, id, v));
      item["top_logprobs"] = std::move(top);
      content.push_back(std::move(item));
    }
    lp = json{{"content", std::move(content)}};
  }
  json message;
  if (delta) {
    message = json::object();
    if (p.role) message["role"] = "assistant";
    if (p.role || !p.text.empty()) message["content"] = p.text;
  } else {
    message = json{{"role", "assistant"}, {"content", p.text}};
  }
  return json{{"index", p.index},
              {delta ? "delta" : "message", std::move(message)},
              {"logprobs", std::move(lp)},
              {"finish_reason", FinishReasonJson(p.finish)}};
}

void PrependEchoLogprobs(const Tokenizer& tok, const ChoicePiece& p, int top_n, json* choice) {
  if (p.prompt_first_token < 0) return;
  json& lp = (*choice)["logprobs"];
  if (!lp.is_object()) return;
  json tokens = json::array(), token_lps = json::array(), tops = json::array(),
       offsets = json::array();
  size_t offset = 0;
  auto add = [&](int32_t id, json logprob, json top) {
    tokens.push_back(TokenDisplay(tok, id));
    token_lps.push_back(std::move(logprob));
    tops.push_back(std::move(top));
    offsets.push_back(offset);
    offset += tok.TokenBytes(id).size();
  };
  add(p.prompt_first_token, nullptr, nullptr);
  for (const TokenLogprob& t : p.prompt_logprobs) {
    json top = json::object();
    for (size_t k = 0; k < t.top.size() && static_cast<int>(k) < top_n; ++k)
      top.emplace(TokenDisplay(tok, t.top[k].first), t.top[k].second);
    add(t.token, t.logprob, std::move(top));
  }
  auto prepend = [&lp](const char* key, json head) {
    for (json& v : lp[key]) head.push_back(std::move(v));
    lp[key] = std::move(head);
  };
  prepend("tokens", std::move(tokens));
  prepend("token_logprobs", std::move(token_lps));
  prepend("top_logprobs", std::move(tops));
  prepend("text_offset", std::move(offsets));
}

void AddVllmPromptLogprobs(const Tokenizer& tok, const ChoicePiece& p, int top_n, json* choice) {
  if (p.prompt_first_token < 0) return;
  json list = json::array({nullptr});
  for (const TokenLogprob& t : p.prompt_logprobs) {
    json entry = json::object();
    entry[std::to_string(t.token)] = json{
        {"logprob", t.logprob}, {"rank", t.rank}, {"decoded_token", TokenDisplay(tok, t.token)}};
    for (size_t k = 0; k < t.top.size() && static_cast<int>(k) < top_n; ++k) {
      const auto& [id, v] = t.top[k];
      if (id == t.token) continue;  // already there, with its own rank
      entry[std::to_string(id)] = json{{"logprob", v},
                                       {"rank", static_cast<int>(k) + 1},
                                       {"decoded_token", TokenDisplay(tok, id)}};
    }
    list.push_back(std::move(entry));
  }
  (*choice)["prompt_logprobs"] = std::move(list);
}

}  // namespace bms
