// GPU test (label gpu): the engine over the CUDA backend (fp32 compute and state, so it can be
// held to the CPU reference). Prompt scoring (prompt_logprobs: LogitsMode::kAll chunks, capped
// to the backend's pre-sized logits rows) gives the CPU backend's scores; the state cache
// (CopyState restores before a step and prompt snapshots after one, on the compute stream)
// gives the same multi-turn greedy output as no cache, with the expected hits.
#include <memory>
#include <random>

#include "engine/cpu_backend.h"
#include "engine/cuda_backend.h"
#include "engine/engine.h"
#include "engine/model_weights.h"
#include "tests/engine/engine_test.h"
#include "tests/gpu/gpu_test_util.h"

namespace bms::gpu_test {
namespace {

using ::bms::testing::ChoiceResult;
using ::bms::testing::Collect;

std::unique_ptr<Engine> StartEngine(absl::StatusOr<std::unique_ptr<Backend>> backend,
                                    int cache_entries) {
  EXPECT_TRUE(backend.ok()) << backend.status();
  if (!backend.ok()) return nullptr;
  EngineOptions o;
  o.max_num_batched_tokens = 16;  // chunked prefill, scored chunks capped at 8 rows (8 slots)
  o.eos_token_id = -1;
  o.state_cache_entries = cache_entries;
  o.state_cache_min_tokens = 4;
  auto e = Engine::Create(std::move(*backend), o);
  EXPECT_TRUE(e.ok()) << e.status();
  if (!e.ok()) return nullptr;
  EXPECT_TRUE((*e)->Start().ok());
  return std::move(*e);
}

absl::StatusOr<std::unique_ptr<Backend>> Cuda(const ModelWeights& w) {
  BackendOptions o;
  o.num_slots = 8;
  o.fp32_compute = true;
  return CreateCudaBackend(w, o);
}

std::vector<int32_t> RandomPrompt(std::mt19937_64& rng, int n, int vocab) {
  std::vector<int32_t> p(n);
  for (int32_t& t : p) t = static_cast<int32_t>(rng() % vocab);
  return p;
}

TEST(GpuEngine, PromptLogprobsMatchTheCpuBackend) {
  BMS_SKIP_WITHOUT_GPU();
  const ModelConfig c = SmallMoe(LayerKind::kMoe);
  const uint64_t seed = TestSeed();
  const ModelWeights w = MakeRandomWeights(c, seed);
  BackendOptions co;
  co.num_slots = 8;
  co.num_threads = 1;
  auto cpu = StartEngine(CpuBackend::Create(w, co), 0);
  auto gpu = StartEngine(Cuda(w), 0);
  ASSERT_TRUE(cpu && gpu);
  std::mt19937_64 rng(seed);
  const std::vector<int32_t> prompt = RandomPrompt(rng, 37, c.vocab_size);
  auto score = [&](Engine& e) {
    GenerateRequest r = bms::testing::Greedy(prompt, 0);
    r.prompt_logprobs = 2;
    r.n = 2;
    return Collect(**e.Submit(std::move(r)), 2);
  };
  const std::vector<ChoiceResult> want = score(*cpu), got = score(*gpu);
  for (int choice = 0; choice < 2; ++choice) {
    ASSERT_EQ(got[choice].prompt_logprobs.size(), prompt.size() - 1);
    ASSERT_EQ(want[choice].prompt_logprobs.size(), prompt.size() - 1);
    EXPECT_EQ(got[choice].finish, FinishReason::kLength);
    EXPECT_TRUE(got[choice].tokens.empty());
    for (size_t i = 0; i + 1 < prompt.size(); ++i) {
      const TokenLogprob& g = got[choice].prompt_logprobs[i];
      const TokenLogprob& x = want[choice].prompt_logprobs[i];
      EXPECT_EQ(g.token, prompt[i + 1]);
      EXPECT_NEAR(g.logprob, x.logprob, 2e-3) << i;
      ASSERT_EQ(g.top.size(), 2u);
      EXPECT_NEAR(g.top[0].second, x.top[0].second, 2e-3) << i;
      EXPECT_GE(g.rank, 1);
    }
  }
}

TEST(GpuEngine, StateCacheTurnsEqualNoCache) {
  BMS_SKIP_WITHOUT_GPU();
  const ModelConfig c = SmallMoe(LayerKind::kMoe);
  const uint64_t seed = TestSeed();
  const ModelWeights w = MakeRandomWeights(c, seed);
  auto plain = StartEngine(Cuda(w), 0);
  auto cached = StartEngine(Cuda(w), 8);
  ASSERT_TRUE(plain && cached);
  std::mt19937_64 rng(seed + 1);
  const std::vector<int32_t> p1 = RandomPrompt(rng, 29, c.vocab_size);
  auto run = [](Engine& e, const std::vector<int32_t>& prompt) {
    return Collect(**e.Submit(bms::testing::Greedy(prompt, 8)), 1)[0];
  };
  const ChoiceResult t1 = run(*plain, p1);
  EXPECT_EQ(run(*cached, p1).tokens, t1.tokens);
  std::vector<int32_t> p2 = p1;  // extends turn 1's finished state
  p2.insert(p2.end(), t1.tokens.begin(), t1.tokens.end());
  p2.insert(p2.end(), {3, 4, 5});
  std::vector<int32_t> p3 = p1;  // extends turn 1's prompt snapshot
  p3.insert(p3.end(), {7, 8});
  for (const auto* prompt : {&p2, &p3})
    EXPECT_EQ(run(*cached, *prompt).tokens, run(*plain, *prompt).tokens);
  const EngineStats s = cached->Stats();
  EXPECT_EQ(s.state_cache_hits_total, 2);
  EXPECT_EQ(s.state_cache_tokens_total, static_cast<int64_t>(p1.size() + 7 + p1.size()));
  EXPECT_EQ(s.slots_used, 0);
}

}  // namespace
}  // namespace bms::gpu_test
