#include "server/openai_request.h"

#include <cmath>
#include <limits>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace bms {
namespace {

using nlohmann::json;
using MaybeError = std::optional<ApiError>;

constexpr int kMaxTopLogprobs = 20;

// A field that is absent or JSON null counts as not given (the OpenAI clients send null).
const json* Field(const json& body, const char* key) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

MaybeError GetInt(const json& body, const char* key, int64_t lo, int64_t hi, int64_t* out) {
  const json* v = Field(body, key);
  if (v == nullptr) return std::nullopt;
  if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(hi)) {
    return BadRequest(absl::StrCat("'", key, "' must be at most ", hi), key);
  }
  if (!v->is_number_integer()) {
    return BadRequest(absl::StrCat("'", key, "' must be an integer"), key);
  }
  int64_t x = v->get<int64_t>();
  if (x < lo || x > hi) {
    return BadRequest(absl::StrCat("'", key, "' must be in [", lo, ", ", hi, "], got ", x), key);
  }
  *out = x;
  return std::nullopt;
}

MaybeError GetIntField(const json& body, const char* key, int64_t lo, int64_t hi, int* out) {
  int64_t x = *out;
  if (auto e = GetInt(body, key, lo, hi, &x)) return e;
  *out = static_cast<int>(x);
  return std::nullopt;
}

MaybeError GetFloat(const json& body, const char* key, double lo, double hi, float* out) {
  const json* v = Field(body, key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_number()) return BadRequest(absl::StrCat("'", key, "' must be a number"), key);
  double x = v->get<double>();
  if (!std::isfinite(x) || x < lo || x > hi) {
    return BadRequest(absl::StrCat("'", key, "' must be in [", lo, ", ", hi, "]"), key);
  }
  *out = static_cast<float>(x);
  return std::nullopt;
}

MaybeError GetBool(const json& body, const char* key, bool* out) {
  const json* v = Field(body, key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_boolean()) return BadRequest(absl::StrCat("'", key, "' must be a boolean"), key);
  *out = v->get<bool>();
  return std::nullopt;
}

MaybeError CheckTokenId(const json& v, int vocab_size, const char* param) {
  if (!v.is_number_integer()) {
    return BadRequest(absl::StrCat("'", param, "' token ids must be integers"), param);
  }
  if (v.is_number_unsigned() ? v.get<uint64_t>() >= static_cast<uint64_t>(vocab_size)
                             : (v.get<int64_t>() < 0 || v.get<int64_t>() >= vocab_size)) {
    return BadRequest(
        absl::StrCat("'", param, "' token id ", v.dump(), " is out of range [0, ", vocab_size, ")"),
        param);
  }
  return std::nullopt;
}

MaybeError CheckModel(const json& body, const ServerContext& ctx, GenerationSpec* spec) {
  spec->model = ctx.served_model_name;
  const json* v = Field(body, "model");
  if (v == nullptr) return std::nullopt;
  if (!v->is_string()) return BadRequest("'model' must be a string", "model");
  if (v->get<std::string>() != ctx.served_model_name) {
    ApiError e = BadRequest(
        absl::StrCat("The model '", v->get<std::string>(), "' does not exist; this server serves '",
                     ctx.served_model_name, "'"),
        "model");
    e.code = "model_not_found";
    return e;
  }
  return std::nullopt;
}

MaybeError ParseStop(const json& body, const ServerLimits& limits, GenerationSpec* spec) {
  const json* v = Field(body, "stop");
  if (v == nullptr) return std::nullopt;
  auto add = [&](const std::string& s) -> MaybeError {
    if (static_cast<int64_t>(s.size()) > limits.max_stop_string_bytes) {
      return BadRequest(absl::StrCat("'stop' strings may be at most ", limits.max_stop_string_bytes,
                                     " bytes long (--max-stop-string-bytes)"),
                        "stop");
    }
    if (!s.empty()) spec->stop.push_back(s);
    return std::nullopt;
  };
  if (v->is_string()) return add(v->get<std::string>());
  if (!v->is_array()) return BadRequest("'stop' must be a string or an array of strings", "stop");
  if (static_cast<int64_t>(v->size()) > limits.max_stop_strings) {
    return BadRequest(absl::StrCat("'stop' may hold at most ", limits.max_stop_strings,
                                   " strings (--max-stop-strings)"),
                      "stop");
  }
  for (const json& s : *v) {
    if (!s.is_string()) return BadRequest("'stop' must be a string or an array of strings", "stop");
    if (auto e = add(s.get<std::string>())) return e;
  }
  return std::nullopt;
}

// The sampling and frontend fields both endpoints share.
MaybeError ParseCommon(const json& body, const ServerContext& ctx, GenerationSpec* spec) {
  if (auto e = CheckModel(body, ctx, spec)) return e;
  SamplingParams& sp = spec->sampling;
  if (auto e = GetFloat(body, "temperature", 0, 2, &sp.temperature)) return e;
  if (auto e = GetFloat(body, "top_p", 0, 1, &sp.top_p)) return e;
  if (sp.top_p <= 0) return BadRequest("'top_p' must be in (0, 1]", "top_p");
  if (auto e = GetIntField(body, "top_k", -1, ctx.vocab_size, &sp.top_k)) return e;
  if (sp.top_k < 0) sp.top_k = 0;  // -1 (vLLM) and 0 both mean disabled
  if (auto e = GetFloat(body, "min_p", 0, 1, &sp.min_p)) return e;
  if (auto e = GetFloat(body, "presence_penalty", -2, 2, &sp.presence_penalty)) return e;
  if (auto e = GetFloat(body, "frequency_penalty", -2, 2, &sp.frequency_penalty)) return e;
  if (auto e = GetFloat(body, "repetition_penalty", 0, 100, &sp.repetition_penalty)) return e;
  if (sp.repetition_penalty <= 0) {
    return BadRequest("'repetition_penalty' must be > 0", "repetition_penalty");
  }
  if (const json* v = Field(body, "logit_bias")) {
    if (!v->is_object()) return BadRequest("'logit_bias' must be an object", "logit_bias");
    if (static_cast<int64_t>(v->size()) > ctx.limits.max_logit_bias) {
      return BadRequest(absl::StrCat("'logit_bias' may hold at most ", ctx.limits.max_logit_bias,
                                     " entries (--max-logit-bias)"),
                        "logit_bias");
    }
    for (auto it = v->begin(); it != v->end(); ++it) {
      int64_t id = 0;
      if (!absl::SimpleAtoi(it.key(), &id) || id < 0 || id >= ctx.vocab_size) {
        return BadRequest(absl::StrCat("'logit_bias' key '", it.key(),
                                       "' is not a token id in [0, ", ctx.vocab_size, ")"),
                          "logit_bias");
      }
      if (!it->is_number() || !std::isfinite(it->get<double>()) || it->get<double>() < -100 ||
          it->get<double>() > 100) {
        return BadRequest("'logit_bias' values must be numbers in [-100, 100]", "logit_bias");
      }
      sp.logit_bias.emplace_back(static_cast<int32_t>(id), it->get<float>());
    }
  }
  if (const json* v = Field(body, "seed")) {
    if (!v->is_number_integer()) return BadRequest("'seed' must be an integer", "seed");
    sp.seed =
        v->is_number_unsigned() ? v->get<uint64_t>() : static_cast<uint64_t>(v->get<int64_t>());
  }
  if (auto e = GetIntField(body, "n", 1, ctx.limits.max_n, &spec->n)) return e;
  if (const json* v = Field(body, "best_of")) {
    if (!v->is_number_integer()) return BadRequest("'best_of' must be an integer", "best_of");
    if (v->get<int64_t>() != spec->n) {
      return BadRequest("'best_of' different from 'n' is not supported", "best_of");
    }
  }
  if (auto e = GetIntField(body, "min_tokens", 0, ctx.limits.max_tokens_limit, &sp.min_tokens)) {
    return e;
  }
  if (auto e = GetBool(body, "ignore_eos", &sp.ignore_eos)) return e;
  if (const json* v = Field(body, "stop_token_ids")) {
    if (!v->is_array()) return BadRequest("'stop_token_ids' must be an array", "stop_token_ids");
    if (static_cast<int64_t>(v->size()) > ctx.limits.max_stop_token_ids) {
      return BadRequest(
          absl::StrCat("'stop_token_ids' may hold at most ", ctx.limits.max_stop_token_ids, " ids"),
          "stop_token_ids");
    }
    for (const json& t : *v) {
      if (auto e = CheckTokenId(t, ctx.vocab_size, "stop_token_ids")) return e;
      sp.stop_token_ids.push_back(t.get<int32_t>());
    }
  }
  if (auto e = ParseStop(body, ctx.limits, spec)) return e;
  if (auto e = GetBool(body, "include_stop_str_in_output", &spec->include_stop_str_in_output)) {
    return e;
  }
  if (auto e = GetBool(body, "skip_special_tokens", &spec->skip_special_tokens)) return e;
  if (auto e = GetIntField(body, "priority", -1000000, 1000000, &spec->priority)) return e;
  if (auto e = GetIntField(body, "prompt_logprobs", 0, kMaxTopLogprobs, &spec->prompt_logprobs)) {
    return e;
  }
  if (auto e = GetBool(body, "stream", &spec->stream)) return e;
  if (const json* v = Field(body, "stream_options")) {
    if (!v->is_object()) return BadRequest("'stream_options' must be an object", "stream_options");
    if (!spec->stream) {
      return BadRequest("'stream_options' is only allowed when 'stream' is true", "stream_options");
    }
    if (auto e = GetBool(*v, "include_usage", &spec->include_usage)) {
      e->param = "stream_options.include_usage";
      return e;
    }
  }
  if (const json* v = Field(body, "user"); v != nullptr && !v->is_string()) {
    return BadRequest("'user' must be a string", "user");
  }
  return std::nullopt;
}

MaybeError CheckMaxTokens(GenerationSpec* spec, const char* param) {
  if (spec->sampling.min_tokens > spec->sampling.max_tokens) {
    return BadRequest("'min_tokens' must not exceed the maximum number of tokens", "min_tokens");
  }
  (void)param;
  return std::nullopt;
}

MaybeError CheckPromptLength(const std::vector<int32_t>& ids, const ServerContext& ctx,
                             const char* param) {
  if (static_cast<int64_t>(ids.size()) > ctx.limits.max_prompt_tokens) {
    return BadRequest(absl::StrCat("'", param, "' is too long: ", ids.size(),
                                   " tokens, the limit is ", ctx.limits.max_prompt_tokens),
                      param);
  }
  return std::nullopt;
}

// Encodes text; "" becomes the end-of-text token (GPT-NeoX models use it as a document start).
MaybeError EncodePrompt(const std::string& text, const ServerContext& ctx, const char* param,
                        std::vector<int32_t>* ids) {
  auto enc = ctx.tokenizer->Encode(text);
  if (!enc.ok()) {
    return BadRequest(absl::StrCat("'", param, "': ", enc.status().message()), param);
  }
  *ids = std::move(*enc);
  if (ids->empty()) ids->push_back(ctx.tokenizer->eos_token_id());
  return CheckPromptLength(*ids, ctx, param);
}

}  // namespace

ApiError BadRequest(std::string message, std::string param) {
  ApiError e;
  e.message = std::move(message);
  e.param = std::move(param);
  return e;
}

ApiError ErrorFromStatus(const absl::Status& status) {
  ApiError e;
  e.message = std::string(status.message());
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      e.http_status = 400;
      break;
    case absl::StatusCode::kResourceExhausted:
      e.http_status = 429;
      e.type = "rate_limit_error";
      e.code = "queue_full";
      break;
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kFailedPrecondition:
      e.http_status = 503;
      e.type = "service_unavailable";
      break;
    case absl::StatusCode::kNotFound:
      e.http_status = 404;
      e.type = "not_found_error";
      break;
    default:
      e.http_status = 500;
      e.type = "server_error";
      break;
  }
  return e;
}

std::optional<ApiError> ParseJsonBody(const std::string& text, nlohmann::json* out) {
  *out = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (out->is_discarded()) return BadRequest("the request body is not valid JSON");
  if (!out->is_object()) return BadRequest("the request body must be a JSON object");
  return std::nullopt;
}

std::optional<ApiError> ParseCompletionRequest(const json& body, const ServerContext& ctx,
                                               GenerationSpec* spec) {
  spec->kind = ApiKind::kCompletion;
  if (auto e = ParseCommon(body, ctx, spec)) return e;
  if (const json* v = Field(body, "suffix");
      v != nullptr && !(v->is_string() && v->get<std::string>().empty())) {
    return BadRequest("'suffix' is not supported", "suffix");
  }
  spec->sampling.max_tokens = ctx.limits.max_tokens_default;
  // 0 scores the prompt without generating (echo + logprobs or prompt_logprobs; checked below).
  if (auto e = GetIntField(body, "max_tokens", 0, ctx.limits.max_tokens_limit,
                           &spec->sampling.max_tokens)) {
    return e;
  }
  if (auto e = CheckMaxTokens(spec, "max_tokens")) return e;
  if (auto e = GetBool(body, "echo", &spec->echo)) return e;
  if (auto e = GetIntField(body, "logprobs", 0, kMaxTopLogprobs, &spec->top_logprobs)) return e;
  if (spec->sampling.max_tokens == 0 && spec->EnginePromptLogprobs() < 0) {
    return BadRequest(
        "'max_tokens' 0 only scores the prompt: it needs 'echo' with 'logprobs', or "
        "'prompt_logprobs'; otherwise it must be >= 1",
        "max_tokens");
  }

  const json* p = Field(body, "prompt");
  if (p == nullptr) return BadRequest("'prompt' is required", "prompt");
  auto add_text = [&](const json& s) -> MaybeError {
    std::vector<int32_t> ids;
    if (auto e = EncodePrompt(s.get<std::string>(), ctx, "prompt", &ids)) return e;
    spec->prompts.push_back(std::move(ids));
    spec->prompt_texts.push_back(s.get<std::string>());
    return std::nullopt;
  };
  auto add_ids = [&](const json& arr) -> MaybeError {
    if (arr.empty()) return BadRequest("'prompt' token arrays must not be empty", "prompt");
    std::vector<int32_t> ids;
    for (const json& t : arr) {
      if (auto e = CheckTokenId(t, ctx.vocab_size, "prompt")) return e;
      ids.push_back(t.get<int32_t>());
    }
    if (auto e = CheckPromptLength(ids, ctx, "prompt")) return e;
    spec->prompt_texts.push_back(ctx.tokenizer->Decode(ids));
    spec->prompts.push_back(std::move(ids));
    return std::nullopt;
  };
  const char* kShape =
      "'prompt' must be a string, an array of strings, an array of token ids or an array of "
      "token-id arrays";
  if (p->is_string()) {
    if (auto e = add_text(*p)) return e;
  } else if (p->is_array() && !p->empty() && (*p)[0].is_number()) {
    if (auto e = add_ids(*p)) return e;
  } else if (p->is_array() && !p->empty()) {
    for (const json& item : *p) {
      if (item.is_string()) {
        if (auto e = add_text(item)) return e;
      } else if (item.is_array()) {
        if (auto e = add_ids(item)) return e;
      } else {
        return BadRequest(kShape, "prompt");
      }
    }
  } else {
    return BadRequest(p->is_array() ? "'prompt' must not be empty" : kShape, "prompt");
  }
  if (static_cast<int64_t>(spec->prompts.size()) * spec->n > 256) {
    return BadRequest("too many choices: prompts x n must be at most 256", "n");
  }
  return std::nullopt;
}

std::optional<ApiError> ParseChatRequest(const json& body, const ServerContext& ctx,
                                         GenerationSpec* spec) {
  spec->kind = ApiKind::kChat;
  if (auto e = ParseCommon(body, ctx, spec)) return e;
  if (const json* v = Field(body, "tools"); v != nullptr && !(v->is_array() && v->empty())) {
    return BadRequest("'tools' (function calling) is not supported", "tools");
  }
  if (const json* v = Field(body, "response_format")) {
    if (!v->is_object() || v->value("type", "") != "text") {
      return BadRequest("only 'response_format' {\"type\": \"text\"} is supported",
                        "response_format");
    }
  }
  bool logprobs = false;
  if (auto e = GetBool(body, "logprobs", &logprobs)) return e;
  int top = 0;
  if (auto e = GetIntField(body, "top_logprobs", 0, kMaxTopLogprobs, &top)) return e;
  if (Field(body, "top_logprobs") != nullptr && !logprobs) {
    return BadRequest("'top_logprobs' requires 'logprobs' to be true", "top_logprobs");
  }
  spec->top_logprobs = logprobs ? top : -1;

  const json* msgs = Field(body, "messages");
  if (msgs == nullptr) return BadRequest("'messages' is required", "messages");
  if (!msgs->is_array()) return BadRequest("'messages' must be an array", "messages");
  if (msgs->empty()) return BadRequest("'messages' must not be empty", "messages");
  if (static_cast<int64_t>(msgs->size()) > ctx.limits.max_messages) {
    return BadRequest(absl::StrCat("'messages' may hold at most ", ctx.limits.max_messages,
                                   " messages (--max-messages)"),
                      "messages");
  }
  std::vector<ChatMessage> messages;
  for (size_t i = 0; i < msgs->size(); ++i) {
    const json& m = (*msgs)[i];
    std::string where = absl::StrCat("messages[", i, "]");
    if (!m.is_object()) return BadRequest(absl::StrCat("'", where, "' must be an object"), where);
    const json* role = Field(m, "role");
    if (role == nullptr || !role->is_string()) {
      return BadRequest(absl::StrCat("'", where, ".role' must be a string"), where + ".role");
    }
    ChatMessage msg;
    msg.role = role->get<std::string>();
    if (msg.role == "developer") msg.role = "system";
    if (msg.role != "system" && msg.role != "user" && msg.role != "assistant") {
      return BadRequest(absl::StrCat("'", where, ".role' must be system, user or assistant, got '",
                                     role->get<std::string>(), "'"),
                        where + ".role");
    }
    const json* content = Field(m, "content");
    if (content == nullptr) {
      if (msg.role != "assistant") {
        return BadRequest(absl::StrCat("'", where, ".content' is required"), where + ".content");
      }
    } else if (content->is_string()) {
      msg.content = content->get<std::string>();
    } else if (content->is_array()) {
      for (const json& part : *content) {
        if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") ||
            !part["text"].is_string()) {
          return BadRequest(absl::StrCat("'", where,
                                         ".content' parts must be {\"type\": \"text\", \"text\": "
                                         "string} (other content types are not supported)"),
                            where + ".content");
        }
        msg.content += part["text"].get<std::string>();
      }
    } else {
      return BadRequest(absl::StrCat("'", where, ".content' must be a string or an array of parts"),
                        where + ".content");
    }
    messages.push_back(std::move(msg));
  }
  auto text = ctx.chat_template.Apply(messages);
  if (!text.ok()) return BadRequest(std::string(text.status().message()), "messages");
  std::vector<int32_t> ids;
  if (auto e = EncodePrompt(*text, ctx, "messages", &ids)) return e;
  spec->prompt_texts.push_back(*text);

  // max_completion_tokens wins over the deprecated max_tokens; default: the rest of the context.
  int64_t room = std::max<int64_t>(1, ctx.max_sequence_length - static_cast<int64_t>(ids.size()));
  spec->sampling.max_tokens =
      static_cast<int>(std::min<int64_t>(room, ctx.limits.max_tokens_limit));
  const char* key = Field(body, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
  if (auto e = GetIntField(body, key, 1, ctx.limits.max_tokens_limit, &spec->sampling.max_tokens)) {
    return e;
  }
  if (auto e = CheckMaxTokens(spec, key)) return e;
  spec->prompts.push_back(std::move(ids));
  return std::nullopt;
}

}  // namespace bms
