// GPU test (label gpu): decode steps replayed through CUDA graphs (engine/cuda_graph.cc) equal
// the same steps run eagerly, for scattered slots and batch sizes on and between buckets, fp32
// and bf16: logits per step, every slot's final state (padding rows write no state), and the
// routing counters (padding rows are not counted).
#include <algorithm>
#include <numeric>

#include "engine/cuda_backend.h"
#include "engine/model_weights.h"
#include "tests/gpu/gpu_test_util.h"

namespace bms::gpu_test {
namespace {

ModelConfig SmallMoe() {
  ModelConfig c = *ModelConfig::Preset("tiny");
  c.num_layers = 4;
  c.d_model = 128;
  c.ffn_hidden_size = 256;
  c.vocab_size = 1024;
  c.layers = {LayerKind::kMamba, LayerKind::kMoe, LayerKind::kMamba, LayerKind::kDenseMlp};
  return c;
}

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
