#include "server/choice_stream.h"

#include <utility>

namespace bms {

void ChoiceDelta::Append(ChoiceDelta later) {
  token_ids.insert(token_ids.end(), later.token_ids.begin(), later.token_ids.end());
  text += later.text;
  for (TokenLogprob& lp : later.logprobs) logprobs.push_back(std::move(lp));
  if (later.finish != FinishReason::kNone) {
    finish = later.finish;
    stop_string = std::move(later.stop_string);
    stop_token = later.stop_token;
    error = std::move(later.error);
  }
  if (later.prompt_tokens > 0) prompt_tokens = later.prompt_tokens;
  completion_tokens = later.completion_tokens;
}

ChoiceStream::ChoiceStream(const Tokenizer& tokenizer, int index,
                           const ChoiceStreamOptions& options)
    : index_(index),
      include_stop_(options.include_stop_str_in_output),
      logprobs_(options.logprobs),
      decoder_(tokenizer, options.skip_special_tokens),
      matcher_(options.stop, options.include_stop_str_in_output) {}

ChoiceDelta ChoiceStream::Consume(const GenerationEvent& ev) {
  ChoiceDelta d;
  d.index = index_;
  d.prompt_tokens = ev.prompt_tokens;
  d.completion_tokens = completion_tokens_;
  if (finished_) return d;

  const size_t n = ev.token_ids.size();
  for (size_t i = 0; i < n; ++i) {
    const int32_t id = ev.token_ids[i];
    d.token_ids.push_back(id);
    if (logprobs_ && i < ev.logprobs.size()) d.logprobs.push_back(ev.logprobs[i]);
    ++completion_tokens_;
    // The id that ended the choice (EOS or a stop_token_ids entry) adds no text unless asked.
    const bool ending_stop_id =
        ev.finish == FinishReason::kStop && ev.stop_token >= 0 && i + 1 == n && id == ev.stop_token;
    std::string piece = (ending_stop_id && !include_stop_) ? std::string() : decoder_.Add(id);
    d.text += matcher_.Add(piece);
    if (matcher_.stopped()) {
      finished_ = true;
      d.finish = FinishReason::kStop;
      d.stop_string = matcher_.matched();
      d.completion_tokens = completion_tokens_;
      return d;
    }
  }
  if (ev.finish != FinishReason::kNone) {
    d.text += matcher_.Add(decoder_.Flush());
    if (matcher_.stopped()) {
      d.finish = FinishReason::kStop;
      d.stop_string = matcher_.matched();
    } else {
      d.text += matcher_.Flush();
      d.finish = ev.finish;
      d.stop_token = ev.finish == FinishReason::kStop ? ev.stop_token : -1;
      d.error = ev.error;
    }
    finished_ = true;
  }
  d.completion_tokens = completion_tokens_;
  return d;
}

RequestStream::RequestStream(const Tokenizer& tokenizer, int n, const ChoiceStreamOptions& options)
    : engine_finished_(n > 0 ? n : 1, false) {
  choices_.reserve(engine_finished_.size());
  for (size_t i = 0; i < engine_finished_.size(); ++i) {
    choices_.emplace_back(tokenizer, static_cast<int>(i), options);
  }
}

ChoiceDelta RequestStream::Consume(const GenerationEvent& ev) {
  if (ev.choice < 0 || ev.choice >= n()) {
    ChoiceDelta d;
    d.index = -1;
    d.finish = FinishReason::kError;
    d.error = absl::InternalError("engine event for an unknown choice index");
    return d;
  }
  if (ev.finish != FinishReason::kNone) engine_finished_[ev.choice] = true;
  return choices_[ev.choice].Consume(ev);
}

bool RequestStream::ChoiceNeedsEngineCancel(int choice) const {
  if (choice < 0 || choice >= n()) return false;
  return choices_[choice].finished() && !engine_finished_[choice];
}

bool RequestStream::AllFinished() const {
  for (const ChoiceStream& c : choices_) {
    if (!c.finished()) return false;
  }
  return true;
}

bool RequestStream::NeedsEngineCancel() const {
  if (!AllFinished()) return false;
  for (bool done : engine_finished_) {
    if (!done) return true;
  }
  return false;
}

}  // namespace bms
