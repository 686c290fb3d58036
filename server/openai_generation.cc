#include "server/openai_generation.h"

#include <atomic>
#include <chrono>

#include "absl/strings/str_cat.h"

namespace bms {

using nlohmann::json;

// The output of one choice as the client sees it.
struct OpenAiGeneration::Choice {
  int index = 0;
  int prompt = 0;
  std::string text;                    // everything emitted so far (echo included)
  std::vector<TokenLogprob> logprobs;  // every generated token (when requested)
  size_t token_bytes = 0;              // bytes of the tokens in `logprobs` (for text_offset)
  size_t echo_bytes = 0;
  // Prompt scoring (echo + logprobs, prompt_logprobs): the engine's scores, from the choice's
  // first event. A streamed echo waits for them, so the prompt's text and scores go together.
  bool first_event_seen = false;
  bool prompt_scored = false;
  std::vector<TokenLogprob> prompt_logprobs;
  bool echo_deferred = false;
  int completion_tokens = 0;
  FinishReason finish = FinishReason::kNone;
  bool done = false;
};

struct OpenAiGeneration::PromptRun {
  PromptRun(const Tokenizer& tok, int n, const ChoiceStreamOptions& options)
      : stream(tok, n, options) {}
  std::string engine_id;
  std::shared_ptr<EventChannel> channel;
  RequestStream stream;
  int prompt_tokens = 0;
  bool engine_live = true;  // the engine may still send events
};

OpenAiGeneration::OpenAiGeneration(const ServerContext& ctx, GenerationSpec spec, std::string id,
                                   std::string request_id, int64_t created_unix)
    : ctx_(ctx),
      spec_(std::move(spec)),
      id_(std::move(id)),
      request_id_(std::move(request_id)),
      created_(created_unix) {}

OpenAiGeneration::~OpenAiGeneration() { Abort(); }

std::optional<ApiError> OpenAiGeneration::Submit(std::function<void()> notify) {
  static std::atomic<uint64_t> sequence{0};
  const int n = spec_.n;
  for (size_t p = 0; p < spec_.prompts.size(); ++p) {
    for (int c = 0; c < n; ++c) {
      auto choice = std::make_unique<Choice>();
      choice->index = static_cast<int>(p) * n + c;
      choice->prompt = static_cast<int>(p);
      if (spec_.echo) {
        choice->text = spec_.prompt_texts[p];
        choice->echo_bytes = choice->text.size();
        choice->echo_deferred = spec_.stream && spec_.echo_logprobs();
      }
      choices_.push_back(std::move(choice));
    }
  }
  live_choices_ = static_cast<int>(choices_.size());
  for (size_t p = 0; p < spec_.prompts.size(); ++p) {
    GenerateRequest req;
    req.request_id = absl::StrCat(request_id_, "#", p, "#", sequence.fetch_add(1));
    req.prompt_ids = spec_.prompts[p];
    req.sampling = spec_.sampling;
    req.sampling.logprobs = spec_.top_logprobs;
    req.prompt_logprobs = spec_.EnginePromptLogprobs();
    req.n = n;
    req.priority = spec_.priority;
    ChoiceStreamOptions options;
    options.stop = spec_.stop;
    options.include_stop_str_in_output = spec_.include_stop_str_in_output;
    options.skip_special_tokens = spec_.skip_special_tokens;
    options.logprobs = spec_.top_logprobs >= 0;
    auto run = std::make_unique<PromptRun>(*ctx_.tokenizer, n, options);
    run->engine_id = req.request_id;
    run->prompt_tokens = static_cast<int>(req.prompt_ids.size());
    auto channel = ctx_.engine->Submit(std::move(req));
    if (!channel.ok()) {
      Abort();
      return ErrorFromStatus(channel.status());
    }
    run->channel = *channel;
    run->channel->SetNotifier(notify);
    runs_.push_back(std::move(run));
  }
  return std::nullopt;
}

void OpenAiGeneration::Abort() {
  if (aborted_) return;
  aborted_ = true;
  for (auto& run : runs_) {
    if (!run->engine_live) continue;
    run->channel->Abandon();
    (void)ctx_.engine->Cancel(run->engine_id);  // NotFound when it just finished: fine
    run->engine_live = false;
  }
}

void OpenAiGeneration::HandleEvent(size_t prompt, const GenerationEvent& ev,
                                   std::vector<ChoicePiece>* pieces) {
  PromptRun& run = *runs_[prompt];
  ChoiceDelta d = run.stream.Consume(ev);
  if (d.index < 0) {  // an engine bug (unknown choice): fail the request
    if (!error_) error_ = ErrorFromStatus(d.error);
    return;
  }
  int index = static_cast<int>(prompt) * spec_.n + d.index;
  Choice& c = *choices_[index];
  if (c.done) return;
  if (ttft_seconds_ == 0 && ev.first_token_time != Clock::time_point{} &&
      ev.arrival_time != Clock::time_point{}) {
    ttft_seconds_ = std::chrono::duration<double>(ev.first_token_time - ev.arrival_time).count();
  }
  ChoicePiece& piece = (*pieces)[index];
  if (!c.first_event_seen) {
    c.first_event_seen = true;
    // The first token's event carries the prompt's scores (none when it ended before a token).
    // (Or ends it at once when max_tokens is 0: a length finish with no token.)
    if (spec_.EnginePromptLogprobs() >= 0 &&
        (!ev.token_ids.empty() || ev.finish == FinishReason::kLength)) {
      c.prompt_scored = true;
      c.prompt_logprobs = ev.prompt_logprobs;
      piece.prompt_first_token = spec_.prompts[prompt].front();
      piece.prompt_logprobs = ev.prompt_logprobs;
    }
    if (c.echo_deferred) piece.text = spec_.prompt_texts[prompt];
  }
  c.completion_tokens = d.completion_tokens;
  if (!d.logprobs.empty() && piece.logprobs.empty()) {
    piece.text_offset = c.echo_bytes + c.token_bytes;
  }
  for (TokenLogprob& lp : d.logprobs) {
    c.token_bytes += ctx_.tokenizer->TokenBytes(lp.token).size();
    c.logprobs.push_back(lp);
    piece.logprobs.push_back(std::move(lp));
  }
  piece.text += d.text;
  c.text += d.text;
  if (d.finish == FinishReason::kNone) return;
  if (d.finish == FinishReason::kError && !error_) {
    error_ = ErrorFromStatus(d.error.ok() ? absl::InternalError("engine error") : d.error);
    if (error_->http_status < 500) error_->http_status = 500;
    error_->type = "server_error";
  }
  c.done = true;
  c.finish = d.finish;
  piece.finish = d.finish;
  --live_choices_;
  if (run.engine_live && run.stream.NeedsEngineCancel()) {
    // Every choice of this prompt ended here (stop strings): free the engine's slots now.
    run.engine_live = false;
    run.channel->Abandon();
    (void)ctx_.engine->Cancel(run.engine_id);
  } else if (run.engine_live && run.stream.ChoiceNeedsEngineCancel(d.index)) {
    // This choice ended on a stop string while others go on: free its slot now.
    (void)ctx_.engine->CancelChoice(run.engine_id, d.index);  // NotFound if it just ended
  }
  if (run.stream.AllFinished() && !run.stream.NeedsEngineCancel()) run.engine_live = false;
}

void OpenAiGeneration::AddPromptScores(const ChoicePiece& piece, json* choice) const {
  if (spec_.kind == ApiKind::kCompletion && spec_.echo_logprobs())
    PrependEchoLogprobs(*ctx_.tokenizer, piece, spec_.top_logprobs, choice);
  if (spec_.prompt_logprobs >= 0)
    AddVllmPromptLogprobs(*ctx_.tokenizer, piece, spec_.prompt_logprobs, choice);
}

std::string OpenAiGeneration::Frame(const json& j) const {
  return absl::StrCat("data: ", j.dump(-1, ' ', false, json::error_handler_t::replace), "\n\n");
}

void OpenAiGeneration::AppendChunk(const std::vector<ChoicePiece>& pieces, std::string* sse) const {
  bool chat = spec_.kind == ApiKind::kChat;
  bool logprobs = spec_.top_logprobs >= 0;
  for (const ChoicePiece& p : pieces) {
    if (p.text.empty() && p.logprobs.empty() && p.finish == FinishReason::kNone && !p.role) {
      continue;
    }
    json choice = chat ? ChatChoiceJson(*ctx_.tokenizer, p, logprobs, /*delta=*/true)
                       : CompletionChoiceJson(*ctx_.tokenizer, p, logprobs);
    AddPromptScores(p, &choice);
    json chunk{{"id", id_},
               {"object", chat ? "chat.completion.chunk" : "text_completion"},
               {"created", created_},
               {"model", spec_.model},
               {"choices", json::array({std::move(choice)})}};
    if (spec_.include_usage) chunk["usage"] = nullptr;
    *sse += Frame(chunk);
  }
}

bool OpenAiGeneration::Drain(std::string* sse) {
  std::vector<ChoicePiece> pieces(choices_.size());
  for (size_t i = 0; i < pieces.size(); ++i) pieces[i].index = static_cast<int>(i);
  if (spec_.stream && !stream_started_) {
    stream_started_ = true;
    for (size_t i = 0; i < pieces.size(); ++i) {
      if (spec_.kind == ApiKind::kChat) pieces[i].role = true;
      if (spec_.echo && !choices_[i]->echo_deferred) pieces[i].text = choices_[i]->text;
    }
  }
  for (size_t p = 0; p < runs_.size(); ++p) {
    for (const GenerationEvent& ev : runs_[p]->channel->DrainAll()) HandleEvent(p, ev, &pieces);
  }
  bool finished = live_choices_ == 0;
  if (spec_.stream && sse != nullptr && !done_sent_) {
    if (error_) {
      *sse += Frame(ErrorJson(*error_));
    } else {
      AppendChunk(pieces, sse);
      if (finished && spec_.include_usage) {
        json chunk{
            {"id", id_},
            {"object", spec_.kind == ApiKind::kChat ? "chat.completion.chunk" : "text_completion"},
            {"created", created_},
            {"model", spec_.model},
            {"choices", json::array()},
            {"usage", UsageJson(prompt_tokens(), completion_tokens())}};
        *sse += Frame(chunk);
      }
    }
    if (finished || error_) {
      *sse += "data: [DONE]\n\n";
      done_sent_ = true;
    }
  }
  if (error_ && !finished) {
    Abort();  // the engine failed this request: stop waiting for the rest
    return true;
  }
  return finished;
}

json OpenAiGeneration::FinalResponse() const {
  bool chat = spec_.kind == ApiKind::kChat;
  bool logprobs = spec_.top_logprobs >= 0;
  json choices = json::array();
  for (const auto& c : choices_) {
    ChoicePiece p;
    p.index = c->index;
    p.text = c->text;
    p.logprobs = c->logprobs;
    p.text_offset = c->echo_bytes;
    p.finish = c->finish;
    if (c->prompt_scored) {
      p.prompt_first_token = spec_.prompts[c->prompt].front();
      p.prompt_logprobs = c->prompt_logprobs;
    }
    json choice = chat ? ChatChoiceJson(*ctx_.tokenizer, p, logprobs, /*delta=*/false)
                       : CompletionChoiceJson(*ctx_.tokenizer, p, logprobs);
    AddPromptScores(p, &choice);
    choices.push_back(std::move(choice));
  }
  return json{{"id", id_},
              {"object", chat ? "chat.completion" : "text_completion"},
              {"created", created_},
              {"model", spec_.model},
              {"choices", std::move(choices)},
              {"usage", UsageJson(prompt_tokens(), completion_tokens())}};
}

int64_t OpenAiGeneration::prompt_tokens() const {
  int64_t total = 0;
  for (const auto& run : runs_) total += run->prompt_tokens;
  return total;
}

int64_t OpenAiGeneration::completion_tokens() const {
  int64_t total = 0;
  for (const auto& c : choices_) total += c->completion_tokens;
  return total;
}

double OpenAiGeneration::ttft_seconds() const { return ttft_seconds_; }

}  // namespace bms
