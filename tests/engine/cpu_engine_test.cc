// The engine over the real CPU backend (tiny preset, random weights): greedy output equals a
// plain decode loop on the backend, and a seeded request's output is identical alone, among 32
// other requests of different lengths and params, and with its prompt prefilled in many chunks.
#include <algorithm>
#include <cmath>
#include <random>

#include "engine/cpu_backend.h"
#include "engine/engine.h"
#include "engine/model_weights.h"
#include "gtest/gtest.h"
#include "tests/engine/engine_test.h"

namespace bms {
namespace {

using ::bms::testing::ChoiceResult;
using ::bms::testing::Collect;

ModelWeights TinyWeights() {
  absl::StatusOr<ModelConfig> c = ModelConfig::Preset("tiny");
  EXPECT_TRUE(c.ok());
  return MakeRandomWeights(*c, 17);
}

std::unique_ptr<Backend> TinyBackend(const ModelWeights& w, int slots) {
  BackendOptions o;
  o.num_slots = slots;
  o.num_threads = 1;
  auto b = CpuBackend::Create(w, o);
  EXPECT_TRUE(b.ok()) << b.status();
  return std::move(*b);
}

std::unique_ptr<Engine> TinyEngine(const ModelWeights& w, int slots, int budget) {
  EngineOptions o;
  o.max_num_batched_tokens = budget;
  o.eos_token_id = -1;  // random weights: never stop early, compare full lengths
  auto e = Engine::Create(TinyBackend(w, slots), o);
  EXPECT_TRUE(e.ok()) << e.status();
  EXPECT_TRUE((*e)->Start().ok());
  return std::move(*e);
}

// The whole prompt as one first chunk in slot 0, straight on the backend (no engine).
absl::Status PrefillWhole(Backend& b, const std::vector<int32_t>& prompt, LogitsMode mode,
                          std::vector<float>* logits) {
  SeqChunk c{.slot = 0,
             .token_offset = 0,
             .n_tokens = static_cast<int>(prompt.size()),
             .first_chunk = true,
             .logits = mode};
  return b.Forward({prompt, std::span<const SeqChunk>(&c, 1)}, logits);
}

TEST(CpuEngine, GreedyEqualsPlainDecodeLoop) {
  ModelWeights w = TinyWeights();
  const std::vector<int32_t> prompt = {1, 2, 3, 40, 41, 300, 7};
  const int kTokens = 10;
  // Independent loop: whole prompt, then one token at a time, argmax (first index on ties).
  std::vector<int32_t> want;
  {
    auto b = TinyBackend(w, 1);
    std::vector<float> logits;
    ASSERT_TRUE(PrefillWhole(*b, prompt, LogitsMode::kLast, &logits).ok());
    for (int i = 0; i < kTokens; ++i) {
      int32_t t =
          static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
      want.push_back(t);
      SeqChunk d{.slot = 0, .token_offset = 0, .n_tokens = 1, .first_chunk = false};
      ASSERT_TRUE(
          b->Forward({std::span<const int32_t>(&t, 1), std::span<const SeqChunk>(&d, 1)}, &logits)
              .ok());
    }
  }
  auto engine = TinyEngine(w, 4, 3);  // chunked prefill as well
  auto r = Collect(**engine->Submit(bms::testing::Greedy(prompt, kTokens)), 1);
  EXPECT_EQ(r[0].tokens, want);
}

GenerateRequest Random(int i, std::mt19937& rng, int vocab) {
  GenerateRequest r;
  int len = 1 + rng() % 48;
  for (int k = 0; k < len; ++k) r.prompt_ids.push_back(rng() % vocab);
  r.sampling.temperature = (rng() % 4 == 0) ? 0.0f : 0.6f + (rng() % 80) / 100.0f;
  r.sampling.top_p = (rng() % 2) ? 1.0f : 0.85f;
  r.sampling.top_k = rng() % 3 == 0 ? 20 : 0;
  r.sampling.min_p = rng() % 4 == 0 ? 0.05f : 0.0f;
  r.sampling.presence_penalty = (rng() % 2) * 0.3f;
  r.sampling.repetition_penalty = rng() % 3 == 0 ? 1.2f : 1.0f;
  r.sampling.seed = 500 + i;
  r.sampling.max_tokens = 1 + rng() % 16;
  r.n = 1 + rng() % 2;
  return r;
}

TEST(CpuEngine, SeededOutputIndependentOfBatchAndChunking) {
  ModelWeights w = TinyWeights();
  const int vocab = w.config.vocab_size;
  std::mt19937 rng(99);
  GenerateRequest probe;
  for (int k = 0; k < 37; ++k) probe.prompt_ids.push_back(rng() % vocab);
  probe.sampling.temperature = 0.9f;
  probe.sampling.top_p = 0.95f;
  probe.sampling.top_k = 50;
  probe.sampling.frequency_penalty = 0.2f;
  probe.sampling.seed = 4242;
  probe.sampling.max_tokens = 12;
  probe.n = 2;
  std::vector<GenerateRequest> others;
  for (int i = 0; i < 32; ++i) others.push_back(Random(i, rng, vocab));

  std::vector<ChoiceResult> alone;
  {
    auto engine = TinyEngine(w, 4, 2048);
    alone = Collect(**engine->Submit(probe), probe.n);
    for (const ChoiceResult& c : alone) ASSERT_EQ(c.tokens.size(), 12u);
  }
  struct Run {
    int budget;
    bool batched;
  };
  for (Run run : {Run{5, false}, Run{2048, true}, Run{7, true}}) {
    auto engine = TinyEngine(w, 16, run.budget);
    std::vector<std::shared_ptr<EventChannel>> chans;
    if (run.batched) {
      for (size_t i = 0; i < others.size(); ++i) {
        chans.push_back(*engine->Submit(others[i]));
        if (i == 10) chans.push_back(*engine->Submit(probe));  // joins mid-flight
      }
    } else {
      chans.push_back(*engine->Submit(probe));
    }
    std::shared_ptr<EventChannel> probe_ch = run.batched ? chans[11] : chans[0];
    auto got = Collect(*probe_ch, probe.n);
    for (int c = 0; c < probe.n; ++c) {
      EXPECT_EQ(got[c].tokens, alone[c].tokens)
          << "budget " << run.budget << " batched " << run.batched << " choice " << c;
    }
  }
}

// Prompt scoring: the engine's prompt_logprobs equal log-softmax over the backend's own logits
// rows for the whole prompt (one kAll chunk on a fresh backend, computed here in double), though
// the engine prefills it in 4-token chunks next to another request, for both choices.
TEST(CpuEngine, PromptLogprobsScoreEveryPromptToken) {
  ModelWeights w = TinyWeights();
  std::vector<int32_t> prompt;
  std::mt19937 rng(::testing::UnitTest::GetInstance()->random_seed());
  for (int i = 0; i < 23; ++i) prompt.push_back(static_cast<int32_t>(rng() % 500));
  const int kTop = 3;
  struct Want {
    double logprob;
    std::vector<int32_t> top;
    int rank;
  };
  std::vector<Want> want;
  {
    auto b = TinyBackend(w, 1);
    std::vector<float> logits;
    ASSERT_TRUE(PrefillWhole(*b, prompt, LogitsMode::kAll, &logits).ok());
    const size_t vocab = logits.size() / prompt.size();
    for (size_t i = 0; i + 1 < prompt.size(); ++i) {
      const float* row = logits.data() + i * vocab;
      double mx = *std::max_element(row, row + vocab), sum = 0;
      for (size_t v = 0; v < vocab; ++v) sum += std::exp(static_cast<double>(row[v]) - mx);
      std::vector<int32_t> order(vocab);
      for (size_t v = 0; v < vocab; ++v) order[v] = static_cast<int32_t>(v);
      std::stable_sort(order.begin(), order.end(),
                       [&](int32_t a, int32_t b) { return row[a] > row[b]; });
      order.resize(kTop);
      int rank = 1;
      for (size_t v = 0; v < vocab; ++v) rank += row[v] > row[prompt[i + 1]];
      want.push_back({row[prompt[i + 1]] - mx - std::log(sum), order, rank});
    }
  }
  auto engine = TinyEngine(w, 4, 5);
  GenerateRequest other = bms::testing::Greedy({5, 6, 7, 8, 9, 10, 11}, 6);
  auto other_ch = engine->Submit(std::move(other));
  GenerateRequest req = bms::testing::Greedy(prompt, 3);
  req.n = 2;
  req.prompt_logprobs = kTop;
  auto ch = engine->Submit(std::move(req));
  ASSERT_TRUE(ch.ok() && other_ch.ok());
  auto got = Collect(**ch, 2);
  auto other_got = Collect(**other_ch, 1);
  EXPECT_TRUE(other_got[0].prompt_logprobs.empty());
  for (const ChoiceResult& c : got) {
    EXPECT_EQ(c.prompt_logprob_events, 1);
    ASSERT_EQ(c.prompt_logprobs.size(), prompt.size() - 1);
    for (size_t i = 0; i + 1 < prompt.size(); ++i) {
      const TokenLogprob& lp = c.prompt_logprobs[i];
      EXPECT_EQ(lp.token, prompt[i + 1]) << i;
      EXPECT_NEAR(lp.logprob, want[i].logprob, 1e-4) << i;
      EXPECT_EQ(lp.rank, want[i].rank) << i;
      ASSERT_EQ(lp.top.size(), static_cast<size_t>(kTop)) << i;
      for (int k = 0; k < kTop; ++k) EXPECT_EQ(lp.top[k].first, want[i].top[k]) << i << "," << k;
      EXPECT_GE(lp.top[0].second, lp.logprob - 1e-6) << i;
    }
  }
  EXPECT_EQ(got[0].tokens, got[1].tokens);  // greedy: both choices alike
}

TEST(CpuEngine, PromptLogprobsOutOfRangeIsRejected) {
  ModelWeights w = TinyWeights();
  auto engine = TinyEngine(w, 2, 8);
  GenerateRequest req = bms::testing::Greedy({1, 2, 3}, 2);
  req.prompt_logprobs = 21;
  auto ch = engine->Submit(std::move(req));
  ASSERT_FALSE(ch.ok());
  EXPECT_EQ(ch.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(ch.status().message().find("prompt_logprobs"), std::string_view::npos);
}

// max_tokens 0 with prompt_logprobs scores the prompt and samples nothing: every choice ends
// (length, no tokens) with the same scores a generating request gets.
TEST(CpuEngine, ScoreOnlyRequestGivesTheSameScoresAndNoTokens) {
  ModelWeights w = TinyWeights();
  const std::vector<int32_t> prompt = {9, 8, 7, 100, 200, 300, 5, 6, 44};
  auto engine = TinyEngine(w, 4, 4);
  GenerateRequest gen = bms::testing::Greedy(prompt, 2);
  gen.prompt_logprobs = 1;
  GenerateRequest score = gen;
  score.sampling.max_tokens = 0;
  score.n = 2;
  auto gen_ch = engine->Submit(std::move(gen));
  auto score_ch = engine->Submit(std::move(score));
  ASSERT_TRUE(gen_ch.ok() && score_ch.ok());
  auto want = Collect(**gen_ch, 1);
  auto got = Collect(**score_ch, 2);
  ASSERT_EQ(want[0].prompt_logprobs.size(), prompt.size() - 1);
  for (const ChoiceResult& c : got) {
    EXPECT_EQ(c.finish, FinishReason::kLength);
    EXPECT_TRUE(c.tokens.empty());
    EXPECT_EQ(c.prompt_logprob_events, 1);
    ASSERT_EQ(c.prompt_logprobs.size(), prompt.size() - 1);
    for (size_t i = 0; i + 1 < prompt.size(); ++i) {
      EXPECT_EQ(c.prompt_logprobs[i].token, prompt[i + 1]);
      EXPECT_FLOAT_EQ(c.prompt_logprobs[i].logprob, want[0].prompt_logprobs[i].logprob) << i;
    }
  }
  EXPECT_EQ(engine->Stats().slots_used, 0);
}

TEST(CpuEngine, MaxTokensZeroNeedsPromptLogprobs) {
  ModelWeights w = TinyWeights();
  auto engine = TinyEngine(w, 2, 8);
  GenerateRequest req = bms::testing::Greedy({1, 2, 3}, 0);
  auto ch = engine->Submit(req);
  ASSERT_FALSE(ch.ok());
  EXPECT_NE(ch.status().message().find("max_tokens"), std::string_view::npos);
  req.prompt_logprobs = 0;
  req.sampling.min_tokens = 1;
  ch = engine->Submit(req);
  ASSERT_FALSE(ch.ok());
  EXPECT_NE(ch.status().message().find("min_tokens"), std::string_view::npos);
}

// State cache: a multi-turn conversation gives the same greedy tokens and logprobs (to rounding:
// a resumed state was built by decode steps, a fresh one by prefill chunks) with the cache on as
// with it off, and the cached run computes fewer prompt tokens, by exactly what it resumed.
TEST(CpuEngine, StateCacheResumesTurnsWithTheSameOutput) {
  ModelWeights w = TinyWeights();
  auto make = [&](int cache_entries) {
    EngineOptions o;
    o.max_num_batched_tokens = 8;  // chunked prefill
    o.eos_token_id = -1;
    o.state_cache_entries = cache_entries;
    o.state_cache_min_tokens = 4;
    auto e = Engine::Create(TinyBackend(w, 4), o);
    EXPECT_TRUE(e.ok()) << e.status();
    EXPECT_TRUE((*e)->Start().ok());
    return std::move(*e);
  };
  auto plain = make(0);
  auto cached = make(8);
  std::mt19937 rng(::testing::UnitTest::GetInstance()->random_seed());
  std::vector<int32_t> p1;
  for (int i = 0; i < 19; ++i) p1.push_back(static_cast<int32_t>(rng() % 500));
  auto run = [](Engine& e, const std::vector<int32_t>& prompt) {
    GenerateRequest r = bms::testing::Greedy(prompt, 6);
    r.sampling.logprobs = 2;
    return Collect(**e.Submit(std::move(r)), 1)[0];
  };
  ChoiceResult t1_plain = run(*plain, p1), t1_cached = run(*cached, p1);
  EXPECT_EQ(t1_cached.tokens, t1_plain.tokens);
  // Turn 2 extends turn 1's prompt and output: resumes the finished state (p1 + 5 tokens).
  std::vector<int32_t> p2 = p1;
  p2.insert(p2.end(), t1_plain.tokens.begin(), t1_plain.tokens.end());
  p2.insert(p2.end(), {11, 12, 13});
  // Turn 3 extends only turn 1's prompt: resumes the prompt snapshot.
  std::vector<int32_t> p3 = p1;
  p3.insert(p3.end(), {21, 22});
  for (const auto* prompt : {&p2, &p3}) {
    ChoiceResult want = run(*plain, *prompt), got = run(*cached, *prompt);
    EXPECT_EQ(got.tokens, want.tokens);
    ASSERT_EQ(got.logprobs.size(), want.logprobs.size());
    for (size_t k = 0; k < want.logprobs.size(); ++k)
      EXPECT_NEAR(got.logprobs[k].logprob, want.logprobs[k].logprob, 1e-3) << k;
  }
  const EngineStats a = plain->Stats(), b = cached->Stats();
  const int64_t resumed = static_cast<int64_t>(p1.size() + 5 + p1.size());
  EXPECT_EQ(a.state_cache_hits_total, 0);
  EXPECT_EQ(b.state_cache_hits_total, 2);
  EXPECT_EQ(b.state_cache_tokens_total, resumed);
  EXPECT_EQ(a.prompt_tokens_total - b.prompt_tokens_total, resumed);
  EXPECT_GT(b.state_cache_entries, 0);
  EXPECT_EQ(b.slots_used, 0);  // entries are not counted as used by requests
}

}  // namespace
}  // namespace bms
