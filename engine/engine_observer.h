// EngineObserver: optional hooks through which the engine reports what it does (each step, each
// published event, each refused submission) to whoever watches it — the server's metrics
// collector. The engine stays free of any metrics library: it only calls these hooks.
//
// Thread-safety: OnStep and OnEvent run on the engine thread, one at a time; OnRejected runs on
// whichever thread called Engine::Submit. Implementations must be cheap (they run inside the
// engine loop), must not block, and must never call back into the engine.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "engine/request.h"

namespace bms {

// One engine step (only non-empty steps are reported).
struct StepObservation {
  int num_seqs = 0;            // sequence chunks in the step (decodes + prompt chunks)
  int num_decode_tokens = 0;   // one per running choice
  int num_prefill_tokens = 0;  // prompt tokens; > 0 makes it a "mixed" step
  double step_seconds = 0;     // the whole step: schedule + forward + sample + update
  double backend_seconds = 0;  // inside Backend::Forward
  bool failed = false;         // the backend step failed (its requests finished with kError)
  // Cumulative tokens routed to each expert since the backend was created,
  // [num_moe_layers][n_experts] (Backend::ExpertTokenCounts). The engine refreshes it at most
  // every kExpertCountsRefreshSeconds, and in the step after which it has no work left (so the
  // counts are exact once it is idle); it is empty in steps where it was not refreshed and when
  // the backend does not count.
  std::vector<std::vector<int64_t>> expert_token_counts;
};

inline constexpr double kExpertCountsRefreshSeconds = 0.5;

class EngineObserver {
 public:
  virtual ~EngineObserver() = default;

  // After each non-empty step.
  virtual void OnStep(const StepObservation& step) { (void)step; }
  // For every event, just before it is pushed to the request's channel. `request` identifies the
  // request (its EventChannel; one per request) from its first event until the final event of
  // its last choice; afterwards the address may be reused by a new request.
  virtual void OnEvent(const void* request, const GenerationEvent& event) {
    (void)request;
    (void)event;
  }
  // When Submit refuses a request: the status Submit returns (InvalidArgument,
  // ResourceExhausted, Unavailable, AlreadyExists).
  virtual void OnRejected(const absl::Status& status) { (void)status; }
};

}  // namespace bms
