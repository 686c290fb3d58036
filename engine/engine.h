// Engine: the single thread that owns the backend and every state slot, and the thread-safe
// surface frontends use to reach it (Submit, Cancel, counters). Continuous batching: each step
// gives every running request one decode token and spends the rest of the token budget on
// prefill chunks (DESIGN.md §2).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/backend.h"
#include "engine/engine_observer.h"
#include "engine/event_channel.h"
#include "engine/request.h"

namespace bms {

struct EngineOptions {
  int max_num_batched_tokens = 2048;  // token budget per step (decode + prefill chunks)
  int max_queued_requests = 1024;     // waiting-queue bound; beyond it Submit fails at once
  int max_prompt_tokens = 131072;     // longer prompts are InvalidArgument
  int max_tokens_limit = 131072;      // upper bound for SamplingParams::max_tokens
  int max_n = 16;                     // upper bound for GenerateRequest::n
  int eos_token_id = 0;               // <|endoftext|>
  std::string fault_injection;        // test-only: "step-fail:N" fails every Nth backend step
  int sampler_threads = 4;            // host threads sampling logits rows (1 = engine thread)
  // Steps with at least this many events hand them to a delivery thread, which pushes them to
  // the channels while the engine runs the next step (per channel, events stay in order);
  // smaller steps push on the engine thread. 0 = always on the engine thread.
  int async_publish_min_events = 32;
  // State cache (engine/state_cache.h): up to this many finished states (and prompt states) stay
  // in otherwise free slots, keyed by their tokens; a prompt that extends a key resumes from it
  // instead of prefilling those tokens (multi-turn chat, shared system prompts). Entries give
  // their slots back whenever a request needs one. 0 = off. Keys shorter than
  // state_cache_min_tokens are not kept.
  int state_cache_entries = 0;
  int state_cache_min_tokens = 32;
  std::shared_ptr<EngineObserver> observer;  // optional hooks (metrics); null = none
};

// Snapshot of the engine's counters (cheap, lock-free reads).
struct EngineStats {
  int64_t running = 0;
  int64_t waiting = 0;
  int64_t slots_total = 0;
  int64_t slots_used = 0;                // held by requests
  int64_t state_cache_entries = 0;       // held by the state cache (reclaimable)
  int64_t state_cache_hits_total = 0;    // prompts that resumed a cached state
  int64_t state_cache_tokens_total = 0;  // prompt tokens those hits did not compute
  int64_t prompt_tokens_total = 0;
  int64_t generation_tokens_total = 0;
  int64_t steps_total = 0;
  double last_step_seconds = 0;
  double backend_seconds_total = 0;  // time inside Backend::Forward
  double step_seconds_total = 0;     // whole engine steps (schedule + forward + sample + update)
  size_t state_bytes_per_slot = 0;
  size_t backend_memory_bytes = 0;  // Backend::memory_bytes_in_use()
  GraphMemoryStats graphs;          // Backend::graph_memory() (CUDA graphs; zeros otherwise)
  double warmup_seconds = 0;        // Start(): warm-up step + Backend::PrepareForServing
  bool ready = false;
};

class Engine {
 public:
  // Takes ownership of the backend. The engine thread starts in Start().
  static absl::StatusOr<std::unique_ptr<Engine>> Create(std::unique_ptr<Backend> backend,
                                                        EngineOptions options);
  virtual ~Engine() = default;

  // Starts the engine thread, runs one warm-up step, then reports ready.
  virtual absl::Status Start() = 0;
  // Cancels everything still live (finish reason abort) and joins the engine thread.
  virtual void Stop() = 0;

  // Thread-safe. Validates the request and queues it; on success the returned channel receives
  // its events. InvalidArgument (named field) for bad parameters, ResourceExhausted when the
  // waiting queue is full, Unavailable when the engine is stopped or not accepting.
  virtual absl::StatusOr<std::shared_ptr<EventChannel>> Submit(GenerateRequest request) = 0;
  // Thread-safe. Cancels a live request (finish reason abort within the next step).
  // NotFound when no live request has this id.
  virtual absl::Status Cancel(const std::string& request_id) = 0;
  // Thread-safe. Ends one choice of a live request (finish reason abort within the next step once
  // its prompt is prefilled; its slot is freed) while the other choices go on: a frontend whose
  // choice ended on a stop string calls it. NotFound when no live request has this id,
  // InvalidArgument for a negative choice; an index past the request's n is ignored.
  virtual absl::Status CancelChoice(const std::string& request_id, int choice) = 0;

  virtual EngineStats Stats() const = 0;
  virtual const ModelConfig& config() const = 0;
  virtual const EngineOptions& options() const = 0;
};

}  // namespace bms
