// OpenAI response JSON: error objects, usage, and the per-choice objects of completions and
// chat completions (whole responses and streamed chunks), with logprobs in OpenAI's shapes:
//   completions: {"tokens": [...], "token_logprobs": [...], "top_logprobs": [{tok: lp}],
//                 "text_offset": [...]}
//   chat:        {"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}]}
// Token strings that are not valid UTF-8 on their own are written as "bytes:\xNN..." (as
// OpenAI does). Pure functions; thread-safe.
#pragma once

#include <string>
#include <vector>

#include "engine/request.h"
#include "nlohmann/json.hpp"
#include "server/openai_request.h"
#include "tokenizer/tokenizer.h"

namespace bms {

// What one choice contributes to one response or one streamed chunk.
struct ChoicePiece {
  int index = 0;
  std::string text;                    // new text (chunk) or the whole text (response)
  std::vector<TokenLogprob> logprobs;  // the tokens this piece covers (when requested)
  size_t text_offset = 0;              // completions: text offset of the first token
  FinishReason finish = FinishReason::kNone;
  bool role = false;  // chat stream: this chunk carries delta.role
  // Prompt scores, in the piece that carries a choice's first token (or the whole response):
  // the prompt's first token (-1: no prompt part here) and the scores of prompt tokens 1.. .
  int32_t prompt_first_token = -1;
  std::vector<TokenLogprob> prompt_logprobs;
};

nlohmann::json ErrorJson(const ApiError& error);
nlohmann::json UsageJson(int64_t prompt_tokens, int64_t completion_tokens);
// "stop", "length", "abort" or null.
nlohmann::json FinishReasonJson(FinishReason r);

// One element of "choices". `logprobs`: whether the request asked for them (else null).
// `delta`: chat streaming shape (delta instead of message).
nlohmann::json CompletionChoiceJson(const Tokenizer& tok, const ChoicePiece& piece, bool logprobs);
nlohmann::json ChatChoiceJson(const Tokenizer& tok, const ChoicePiece& piece, bool logprobs,
                              bool delta);

// Completions echo + logprobs (OpenAI): puts the prompt's tokens ahead of choice["logprobs"]'s
// arrays (the first prompt token with null logprob and top_logprobs; top lists cut to `top_n`;
// text offsets from 0, so the generated tokens' offsets follow the echoed prompt). No-op when
// the piece has no prompt part.
void PrependEchoLogprobs(const Tokenizer& tok, const ChoicePiece& piece, int top_n,
                         nlohmann::json* choice);
// vLLM's prompt_logprobs: choice["prompt_logprobs"] = [null, then per scored prompt token
// {"<token id>": {"logprob", "rank", "decoded_token"}} for the token itself and its `top_n` most
// likely alternatives]. No-op when the piece has no prompt part.
void AddVllmPromptLogprobs(const Tokenizer& tok, const ChoicePiece& piece, int top_n,
                           nlohmann::json* choice);

// The token's display string: its text when valid UTF-8, else "bytes:\xNN..." escapes.
std::string TokenDisplay(const Tokenizer& tok, int32_t id);
bool IsValidUtf8(const std::string& s);

}  // namespace bms
