// Scheduler: the engine's request bookkeeping, testable without a backend. It owns every live
// request (waiting or running), the state-slot pool, and the per-step token budget.
//
// One engine step is:  Schedule() -> StepPlan -> [backend Forward, CopyState forks, sampling by
// the engine] -> Update(plan, result).  Schedule() only admits waiting requests (assigning their
// slots) and decides who runs; Update() is the one place where a request's progress changes:
// prompt tokens consumed, tokens appended, choices finished (stop, length, error, abort), slots
// released, events produced. Cancellations are only flagged (RequestCancel, PollAbandoned) and
// applied by the next Update().
//
// Policy: each step first gives every running, fully prefilled choice one decode token, then
// spends the rest of max_num_batched_tokens on prompt chunks: requests already partly prefilled
// first, then newly admitted ones. Order everywhere is (priority ascending, arrival ascending).
// A waiting request is admitted only when n free slots exist (all its choices' slots are taken
// at once); admission is strictly in order (no skipping ahead of a head that does not fit).
// A prompt is prefilled in slot of choice 0; when its last chunk runs, the plan asks the engine
// to copy that state into the other choices' slots (fork for n > 1).
// A request with prompt_logprobs >= 0 has its prompt chunks run with a logits row per token
// (LogitsMode::kAll) so the engine can score every prompt token; those chunks are also capped so
// that the step's logits rows stay within max_logits_rows (the backend's pre-sized workspace).
// State cache (state_cache_entries > 0, engine/state_cache.h): a finished choice's slot (stop or
// length) becomes a cache entry keyed by every token it consumed, and a prompt's last chunk also
// copies its state into a spare slot keyed by the prompt; a newly admitted prompt that extends a
// key resumes from a copy of that state (the plan's restore_from) and prefills only the rest.
// Entries give their slots back, least recently used first, whenever admission needs them.
//
// Not thread-safe: only the engine thread (or one test thread) may call it.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/inlined_vector.h"
#include "absl/status/status.h"
#include "engine/backend.h"
#include "engine/event_channel.h"
#include "engine/request.h"
#include "engine/sampler.h"
#include "engine/slot_pool.h"
#include "engine/state_cache.h"

namespace bms {

struct ChoiceState {
  int index = 0;
  int slot = -1;                   // -1 until admitted, and again once finished
  std::vector<int32_t> generated;  // every sampled token, including a final stop token
  TokenCounts counts;              // generated token -> count; kept only when the request
                                   // uses a penalty (the only reader), else empty
  FinishReason finish = FinishReason::kNone;
  bool cancel_requested = false;  // RequestCancelChoice: abort this choice only
};

struct RequestState {
  uint64_t serial = 0;  // arrival order (assigned by Add)
  GenerateRequest request;
  std::shared_ptr<EventChannel> channel;
  uint64_t seed = 0;      // request.sampling.seed or a random one
  int prefilled = 0;      // prompt tokens already in the slot's state
  int cached_prefix = 0;  // of those, tokens resumed from a state-cache entry (not computed)
  bool admitted = false;
  bool cancel_requested = false;
  int unfinished = 0;                // choices not finished yet
  std::vector<ChoiceState> choices;  // [n]
  Clock::time_point arrival_time{}, first_scheduled_time{}, first_token_time{};
  // prompt_logprobs >= 0: scores of prompt tokens 1 .. prefilled-ish, gathered chunk by chunk and
  // sent in each choice's first event (then released).
  std::vector<TokenLogprob> prompt_logprobs;

  int prompt_len() const { return static_cast<int>(request.prompt_ids.size()); }
  bool prefill_done() const { return prefilled == prompt_len(); }
};

// One sequence chunk of a step: a prompt chunk (choice == -1) or one choice's decode token.
struct PlannedSeq {
  RequestState* request = nullptr;  // owned by the scheduler; valid until Update()
  int choice = -1;
  SeqChunk chunk;
  std::vector<int> fork_to;  // prompt's last chunk with n > 1: slots of choices 1..n-1
  // State cache: before the forward, copy this slot's state into chunk.slot (a prompt's first
  // chunk resuming a cached prefix); after it, copy chunk.slot's state into snapshot_to (a
  // prompt's last chunk: the new entry for the whole prompt). -1: none.
  int restore_from = -1;
  int snapshot_to = -1;
  // Choices to sample after the forward (in order): all of them after the prompt's last chunk,
  // the decoding choice for a decode, none for an intermediate prompt chunk. Inline: a decode
  // step allocates nothing per sequence for it.
  absl::InlinedVector<int, 1> sample_choices;
};

struct StepPlan {
  std::vector<int32_t> tokens;   // [total tokens], chunks back to back
  std::vector<SeqChunk> chunks;  // parallel to seqs: the backend's view
  std::vector<PlannedSeq> seqs;
  int num_decode_tokens = 0;
  int num_prefill_tokens = 0;
  int num_logits_rows = 0;  // rows the backend writes: 1 per kLast chunk, n_tokens per kAll
  bool empty() const { return seqs.empty(); }
  StepInput Input() const { return StepInput{tokens, chunks}; }
};

// What the engine did with a plan.
struct StepResult {
  absl::Status status;                   // not ok: the whole step failed
  std::vector<absl::Status> seq_status;  // [seqs] or empty: per-sequence failure
  std::vector<absl::InlinedVector<SampledToken, 1>> sampled;  // [seqs][sample_choices]
  // [seqs] or empty: for a kAll prompt chunk of n tokens starting at prompt position p, the
  // scores of prompt tokens p+1 .. min(p+n, prompt_len-1) (row t scores token p+t+1).
  std::vector<std::vector<TokenLogprob>> prompt_logprobs;
};

struct OutgoingEvent {
  std::shared_ptr<EventChannel> channel;
  GenerationEvent event;
};

struct UpdateOutput {
  std::vector<OutgoingEvent> events;      // publish in order
  std::vector<std::string> finished_ids;  // requests that are completely done
  int64_t prompt_tokens = 0;              // prompt tokens consumed by this step
  int64_t generated_tokens = 0;           // tokens sampled in this step
  int64_t cache_hits = 0;                 // prompts that resumed a cached state in this step
  int64_t cached_prompt_tokens = 0;       // prompt tokens those hits did not compute
};

struct SchedulerOptions {
  int num_slots = 1;
  int max_num_batched_tokens = 2048;
  int eos_token_id = 0;
  // Most logits rows one step may ask for (0: no cap). Only prompt_logprobs chunks (a row per
  // token) can reach it; the engine passes min(num_slots, max_num_batched_tokens), the rows the
  // CUDA backend's workspace is sized for.
  int max_logits_rows = 0;
  // State cache (engine/state_cache.h): most entries held (0: off), shortest key kept.
  int state_cache_entries = 0;
  int state_cache_min_tokens = 32;
};

class Scheduler {
 public:
  explicit Scheduler(const SchedulerOptions& options);

  // Queues a validated request (request_id unique among live ones). Sets serial, unfinished,
  // choices.
  void Add(std::unique_ptr<RequestState> request);
  // Flags a live request for abort at the next Update. False when the id is not live.
  bool RequestCancel(const std::string& request_id);
  // Flags one choice for abort: it gets no more decode tokens and finishes (abort, slot freed) at
  // the first Update after the prompt is prefilled (before that its slot still receives the
  // fork of the prompt state). False when the id is not live or the choice is out of range.
  bool RequestCancelChoice(const std::string& request_id, int choice);
  // Flags every live request whose channel was abandoned.
  void PollAbandoned();
  // Flags everything (shutdown).
  void CancelAll();

  StepPlan Schedule(Clock::time_point now);
  UpdateOutput Update(const StepPlan& plan, const StepResult& result, Clock::time_point now);
  // The same, reusing the caller's plan / output (cleared first; their capacity is kept, so a
  // steady decode step allocates little).
  void Schedule(Clock::time_point now, StepPlan* plan);
  void Update(const StepPlan& plan, const StepResult& result, Clock::time_point now,
              UpdateOutput* out);

  bool HasWork() const { return !waiting_.empty() || !running_.empty(); }
  int num_waiting() const { return static_cast<int>(waiting_.size()); }
  int num_running() const { return static_cast<int>(running_.size()); }
  const SlotPool& slots() const { return slots_; }
  const StateCache& state_cache() const { return cache_; }
  // Slots held by requests (the pool's used slots minus the cache's entries).
  int num_request_slots() const { return slots_.num_used() - cache_.size(); }
  const SchedulerOptions& options() const { return options_; }
  // Sampling context of one choice (for the engine's sampler).
  SampleContext ContextFor(const RequestState& r, int choice) const;

 private:
  using Key = std::pair<int, uint64_t>;  // (priority, serial)
  using Queue = std::map<Key, std::unique_ptr<RequestState>>;
  static Key KeyOf(const RequestState& r) { return {r.request.priority, r.serial}; }

  // Releases every slot the cache hands back.
  void ReleaseSlots(const std::vector<int>& slots);
  // At the end of Schedule: a spare slot for each prompt finishing in this step that the cache
  // does not hold yet (evicting an older entry when no slot is free).
  void PlanSnapshots(StepPlan* plan);
  // Adds r's next prompt chunk (at most `budget` tokens); returns its tokens (0: none fits).
  // restore_from: a cache hit's slot, copied into r's slot before this (first) chunk runs.
  int AddPromptChunk(RequestState* r, int budget, StepPlan* plan, int restore_from = -1);
  void AppendToken(RequestState* r, int choice, const SampledToken& s, Clock::time_point now,
                   UpdateOutput* out);
  // Finishes every unfinished choice of r with `reason` (an event each).
  void FinishAll(RequestState* r, FinishReason reason, const absl::Status& error,
                 Clock::time_point now, UpdateOutput* out);
  void FinishChoice(RequestState* r, ChoiceState* c, FinishReason reason, int32_t stop_token,
                    const absl::Status& error, Clock::time_point now, GenerationEvent* ev);
  GenerationEvent NewEvent(const RequestState& r, const ChoiceState& c,
                           Clock::time_point now) const;

  SchedulerOptions options_;
  SlotPool slots_;
  StateCache cache_;
  uint64_t next_serial_ = 1;
  Queue waiting_;
  Queue running_;  // admitted (prefilling or decoding)
  absl::flat_hash_map<std::string, RequestState*> by_id_;
  // Some request or choice is flagged for cancellation and not finished yet: Update scans
  // by_id_ for them only then.
  bool cancels_pending_ = false;
  std::vector<RequestState*> finished_;  // Update scratch: requests whose last choice finished
};

}  // namespace bms
