// Helpers shared by the engine tests: collecting a request's events into per-choice results.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "gtest/gtest.h"

namespace bms::testing {

struct ChoiceResult {
  std::vector<int32_t> tokens;
  std::vector<TokenLogprob> logprobs;
  std::vector<TokenLogprob> prompt_logprobs;  // prompt scores (prompt_logprobs >= 0)
  int prompt_logprob_events = 0;              // events that carried them (must be <= 1)
  FinishReason finish = FinishReason::kNone;
  int32_t stop_token = -1;
  absl::Status error;
  int finals = 0;       // final events seen (must end up exactly 1)
  int after_final = 0;  // events after the final one (must stay 0)
};

// Consumes one event into `choices` (sized n).
inline void Absorb(const GenerationEvent& ev, std::vector<ChoiceResult>* choices) {
  ASSERT_GE(ev.choice, 0);
  ASSERT_LT(ev.choice, static_cast<int>(choices->size()));
  ChoiceResult& c = (*choices)[ev.choice];
  if (c.finals > 0) ++c.after_final;
  c.tokens.insert(c.tokens.end(), ev.token_ids.begin(), ev.token_ids.end());
  c.logprobs.insert(c.logprobs.end(), ev.logprobs.begin(), ev.logprobs.end());
  if (!ev.prompt_logprobs.empty()) {
    ++c.prompt_logprob_events;
    c.prompt_logprobs = ev.prompt_logprobs;
  }
  if (ev.finish != FinishReason::kNone) {
    ++c.finals;
    c.finish = ev.finish;
    c.stop_token = ev.stop_token;
    c.error = ev.error;
  }
}

inline bool AllFinished(const std::vector<ChoiceResult>& choices) {
  for (const ChoiceResult& c : choices) {
    if (c.finals == 0) return false;
  }
  return true;
}

// Blocks until every choice finished (fails the test after `limit`).
inline std::vector<ChoiceResult> Collect(EventChannel& ch, int n,
                                         std::chrono::seconds limit = std::chrono::seconds(120)) {
  std::vector<ChoiceResult> out(n);
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!AllFinished(out)) {
    if (std::chrono::steady_clock::now() > deadline) {
      ADD_FAILURE() << "request did not finish in time";
      break;
    }
    if (auto ev = ch.Pop(std::chrono::milliseconds(100))) Absorb(*ev, &out);
  }
  return out;
}

inline GenerateRequest Greedy(std::vector<int32_t> prompt, int max_tokens) {
  GenerateRequest r;
  r.prompt_ids = std::move(prompt);
  r.sampling.temperature = 0;
  r.sampling.max_tokens = max_tokens;
  return r;
}

}  // namespace bms::testing
