// GPU whole-model tests (label gpu): the CUDA backend against the CPU backend (the fp32 oracle)
// on random models. fp32 mode: greedy decoding equals the CPU token for token for 64 tokens
// (mixed prefill chunks, continuations and decodes in one batch); bf16 mode: logits over 1000
// teacher-forced positions within 2e-2 normalized error (dense) or 3x weight rounding's own error
// (MoE), top-1 agreement bounded by the model's own margins (see Bf16LogitsCloseToFp32Reference).
// Also state read/copy, routing counters and input validation.
#include <algorithm>
#include <numeric>

#include "engine/cpu_backend.h"
#include "engine/cuda_backend.h"
#include "engine/model_weights.h"
#include "tests/gpu/gpu_test_util.h"

namespace bms::gpu_test {
namespace {

// mid_dense: the mid model with dense MLP ("1") layers instead of MoE: no routing decisions, so
// bf16 error is not amplified by tokens switching experts.
ModelConfig MidConfig(bool dense = false) {
  ModelConfig c = *ModelConfig::Preset("tiny");
  c.num_layers = 6;
  c.d_model = 256;
  c.ffn_hidden_size = 512;
  c.vocab_size = 2048;
  c.layers.clear();
  for (int i = 0; i < c.num_layers; ++i)
    c.layers.push_back(i % 2 ? (dense ? LayerKind::kDenseMlp : LayerKind::kMoe)
                             : LayerKind::kMamba);
  return c;
}

int Argmax(const float* row, int n) {
  return static_cast<int>(std::max_element(row, row + n) - row);
}

struct Pair {
  std::unique_ptr<Backend> cpu, gpu;
};

Pair MakePair(const ModelConfig& config, uint64_t seed, bool fp32, StateDType state) {
  const ModelWeights w = MakeRandomWeights(config, seed);
  BackendOptions o;
  o.num_slots = 8;
  o.state_dtype = state;
  o.fp32_compute = fp32;
  auto cpu = CpuBackend::Create(w, o);
  EXPECT_TRUE(cpu.ok()) << cpu.status();
  auto gpu = CreateCudaBackend(w, o);
  EXPECT_TRUE(gpu.ok()) << gpu.status();
  Pair p;
  if (cpu.ok()) p.cpu = std::move(*cpu);
  if (gpu.ok()) p.gpu = std::move(*gpu);
  return p;
}

class ModelTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override { BMS_SKIP_WITHOUT_GPU(); }
  ModelConfig Config() const {
    if (GetParam() == "tiny") return *ModelConfig::Preset("tiny");
    return MidConfig(GetParam() == "mid_dense");
  }
};

// Three sequences: a prompt prefilled in two chunks, a prompt shorter than d_conv, a one-token
// prompt; then 64 greedy decode steps of all three together (scattered slots).
TEST_P(ModelTest, Fp32GreedyEqualsCpuFor64Tokens) {
  const uint64_t seed = TestSeed();
  const ModelConfig c = Config();
  Pair p = MakePair(c, seed, /*fp32=*/true, StateDType::kF32);
  ASSERT_TRUE(p.cpu && p.gpu);
  std::mt19937_64 rng(seed);
  std::vector<std::vector<int32_t>> prompts = {{}, {}, {}};
  for (int i = 0; i < 11; ++i) prompts[0].push_back(static_cast<int32_t>(rng() % c.vocab_size));
  for (int i = 0; i < 3; ++i) prompts[1].push_back(static_cast<int32_t>(rng() % c.vocab_size));
  prompts[2].push_back(static_cast<int32_t>(rng() % c.vocab_size));
  const std::vector<int> slots = {5, 1, 3};
  double max_err = 0;
  auto run_both = [&](const std::vector<int32_t>& tokens, const std::vector<SeqChunk>& seqs,
                      std::vector<float>* cpu_logits, std::vector<float>* gpu_logits) {
    const StepInput in{tokens, seqs};
    ASSERT_TRUE(p.cpu->Forward(in, cpu_logits).ok());
    const absl::Status st = p.gpu->Forward(in, gpu_logits);
    ASSERT_TRUE(st.ok()) << st;
    ASSERT_EQ(gpu_logits->size(), cpu_logits->size());
    max_err = std::max(max_err, NormalizedError(*gpu_logits, *cpu_logits));
  };
  std::vector<float> lc, lg;
  // Step 1: seq 0 first chunk (7 tokens, no logits), seq 1 whole prompt, seq 2 whole prompt.
  {
    std::vector<int32_t> toks(prompts[0].begin(), prompts[0].begin() + 7);
    toks.insert(toks.end(), prompts[1].begin(), prompts[1].end());
    toks.push_back(prompts[2][0]);
    run_both(toks,
             {{.slot = slots[0],
               .token_offset = 0,
               .n_tokens = 7,
               .first_chunk = true,
               .logits = LogitsMode::kNone},
              {.slot = slots[1], .token_offset = 7, .n_tokens = 3, .first_chunk = true},
              {.slot = slots[2], .token_offset = 10, .n_tokens = 1, .first_chunk = true}},
             &lc, &lg);
  }
  std::vector<int32_t> next_cpu = {0, Argmax(&lc[0], c.vocab_size),
                                   Argmax(&lc[c.vocab_size], c.vocab_size)};
  std::vector<int32_t> next_gpu = {0, Argmax(&lg[0], c.vocab_size),
                                   Argmax(&lg[c.vocab_size], c.vocab_size)};
  // Step 2: seq 0's continuation chunk (4 tokens) mixed with decodes of seqs 1 and 2.
  {
    std::vector<int32_t> toks(prompts[0].begin() + 7, prompts[0].end());
    toks.push_back(next_cpu[1]);
    toks.push_back(next_cpu[2]);
    run_both(toks,
             {{.slot = slots[0], .token_offset = 0, .n_tokens = 4, .first_chunk = false},
              {.slot = slots[1], .token_offset = 4, .n_tokens = 1, .first_chunk = false},
              {.slot = slots[2], .token_offset = 5, .n_tokens = 1, .first_chunk = false}},
             &lc, &lg);
  }
  std::vector<std::vector<int32_t>> gen_cpu(3), gen_gpu(3);
  for (int step = 0; step < 64; ++step) {
    std::vector<int32_t> toks;
    std::vector<SeqChunk> seqs;
    for (int s = 0; s < 3; ++s) {
      const int tc = Argmax(&lc[s * c.vocab_size], c.vocab_size);
      const int tg = Argmax(&lg[s * c.vocab_size], c.vocab_size);
      gen_cpu[s].push_back(tc);
      gen_gpu[s].push_back(tg);
      toks.push_back(tc);
      seqs.push_back({.slot = slots[s], .token_offset = s, .n_tokens = 1, .first_chunk = false});
    }
    ASSERT_EQ(gen_gpu, gen_cpu) << "greedy tokens differ at step " << step;
    run_both(toks, seqs, &lc, &lg);
  }
  std::cout << "[ fp32 ] " << GetParam() << ": 64 greedy tokens x 3 sequences equal; max logits "
            << "normalized error " << max_err << std::endl;
  EXPECT_LT(max_err, 1e-4);
  // The final states agree too.
  for (int s : slots) {
    auto a = p.cpu->ReadState(s);
    auto b = p.gpu->ReadState(s);
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_LT(NormalizedError(*b, *a), 1e-4) << "slot " << s;
  }
}

struct Agreement {
  double err = 0, worst_row = 0;
  int agree = 0, rows = 0;
};

Agreement Compare(const std::vector<float>& got, const std::vector<float>& want, int vocab) {
  Agreement a;
  a.rows = static_cast<int>(want.size() / vocab);
  for (int r = 0; r < a.rows; ++r) {
    const float* x = &want[static_cast<size_t>(r) * vocab];
    const float* y = &got[static_cast<size_t>(r) * vocab];
    a.agree += Argmax(x, vocab) == Argmax(y, vocab);
    a.worst_row = std::max(a.worst_row, NormalizedError(std::vector<float>(y, y + vocab),
                                                        std::vector<float>(x, x + vocab)));
  }
  a.err = NormalizedError(got, want);
  return a;
}

// Teacher-forced: 4 sequences x 250 tokens, prefilled in chunks of 100 and 150 with logits for
// every position (1000 rows): bf16 CUDA vs the fp32 CPU backend on the same bf16-rounded GEMM
// weights (asserted), and vs the original fp32 weights (printed: weight rounding alone moves a
// random model's logits by several percent, measured with the CPU backend).
TEST_P(ModelTest, Bf16LogitsCloseToFp32Reference) {
  const uint64_t seed = TestSeed();
  const ModelConfig c = Config();
  const ModelWeights w32 = MakeRandomWeights(c, seed);
  const ModelWeights w16 = RoundGemmWeightsToBf16(w32);
  BackendOptions o;
  o.num_slots = 8;
  auto ref16 = CpuBackend::Create(w16, o);
  auto ref32 = CpuBackend::Create(w32, o);
  ASSERT_TRUE(ref16.ok() && ref32.ok());
  std::mt19937_64 rng(seed + 1);
  std::vector<int32_t> tokens(1000);
  for (auto& t : tokens) t = static_cast<int32_t>(rng() % c.vocab_size);
  // Two steps: chunks of 100 (first) then 150 (continuation) of each of 4 sequences.
  std::vector<std::pair<std::vector<int32_t>, std::vector<SeqChunk>>> steps(2);
  for (int part = 0; part < 2; ++part) {
    const int len = part == 0 ? 100 : 150, base = part == 0 ? 0 : 100;
    auto& [toks, seqs] = steps[part];
    for (int s = 0; s < 4; ++s) {
      seqs.push_back({.slot = 2 * s,
                      .token_offset = static_cast<int>(toks.size()),
                      .n_tokens = len,
                      .first_chunk = part == 0,
                      .logits = LogitsMode::kAll});
      toks.insert(toks.end(), tokens.begin() + s * 250 + base,
                  tokens.begin() + s * 250 + base + len);
    }
  }
  std::vector<float> ref16_logits, ref32_logits;
  for (const auto& [toks, seqs] : steps) {
    std::vector<float> l16, l32;
    ASSERT_TRUE((*ref16)->Forward({toks, seqs}, &l16).ok());
    ASSERT_TRUE((*ref32)->Forward({toks, seqs}, &l32).ok());
    ref16_logits.insert(ref16_logits.end(), l16.begin(), l16.end());
    ref32_logits.insert(ref32_logits.end(), l32.begin(), l32.end());
  }
  for (StateDType state : {StateDType::kF32, StateDType::kBF16}) {
    o.state_dtype = state;
    auto gpu = CreateCudaBackend(w32, o);
    ASSERT_TRUE(gpu.ok()) << gpu.status();
    std::vector<float> allg;
    for (const auto& [toks, seqs] : steps) {
      std::vector<float> lg;
      const absl::Status st = (*gpu)->Forward({toks, seqs}, &lg);
      ASSERT_TRUE(st.ok()) << st;
      allg.insert(allg.end(), lg.begin(), lg.end());
    }
    ASSERT_EQ(allg.size(), static_cast<size_t>(1000) * c.vocab_size);
    const Agreement a = Compare(allg, ref16_logits, c.vocab_size);
    const Agreement b = Compare(allg, ref32_logits, c.vocab_size);
    const Agreement q = Compare(ref16_logits, ref32_logits, c.vocab_size);
    std::cout << "[ bf16 ] " << GetParam() << " state "
              << (state == StateDType::kF32 ? "f32" : "bf16") << ": vs fp32 on bf16 weights: error "
              << a.err << " (worst row " << a.worst_row << "), top-1 " << a.agree << "/" << a.rows
              << "; vs original fp32 weights: error " << b.err << ", top-1 " << b.agree << "/"
              << b.rows << "; (weight rounding alone, CPU: error " << q.err << ", top-1 " << q.agree
              << ")" << std::endl;
    if (c.num_moe_layers() == 0) {
      // Top-1 agreement is bounded by the model's own margins: on these random models rounding
      // the weights alone (CPU, fp32 math) already flips 1-2.3% of positions, and the bf16
      // activations flip a similar, seed-dependent share on top (a.agree - q.agree measured
      // -20..+6 over 10 fresh seeds on the H100, 2026-11-24), so the bar is 99% or that
      // agreement, whichever is lower, minus 3%. A wrong kernel lands far below (and fails err).
      EXPECT_LT(a.err, 2e-2);
      EXPECT_GE(a.agree, std::min(990, q.agree - 30));
    } else {
      // With top-1 routing, a bf16-sized perturbation moves some tokens to another expert, which
      // changes their output wholesale; on random models that dominates. Bound the GPU's
      // deviation by what rounding the weights alone does to the fp32 CPU model. The ratio of
      // the two moves with the (fresh) seed and with the expert-GEMM variant the tuner picks
      // (accumulation order decides which near-tied routings flip): 1.0-2.2 seen on the H100,
      // so 3x; a wrong kernel gives errors near 1.
      EXPECT_LT(a.err, std::max(2e-2, 3 * q.err));
      EXPECT_GE(a.agree, std::min(990, q.agree - 30));
    }
  }
}

TEST_P(ModelTest, StateCopyRoutingCountsAndValidation) {
  const uint64_t seed = TestSeed();
  const ModelConfig c = Config();
  Pair p = MakePair(c, seed, /*fp32=*/true, StateDType::kF32);
  ASSERT_TRUE(p.cpu && p.gpu);
  std::vector<int32_t> toks(20);
  std::iota(toks.begin(), toks.end(), 7);
  std::vector<float> lc, lg;
  const std::vector<SeqChunk> seqs = {{.slot = 2, .token_offset = 0, .n_tokens = 20}};
  ASSERT_TRUE(p.cpu->Forward({toks, seqs}, &lc).ok());
  ASSERT_TRUE(p.gpu->Forward({toks, seqs}, &lg).ok());
  ASSERT_TRUE(p.cpu->CopyState(2, 6).ok());
  ASSERT_TRUE(p.gpu->CopyState(2, 6).ok());
  auto a = p.cpu->ReadState(6), b = p.gpu->ReadState(6);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_EQ(a->size(), b->size());
  EXPECT_LT(NormalizedError(*b, *a), 1e-4);
  EXPECT_EQ(p.gpu->state_bytes_per_slot(), p.cpu->state_bytes_per_slot());

  auto* cuda_backend = dynamic_cast<CudaBackend*>(p.gpu.get());
  ASSERT_NE(cuda_backend, nullptr);
  auto counts = cuda_backend->ReadRoutingCounts();
  ASSERT_TRUE(counts.ok());
  ASSERT_EQ(counts->size(), static_cast<size_t>(c.num_moe_layers() * c.n_experts));
  for (int l = 0; l < c.num_moe_layers(); ++l) {
    int64_t sum = 0;
    for (int e = 0; e < c.n_experts; ++e) sum += (*counts)[l * c.n_experts + e];
    EXPECT_EQ(sum, 20) << "MoE layer " << l;
  }
  const auto nested = p.gpu->ExpertTokenCounts();  // the engine's metrics view of the same
  ASSERT_EQ(nested.size(), static_cast<size_t>(c.num_moe_layers()));
  for (int l = 0; l < c.num_moe_layers(); ++l)
    for (int e = 0; e < c.n_experts; ++e) EXPECT_EQ(nested[l][e], (*counts)[l * c.n_experts + e]);
  EXPECT_GE(p.gpu->memory_bytes_in_use(),
            cuda_backend->weight_bytes() + cuda_backend->state_pool_bytes());

  // Invalid inputs: InvalidArgument, and no state changes.
  const auto before = p.gpu->ReadState(2);
  std::vector<int32_t> bad = {1, c.vocab_size};
  auto st = p.gpu->Forward({bad, std::vector<SeqChunk>{{.slot = 2, .n_tokens = 2}}}, &lg);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  std::vector<int32_t> two = {1, 2};
  st = p.gpu->Forward({two, std::vector<SeqChunk>{{.slot = 2, .token_offset = 0, .n_tokens = 1},
                                                  {.slot = 2, .token_offset = 1, .n_tokens = 1}}},
                      &lg);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  st = p.gpu->Forward({two, std::vector<SeqChunk>{{.slot = 99, .n_tokens = 1}}}, &lg);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_EQ(*p.gpu->ReadState(2), *before);
}

INSTANTIATE_TEST_SUITE_P(Models, ModelTest, ::testing::Values("tiny", "mid", "mid_dense"),
                         [](const auto& info) { return std::string(info.param); });

TEST(CudaBackendStartup, OversizedStatePoolIsAClearError) {
  BMS_SKIP_WITHOUT_GPU();
  const ModelConfig c = *ModelConfig::Preset("tiny");
  BackendOptions o;
  o.num_slots = 1 << 30;  // far more state than any GPU holds
  auto b = CreateCudaBackend(MakeRandomWeights(c, 1), o);
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), absl::StatusCode::kResourceExhausted) << b.status();
  EXPECT_NE(b.status().message().find("state pool"), std::string::npos) << b.status();
}

}  // namespace
}  // namespace bms::gpu_test
