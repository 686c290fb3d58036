// OpenAiGeneration: one OpenAI completions / chat request in flight. Submits one engine request
// per prompt (each with n choices), turns the engine's token events into text (incremental
// detokenizing, stop strings: a matched stop string cancels the engine request once every
// choice of that prompt is done) and produces either SSE frames or one final JSON response.
// Not thread-safe: the owner calls it from one strand; only the notifier runs on the engine
// thread (and must just schedule a Drain).
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "nlohmann/json.hpp"
#include "server/choice_stream.h"
#include "server/openai_request.h"
#include "server/openai_response.h"
#include "server/server_context.h"

namespace bms {

class OpenAiGeneration {
 public:
  // `id` is the response id ("cmpl-..." / "chatcmpl-..."); `request_id` names engine requests.
  OpenAiGeneration(const ServerContext& ctx, GenerationSpec spec, std::string id,
                   std::string request_id, int64_t created_unix);
  ~OpenAiGeneration();

  // Submits every prompt. `notify` is installed on each event channel (engine thread; must be
  // cheap). On failure everything already submitted is cancelled and the error returned.
  std::optional<ApiError> Submit(std::function<void()> notify);

  // Consumes every event available now. Streaming: appends SSE frames (including the final
  // usage chunk and [DONE]) to *sse. Returns true once every choice has finished.
  bool Drain(std::string* sse);

  // Non-streaming, after Drain returned true: the response body, or the error to send.
  std::optional<ApiError> error() const { return error_; }
  nlohmann::json FinalResponse() const;

  // The client went away: cancel every engine request still live. Idempotent.
  void Abort();

  // For the request log line.
  int64_t prompt_tokens() const;
  int64_t completion_tokens() const;
  double ttft_seconds() const;  // first token time minus arrival; 0 when none
  const GenerationSpec& spec() const { return spec_; }

 private:
  struct Choice;
  struct PromptRun;

  void HandleEvent(size_t prompt, const GenerationEvent& ev, std::vector<ChoicePiece>* pieces);
  void AppendChunk(const std::vector<ChoicePiece>& pieces, std::string* sse) const;
  // The prompt's scores in a choice object: echo + logprobs (completions) and/or vLLM's
  // prompt_logprobs.
  void AddPromptScores(const ChoicePiece& piece, nlohmann::json* choice) const;
  std::string Frame(const nlohmann::json& j) const;

  const ServerContext& ctx_;
  GenerationSpec spec_;
  std::string id_;
  std::string request_id_;
  int64_t created_;
  std::vector<std::unique_ptr<PromptRun>> runs_;
  std::vector<std::unique_ptr<Choice>> choices_;  // [n_prompts * n]
  int live_choices_ = 0;
  bool stream_started_ = false;
  bool done_sent_ = false;
  bool aborted_ = false;
  std::optional<ApiError> error_;
  double ttft_seconds_ = 0;
};

}  // namespace bms
