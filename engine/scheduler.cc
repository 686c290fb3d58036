#include "engine/scheduler.h"

#include <algorithm>
#include <cassert>

namespace bms {

Scheduler::Scheduler(const SchedulerOptions& options)
    : options_(options),
      slots_(options.num_slots),
      cache_(options.state_cache_entries, options.state_cache_min_tokens) {}

void Scheduler::ReleaseSlots(const std::vector<int>& slots) {
  for (int s : slots) {
    bool released = slots_.Release(s);
    assert(released && "state cache returned a slot that was not in use");
    (void)released;
  }
}

void Scheduler::PlanSnapshots(StepPlan* plan) {
  if (!cache_.enabled()) return;
  for (PlannedSeq& seq : plan->seqs) {
    RequestState* r = seq.request;
    if (seq.choice >= 0 || r->prefilled + seq.chunk.n_tokens != r->prompt_len()) continue;
    // max_tokens 0: its finish caches this very state.
    if (r->request.sampling.max_tokens == 0 || r->prompt_len() < cache_.min_tokens() ||
        cache_.Contains(r->request.prompt_ids)) {
      continue;
    }
    if (slots_.num_free() == 0) {
      const int evicted = cache_.EvictOne();
      if (evicted < 0) return;
      ReleaseSlots({evicted});
    }
    seq.snapshot_to = slots_.Acquire(1)[0];
  }
}

void Scheduler::Add(std::unique_ptr<RequestState> r) {
  r->serial = next_serial_++;
  const int n = std::max(r->request.n, 1);
  r->choices.clear();
  for (int c = 0; c < n; ++c) r->choices.push_back(ChoiceState{.index = c});
  r->unfinished = n;
  by_id_[r->request.request_id] = r.get();
  Key key = KeyOf(*r);
  waiting_.emplace(key, std::move(r));
}

bool Scheduler::RequestCancel(const std::string& request_id) {
  auto it = by_id_.find(request_id);
  if (it == by_id_.end()) return false;
  it->second->cancel_requested = true;
  cancels_pending_ = true;
  return true;
}

bool Scheduler::RequestCancelChoice(const std::string& request_id, int choice) {
  auto it = by_id_.find(request_id);
  if (it == by_id_.end() || choice < 0 || choice >= static_cast<int>(it->second->choices.size())) {
    return false;
  }
  it->second->choices[choice].cancel_requested = true;
  cancels_pending_ = true;
  return true;
}

void Scheduler::PollAbandoned() {
  for (auto& [id, r] : by_id_) {
    if (!r->cancel_requested && r->channel != nullptr && r->channel->abandoned()) {
      r->cancel_requested = true;
      cancels_pending_ = true;
    }
  }
}

void Scheduler::CancelAll() {
  for (auto& [id, r] : by_id_) r->cancel_requested = true;
  cancels_pending_ = true;
}

SampleContext Scheduler::ContextFor(const RequestState& r, int choice) const {
  const ChoiceState& c = r.choices[choice];
  SampleContext ctx;
  ctx.params = &r.request.sampling;
  ctx.counts = &c.counts;
  ctx.num_generated = static_cast<int>(c.generated.size());
  ctx.eos_token_id = options_.eos_token_id;
  ctx.seed = r.seed;
  ctx.choice = choice;
  return ctx;
}

int Scheduler::AddPromptChunk(RequestState* r, int budget, StepPlan* plan, int restore_from) {
  const bool scored = r->request.prompt_logprobs >= 0;
  int n_tokens = std::min(r->prompt_len() - r->prefilled, budget);
  if (scored && options_.max_logits_rows > 0) {
    // No room left (another scored chunk took the rows): this prompt waits for the next step.
    n_tokens = std::min(n_tokens, options_.max_logits_rows - plan->num_logits_rows);
    if (n_tokens <= 0) return 0;
  }
  const bool last = r->prefilled + n_tokens == r->prompt_len();
  PlannedSeq seq;
  seq.request = r;
  seq.choice = -1;
  seq.chunk.slot = r->choices[0].slot;
  seq.chunk.token_offset = static_cast<int>(plan->tokens.size());
  seq.chunk.n_tokens = n_tokens;
  seq.chunk.first_chunk = r->prefilled == 0;
  seq.restore_from = restore_from;  // a cache hit's first chunk (prefilled > 0 then)
  seq.chunk.logits = scored ? LogitsMode::kAll : last ? LogitsMode::kLast : LogitsMode::kNone;
  plan->num_logits_rows += scored ? n_tokens : last ? 1 : 0;
  if (last && r->request.sampling.max_tokens > 0) {
    for (size_t c = 0; c < r->choices.size(); ++c) {
      if (c > 0) seq.fork_to.push_back(r->choices[c].slot);
      seq.sample_choices.push_back(static_cast<int>(c));
    }
  }
  plan->tokens.insert(plan->tokens.end(), r->request.prompt_ids.begin() + r->prefilled,
                      r->request.prompt_ids.begin() + r->prefilled + n_tokens);
  plan->chunks.push_back(seq.chunk);
  plan->seqs.push_back(std::move(seq));
  plan->num_prefill_tokens += n_tokens;
  return n_tokens;
}

StepPlan Scheduler::Schedule(Clock::time_point now) {
  StepPlan plan;
  Schedule(now, &plan);
  return plan;
}

void Scheduler::Schedule(Clock::time_point now, StepPlan* out) {
  StepPlan& plan = *out;
  plan.tokens.clear();
  plan.chunks.clear();
  plan.seqs.clear();
  plan.num_decode_tokens = 0;
  plan.num_prefill_tokens = 0;
  plan.num_logits_rows = 0;
  cache_.NewStep();
  int budget = options_.max_num_batched_tokens;
  bool prompts_left = false;  // some admitted prompt still needs chunks
  // 1. One decode token for every unfinished choice of a fully prefilled request.
  for (auto& [key, r] : running_) {
    if (budget == 0) break;
    if (r->cancel_requested) continue;
    if (!r->prefill_done()) {
      prompts_left = true;
      continue;
    }
    for (ChoiceState& c : r->choices) {
      if (c.finish != FinishReason::kNone || c.cancel_requested || budget == 0) continue;
      PlannedSeq& seq = plan.seqs.emplace_back();
      seq.request = r.get();
      seq.choice = c.index;
      seq.chunk.slot = c.slot;
      seq.chunk.token_offset = static_cast<int>(plan.tokens.size());
      seq.chunk.n_tokens = 1;
      seq.chunk.first_chunk = false;
      seq.chunk.logits = LogitsMode::kLast;
      seq.sample_choices.push_back(c.index);
      plan.tokens.push_back(c.generated.back());
      plan.chunks.push_back(seq.chunk);
      ++plan.num_decode_tokens;
      ++plan.num_logits_rows;
      --budget;
    }
  }
  // 2. Continue prompts already admitted (when the budget ran out in 1., prompts_left may be
  // false with prompts left; the loop would add nothing then anyway).
  for (auto it = running_.begin(); prompts_left && budget > 0 && it != running_.end(); ++it) {
    RequestState* r = it->second.get();
    if (r->cancel_requested || r->prefill_done()) continue;
    budget -= AddPromptChunk(r, budget, &plan);
  }
  // 3. Admit waiting requests in order while slots and budget last.
  for (auto it = waiting_.begin(); it != waiting_.end() && budget > 0;) {
    RequestState* r = it->second.get();
    if (r->cancel_requested) {  // finished by the next Update
      ++it;
      continue;
    }
    const int n = static_cast<int>(r->choices.size());
    // The longest cached prefix (pinned, so the evictions below keep it). Scored prompts need
    // every position's logits, so they prefill in full.
    const StateCache::Entry* hit = r->request.prompt_logprobs < 0 && cache_.enabled()
                                       ? cache_.Lookup(r->request.prompt_ids)
                                       : nullptr;
    if (slots_.num_free() + cache_.size() < n) break;
    while (slots_.num_free() < n) {
      const int evicted = cache_.EvictOne();
      if (evicted < 0) break;
      ReleaseSlots({evicted});
    }
    if (slots_.num_free() < n) break;
    if (hit != nullptr) r->prefilled = r->cached_prefix = static_cast<int>(hit->tokens.size());
    std::vector<int> slots = slots_.Acquire(n);
    for (int c = 0; c < n; ++c) r->choices[c].slot = slots[c];
    r->admitted = true;
    r->first_scheduled_time = now;
    auto node = waiting_.extract(it++);
    running_.insert(std::move(node));
    budget -= AddPromptChunk(r, budget, &plan, hit != nullptr ? hit->slot : -1);
  }
  PlanSnapshots(&plan);
}

GenerationEvent Scheduler::NewEvent(const RequestState& r, const ChoiceState& c,
                                    Clock::time_point now) const {
  GenerationEvent ev;
  ev.choice = c.index;
  ev.prompt_tokens = r.prompt_len();
  ev.completion_tokens = static_cast<int>(c.generated.size());
  ev.arrival_time = r.arrival_time;
  ev.first_scheduled_time = r.first_scheduled_time;
  ev.first_token_time = r.first_token_time;
  ev.event_time = now;
  return ev;
}

void Scheduler::FinishChoice(RequestState* r, ChoiceState* c, FinishReason reason,
                             int32_t stop_token, const absl::Status& error, Clock::time_point now,
                             GenerationEvent* ev) {
  c->finish = reason;
  if (c->slot >= 0) {
    // A choice that ended normally leaves the state after every token it consumed (the prompt
    // and all generated tokens but the last, which was never fed back): a cache entry.
    const size_t consumed =
        r->request.prompt_ids.size() + (c->generated.empty() ? 0 : c->generated.size() - 1);
    if (cache_.enabled() && (reason == FinishReason::kStop || reason == FinishReason::kLength) &&
        r->prefill_done() && consumed >= static_cast<size_t>(cache_.min_tokens())) {
      std::vector<int32_t> key;
      key.reserve(consumed);
      key.insert(key.end(), r->request.prompt_ids.begin(), r->request.prompt_ids.end());
      key.insert(key.end(), c->generated.begin(),
                 c->generated.begin() + (consumed - r->request.prompt_ids.size()));
      ReleaseSlots(cache_.Insert(std::move(key), c->slot));
    } else {
      bool released = slots_.Release(c->slot);
      assert(released && "slot released twice");
      (void)released;
    }
    c->slot = -1;
  }
  if (--r->unfinished == 0) finished_.push_back(r);
  ev->finish = reason;
  ev->stop_token = stop_token;
  // A fresh copy per event: absl::Status shares its payload by a reference count that lives in
  // the (uninstrumented) Abseil library, so sharing one across threads confuses ThreadSanitizer.
  ev->error = error.ok() ? absl::OkStatus() : absl::Status(error.code(), error.message());
  ev->event_time = now;
}

void Scheduler::FinishAll(RequestState* r, FinishReason reason, const absl::Status& error,
                          Clock::time_point now, UpdateOutput* out) {
  // A request aborted before admission still holds no slot; one being prefilled holds all n.
  for (ChoiceState& c : r->choices) {
    if (c.finish != FinishReason::kNone) continue;
    GenerationEvent ev = NewEvent(*r, c, now);
    FinishChoice(r, &c, reason, -1, error, now, &ev);
    out->events.push_back({r->channel, std::move(ev)});
  }
}

void Scheduler::AppendToken(RequestState* r, int choice, const SampledToken& s,
                            Clock::time_point now, UpdateOutput* out) {
  ChoiceState& c = r->choices[choice];
  const SamplingParams& p = r->request.sampling;
  const int before = static_cast<int>(c.generated.size());
  c.generated.push_back(s.token);
  if (p.repetition_penalty != 1.0f || p.frequency_penalty != 0.0f || p.presence_penalty != 0.0f)
    ++c.counts[s.token];
  ++out->generated_tokens;
  if (r->first_token_time == Clock::time_point{}) r->first_token_time = now;
  // Built in place in the output (an event is ~150 bytes; no temporaries to move).
  OutgoingEvent& out_ev = out->events.emplace_back();
  out_ev.channel = r->channel;
  GenerationEvent& ev = out_ev.event;
  ev = NewEvent(*r, c, now);
  const bool is_stop_id = (s.token == options_.eos_token_id && !p.ignore_eos) ||
                          std::find(p.stop_token_ids.begin(), p.stop_token_ids.end(), s.token) !=
                              p.stop_token_ids.end();
  // The token is always reported (a stop token too, as the last id, like vLLM); frontends
  // drop its text unless asked to include it.
  ev.token_ids.push_back(s.token);
  if (p.logprobs >= 0) ev.logprobs.push_back(s.logprob);
  if (before == 0 && r->request.prompt_logprobs >= 0) ev.prompt_logprobs = r->prompt_logprobs;
  if (is_stop_id && before >= p.min_tokens) {
    FinishChoice(r, &c, FinishReason::kStop, s.token, absl::OkStatus(), now, &ev);
  } else if (static_cast<int>(c.generated.size()) >= p.max_tokens) {
    FinishChoice(r, &c, FinishReason::kLength, -1, absl::OkStatus(), now, &ev);
  }
}

UpdateOutput Scheduler::Update(const StepPlan& plan, const StepResult& result,
                               Clock::time_point now) {
  UpdateOutput out;
  Update(plan, result, now, &out);
  return out;
}

void Scheduler::Update(const StepPlan& plan, const StepResult& result, Clock::time_point now,
                       UpdateOutput* out_ptr) {
  UpdateOutput& out = *out_ptr;
  out.events.clear();
  out.finished_ids.clear();
  out.prompt_tokens = 0;
  out.generated_tokens = 0;
  out.cache_hits = 0;
  out.cached_prompt_tokens = 0;
  out.events.reserve(plan.seqs.size());
  finished_.clear();
  for (size_t i = 0; i < plan.seqs.size(); ++i) {
    const PlannedSeq& seq = plan.seqs[i];
    RequestState* r = seq.request;
    const bool seq_ok =
        result.status.ok() && (i >= result.seq_status.size() || result.seq_status[i].ok());
    if (seq.snapshot_to >= 0) {  // the engine copied the prompt's state there (when ok)
      ReleaseSlots(seq_ok ? cache_.Insert(r->request.prompt_ids, seq.snapshot_to)
                          : std::vector<int>{seq.snapshot_to});
    }
    if (seq.restore_from >= 0 && seq_ok) {
      ++out.cache_hits;
      out.cached_prompt_tokens += r->cached_prefix;
    }
    if (r->unfinished == 0) continue;
    if (!result.status.ok()) {
      FinishAll(r, FinishReason::kError, result.status, now, &out);
      continue;
    }
    if (i < result.seq_status.size() && !result.seq_status[i].ok()) {
      FinishAll(r, FinishReason::kError, result.seq_status[i], now, &out);
      continue;
    }
    const auto* sampled = i < result.sampled.size() ? &result.sampled[i] : nullptr;
    if (sampled == nullptr || sampled->size() != seq.sample_choices.size()) {
      FinishAll(r, FinishReason::kError,
                absl::InternalError("engine: missing sampled tokens for a scheduled sequence"), now,
                &out);
      continue;
    }
    if (seq.choice < 0) {
      r->prefilled += seq.chunk.n_tokens;
      out.prompt_tokens += seq.chunk.n_tokens;
      if (r->request.prompt_logprobs >= 0 && i < result.prompt_logprobs.size()) {
        const std::vector<TokenLogprob>& scores = result.prompt_logprobs[i];
        r->prompt_logprobs.insert(r->prompt_logprobs.end(), scores.begin(), scores.end());
      }
    }
    for (size_t j = 0; j < seq.sample_choices.size(); ++j) {
      AppendToken(r, seq.sample_choices[j], (*sampled)[j], now, &out);
    }
    if (seq.choice < 0 && r->prefill_done()) {
      if (r->request.sampling.max_tokens == 0) {  // scoring only: every choice ends here
        for (ChoiceState& c : r->choices) {
          if (c.finish != FinishReason::kNone) continue;
          OutgoingEvent& out_ev = out.events.emplace_back();
          out_ev.channel = r->channel;
          out_ev.event = NewEvent(*r, c, now);
          out_ev.event.prompt_logprobs = r->prompt_logprobs;
          FinishChoice(r, &c, FinishReason::kLength, -1, absl::OkStatus(), now, &out_ev.event);
        }
      }
      // Every choice's first event carries the scores now.
      std::vector<TokenLogprob>().swap(r->prompt_logprobs);
    }
  }
  // Cancellations (explicit, abandoned channels, shutdown) take effect now. A choice cancel
  // waits for its prompt's prefill, so it keeps the scan going until then.
  if (cancels_pending_) {
    cancels_pending_ = false;
    for (auto& [id, r] : by_id_) {
      if (r->cancel_requested && r->unfinished > 0) {
        FinishAll(r, FinishReason::kAbort, absl::OkStatus(), now, &out);
      } else if (r->unfinished > 0) {
        for (ChoiceState& c : r->choices) {
          if (!c.cancel_requested || c.finish != FinishReason::kNone) continue;
          if (!r->prefill_done()) {
            cancels_pending_ = true;
            continue;
          }
          GenerationEvent ev = NewEvent(*r, c, now);
          FinishChoice(r, &c, FinishReason::kAbort, -1, absl::OkStatus(), now, &ev);
          out.events.push_back({r->channel, std::move(ev)});
        }
      }
    }
  }
  // Requests whose last choice finished in this update (FinishChoice lists each once).
  for (RequestState* r : finished_) {
    by_id_.erase(r->request.request_id);
    out.finished_ids.push_back(r->request.request_id);
    Queue& q = r->admitted ? running_ : waiting_;
    q.erase(KeyOf(*r));  // destroys r
  }
  finished_.clear();
}

}  // namespace bms
