// GPU test (label gpu): programmatic dependent launch (kernels/cuda/pdl.h, BMS_PDL) changes only
// when a kernel may start, never what it computes. The same prefill + decode steps (bucket-sized
// batches, scattered slots, logits and device-sampled tokens) run through four CUDA backends,
// eager and graph, each created and run entirely with PDL on or off (the switch is read at every
// launch and capture); logits, sampled tokens and every slot's final state must be bit-identical
// to eager without PDL. One small and one 2.8b-wide model (d_model 1472, ffn 3872, 8 experts) so
// the decode kernels the presets select (stream GEMVs, fused mixer, grouped GEMM variants) run.
#include <algorithm>
#include <numeric>

#include "engine/cuda_backend.h"
#include "engine/model_weights.h"
#include "engine/sampler.h"
#include "kernels/cuda/pdl.h"
#include "tests/gpu/gpu_test_util.h"

namespace bms::gpu_test {
namespace {

// The 2.8b preset's layer shapes, four layers, a smaller vocabulary.
ModelConfig WideMoe() {
  ModelConfig c = *ModelConfig::Preset("tiny");
  c.num_layers = 4;
  c.d_model = 1472;
  c.ffn_hidden_size = 3872;
  c.n_experts = 8;
  c.vocab_size = 4096;
  c.layers = {LayerKind::kMamba, LayerKind::kMoe, LayerKind::kMamba, LayerKind::kMoe};
  return c;
}

struct Outputs {
  std::vector<std::vector<float>> logits;    // per step: [n, vocab_size]
  std::vector<std::vector<int32_t>> tokens;  // per sampled step: [n]
  std::vector<std::vector<float>> states;    // per slot, the padding slot included
  int64_t replays = 0;
};

constexpr int kSlots = 16;  // buckets 1, 2, 4, 8, 16

// Creates a backend with PDL `pdl` and runs the fixed step sequence of `seed` through it.
void RunSteps(const ModelWeights& w, bool graphs, bool pdl, uint64_t seed, Outputs* out) {
  cuda::SetPdlEnabled(pdl);
  BackendOptions o;
  o.num_slots = kSlots;
  o.cuda_graphs = graphs;
  auto backend = CreateCudaBackend(w, o);
  ASSERT_TRUE(backend.ok()) << backend.status();
  Backend& b = **backend;
  const int vocab = b.config().vocab_size;
  std::mt19937_64 rng(seed);
  std::vector<int> slots(kSlots);
  std::iota(slots.begin(), slots.end(), 0);
  std::shuffle(slots.begin(), slots.end(), rng);
  std::vector<int32_t> toks;
  std::vector<SeqChunk> seqs;
  for (int i = 0; i < kSlots; ++i) {
    for (int t = 0; t < 3; ++t) toks.push_back(static_cast<int32_t>(rng() % vocab));
    seqs.push_back({.slot = slots[i], .token_offset = 3 * i, .n_tokens = 3});
  }
  out->logits.emplace_back();
  BMS_ASSERT_OK(b.Forward({toks, seqs}, &out->logits.back()));
  SamplingParams greedy, biased, hot;  // hot: seeded random draws
  greedy.temperature = 0.f;
  biased.temperature = 0.f;
  hot.temperature = 0.8f;
  for (int t = 0; t < 8; ++t) biased.logit_bias.push_back({(t * 131) % vocab, -0.5f});
  int step = 0;
  for (int n : {1, 2, 4, 8, 16, 1, 8, 16, 2}) {
    std::shuffle(slots.begin(), slots.end(), rng);
    std::vector<int32_t> dt;
    std::vector<SeqChunk> ds;
    for (int i = 0; i < n; ++i) {
      dt.push_back(static_cast<int32_t>(rng() % vocab));
      ds.push_back({.slot = slots[i], .token_offset = i, .n_tokens = 1, .first_chunk = false});
    }
    if (step++ % 3 == 2) {
      std::vector<SampleContext> rows(n);
      for (int i = 0; i < n; ++i) {
        rows[i].params = i % 3 == 0 ? &biased : i % 3 == 1 ? &greedy : &hot;
        rows[i].seed = seed + i;
        rows[i].num_generated = step;
      }
      std::vector<SampledToken> st;
      BMS_ASSERT_OK(b.ForwardSampled({dt, ds}, rows, &st));
      out->tokens.emplace_back();
      for (const SampledToken& s : st) out->tokens.back().push_back(s.token);
    } else {
      out->logits.emplace_back();
      BMS_ASSERT_OK(b.Forward({dt, ds}, &out->logits.back()));
    }
  }
  for (int s = 0; s <= kSlots; ++s) {
    auto st = b.ReadState(s);
    ASSERT_TRUE(st.ok()) << st.status();
    out->states.push_back(std::move(*st));
  }
  if (auto* cb = dynamic_cast<CudaBackend*>(&b)) out->replays = cb->graph_replays();
}

class PdlTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override { BMS_SKIP_WITHOUT_GPU(); }
};

TEST_P(PdlTest, OutputsBitIdenticalWithAndWithoutPdl) {
  const ModelConfig c = GetParam() ? WideMoe() : SmallMoe();
  const uint64_t seed = TestSeed();
  const ModelWeights w = MakeRandomWeights(c, seed);
  const bool initial = cuda::PdlEnabled();
  Outputs base, eager_pdl, graph_pdl, graph_plain;
  RunSteps(w, /*graphs=*/false, /*pdl=*/false, seed, &base);
  RunSteps(w, /*graphs=*/false, /*pdl=*/true, seed, &eager_pdl);
  RunSteps(w, /*graphs=*/true, /*pdl=*/true, seed, &graph_pdl);
  RunSteps(w, /*graphs=*/true, /*pdl=*/false, seed, &graph_plain);
  cuda::SetPdlEnabled(initial);
  ASSERT_FALSE(HasFatalFailure());
  EXPECT_EQ(base.replays, 0);
  EXPECT_GE(graph_pdl.replays, 6);  // at least every unsampled decode step replayed a graph
  EXPECT_EQ(graph_plain.replays, graph_pdl.replays);
  ASSERT_EQ(base.logits.size(), 7u);
  ASSERT_EQ(base.tokens.size(), 3u);
  for (const Outputs* o : {&eager_pdl, &graph_pdl, &graph_plain}) {
    const char* what = o == &eager_pdl ? "eager+pdl" : o == &graph_pdl ? "graph+pdl" : "graph";
    ASSERT_EQ(o->logits.size(), base.logits.size()) << what;
    for (size_t i = 0; i < base.logits.size(); ++i) {
      ASSERT_EQ(o->logits[i].size(), base.logits[i].size()) << what << " step " << i;
      EXPECT_TRUE(o->logits[i] == base.logits[i]) << what << " logits of step " << i << " differ";
    }
    EXPECT_EQ(o->tokens, base.tokens) << what;
    ASSERT_EQ(o->states.size(), base.states.size()) << what;
    for (size_t s = 0; s < base.states.size(); ++s)
      EXPECT_TRUE(o->states[s] == base.states[s]) << what << " state of slot " << s << " differs";
  }
}

INSTANTIATE_TEST_SUITE_P(Models, PdlTest, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "Wide" : "Small"; });

}  // namespace
}  // namespace bms::gpu_test
