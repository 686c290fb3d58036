// OpenAI request parsing: validates the JSON body of POST /v1/completions and
// /v1/chat/completions and turns it into a GenerationSpec (tokenized prompts, engine sampling
// parameters and the frontend-only options: streaming, stop strings, echo, logprobs shape).
// Every problem is an ApiError naming the offending field. Pure functions; thread-safe.
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "engine/request.h"
#include "nlohmann/json.hpp"
#include "server/server_context.h"

namespace bms {

// An OpenAI-style error: {"error": {"message", "type", "param", "code"}} with an HTTP status.
struct ApiError {
  int http_status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // "" -> null
  std::string code;   // "" -> null
};

ApiError BadRequest(std::string message, std::string param = "");
// Maps an engine/tokenizer status to an ApiError (InvalidArgument 400, ResourceExhausted 429,
// Unavailable 503, NotFound 404, anything else 500).
ApiError ErrorFromStatus(const absl::Status& status);

enum class ApiKind { kCompletion, kChat };

// Everything one OpenAI generation request asks for.
struct GenerationSpec {
  ApiKind kind = ApiKind::kCompletion;
  std::string model;
  std::vector<std::vector<int32_t>> prompts;  // [n_prompts][prompt tokens]; chat: exactly one
  std::vector<std::string> prompt_texts;      // [n_prompts]: for echo
  SamplingParams sampling;
  int n = 1;  // choices per prompt
  int priority = 0;
  bool stream = false;
  bool include_usage = false;     // stream_options.include_usage
  bool echo = false;              // completions only
  std::vector<std::string> stop;  // stop strings (handled by the frontend)
  bool include_stop_str_in_output = false;
  bool skip_special_tokens = true;
  int top_logprobs = -1;  // -1: no logprobs; else 0..20 alternatives
  // vLLM's `prompt_logprobs` (both APIs): -1 absent, else 0..20; adds choices[].prompt_logprobs.
  int prompt_logprobs = -1;

  // Completions echo + logprobs (OpenAI): the logprobs arrays start with the prompt's tokens.
  bool echo_logprobs() const { return echo && top_logprobs >= 0; }
  // What the engine scores the prompt with: enough alternatives for both uses (-1: none).
  int EnginePromptLogprobs() const {
    return std::max(echo_logprobs() ? top_logprobs : -1, prompt_logprobs);
  }
};

// Parses and validates a request body. On failure returns the error (400 with param named).
std::optional<ApiError> ParseCompletionRequest(const nlohmann::json& body, const ServerContext& ctx,
                                               GenerationSpec* spec);
std::optional<ApiError> ParseChatRequest(const nlohmann::json& body, const ServerContext& ctx,
                                         GenerationSpec* spec);

// Parses the body text as a JSON object; invalid JSON or a non-object is a 400.
std::optional<ApiError> ParseJsonBody(const std::string& text, nlohmann::json* out);

}  // namespace bms
