// Scheduler unit tests, no backend: token budget, chunked prefill, decode-first policy,
// priority, n > 1 forks, slot release on finish/cancel, errors.
#include "engine/scheduler.h"

#include <map>
#include <memory>

#include "gtest/gtest.h"

namespace bms {
namespace {

std::unique_ptr<RequestState> MakeRequest(const std::string& id, int prompt_len, int max_tokens,
                                          int n = 1, int priority = 0) {
  auto r = std::make_unique<RequestState>();
  r->request.request_id = id;
  for (int i = 0; i < prompt_len; ++i) r->request.prompt_ids.push_back(i % 7 + 1);
  r->request.sampling.max_tokens = max_tokens;
  r->request.sampling.temperature = 0;
  r->request.n = n;
  r->request.priority = priority;
  r->channel = std::make_shared<EventChannel>();
  return r;
}

// Every sampled token is `token` (never EOS = 0).
StepResult SampleAll(const StepPlan& plan, int32_t token = 5) {
  StepResult res;
  for (const PlannedSeq& s : plan.seqs) {
    res.sampled.emplace_back(s.sample_choices.size(), SampledToken{.token = token});
  }
  return res;
}

TEST(Scheduler, ChunkedPrefillUnderTokenBudget) {
  Scheduler s({.num_slots = 4, .max_num_batched_tokens = 4, .eos_token_id = 0});
  s.Add(MakeRequest("a", 10, 2));
  auto now = Clock::now();
  // Step 1: chunk [0, 4), first chunk, no logits.
  StepPlan p1 = s.Schedule(now);
  ASSERT_EQ(p1.seqs.size(), 1u);
  EXPECT_EQ(p1.chunks[0].n_tokens, 4);
  EXPECT_TRUE(p1.chunks[0].first_chunk);
  EXPECT_EQ(p1.chunks[0].logits, LogitsMode::kNone);
  EXPECT_EQ(p1.tokens.size(), 4u);
  EXPECT_EQ(s.slots().num_used(), 1);
  s.Update(p1, SampleAll(p1), now);
  // Step 2: [4, 8), continuation.
  StepPlan p2 = s.Schedule(now);
  ASSERT_EQ(p2.seqs.size(), 1u);
  EXPECT_EQ(p2.chunks[0].n_tokens, 4);
  EXPECT_FALSE(p2.chunks[0].first_chunk);
  EXPECT_EQ(p2.chunks[0].slot, p1.chunks[0].slot);
  EXPECT_EQ(p2.tokens[0], 4 % 7 + 1);  // prompt token 4
  s.Update(p2, SampleAll(p2), now);
  // Step 3: last 2 tokens, logits for the last one -> first generated token.
  StepPlan p3 = s.Schedule(now);
  ASSERT_EQ(p3.seqs.size(), 1u);
  EXPECT_EQ(p3.chunks[0].n_tokens, 2);
  EXPECT_EQ(p3.chunks[0].logits, LogitsMode::kLast);
  UpdateOutput o3 = s.Update(p3, SampleAll(p3), now);
  EXPECT_EQ(o3.prompt_tokens, 2);
  ASSERT_EQ(o3.events.size(), 1u);
  EXPECT_EQ(o3.events[0].event.token_ids, std::vector<int32_t>{5});
  // Step 4: one decode token (the sampled 5) -> second token -> length.
  StepPlan p4 = s.Schedule(now);
  ASSERT_EQ(p4.seqs.size(), 1u);
  EXPECT_EQ(p4.tokens, std::vector<int32_t>{5});
  EXPECT_EQ(p4.num_decode_tokens, 1);
  UpdateOutput o4 = s.Update(p4, SampleAll(p4), now);
  ASSERT_EQ(o4.events.size(), 1u);
  EXPECT_EQ(o4.events[0].event.finish, FinishReason::kLength);
  EXPECT_EQ(o4.finished_ids, std::vector<std::string>{"a"});
  EXPECT_EQ(s.slots().num_used(), 0);
  EXPECT_FALSE(s.HasWork());
}

TEST(Scheduler, DecodesFirstThenPrefillFillsTheBudget) {
  Scheduler s({.num_slots = 8, .max_num_batched_tokens = 6, .eos_token_id = 0});
  auto now = Clock::now();
  s.Add(MakeRequest("a", 2, 10));
  s.Add(MakeRequest("b", 3, 10));
  StepPlan p1 = s.Schedule(now);  // both prompts fit: 5 tokens
  EXPECT_EQ(p1.num_prefill_tokens, 5);
  s.Update(p1, SampleAll(p1), now);
  s.Add(MakeRequest("c", 20, 10));
  StepPlan p2 = s.Schedule(now);
  // 2 decodes, then 4 tokens of c's prompt.
  EXPECT_EQ(p2.num_decode_tokens, 2);
  EXPECT_EQ(p2.num_prefill_tokens, 4);
  ASSERT_EQ(p2.seqs.size(), 3u);
  EXPECT_EQ(p2.seqs[2].request->request.request_id, "c");
  EXPECT_EQ(p2.tokens.size(), 6u);
  for (const SeqChunk& c : p2.chunks) EXPECT_LE(c.token_offset + c.n_tokens, 6);
}

TEST(Scheduler, PriorityThenArrivalOrder) {
  Scheduler s({.num_slots = 1, .max_num_batched_tokens = 100, .eos_token_id = 0});
  auto now = Clock::now();
  s.Add(MakeRequest("low", 3, 1, 1, /*priority=*/5));
  s.Add(MakeRequest("high1", 3, 1, 1, /*priority=*/-1));
  s.Add(MakeRequest("high2", 3, 1, 1, /*priority=*/-1));
  std::vector<std::string> order;
  while (s.HasWork()) {
    StepPlan p = s.Schedule(now);
    ASSERT_EQ(p.seqs.size(), 1u);  // one slot: one request at a time
    UpdateOutput o = s.Update(p, SampleAll(p), now);
    for (auto& id : o.finished_ids) order.push_back(id);
  }
  EXPECT_EQ(order, (std::vector<std::string>{"high1", "high2", "low"}));
}

TEST(Scheduler, ForkForNChoicesNeedsNSlots) {
  Scheduler s({.num_slots = 3, .max_num_batched_tokens = 100, .eos_token_id = 0});
  auto now = Clock::now();
  s.Add(MakeRequest("one", 2, 5));
  s.Add(MakeRequest("three", 4, 2, /*n=*/3));
  StepPlan p1 = s.Schedule(now);
  // "three" needs 3 slots but only 2 are free: it waits (strict order).
  ASSERT_EQ(p1.seqs.size(), 1u);
  EXPECT_EQ(s.num_waiting(), 1);
  s.Update(p1, SampleAll(p1), now);
  for (int i = 0; i < 4; ++i) {
    StepPlan p = s.Schedule(now);
    s.Update(p, SampleAll(p), now);
  }
  EXPECT_EQ(s.num_running(), 0);
  StepPlan p2 = s.Schedule(now);
  ASSERT_EQ(p2.seqs.size(), 1u);
  const PlannedSeq& seq = p2.seqs[0];
  EXPECT_EQ(seq.choice, -1);
  EXPECT_EQ(seq.fork_to.size(), 2u);
  EXPECT_EQ(std::vector<int>(seq.sample_choices.begin(), seq.sample_choices.end()),
            (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(s.slots().num_used(), 3);
  StepResult r;
  r.sampled.push_back(
      {SampledToken{.token = 3}, SampledToken{.token = 4}, SampledToken{.token = 0}});
  UpdateOutput o = s.Update(p2, r, now);
  ASSERT_EQ(o.events.size(), 3u);
  EXPECT_EQ(o.events[2].event.finish, FinishReason::kStop);  // EOS
  EXPECT_EQ(o.events[2].event.stop_token, 0);
  EXPECT_EQ(o.events[2].event.token_ids, std::vector<int32_t>{0});  // the stop token, last
  EXPECT_EQ(s.slots().num_used(), 2);  // the stopped choice gave its slot back at once
  StepPlan p3 = s.Schedule(now);
  EXPECT_EQ(p3.num_decode_tokens, 2);
  EXPECT_EQ(p3.tokens, (std::vector<int32_t>{3, 4}));
}

TEST(Scheduler, CancelBeforeAdmissionAndMidPrefill) {
  Scheduler s({.num_slots = 1, .max_num_batched_tokens = 2, .eos_token_id = 0});
  auto now = Clock::now();
  s.Add(MakeRequest("a", 10, 3));
  s.Add(MakeRequest("b", 10, 3, 2));  // n=2 > free slots: waits
  StepPlan p1 = s.Schedule(now);
  s.Update(p1, SampleAll(p1), now);
  EXPECT_TRUE(s.RequestCancel("a"));
  EXPECT_TRUE(s.RequestCancel("b"));
  EXPECT_FALSE(s.RequestCancel("zzz"));
  StepPlan p2 = s.Schedule(now);
  EXPECT_TRUE(p2.empty());
  UpdateOutput o = s.Update(p2, StepResult{}, now);
  ASSERT_EQ(o.events.size(), 3u);  // a: 1 choice, b: 2 choices
  for (auto& e : o.events) EXPECT_EQ(e.event.finish, FinishReason::kAbort);
  EXPECT_EQ(o.finished_ids.size(), 2u);
  EXPECT_EQ(s.slots().num_used(), 0);
  EXPECT_FALSE(s.HasWork());
}

TEST(Scheduler, CancelOneChoiceKeepsTheOthers) {
  Scheduler s({.num_slots = 3, .max_num_batched_tokens = 2, .eos_token_id = 0});
  auto now = Clock::now();
  s.Add(MakeRequest("r", 4, 10, /*n=*/3));
  EXPECT_FALSE(s.RequestCancelChoice("r", 3));
  EXPECT_FALSE(s.RequestCancelChoice("r", -1));
  EXPECT_FALSE(s.RequestCancelChoice("zzz", 0));
  StepPlan p1 = s.Schedule(now);  // first 2 prompt tokens
  ASSERT_EQ(p1.num_prefill_tokens, 2);
  s.Update(p1, SampleAll(p1), now);
  // Flagged mid-prefill: the choice still receives the prompt fork, then ends.
  EXPECT_TRUE(s.RequestCancelChoice("r", 1));
  StepPlan p2 = s.Schedule(now);  // last prompt chunk, forks to choices 1 and 2
  ASSERT_EQ(p2.seqs.size(), 1u);
  EXPECT_EQ(p2.seqs[0].fork_to.size(), 2u);
  UpdateOutput o2 = s.Update(p2, SampleAll(p2), now);
  // Three first tokens, then choice 1's abort.
  ASSERT_EQ(o2.events.size(), 4u);
  EXPECT_EQ(o2.events[3].event.choice, 1);
  EXPECT_EQ(o2.events[3].event.finish, FinishReason::kAbort);
  EXPECT_EQ(s.slots().num_used(), 2);  // choice 1's slot is free
  StepPlan p3 = s.Schedule(now);       // decodes for choices 0 and 2 only
  ASSERT_EQ(p3.num_decode_tokens, 2);
  EXPECT_EQ(p3.seqs[0].choice, 0);
  EXPECT_EQ(p3.seqs[1].choice, 2);
  UpdateOutput o3 = s.Update(p3, SampleAll(p3), now);
  ASSERT_EQ(o3.events.size(), 2u);
  for (auto& e : o3.events) EXPECT_EQ(e.event.finish, FinishReason::kNone);
  // A cancel after prefill: the flagged choice gets no more tokens and ends at this Update.
  EXPECT_TRUE(s.RequestCancelChoice("r", 2));
  StepPlan p4 = s.Schedule(now);
  ASSERT_EQ(p4.num_decode_tokens, 1);
  EXPECT_EQ(p4.seqs[0].choice, 0);
  UpdateOutput o4 = s.Update(p4, SampleAll(p4), now);
  ASSERT_EQ(o4.events.size(), 2u);
  EXPECT_EQ(o4.events[1].event.choice, 2);
  EXPECT_EQ(o4.events[1].event.finish, FinishReason::kAbort);
  EXPECT_EQ(o4.events[1].event.completion_tokens, 2);
  EXPECT_EQ(s.slots().num_used(), 1);
  EXPECT_TRUE(o4.finished_ids.empty());  // choice 0 still runs
  // Choice 0 runs to max_tokens; the request then finishes normally.
  for (int i = 0; i < 20 && s.HasWork(); ++i) {
    StepPlan p = s.Schedule(now);
    s.Update(p, SampleAll(p), now);
  }
  EXPECT_FALSE(s.HasWork());
  EXPECT_EQ(s.slots().num_used(), 0);
}

TEST(Scheduler, FailedStepErrorsOnlyItsRequests) {
  Scheduler s({.num_slots = 2, .max_num_batched_tokens = 3, .eos_token_id = 0});
  auto now = Clock::now();
  s.Add(MakeRequest("a", 3, 3));
  s.Add(MakeRequest("b", 3, 3));  // no budget left this step: not in the plan
  StepPlan p = s.Schedule(now);
  ASSERT_EQ(p.seqs.size(), 1u);
  StepResult failed;
  failed.status = absl::InternalError("boom");
  UpdateOutput o = s.Update(p, failed, now);
  ASSERT_EQ(o.events.size(), 1u);
  EXPECT_EQ(o.events[0].event.finish, FinishReason::kError);
  EXPECT_EQ(o.events[0].event.error.message(), "boom");
  EXPECT_EQ(o.finished_ids, std::vector<std::string>{"a"});
  EXPECT_EQ(s.slots().num_used(), 0);
  EXPECT_EQ(s.num_waiting(), 1);  // b is still waiting, untouched
}

// A fake score for prompt position `pos` of a scored chunk (what the engine would compute).
TokenLogprob FakeScore(int pos) {
  return TokenLogprob{.token = pos, .logprob = -0.5f * static_cast<float>(pos), .top = {}};
}

// SampleAll plus, for every kAll prompt chunk, one fake score per prompt token after each of its
// tokens (the engine's contract: row t of a chunk starting at p scores token p + t + 1).
StepResult SampleAndScore(const StepPlan& plan) {
  StepResult res = SampleAll(plan);
  res.prompt_logprobs.resize(plan.seqs.size());
  for (size_t i = 0; i < plan.seqs.size(); ++i) {
    const PlannedSeq& s = plan.seqs[i];
    if (s.chunk.logits != LogitsMode::kAll) continue;
    const int start = s.request->prefilled;
    for (int t = 0; t < s.chunk.n_tokens && start + t + 1 < s.request->prompt_len(); ++t)
      res.prompt_logprobs[i].push_back(FakeScore(start + t + 1));
  }
  return res;
}

TEST(Scheduler, ScoredPromptRunsRowPerTokenCappedByMaxLogitsRows) {
  Scheduler s(
      {.num_slots = 4, .max_num_batched_tokens = 16, .eos_token_id = 0, .max_logits_rows = 4});
  auto r = MakeRequest("a", 10, 2, /*n=*/2);
  r->request.prompt_logprobs = 1;
  s.Add(std::move(r));
  auto now = Clock::now();
  std::vector<int> chunk_sizes;
  UpdateOutput out;
  for (int step = 0; step < 3; ++step) {
    StepPlan p = s.Schedule(now);
    ASSERT_EQ(p.seqs.size(), 1u);
    EXPECT_EQ(p.chunks[0].logits, LogitsMode::kAll);
    EXPECT_EQ(p.num_logits_rows, p.chunks[0].n_tokens);
    EXPECT_LE(p.num_logits_rows, 4);
    chunk_sizes.push_back(p.chunks[0].n_tokens);
    out = s.Update(p, SampleAndScore(p), now);
    if (step < 2) EXPECT_TRUE(out.events.empty());
  }
  EXPECT_EQ(chunk_sizes, (std::vector<int>{4, 4, 2}));
  // Both choices' first events carry the 9 scores of prompt tokens 1..9, in order.
  ASSERT_EQ(out.events.size(), 2u);
  for (const OutgoingEvent& e : out.events) {
    ASSERT_EQ(e.event.prompt_logprobs.size(), 9u);
    for (int k = 0; k < 9; ++k) {
      EXPECT_EQ(e.event.prompt_logprobs[k].token, k + 1);
      EXPECT_FLOAT_EQ(e.event.prompt_logprobs[k].logprob, FakeScore(k + 1).logprob);
    }
  }
  // Later events do not repeat them.
  StepPlan p = s.Schedule(now);
  EXPECT_EQ(p.num_decode_tokens, 2);
  UpdateOutput later = s.Update(p, SampleAll(p), now);
  ASSERT_EQ(later.events.size(), 2u);
  for (const OutgoingEvent& e : later.events) EXPECT_TRUE(e.event.prompt_logprobs.empty());
}

TEST(Scheduler, UnscoredPromptIsNotCappedAndHasNoScores) {
  Scheduler s(
      {.num_slots = 4, .max_num_batched_tokens = 16, .eos_token_id = 0, .max_logits_rows = 2});
  s.Add(MakeRequest("a", 10, 1));
  auto now = Clock::now();
  StepPlan p = s.Schedule(now);
  ASSERT_EQ(p.seqs.size(), 1u);
  EXPECT_EQ(p.chunks[0].n_tokens, 10);
  EXPECT_EQ(p.chunks[0].logits, LogitsMode::kLast);
  EXPECT_EQ(p.num_logits_rows, 1);
  UpdateOutput o = s.Update(p, SampleAll(p), now);
  ASSERT_EQ(o.events.size(), 1u);
  EXPECT_TRUE(o.events[0].event.prompt_logprobs.empty());
}

TEST(Scheduler, ScoredPromptsShareTheRowCapWithDecodes) {
  Scheduler s(
      {.num_slots = 4, .max_num_batched_tokens = 64, .eos_token_id = 0, .max_logits_rows = 4});
  auto now = Clock::now();
  s.Add(MakeRequest("d", 1, 50, /*n=*/2));  // two decoding choices
  StepPlan p0 = s.Schedule(now);
  s.Update(p0, SampleAll(p0), now);
  auto a = MakeRequest("a", 8, 1);
  a->request.prompt_logprobs = 0;
  auto b = MakeRequest("b", 8, 1);
  b->request.prompt_logprobs = 0;
  s.Add(std::move(a));
  s.Add(std::move(b));
  // 2 decode rows leave 2 rows: a gets a 2-token chunk, b (admitted, no rows left) waits.
  StepPlan p1 = s.Schedule(now);
  EXPECT_EQ(p1.num_decode_tokens, 2);
  ASSERT_EQ(p1.seqs.size(), 3u);
  EXPECT_EQ(p1.seqs[2].request->request.request_id, "a");
  EXPECT_EQ(p1.chunks[2].n_tokens, 2);
  EXPECT_EQ(p1.num_logits_rows, 4);
  EXPECT_EQ(s.slots().num_used(), 4);  // b holds its slot already
  s.Update(p1, SampleAndScore(p1), now);
  // Both prompts finish within the cap, and each is scored in full.
  std::map<std::string, std::vector<TokenLogprob>> scores;
  for (int step = 0; step < 20 && scores.size() < 2; ++step) {
    StepPlan p = s.Schedule(now);
    EXPECT_LE(p.num_logits_rows, 4);
    std::map<const EventChannel*, std::string> id_of;  // Update may free a finished request
    for (const PlannedSeq& q : p.seqs)
      id_of[q.request->channel.get()] = q.request->request.request_id;
    UpdateOutput o = s.Update(p, SampleAndScore(p), now);
    for (const OutgoingEvent& e : o.events)
      if (!e.event.prompt_logprobs.empty())
        scores[id_of[e.channel.get()]] = e.event.prompt_logprobs;
  }
  ASSERT_EQ(scores.size(), 2u);
  for (const auto& [id, v] : scores) {
    ASSERT_EQ(v.size(), 7u) << id;
    for (int k = 0; k < 7; ++k) EXPECT_EQ(v[k].token, k + 1) << id;
  }
}

TEST(Scheduler, ScoreOnlyRequestEndsAfterPrefillWithoutSampling) {
  Scheduler s(
      {.num_slots = 4, .max_num_batched_tokens = 16, .eos_token_id = 0, .max_logits_rows = 16});
  auto r = MakeRequest("a", 6, /*max_tokens=*/0, /*n=*/2);
  r->request.prompt_logprobs = 0;
  s.Add(std::move(r));
  auto now = Clock::now();
  StepPlan p = s.Schedule(now);
  ASSERT_EQ(p.seqs.size(), 1u);
  EXPECT_EQ(p.chunks[0].logits, LogitsMode::kAll);
  EXPECT_TRUE(p.seqs[0].sample_choices.empty());  // nothing to sample, nothing to fork
  EXPECT_TRUE(p.seqs[0].fork_to.empty());
  EXPECT_EQ(s.slots().num_used(), 2);
  UpdateOutput o = s.Update(p, SampleAndScore(p), now);
  ASSERT_EQ(o.events.size(), 2u);
  for (const OutgoingEvent& e : o.events) {
    EXPECT_EQ(e.event.finish, FinishReason::kLength);
    EXPECT_TRUE(e.event.token_ids.empty());
    ASSERT_EQ(e.event.prompt_logprobs.size(), 5u);
    EXPECT_EQ(e.event.prompt_logprobs[4].token, 5);
  }
  EXPECT_EQ(o.generated_tokens, 0);
  EXPECT_EQ(o.finished_ids, std::vector<std::string>{"a"});
  EXPECT_EQ(s.slots().num_used(), 0);
  EXPECT_FALSE(s.HasWork());
}

// State cache: a finished choice's slot becomes an entry keyed by prompt + generated[:-1]; a
// prompt's last chunk snapshots the prompt state into a spare slot; a later prompt extending a
// key resumes from it (restore_from, first_chunk false, only the rest prefilled).
TEST(Scheduler, StateCacheResumesALaterPromptFromAFinishedChoice) {
  Scheduler s({.num_slots = 4,
               .max_num_batched_tokens = 64,
               .eos_token_id = 0,
               .state_cache_entries = 4,
               .state_cache_min_tokens = 4});
  auto now = Clock::now();
  s.Add(MakeRequest("a", 6, /*max_tokens=*/3));
  StepPlan p1 = s.Schedule(now);
  ASSERT_EQ(p1.seqs.size(), 1u);
  EXPECT_EQ(p1.seqs[0].restore_from, -1);
  const int prompt_slot = p1.chunks[0].slot;
  const int snapshot = p1.seqs[0].snapshot_to;
  ASSERT_GE(snapshot, 0);
  EXPECT_NE(snapshot, prompt_slot);
  s.Update(p1, SampleAll(p1, 5), now);
  EXPECT_EQ(s.state_cache().size(), 1);  // the prompt's state
  for (int step = 0; step < 2; ++step) {
    StepPlan p = s.Schedule(now);
    s.Update(p, SampleAll(p, 6 + step), now);
  }
  EXPECT_FALSE(s.HasWork());
  // a's slot holds prompt + [5, 6] (7 was sampled, never fed): a second entry.
  std::vector<int32_t> consumed = MakeRequest("x", 6, 1)->request.prompt_ids;
  consumed.insert(consumed.end(), {5, 6});
  EXPECT_TRUE(s.state_cache().Contains(consumed));
  EXPECT_EQ(s.state_cache().size(), 2);
  EXPECT_EQ(s.num_request_slots(), 0);
  EXPECT_EQ(s.slots().num_used(), 2);

  // The next turn: a's prompt + its output + 3 new tokens resumes the finished state.
  auto b = MakeRequest("b", 6, 1);
  b->request.prompt_ids = consumed;
  b->request.prompt_ids.insert(b->request.prompt_ids.end(), {7, 40, 41, 42});
  s.Add(std::move(b));
  StepPlan p2 = s.Schedule(now);
  ASSERT_EQ(p2.seqs.size(), 1u);
  EXPECT_EQ(p2.seqs[0].restore_from, prompt_slot);
  EXPECT_FALSE(p2.chunks[0].first_chunk);
  EXPECT_EQ(p2.chunks[0].n_tokens, 4);
  EXPECT_EQ(p2.tokens, (std::vector<int32_t>{7, 40, 41, 42}));
  EXPECT_NE(p2.chunks[0].slot, prompt_slot);
  UpdateOutput o2 = s.Update(p2, SampleAll(p2), now);
  EXPECT_EQ(o2.cache_hits, 1);
  EXPECT_EQ(o2.cached_prompt_tokens, 8);
  EXPECT_EQ(o2.prompt_tokens, 4);  // only what was computed

  // A prompt that extends only a's prompt resumes the snapshot instead.
  auto c = MakeRequest("c", 6, 1);
  c->request.prompt_ids.push_back(99);
  s.Add(std::move(c));
  StepPlan p3 = s.Schedule(now);
  ASSERT_EQ(p3.seqs.size(), 1u);
  EXPECT_EQ(p3.seqs[0].restore_from, snapshot);
  EXPECT_EQ(p3.tokens, std::vector<int32_t>{99});
  s.Update(p3, SampleAll(p3), now);
}

TEST(Scheduler, StateCacheEntriesGiveTheirSlotsToAdmission) {
  Scheduler s({.num_slots = 2,
               .max_num_batched_tokens = 64,
               .eos_token_id = 0,
               .state_cache_entries = 8,
               .state_cache_min_tokens = 2});
  auto now = Clock::now();
  auto run_to_end = [&] {
    for (int step = 0; step < 10 && s.HasWork(); ++step) {
      StepPlan p = s.Schedule(now);
      s.Update(p, SampleAll(p), now);
    }
  };
  // (max_tokens 2: a's finished state, prompt + 1 token, differs from its prompt snapshot; with
  // max_tokens 1 both keys would be the prompt and the finished state would replace it.)
  s.Add(MakeRequest("a", 5, 2));
  run_to_end();
  EXPECT_EQ(s.state_cache().size(), 2);  // prompt snapshot + a's finished state (both slots)
  EXPECT_EQ(s.slots().num_free(), 0);
  // Two new requests with unrelated prompts: entries are evicted for them.
  auto b = MakeRequest("b", 5, 1);
  b->request.prompt_ids.assign({50, 51, 52, 53, 54});
  auto c = MakeRequest("c", 5, 1);
  c->request.prompt_ids.assign({60, 61, 62, 63, 64});
  s.Add(std::move(b));
  s.Add(std::move(c));
  StepPlan p = s.Schedule(now);
  EXPECT_EQ(p.seqs.size(), 2u);
  EXPECT_EQ(s.state_cache().size(), 0);
  for (const PlannedSeq& q : p.seqs) EXPECT_EQ(q.snapshot_to, -1);  // no slot left to spare
  s.Update(p, SampleAll(p), now);
  EXPECT_EQ(s.state_cache().size(), 2);  // b's and c's finished states
}

TEST(Scheduler, StateCacheKeepsTheEntryAnAdmissionResumesFrom) {
  Scheduler s({.num_slots = 2,
               .max_num_batched_tokens = 64,
               .eos_token_id = 0,
               .state_cache_entries = 8,
               .state_cache_min_tokens = 2});
  auto now = Clock::now();
  s.Add(MakeRequest("a", 5, 2));
  for (int step = 0; step < 2; ++step) {
    StepPlan p0 = s.Schedule(now);
    s.Update(p0, SampleAll(p0), now);
  }
  ASSERT_EQ(s.slots().num_free(), 0);  // a's finished state + its prompt snapshot
  // Extends a's prompt: its hit is pinned, so the other entry is the one evicted.
  auto b = MakeRequest("b", 7, 1);
  s.Add(std::move(b));
  StepPlan p = s.Schedule(now);
  ASSERT_EQ(p.seqs.size(), 1u);
  ASSERT_GE(p.seqs[0].restore_from, 0);
  EXPECT_NE(p.seqs[0].restore_from, p.chunks[0].slot);
  EXPECT_EQ(p.chunks[0].n_tokens, 2);
}

TEST(Scheduler, ScoredPromptsDoNotResumeCachedStates) {
  Scheduler s({.num_slots = 4,
               .max_num_batched_tokens = 64,
               .eos_token_id = 0,
               .state_cache_entries = 4,
               .state_cache_min_tokens = 2});
  auto now = Clock::now();
  s.Add(MakeRequest("a", 5, 1));
  StepPlan p0 = s.Schedule(now);
  s.Update(p0, SampleAll(p0), now);
  auto b = MakeRequest("b", 8, 1);
  b->request.prompt_logprobs = 0;
  s.Add(std::move(b));
  StepPlan p = s.Schedule(now);
  ASSERT_EQ(p.seqs.size(), 1u);
  EXPECT_EQ(p.seqs[0].restore_from, -1);
  EXPECT_EQ(p.chunks[0].n_tokens, 8);
  EXPECT_TRUE(p.chunks[0].first_chunk);
}

}  // namespace
}  // namespace bms
