// The engine over the real CPU backend (tiny preset, random weights): greedy output equals a
// plain decode loop on the backend, and a seeded request's output is identical alone, among 32
// other requests of different lengths and params, and with its prompt prefilled in many chunks.
#include <algorithm>
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

TEST(CpuEngine, GreedyEqualsPlainDecodeLoop) {
  ModelWeights w = TinyWeights();
  const std::vector<int32_t> prompt = {1, 2, 3, 40, 41, 300, 7};
  const int kTokens = 10;
  // Independent loop: whole prompt, then one token at a time, argmax (first index on ties).
  std::vector<int32_t> want;
  {
    auto b = TinyBackend(w, 1);
    std::vector<float> logits;
    SeqChunk c{.slot = 0,
               .token_offset = 0,
               .n_tokens = static_cast<int>(prompt.size()),
               .first_chunk = true,
               .logits = LogitsMode::kLast};
    ASSERT_TRUE(b->Forward({prompt, std::span<const SeqChunk>(&c, 1)}, &logits).ok());
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

}  // namespace
}  // namespace bms
