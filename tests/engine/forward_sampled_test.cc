// Backend::ForwardSampled's default (host) implementation equals Forward + SampleToken per row,
// it rejects kAll chunks and a wrong number of contexts, and the engine's device-sampling path
// (taken when a backend says SamplesOnDevice) gives the same outputs as the old path.
#include <memory>
#include <random>

#include "engine/cpu_backend.h"
#include "engine/engine.h"
#include "engine/model_weights.h"
#include "engine/sampler.h"
#include "gtest/gtest.h"
#include "tests/engine/engine_test.h"

namespace bms {
namespace {

using ::bms::testing::ChoiceResult;
using ::bms::testing::Collect;

ModelWeights TinyWeights() {
  absl::StatusOr<ModelConfig> c = ModelConfig::Preset("tiny");
  EXPECT_TRUE(c.ok());
  return MakeRandomWeights(*c, 23);
}

std::unique_ptr<Backend> TinyBackend(const ModelWeights& w, int slots) {
  BackendOptions o;
  o.num_slots = slots;
  o.num_threads = 1;
  auto b = CpuBackend::Create(w, o);
  EXPECT_TRUE(b.ok()) << b.status();
  return std::move(*b);
}

// A backend that claims device sampling but keeps the default ForwardSampled (host sampling),
// so the engine takes its ForwardSampled path; counts the calls.
class ShimBackend : public Backend {
 public:
  explicit ShimBackend(std::unique_ptr<Backend> inner) : inner_(std::move(inner)) {}
  std::string name() const override { return "shim"; }
  const ModelConfig& config() const override { return inner_->config(); }
  int num_slots() const override { return inner_->num_slots(); }
  size_t state_bytes_per_slot() const override { return inner_->state_bytes_per_slot(); }
  absl::Status Forward(const StepInput& input, std::vector<float>* logits) override {
    ++forward_calls;
    return inner_->Forward(input, logits);
  }
  bool SamplesOnDevice() const override { return true; }
  absl::Status ForwardSampled(const StepInput& input, std::span<const SampleContext> rows,
                              std::vector<SampledToken>* out) override {
    ++sampled_calls;
    return Backend::ForwardSampled(input, rows, out);
  }
  absl::Status CopyState(int src, int dst) override { return inner_->CopyState(src, dst); }
  absl::StatusOr<std::vector<float>> ReadState(int slot) override {
    return inner_->ReadState(slot);
  }
  std::atomic<int> forward_calls{0}, sampled_calls{0};

 private:
  std::unique_ptr<Backend> inner_;
};

TEST(ForwardSampled, DefaultEqualsForwardPlusHostSampler) {
  ModelWeights w = TinyWeights();
  auto a = TinyBackend(w, 4);
  auto b = TinyBackend(w, 4);
  const int vocab = w.config.vocab_size;
  // Three sequences: a prompt chunk without logits, two prompts with logits; then decodes.
  std::vector<int32_t> tokens = {5, 6, 7, 8, 9, 10, 11, 12, 13};
  std::vector<SeqChunk> chunks = {
      {.slot = 0, .token_offset = 0, .n_tokens = 3, .logits = LogitsMode::kNone},
      {.slot = 1, .token_offset = 3, .n_tokens = 4, .logits = LogitsMode::kLast},
      {.slot = 2, .token_offset = 7, .n_tokens = 2, .logits = LogitsMode::kLast}};
  SamplingParams greedy;
  greedy.temperature = 0;
  greedy.logprobs = 5;
  SamplingParams hot;
  hot.temperature = 1.1f;
  hot.top_k = 30;
  hot.top_p = 0.9f;
  hot.repetition_penalty = 1.3f;
  hot.logit_bias = {{4, 2.0f}, {4, 1.0f}};
  hot.logprobs = 0;
  TokenCounts counts = {{3, 2}, {9, 1}};
  std::vector<SampleContext> rows = {
      {.params = &greedy, .counts = nullptr, .num_generated = 0, .seed = 1, .choice = 0},
      {.params = &hot, .counts = &counts, .num_generated = 3, .seed = 77, .choice = 1}};
  for (int step = 0; step < 3; ++step) {
    std::vector<float> logits;
    ASSERT_TRUE(a->Forward({tokens, chunks}, &logits).ok());
    ASSERT_EQ(logits.size(), 2u * vocab);
    std::vector<SampledToken> got;
    ASSERT_TRUE(b->ForwardSampled({tokens, chunks}, rows, &got).ok());
    ASSERT_EQ(got.size(), 2u);
    std::vector<float> scratch;
    for (int r = 0; r < 2; ++r) {
      SampledToken want =
          SampleToken(std::span<const float>(logits.data() + r * vocab, vocab), rows[r], &scratch);
      EXPECT_EQ(got[r].token, want.token) << "step " << step << " row " << r;
      EXPECT_EQ(got[r].logprob.logprob, want.logprob.logprob);
      EXPECT_EQ(got[r].logprob.top, want.logprob.top);
    }
    // Next step: every sequence decodes its sampled token (slot 0 continues its prompt).
    tokens = {14, got[0].token, got[1].token};
    chunks = {{.slot = 0,
               .token_offset = 0,
               .n_tokens = 1,
               .first_chunk = false,
               .logits = LogitsMode::kNone},
              {.slot = 1, .token_offset = 1, .n_tokens = 1, .first_chunk = false},
              {.slot = 2, .token_offset = 2, .n_tokens = 1, .first_chunk = false}};
    ++rows[1].num_generated;
  }
}

TEST(ForwardSampled, RejectsAllLogitsAndWrongRowCount) {
  ModelWeights w = TinyWeights();
  auto b = TinyBackend(w, 2);
  std::vector<int32_t> tokens = {1, 2};
  SamplingParams p;
  SampleContext ctx{.params = &p};
  std::vector<SampledToken> out;
  std::vector<SeqChunk> all = {
      {.slot = 0, .token_offset = 0, .n_tokens = 2, .logits = LogitsMode::kAll}};
  absl::Status s = b->ForwardSampled({tokens, all}, std::span<const SampleContext>(&ctx, 1), &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("kAll"), std::string::npos) << s;
  std::vector<SeqChunk> last = {{.slot = 0, .token_offset = 0, .n_tokens = 2}};
  s = b->ForwardSampled({tokens, last}, {}, &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("rows"), std::string::npos) << s;
}

GenerateRequest RandomRequest(int i, std::mt19937& rng, int vocab) {
  GenerateRequest r;
  const int len = 1 + rng() % 20;
  for (int k = 0; k < len; ++k) r.prompt_ids.push_back(rng() % vocab);
  r.sampling.temperature = (i % 3 == 0) ? 0.0f : 0.7f + (rng() % 60) / 100.0f;
  r.sampling.top_p = (rng() % 2) ? 1.0f : 0.9f;
  r.sampling.top_k = rng() % 3 == 0 ? 10 : 0;
  r.sampling.frequency_penalty = (rng() % 2) * 0.4f;
  r.sampling.min_tokens = rng() % 2 ? 3 : 0;
  r.sampling.logprobs = rng() % 2 ? 3 : -1;
  r.sampling.seed = 900 + i;
  r.sampling.max_tokens = 2 + rng() % 10;
  r.n = i % 5 == 0 ? 2 : 1;  // n > 1 takes the old path for the prompt's last step
  return r;
}

TEST(ForwardSampled, EngineDeviceSamplingPathEqualsHostPath) {
  ModelWeights w = TinyWeights();
  const int vocab = w.config.vocab_size;
  std::mt19937 rng(5);
  std::vector<GenerateRequest> reqs;
  for (int i = 0; i < 12; ++i) reqs.push_back(RandomRequest(i, rng, vocab));
  auto run = [&](std::unique_ptr<Backend> backend) {
    EngineOptions o;
    o.max_num_batched_tokens = 16;
    o.eos_token_id = 2;
    auto e = Engine::Create(std::move(backend), o);
    EXPECT_TRUE(e.ok()) << e.status();
    EXPECT_TRUE((*e)->Start().ok());
    std::vector<std::shared_ptr<EventChannel>> chans;
    for (const GenerateRequest& r : reqs) chans.push_back(*(*e)->Submit(r));
    std::vector<std::vector<ChoiceResult>> out;
    for (size_t i = 0; i < reqs.size(); ++i) out.push_back(Collect(*chans[i], reqs[i].n));
    return out;
  };
  auto host = run(TinyBackend(w, 6));
  auto shim_owned = std::make_unique<ShimBackend>(TinyBackend(w, 6));
  ShimBackend* shim = shim_owned.get();
  // The engine owns the shim; read its counters before the engine (and the shim) go away.
  EngineOptions o;
  o.max_num_batched_tokens = 16;
  o.eos_token_id = 2;
  auto e = Engine::Create(std::move(shim_owned), o);
  ASSERT_TRUE(e.ok()) << e.status();
  ASSERT_TRUE((*e)->Start().ok());
  std::vector<std::shared_ptr<EventChannel>> chans;
  for (const GenerateRequest& r : reqs) chans.push_back(*(*e)->Submit(r));
  for (size_t i = 0; i < reqs.size(); ++i) {
    std::vector<ChoiceResult> got = Collect(*chans[i], reqs[i].n);
    for (int c = 0; c < reqs[i].n; ++c) {
      EXPECT_EQ(got[c].tokens, host[i][c].tokens) << "request " << i << " choice " << c;
      EXPECT_EQ(got[c].finish, host[i][c].finish);
      ASSERT_EQ(got[c].logprobs.size(), host[i][c].logprobs.size());
      // The two engines may batch differently (arrival timing), and the CPU backend's GEMMs
      // may round differently per batch shape: logprobs agree to rounding.
      for (size_t k = 0; k < got[c].logprobs.size(); ++k) {
        const TokenLogprob& g = got[c].logprobs[k];
        const TokenLogprob& h = host[i][c].logprobs[k];
        EXPECT_NEAR(g.logprob, h.logprob, 1e-4);
        ASSERT_EQ(g.top.size(), h.top.size());
        for (size_t j = 0; j < g.top.size(); ++j)
          EXPECT_NEAR(g.top[j].second, h.top[j].second, 1e-4);
      }
    }
  }
  EXPECT_GT(shim->sampled_calls.load(), 0);
  EXPECT_GT(shim->forward_calls.load(), shim->sampled_calls.load());  // n > 1 steps: old path
}

}  // namespace
}  // namespace bms
