// GPU test (label gpu): decode steps replayed through CUDA graphs (engine/cuda_graph.cc) equal
// the same steps run eagerly, for scattered slots and batch sizes on and between buckets, fp32
// and bf16: logits per step, every slot's final state (padding rows write no state), and the
// routing counters (padding rows are not counted). Start-up capture (PrepareForServing): every
// bucket's graphs exist before the first step, and no later step captures (mixed decode batch
// sizes, a prefill of the whole token budget, sampled steps with sparse sampling entries), with
// the eager backend's outputs; the graph batch cap leaves larger batches eager.
#include <algorithm>
#include <numeric>

#include "engine/cuda_backend.h"
#include "engine/model_weights.h"
#include "engine/sampler.h"
#include "tests/gpu/gpu_test_util.h"

namespace bms::gpu_test {
namespace {

struct Case {
  bool fp32;
  StateDType state;
};

class GraphTest : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override { BMS_SKIP_WITHOUT_GPU(); }
};

TEST_P(GraphTest, GraphDecodeEqualsEagerDecode) {
  const Case k = GetParam();
  const ModelConfig c = SmallMoe();
  const uint64_t seed = TestSeed();
  const ModelWeights w = MakeRandomWeights(c, seed);
  BackendOptions o;
  o.num_slots = 40;  // buckets 1, 2, 4, 8, 16, 24, 32, 40
  o.state_dtype = k.state;
  o.fp32_compute = k.fp32;
  o.cuda_graphs = false;
  auto eager = CreateCudaBackend(w, o);
  o.cuda_graphs = true;
  auto graph = CreateCudaBackend(w, o);
  ASSERT_TRUE(eager.ok() && graph.ok()) << eager.status() << graph.status();
  auto* gb = dynamic_cast<CudaBackend*>(graph->get());
  ASSERT_NE(gb, nullptr);

  std::mt19937_64 rng(seed);
  // Scattered slots: a random permutation of 0..39.
  std::vector<int> slots(o.num_slots);
  std::iota(slots.begin(), slots.end(), 0);
  std::shuffle(slots.begin(), slots.end(), rng);
  // Prefill a 5-token prompt in each slot (eagerly in both: multi-token chunks).
  std::vector<int32_t> toks;
  std::vector<SeqChunk> seqs;
  for (int i = 0; i < o.num_slots; ++i) {
    for (int t = 0; t < 5; ++t) toks.push_back(static_cast<int32_t>(rng() % c.vocab_size));
    seqs.push_back({.slot = slots[i], .token_offset = 5 * i, .n_tokens = 5});
  }
  std::vector<float> le, lg;
  ASSERT_TRUE((*eager)->Forward({toks, seqs}, &le).ok());
  ASSERT_TRUE((*graph)->Forward({toks, seqs}, &lg).ok());
  ASSERT_EQ(le, lg);

  // Decode steps: first batch sizes equal to a bucket (same shapes as eager, so the same kernels
  // and cuBLASLt algorithms: bit-exact in every mode), then sizes between buckets (padded: GEMM
  // shapes differ, so a different cuBLASLt algorithm may round differently; in bf16 a rounding
  // difference can flip a random model's MoE routing, hence the looser bf16 bound).
  const double tol = k.fp32 ? 1e-5 : 0.15;
  int steps = 0;
  for (int n : {1, 8, 24, 40, 3, 13, 31, 7, 40}) {
    const bool exact = steps < 4;
    std::shuffle(slots.begin(), slots.end(), rng);
    std::vector<int32_t> dt;
    std::vector<SeqChunk> ds;
    for (int i = 0; i < n; ++i) {
      dt.push_back(static_cast<int32_t>(rng() % c.vocab_size));
      ds.push_back({.slot = slots[i], .token_offset = i, .n_tokens = 1, .first_chunk = false});
    }
    ASSERT_TRUE((*eager)->Forward({dt, ds}, &le).ok());
    ASSERT_TRUE((*graph)->Forward({dt, ds}, &lg).ok());
    ++steps;
    ASSERT_EQ(le.size(), static_cast<size_t>(n) * c.vocab_size);
    ASSERT_EQ(lg.size(), le.size());
    if (exact)
      EXPECT_EQ(lg, le) << "batch " << n;
    else
      EXPECT_LT(NormalizedError(lg, le), tol) << "batch " << n;
  }
  EXPECT_EQ(gb->graph_replays(), steps);
  EXPECT_GE(gb->graphs_captured(), 6);

  // Every slot's state (padding rows must not have written any), the padding slot included.
  for (int s = 0; s <= o.num_slots; ++s) {
    auto a = (*eager)->ReadState(s), b = (*graph)->ReadState(s);
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_LT(NormalizedError(*b, *a), tol) << "slot " << s;
  }
  // Routing counters: padded rows are not counted.
  auto* eb = dynamic_cast<CudaBackend*>(eager->get());
  auto ce = eb->ReadRoutingCounts(), cg = gb->ReadRoutingCounts();
  ASSERT_TRUE(ce.ok() && cg.ok());
  int64_t se = 0, sg = 0;
  for (int64_t v : *ce) se += v;
  for (int64_t v : *cg) sg += v;
  EXPECT_EQ(sg, se);
  EXPECT_EQ(se, static_cast<int64_t>(c.num_moe_layers()) *
                    (5 * 40 + 1 + 8 + 24 + 40 + 3 + 13 + 31 + 7 + 40));

  // A mixed step (prefill + decode) runs eagerly and still agrees.
  std::vector<int32_t> mt = {5, 6, 7, 8};
  std::vector<SeqChunk> ms = {
      {.slot = slots[0], .token_offset = 0, .n_tokens = 3},
      {.slot = slots[1], .token_offset = 3, .n_tokens = 1, .first_chunk = false}};
  ASSERT_TRUE((*eager)->Forward({mt, ms}, &le).ok());
  ASSERT_TRUE((*graph)->Forward({mt, ms}, &lg).ok());
  EXPECT_LT(NormalizedError(lg, le), tol);
  EXPECT_EQ(gb->graph_replays(), steps);
}

// One decode step of n rows over slots 0..n-1 (scattered by `stride`), run through both backends:
// ForwardSampled (greedy, some rows with a logit_bias: sparse sampling entries) when `sampled`,
// else Forward. Expects the same tokens / logits (bit-exact at bucket sizes; `tol` otherwise).
void DecodeBoth(Backend& eager, Backend& graph, int n, int num_slots, bool sampled, double tol,
                std::mt19937_64& rng) {
  const int vocab = eager.config().vocab_size;
  std::vector<int32_t> dt;
  std::vector<SeqChunk> ds;
  for (int i = 0; i < n; ++i) {
    dt.push_back(static_cast<int32_t>(rng() % vocab));
    ds.push_back(
        {.slot = (7 * i + n) % num_slots, .token_offset = i, .n_tokens = 1, .first_chunk = false});
  }
  if (!sampled) {
    std::vector<float> le, lg;
    ASSERT_TRUE(eager.Forward({dt, ds}, &le).ok());
    ASSERT_TRUE(graph.Forward({dt, ds}, &lg).ok());
    ASSERT_EQ(lg.size(), le.size());
    EXPECT_LT(NormalizedError(lg, le), tol) << "batch " << n;
    return;
  }
  SamplingParams greedy, biased;
  greedy.temperature = 0.f;
  biased.temperature = 0.f;
  for (int t = 0; t < 8; ++t) biased.logit_bias.push_back({(t * 131) % vocab, -0.5f});
  std::vector<SampleContext> rows(n);
  for (int i = 0; i < n; ++i) rows[i].params = i % 3 == 0 ? &biased : &greedy;
  std::vector<SampledToken> te, tg;
  ASSERT_TRUE(eager.ForwardSampled({dt, ds}, rows, &te).ok());
  ASSERT_TRUE(graph.ForwardSampled({dt, ds}, rows, &tg).ok());
  ASSERT_EQ(te.size(), static_cast<size_t>(n));
  ASSERT_EQ(tg.size(), te.size());
  for (int i = 0; i < n; ++i) EXPECT_EQ(tg[i].token, te[i].token) << "batch " << n << " row " << i;
}

TEST(GraphStartup, PrepareForServingCapturesEveryBucketAndNothingLater) {
  BMS_SKIP_WITHOUT_GPU();
  const ModelConfig c = SmallMoe();
  const uint64_t seed = TestSeed();
  const ModelWeights w = MakeRandomWeights(c, seed);
  BackendOptions o;
  o.num_slots = 40;  // buckets 1, 2, 4, 8, 16, 24, 32, 40
  o.fp32_compute = true;
  o.cuda_graphs = false;
  auto eager = CreateCudaBackend(w, o);
  o.cuda_graphs = true;
  auto graph = CreateCudaBackend(w, o);
  ASSERT_TRUE(eager.ok() && graph.ok()) << eager.status() << graph.status();
  auto* gb = dynamic_cast<CudaBackend*>(graph->get());
  ASSERT_NE(gb, nullptr);
  ASSERT_TRUE((*graph)->SamplesOnDevice());
  constexpr int kBudget = 256;  // the engine's token budget: the largest step
  EXPECT_FALSE((*graph)->PrepareForServing(0, kBudget).ok());
  const absl::Status prepared = (*graph)->PrepareForServing(o.num_slots, kBudget);
  ASSERT_TRUE(prepared.ok()) << prepared;
  constexpr int kGraphs = 2 * 8;  // plain + sampling graph per bucket
  EXPECT_EQ(gb->graphs_captured(), kGraphs);
  EXPECT_EQ(gb->graph_captures(), kGraphs);
  EXPECT_EQ(gb->graph_replays(), 0);
  const GraphMemoryStats m = (*graph)->graph_memory();
  EXPECT_EQ(m.graphs, kGraphs);
  EXPECT_EQ(m.captures, kGraphs);
  EXPECT_EQ(m.max_batch, o.num_slots);
  EXPECT_GT(m.workspace_bytes, 0u);
  EXPECT_GT(m.prepare_seconds, 0.0);
  std::printf("start-up capture: %d graphs, %.2f MiB graphs, %.2f MiB workspace, %.3f s\n",
              m.graphs, m.graph_bytes / 1048576.0, m.workspace_bytes / 1048576.0,
              m.prepare_seconds);
  for (int s = 0; s <= o.num_slots; ++s) {  // the eager tuning runs wrote no state
    auto st = (*graph)->ReadState(s);
    ASSERT_TRUE(st.ok());
    EXPECT_TRUE(std::all_of(st->begin(), st->end(), [](float v) { return v == 0.f; }))
        << "slot " << s;
  }

  std::mt19937_64 rng(seed);
  auto prefill = [&](int first_slot, int n_seqs, int len) {
    std::vector<int32_t> toks;
    std::vector<SeqChunk> seqs;
    for (int i = 0; i < n_seqs; ++i) {
      for (int t = 0; t < len; ++t) toks.push_back(static_cast<int32_t>(rng() % c.vocab_size));
      seqs.push_back({.slot = first_slot + i, .token_offset = len * i, .n_tokens = len});
    }
    std::vector<float> le, lg;
    ASSERT_TRUE((*eager)->Forward({toks, seqs}, &le).ok());
    ASSERT_TRUE((*graph)->Forward({toks, seqs}, &lg).ok());
    ASSERT_EQ(le, lg);
  };
  prefill(0, o.num_slots, 4);
  int replays = 0;
  for (int n : {1, 40, 24, 8}) {  // bucket sizes: bit-exact logits, so equal greedy tokens
    DecodeBoth(**eager, **graph, n, o.num_slots, /*sampled=*/true, 0, rng);
    ++replays;
  }
  prefill(3, 1, kBudget);          // the whole budget in one chunk: the workspace must not grow
  for (int n : {13, 3, 40, 31}) {  // padded sizes: cuBLASLt may pick other algorithms
    DecodeBoth(**eager, **graph, n, o.num_slots, /*sampled=*/false, 1e-5, rng);
    ++replays;
  }
  DecodeBoth(**eager, **graph, 16, o.num_slots, /*sampled=*/true, 0, rng);
  ++replays;
  EXPECT_EQ(gb->graph_replays(), replays);
  EXPECT_EQ(gb->graph_captures(), kGraphs);  // nothing captured after start-up
  EXPECT_EQ(gb->graphs_captured(), kGraphs);
  for (int s = 0; s < o.num_slots; ++s) {
    auto a = (*eager)->ReadState(s), b = (*graph)->ReadState(s);
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_LT(NormalizedError(*b, *a), 1e-5) << "slot " << s;
  }
}

TEST(GraphStartup, GraphBatchCapLeavesLargerBatchesEager) {
  BMS_SKIP_WITHOUT_GPU();
  const ModelConfig c = SmallMoe();
  const uint64_t seed = TestSeed();
  const ModelWeights w = MakeRandomWeights(c, seed);
  BackendOptions o;
  o.num_slots = 40;
  o.fp32_compute = true;
  o.cuda_graph_max_batch = -1;
  EXPECT_EQ(CreateCudaBackend(w, o).status().code(), absl::StatusCode::kInvalidArgument);
  o.cuda_graph_max_batch = 0;
  o.cuda_graphs = false;
  auto eager = CreateCudaBackend(w, o);
  o.cuda_graphs = true;
  o.cuda_graph_max_batch = 16;  // buckets 1, 2, 4, 8, 16
  auto graph = CreateCudaBackend(w, o);
  ASSERT_TRUE(eager.ok() && graph.ok()) << eager.status() << graph.status();
  auto* gb = dynamic_cast<CudaBackend*>(graph->get());
  ASSERT_NE(gb, nullptr);
  // The engine's decode batch (min(slots, budget) = 32 here) is above the cap: the cap wins.
  ASSERT_TRUE((*graph)->PrepareForServing(32, 32).ok());
  EXPECT_EQ(gb->graphs_captured(), 2 * 5);
  EXPECT_EQ((*graph)->graph_memory().max_batch, 16);

  std::mt19937_64 rng(seed);
  std::vector<int32_t> toks;
  std::vector<SeqChunk> seqs;
  for (int i = 0; i < 8; ++i) {  // 8 slots x 4 tokens = the 32-token budget
    for (int t = 0; t < 4; ++t) toks.push_back(static_cast<int32_t>(rng() % c.vocab_size));
    seqs.push_back({.slot = i, .token_offset = 4 * i, .n_tokens = 4});
  }
  std::vector<float> le, lg;
  ASSERT_TRUE((*eager)->Forward({toks, seqs}, &le).ok());
  ASSERT_TRUE((*graph)->Forward({toks, seqs}, &lg).ok());
  ASSERT_EQ(le, lg);
  DecodeBoth(**eager, **graph, 16, o.num_slots, /*sampled=*/true, 0, rng);  // graph
  EXPECT_EQ(gb->graph_replays(), 1);
  DecodeBoth(**eager, **graph, 24, o.num_slots, /*sampled=*/true, 0, rng);  // eager: above the cap
  DecodeBoth(**eager, **graph, 32, o.num_slots, /*sampled=*/false, 1e-6, rng);
  EXPECT_EQ(gb->graph_replays(), 1);
  EXPECT_EQ(gb->graph_captures(), 2 * 5);
}

INSTANTIATE_TEST_SUITE_P(Modes, GraphTest,
                         ::testing::Values(Case{true, StateDType::kF32},
                                           Case{false, StateDType::kF32},
                                           Case{false, StateDType::kBF16}),
                         [](const auto& info) {
                           return std::string(info.param.fp32 ? "fp32" : "bf16") +
                                  (info.param.state == StateDType::kF32 ? "_f32state"
                                                                        : "_bf16state");
                         });

}  // namespace
}  // namespace bms::gpu_test
