// Engine loop tests over the FakeBackend: output correctness and determinism, slot accounting
// under random cancels and n, overload, fault injection, cancel/abandon/stop, validation.
#include <atomic>
#include <random>
#include <thread>

#include "engine/engine.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/engine/engine_test.h"
#include "tests/engine/fake_backend.h"

namespace bms {
namespace {

using ::bms::testing::ChoiceResult;
using ::bms::testing::Collect;
using ::bms::testing::FakeBackend;
using ::bms::testing::FakeGreedy;
using ::bms::testing::Greedy;
using ::testing::HasSubstr;

constexpr int kVocab = 64;

struct Harness {
  FakeBackend* backend = nullptr;  // owned by the engine
  std::unique_ptr<Engine> engine;
};

Harness Make(int num_slots, EngineOptions o = {}, int vocab = kVocab) {
  Harness h;
  auto backend = std::make_unique<FakeBackend>(num_slots, vocab);
  h.backend = backend.get();
  auto e = Engine::Create(std::move(backend), std::move(o));
  EXPECT_TRUE(e.ok()) << e.status();
  h.engine = std::move(*e);
  return h;
}

EngineOptions NoEos(int budget = 2048) {
  EngineOptions o;
  o.eos_token_id = -1;
  o.max_num_batched_tokens = budget;
  return o;
}

void WaitIdle(Engine& e) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    EngineStats s = e.Stats();
    if (s.running == 0 && s.waiting == 0 && s.slots_used == 0) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ADD_FAILURE() << "engine did not become idle";
}

// Start(): the warm-up step, then Backend::PrepareForServing with the engine's limits (largest
// decode batch = min(slots, token budget); the token budget), once, before serving.
TEST(Engine, WarmUpPreparesTheBackendWithTheEngineLimits) {
  for (auto [slots, budget, want_batch] : {std::tuple{8, 16, 8}, {8, 5, 5}, {3, 2048, 3}}) {
    Harness h = Make(slots, NoEos(budget));
    EXPECT_EQ(h.backend->prepare_calls, 0);
    ASSERT_TRUE(h.engine->Start().ok());
    EXPECT_EQ(h.backend->prepare_calls, 1);
    EXPECT_EQ(h.backend->prepare_forward_calls, 1);  // after the warm-up step
    EXPECT_EQ(h.backend->prepared_decode_batch, want_batch) << slots << " slots, " << budget;
    EXPECT_EQ(h.backend->prepared_tokens, budget);
    EXPECT_GT(h.engine->Stats().warmup_seconds, 0.0);
    auto ch = h.engine->Submit(Greedy({1, 2}, 2));
    ASSERT_TRUE(ch.ok());
    EXPECT_EQ(Collect(**ch, 1)[0].tokens.size(), 2u);
    h.engine->Stop();
    EXPECT_EQ(h.backend->prepare_calls, 1);  // never again while serving
  }
}

TEST(Engine, StartFailsWhenPrepareForServingFails) {
  Harness h = Make(4, NoEos());
  h.backend->prepare_status = absl::ResourceExhaustedError("no memory for the graphs");
  absl::Status s = h.engine->Start();
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(s.message(), HasSubstr("no memory for the graphs"));
  EXPECT_FALSE(h.engine->Stats().ready);
  EXPECT_EQ(h.engine->Submit(Greedy({1}, 1)).status().code(), absl::StatusCode::kUnavailable);
}

TEST(Engine, ReadyOnlyAfterStartAndWarmUp) {
  Harness h = Make(4, NoEos());
  EXPECT_FALSE(h.engine->Stats().ready);
  EXPECT_EQ(h.engine->Submit(Greedy({1}, 1)).status().code(), absl::StatusCode::kUnavailable);
  ASSERT_TRUE(h.engine->Start().ok());
  EXPECT_TRUE(h.engine->Stats().ready);
  EXPECT_EQ(h.engine->Stats().slots_total, 4);
  h.engine->Stop();
  EXPECT_FALSE(h.engine->Stats().ready);
  EXPECT_EQ(h.backend->forward_calls, 1);  // the warm-up step only
  EXPECT_EQ(h.engine->Submit(Greedy({1}, 1)).status().code(), absl::StatusCode::kUnavailable);
}

TEST(Engine, GreedyMatchesTheModelTokenForToken) {
  Harness h = Make(4, NoEos());
  ASSERT_TRUE(h.engine->Start().ok());
  auto ch = h.engine->Submit(Greedy({1, 2, 3}, 12));
  ASSERT_TRUE(ch.ok());
  std::vector<ChoiceResult> r = Collect(**ch, 1);
  EXPECT_EQ(r[0].tokens, FakeGreedy({1, 2, 3}, 12, kVocab));
  EXPECT_EQ(r[0].finish, FinishReason::kLength);
  EXPECT_EQ(r[0].finals, 1);
  EngineStats s = h.engine->Stats();
  EXPECT_EQ(s.prompt_tokens_total, 3);
  EXPECT_EQ(s.generation_tokens_total, 12);
}

TEST(Engine, StopTokenIdsAndEos) {
  std::vector<int32_t> ref = FakeGreedy({4, 5}, 10, kVocab);
  {
    Harness h = Make(2, NoEos());
    ASSERT_TRUE(h.engine->Start().ok());
    GenerateRequest req = Greedy({4, 5}, 10);
    req.sampling.stop_token_ids = {ref[3]};
    auto r = Collect(**h.engine->Submit(req), 1);
    auto first = std::find(ref.begin(), ref.end(), ref[3]) - ref.begin();
    EXPECT_EQ(r[0].tokens, std::vector<int32_t>(ref.begin(), ref.begin() + first + 1));
    EXPECT_EQ(r[0].finish, FinishReason::kStop);
    EXPECT_EQ(r[0].stop_token, ref[3]);
  }
  {
    EngineOptions o = NoEos();
    o.eos_token_id = ref[2];
    Harness h = Make(2, o);
    ASSERT_TRUE(h.engine->Start().ok());
    auto first = std::find(ref.begin(), ref.end(), ref[2]) - ref.begin();
    auto r = Collect(**h.engine->Submit(Greedy({4, 5}, 10)), 1);
    EXPECT_EQ(r[0].tokens, std::vector<int32_t>(ref.begin(), ref.begin() + first + 1));
    EXPECT_EQ(r[0].stop_token, ref[2]);
    GenerateRequest ignore = Greedy({4, 5}, 10);
    ignore.sampling.ignore_eos = true;
    r = Collect(**h.engine->Submit(ignore), 1);
    EXPECT_EQ(r[0].tokens, ref);
    EXPECT_EQ(r[0].finish, FinishReason::kLength);
  }
}

GenerateRequest Seeded(int i, std::mt19937& rng) {
  GenerateRequest r;
  int len = 1 + rng() % 30;
  for (int k = 0; k < len; ++k) r.prompt_ids.push_back(rng() % kVocab);
  r.sampling.temperature = 0.5f + (rng() % 100) / 100.0f;
  r.sampling.top_p = (rng() % 2) ? 1.0f : 0.9f;
  r.sampling.top_k = rng() % 3 == 0 ? 10 : 0;
  r.sampling.frequency_penalty = (rng() % 2) * 0.5f;
  r.sampling.seed = 1000 + i;
  r.sampling.max_tokens = 1 + rng() % 20;
  r.sampling.logprobs = rng() % 3 == 0 ? 2 : -1;
  r.n = 1 + rng() % 2;
  return r;
}

// Same seed + prompt + params => same output, alone or among 32 others, chunked or not.
TEST(Engine, SeededOutputIndependentOfBatchAndChunking) {
  std::mt19937 rng(7);
  std::vector<GenerateRequest> reqs;
  for (int i = 0; i < 33; ++i) reqs.push_back(Seeded(i, rng));
  const GenerateRequest probe = reqs[0];
  std::vector<ChoiceResult> alone;
  {
    Harness h = Make(8, NoEos());
    ASSERT_TRUE(h.engine->Start().ok());
    alone = Collect(**h.engine->Submit(probe), probe.n);
  }
  for (auto [budget, async_min] : {std::pair{3, 32}, {2048, 32}, {2048, 1}, {3, 1}}) {
    EngineOptions o = NoEos(budget);
    o.async_publish_min_events = async_min;  // 1: events through the delivery thread
    Harness h = Make(8, o);
    ASSERT_TRUE(h.engine->Start().ok());
    std::vector<std::shared_ptr<EventChannel>> chans;
    for (int i = 32; i >= 0; --i) chans.push_back(*h.engine->Submit(reqs[i]));  // probe last
    auto batched = Collect(*chans.back(), probe.n);
    for (int c = 0; c < probe.n; ++c) {
      EXPECT_EQ(batched[c].tokens, alone[c].tokens)
          << "budget " << budget << " async_min " << async_min << " choice " << c;
    }
    // Every request's events arrive complete and in order through either path.
    for (size_t i = 0; i + 1 < chans.size(); ++i) {
      const GenerateRequest& r = reqs[32 - i];
      auto got = Collect(*chans[i], r.n);
      for (int c = 0; c < r.n; ++c) {
        EXPECT_EQ(got[c].finals, 1) << "request " << 32 - i;
        EXPECT_EQ(static_cast<int>(got[c].tokens.size()), r.sampling.max_tokens);
      }
    }
    h.engine->Stop();  // the backend belongs to the engine thread until then
    if (budget == 3) EXPECT_LE(h.backend->max_batch_tokens, 3);
  }
}

TEST(Engine, NChoicesForkOnePrefill) {
  Harness h = Make(4, NoEos());
  ASSERT_TRUE(h.engine->Start().ok());
  GenerateRequest greedy = Greedy({9, 8, 7}, 6);
  greedy.n = 3;
  auto r = Collect(**h.engine->Submit(greedy), 3);
  for (const ChoiceResult& c : r) EXPECT_EQ(c.tokens, FakeGreedy({9, 8, 7}, 6, kVocab));
  GenerateRequest sampled = greedy;
  sampled.sampling.temperature = 1.0f;
  sampled.sampling.seed = 5;
  auto s1 = Collect(**h.engine->Submit(sampled), 3);
  auto s2 = Collect(**h.engine->Submit(sampled), 3);
  EXPECT_NE(s1[0].tokens, s1[1].tokens);  // independent choices (64-token vocab, 6 draws)
  for (int c = 0; c < 3; ++c) EXPECT_EQ(s1[c].tokens, s2[c].tokens);
  h.engine->Stop();
  // 1 warm-up + 3 requests x (1 prompt step + 5 decode steps) and 2 copies per request.
  EXPECT_EQ(h.backend->copies, 6);
}

TEST(Engine, LogprobsParallelToTokens) {
  Harness h = Make(2, NoEos());
  ASSERT_TRUE(h.engine->Start().ok());
  GenerateRequest req = Greedy({1, 2}, 5);
  req.sampling.logprobs = 3;
  auto r = Collect(**h.engine->Submit(req), 1);
  ASSERT_EQ(r[0].logprobs.size(), r[0].tokens.size());
  for (size_t i = 0; i < r[0].tokens.size(); ++i) {
    EXPECT_EQ(r[0].logprobs[i].token, r[0].tokens[i]);
    ASSERT_EQ(r[0].logprobs[i].top.size(), 3u);
    EXPECT_EQ(r[0].logprobs[i].top[0].first, r[0].tokens[i]);  // greedy = most likely
    EXPECT_LE(r[0].logprobs[i].logprob, 0.0f);
  }
}

TEST(Engine, ValidationNamesTheField) {
  EngineOptions o = NoEos();
  o.max_prompt_tokens = 8;
  o.max_n = 4;
  Harness h = Make(2, o);
  ASSERT_TRUE(h.engine->Start().ok());
  auto code_msg = [&](GenerateRequest r) { return h.engine->Submit(std::move(r)).status(); };
  EXPECT_THAT(code_msg(Greedy({}, 1)).message(), HasSubstr("prompt"));
  EXPECT_THAT(code_msg(Greedy(std::vector<int32_t>(9, 1), 1)).message(),
              HasSubstr("max_prompt_tokens"));
  EXPECT_THAT(code_msg(Greedy({kVocab}, 1)).message(), HasSubstr("prompt token id"));
  GenerateRequest n = Greedy({1}, 1);
  n.n = 3;  // > 2 slots
  EXPECT_THAT(code_msg(n).message(), HasSubstr("n must be in [1, 2]"));
  GenerateRequest t = Greedy({1}, 1);
  t.sampling.temperature = -1;
  absl::Status s = code_msg(t);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("temperature"));
  GenerateRequest dup = Greedy({1}, 100000);  // runs until cancelled
  dup.request_id = "same";
  auto first = h.engine->Submit(dup);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(h.engine->Submit(dup).status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(h.engine->Cancel("nope").code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(h.engine->Cancel("same").ok());
  EXPECT_EQ(Collect(**first, 1)[0].finish, FinishReason::kAbort);
}

TEST(Engine, CancelChoiceEndsOnlyThatChoice) {
  Harness h = Make(3, NoEos());
  ASSERT_TRUE(h.engine->Start().ok());
  GenerateRequest req = Greedy({1, 2, 3}, 100000);  // runs until cancelled
  req.n = 3;
  req.request_id = "three";
  auto ch = h.engine->Submit(req);
  ASSERT_TRUE(ch.ok());
  EXPECT_EQ(h.engine->CancelChoice("nope", 0).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(h.engine->CancelChoice("three", -1).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(h.engine->CancelChoice("three", 1).ok());
  // Choice 1 ends (abort) and frees its slot; choices 0 and 2 keep decoding.
  std::vector<testing::ChoiceResult> r(3);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (r[1].finals == 0 && std::chrono::steady_clock::now() < deadline) {
    if (auto ev = (*ch)->Pop(std::chrono::milliseconds(100))) testing::Absorb(*ev, &r);
  }
  ASSERT_EQ(r[1].finish, FinishReason::kAbort);
  EXPECT_EQ(r[0].finals + r[2].finals, 0);
  const size_t before = r[0].tokens.size();
  while (r[0].tokens.size() < before + 5 && std::chrono::steady_clock::now() < deadline) {
    if (auto ev = (*ch)->Pop(std::chrono::milliseconds(100))) testing::Absorb(*ev, &r);
  }
  EXPECT_GE(r[0].tokens.size(), before + 5);  // the others still run
  EXPECT_EQ(r[0].finals + r[2].finals, 0);
  while (h.engine->Stats().slots_used != 2 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(h.engine->Stats().slots_used, 2);
  ASSERT_TRUE(h.engine->Cancel("three").ok());
  while (!testing::AllFinished(r) && std::chrono::steady_clock::now() < deadline) {
    if (auto ev = (*ch)->Pop(std::chrono::milliseconds(100))) testing::Absorb(*ev, &r);
  }
  EXPECT_EQ(r[0].finish, FinishReason::kAbort);
  EXPECT_EQ(r[2].finish, FinishReason::kAbort);
  for (const auto& c : r) {
    EXPECT_EQ(c.finals, 1);
    EXPECT_EQ(c.after_final, 0);
  }
  WaitIdle(*h.engine);
}

TEST(Engine, CreateRejectsBadOptions) {
  EngineOptions o;
  o.fault_injection = "step-fail:x";
  auto e = Engine::Create(std::make_unique<FakeBackend>(2, kVocab), o);
  EXPECT_THAT(e.status().message(), HasSubstr("fault_injection"));
  o = EngineOptions{};
  o.max_num_batched_tokens = 0;
  e = Engine::Create(std::make_unique<FakeBackend>(2, kVocab), o);
  EXPECT_THAT(e.status().message(), HasSubstr("max_num_batched_tokens"));
}

TEST(Engine, OverloadRejectsAtOnceAndDropsNothingAdmitted) {
  const int kQueue = 4;
  EngineOptions o = NoEos();
  o.max_queued_requests = kQueue;
  Harness h = Make(1, o);
  ASSERT_TRUE(h.engine->Start().ok());
  // Occupy the only slot until cancelled.
  GenerateRequest hog = Greedy({1}, 100000);
  hog.request_id = "hog";
  auto hog_ch = *h.engine->Submit(hog);
  ASSERT_TRUE(hog_ch->Pop(std::chrono::seconds(30)).has_value());  // running now
  std::vector<std::shared_ptr<EventChannel>> admitted;
  for (int i = 0; i < kQueue; ++i) {
    auto ch = h.engine->Submit(Greedy({2, static_cast<int32_t>(i)}, 3));
    ASSERT_TRUE(ch.ok()) << ch.status();
    admitted.push_back(*ch);
  }
  auto rejected = h.engine->Submit(Greedy({3}, 3));
  EXPECT_EQ(rejected.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(rejected.status().message(), HasSubstr("max_queued_requests"));
  ASSERT_TRUE(h.engine->Cancel("hog").ok());
  for (int i = 0; i < kQueue; ++i) {
    auto r = Collect(*admitted[i], 1);
    EXPECT_EQ(r[0].finish, FinishReason::kLength);
    EXPECT_EQ(r[0].tokens, FakeGreedy({2, i}, 3, kVocab));
  }
  auto hog_r = Collect(*hog_ch, 1);
  EXPECT_EQ(hog_r[0].finish, FinishReason::kAbort);
}

TEST(Engine, FaultInjectionFailsOnlyThatStep) {
  EngineOptions o = NoEos();
  o.fault_injection = "step-fail:3";
  Harness h = Make(4, o);
  ASSERT_TRUE(h.engine->Start().ok());
  // One request at a time, each exactly one backend step (1-token prompt, max_tokens 1).
  for (int i = 1; i <= 7; ++i) {
    auto r = Collect(**h.engine->Submit(Greedy({i}, 1)), 1);
    if (i % 3 == 0) {
      EXPECT_EQ(r[0].finish, FinishReason::kError) << i;
      EXPECT_THAT(r[0].error.message(), HasSubstr("injected fault"));
      EXPECT_TRUE(r[0].tokens.empty());
    } else {
      EXPECT_EQ(r[0].finish, FinishReason::kLength) << i;
      EXPECT_EQ(r[0].tokens, FakeGreedy({i}, 1, kVocab));
    }
  }
  WaitIdle(*h.engine);
  // A batch caught by a failing step: all of its requests error, later ones succeed.
  std::vector<std::shared_ptr<EventChannel>> chans;
  for (int i = 0; i < 3; ++i) chans.push_back(*h.engine->Submit(Greedy({1, 2, 3}, 50)));
  int errors = 0;
  for (auto& ch : chans) errors += Collect(*ch, 1)[0].finish == FinishReason::kError;
  EXPECT_GE(errors, 1);
  WaitIdle(*h.engine);
  EXPECT_EQ(h.engine->Stats().slots_used, 0);
}

TEST(Engine, AbandonedChannelIsCancelled) {
  Harness h = Make(2, NoEos());
  ASSERT_TRUE(h.engine->Start().ok());
  auto ch = *h.engine->Submit(Greedy({1}, 100000));
  ASSERT_TRUE(ch->Pop(std::chrono::seconds(30)).has_value());
  ch->Abandon();
  WaitIdle(*h.engine);
  EXPECT_LT(h.engine->Stats().generation_tokens_total, 100000);
}

TEST(Engine, StopAbortsLiveRequests) {
  Harness h = Make(2, NoEos());
  ASSERT_TRUE(h.engine->Start().ok());
  auto running = *h.engine->Submit(Greedy({1}, 100000));
  ASSERT_TRUE(running->Pop(std::chrono::seconds(30)).has_value());
  h.engine->Stop();
  auto r = Collect(*running, 1, std::chrono::seconds(5));
  EXPECT_EQ(r[0].finish, FinishReason::kAbort);
}

// 500 requests with random lengths, n and cancels before admission, mid-prefill and mid-decode:
// every choice gets exactly one final event, nothing after it, and every slot ends up free.
// async_min: EngineOptions::async_publish_min_events (1: every step's events go through the
// delivery thread).
void SlotAccountingUnderRandomCancels(int async_min) {
  EngineOptions o = NoEos(/*budget=*/16);
  o.async_publish_min_events = async_min;
  Harness h = Make(8, o);
  ASSERT_TRUE(h.engine->Start().ok());
  std::mt19937 rng(123);
  struct Live {
    std::string id;
    std::shared_ptr<EventChannel> ch;
    std::vector<ChoiceResult> choices;
    int action;  // 0 none, 1 cancel at once, 2 cancel after first event, 3 abandon at first event
    int max_tokens;
    bool cancelled = false;
  };
  std::vector<Live> live;
  for (int i = 0; i < 500; ++i) {
    GenerateRequest r;
    r.request_id = "r" + std::to_string(i);
    int len = 1 + rng() % 60;
    for (int k = 0; k < len; ++k) r.prompt_ids.push_back(rng() % kVocab);
    r.n = 1 + rng() % 3;
    r.sampling.max_tokens = 1 + rng() % 12;
    r.sampling.temperature = rng() % 2 ? 0.0f : 1.0f;
    int action = rng() % 4;
    auto ch = h.engine->Submit(r);
    ASSERT_TRUE(ch.ok()) << ch.status();
    live.push_back(
        {r.request_id, *ch, std::vector<ChoiceResult>(r.n), action, r.sampling.max_tokens});
    if (action == 1) {
      absl::Status s = h.engine->Cancel(r.request_id);
      EXPECT_TRUE(s.ok() || s.code() == absl::StatusCode::kNotFound) << s;
      live.back().cancelled = true;
    }
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  size_t done = 0;
  std::vector<bool> finished(live.size(), false);
  while (done < live.size() && std::chrono::steady_clock::now() < deadline) {
    for (size_t i = 0; i < live.size(); ++i) {
      if (finished[i]) continue;
      Live& l = live[i];
      if (l.ch->abandoned()) {
        finished[i] = true;
        ++done;
        continue;
      }
      while (auto ev = l.ch->TryPop()) {
        bms::testing::Absorb(*ev, &l.choices);
        if (l.action == 2 && !l.cancelled) {
          absl::Status s = h.engine->Cancel(l.id);
          EXPECT_TRUE(s.ok() || s.code() == absl::StatusCode::kNotFound) << s;
          l.cancelled = true;
        }
        if (l.action == 3) {
          l.ch->Abandon();
          break;
        }
      }
      if (bms::testing::AllFinished(l.choices)) {
        finished[i] = true;
        ++done;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_EQ(done, live.size());
  WaitIdle(*h.engine);
  int aborted = 0;
  for (const Live& l : live) {
    if (l.ch->abandoned()) continue;
    for (const ChoiceResult& c : l.choices) {
      EXPECT_EQ(c.finals, 1) << l.id;
      EXPECT_EQ(c.after_final, 0) << l.id;
      EXPECT_LE(static_cast<int>(c.tokens.size()), l.max_tokens);
      if (c.finish == FinishReason::kAbort) {
        ++aborted;
        EXPECT_TRUE(l.cancelled) << l.id;
      } else {
        EXPECT_EQ(c.finish, FinishReason::kLength) << l.id;
        EXPECT_EQ(static_cast<int>(c.tokens.size()), l.max_tokens) << l.id;
      }
    }
  }
  EXPECT_GT(aborted, 50);
  EngineStats s = h.engine->Stats();
  EXPECT_EQ(s.slots_used, 0);
  EXPECT_EQ(s.running, 0);
  EXPECT_EQ(s.waiting, 0);
  h.engine->Stop();
}

TEST(Engine, SlotAccountingUnderRandomCancels) { SlotAccountingUnderRandomCancels(0); }
TEST(Engine, SlotAccountingUnderRandomCancelsDeliveryThread) {
  SlotAccountingUnderRandomCancels(1);
}

class CountingObserver : public EngineObserver {
 public:
  void OnStep(const StepObservation& s) override {
    steps.fetch_add(1);
    decode_tokens.fetch_add(s.num_decode_tokens);
    prefill_tokens.fetch_add(s.num_prefill_tokens);
    failed.fetch_add(s.failed ? 1 : 0);
  }
  void OnEvent(const void* request, const GenerationEvent& e) override {
    (void)request;
    events.fetch_add(1);
    tokens.fetch_add(static_cast<int64_t>(e.token_ids.size()));
  }
  void OnRejected(const absl::Status& s) override {
    if (s.code() == absl::StatusCode::kInvalidArgument) rejected.fetch_add(1);
  }
  std::atomic<int64_t> steps{0}, decode_tokens{0}, prefill_tokens{0}, failed{0}, events{0},
      tokens{0}, rejected{0};
};

TEST(Engine, ObserverSeesStepsEventsAndRejections) {
  auto obs = std::make_shared<CountingObserver>();
  EngineOptions o = NoEos();
  o.observer = obs;
  Harness h = Make(2, o);
  ASSERT_TRUE(h.engine->Start().ok());
  auto r = Collect(**h.engine->Submit(Greedy({1, 2, 3, 4}, 5)), 1);
  EXPECT_FALSE(h.engine->Submit(Greedy({}, 5)).ok());
  h.engine->Stop();
  EXPECT_EQ(obs->steps.load(), 5);  // 1 prompt step + 4 decode steps
  EXPECT_EQ(obs->prefill_tokens.load(), 4);
  EXPECT_EQ(obs->decode_tokens.load(), 4);
  EXPECT_EQ(obs->events.load(), 5);  // one per token, the last one final
  EXPECT_EQ(obs->tokens.load(), 5);
  EXPECT_EQ(obs->rejected.load(), 1);
  EXPECT_EQ(obs->failed.load(), 0);
}

// Rows sampled on the sampler pool give exactly what the engine thread alone gives.
TEST(Engine, ParallelSamplingMatchesSerial) {
  const int vocab = 4096;  // 8 rows per range: several ranges per step
  auto run = [&](int threads) {
    EngineOptions o = NoEos();
    o.sampler_threads = threads;
    Harness h = Make(16, o, vocab);
    EXPECT_TRUE(h.engine->Start().ok());
    std::mt19937 rng(5);
    std::vector<std::shared_ptr<EventChannel>> chans;
    std::vector<int> ns;
    for (int i = 0; i < 24; ++i) {
      GenerateRequest r = Seeded(i, rng);
      for (int32_t& t : r.prompt_ids) t = t * 61 % vocab;
      ns.push_back(r.n);
      chans.push_back(*h.engine->Submit(r));
    }
    std::vector<std::vector<int32_t>> out;
    for (size_t i = 0; i < chans.size(); ++i) {
      for (const ChoiceResult& c : Collect(*chans[i], ns[i])) out.push_back(c.tokens);
    }
    return out;
  };
  EXPECT_EQ(run(1), run(4));
}

}  // namespace
}  // namespace bms
