// ChoiceStream: the frontend-side text pipeline of one generated choice, shared by every
// frontend (gRPC, HTTP): engine token events in, client-ready deltas out. It detokenizes
// incrementally (text only as complete UTF-8), applies stop strings (held-back text never leaks
// a stop string; a match finishes the choice with "stop"), keeps logprobs parallel to tokens and
// counts completion tokens. RequestStream holds the n choices of one request and says when the
// engine request must be cancelled because every choice already ended in the frontend.
// Not thread-safe: one owner (the request's connection/reactor) drives it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/request.h"
#include "tokenizer/tokenizer.h"

namespace bms {

struct ChoiceStreamOptions {
  std::vector<std::string> stop;            // stop strings (empty ones are ignored)
  bool include_stop_str_in_output = false;  // also keeps a stop token id's own text
  bool skip_special_tokens = true;
  bool logprobs = false;  // copy GenerationEvent::logprobs into deltas
};

// What one choice has to send after an event (or, coalesced, after several).
struct ChoiceDelta {
  int index = 0;
  std::vector<int32_t> token_ids;             // new tokens
  std::string text;                           // new text: complete UTF-8, free of stop strings
  std::vector<TokenLogprob> logprobs;         // parallel to token_ids when requested
  FinishReason finish = FinishReason::kNone;  // set on the choice's last delta only
  std::string stop_string;                    // the matched stop string (finish == kStop)
  int32_t stop_token = -1;                    // the EOS/stop id that ended it (finish == kStop)
  absl::Status error;                         // finish == kError
  int prompt_tokens = 0;
  int completion_tokens = 0;  // tokens of this choice so far, including these

  bool HasOutput() const { return !token_ids.empty() || !text.empty(); }
  // Appends a later delta of the same choice (coalescing several events into one message).
  void Append(ChoiceDelta later);
};

class ChoiceStream {
 public:
  // `tokenizer` must outlive the stream.
  ChoiceStream(const Tokenizer& tokenizer, int index, const ChoiceStreamOptions& options);

  // Consumes one engine event of this choice. After the choice finished (a stop string matched
  // or the engine's final event arrived) further events are ignored (an empty delta).
  ChoiceDelta Consume(const GenerationEvent& ev);
  bool finished() const { return finished_; }
  int completion_tokens() const { return completion_tokens_; }

 private:
  int index_;
  bool include_stop_;
  bool logprobs_;
  IncrementalDecoder decoder_;
  StopStringMatcher matcher_;
  bool finished_ = false;
  int completion_tokens_ = 0;
};

// The n choices of one request.
class RequestStream {
 public:
  RequestStream(const Tokenizer& tokenizer, int n, const ChoiceStreamOptions& options);

  // Routes an event to its choice. An event naming a choice outside [0, n) gives an Internal
  // error delta with index -1 (an engine bug; never expected): fail the whole request.
  ChoiceDelta Consume(const GenerationEvent& ev);
  int n() const { return static_cast<int>(choices_.size()); }
  // Every choice has sent its last delta.
  bool AllFinished() const;
  // Every choice finished here but the engine still runs some (they ended on stop strings):
  // the frontend should Cancel the engine request (its later abort events are ignored).
  bool NeedsEngineCancel() const;
  // Choice `choice` finished here (a stop string) while the engine still runs it: the frontend
  // should CancelChoice it (its later abort event is ignored). False for an index outside [0, n).
  bool ChoiceNeedsEngineCancel(int choice) const;

 private:
  std::vector<ChoiceStream> choices_;
  std::vector<bool> engine_finished_;
};

}  // namespace bms
