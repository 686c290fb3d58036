// GPU test (label gpu): device sampling (kernels/cuda/sampling.cu, engine/cuda_sampling.cc)
// against the host sampler (engine/sampler.h) on fresh random logits: greedy ids exactly,
// T > 0 draws equal for >= 99.5% of draws (a difference needs the uniform within rounding of a
// CDF boundary), logprobs and top-N within 1e-5; results reproducible run to run and the same
// for a row sampled alone or at any position of a batch of unrelated rows; and through the
// whole CUDA backend in fp32, ForwardSampled greedy equals the CPU backend's greedy for 64
// tokens, with CUDA-graph and eager decode giving the same ids.
#include <algorithm>
#include <cstring>
#include <numeric>

#include "engine/cpu_backend.h"
#include "engine/cuda_backend.h"
#include "engine/cuda_sampling.h"
#include "engine/model_weights.h"
#include "engine/sampler.h"
#include "kernels/cuda/sampling.h"
#include "tests/gpu/gpu_test_util.h"

namespace bms::gpu_test {
namespace {

constexpr int kVocab = 50304;

// One row to sample: its logits and everything the SampleContext points at.
struct Row {
  std::vector<float> logits;
  SamplingParams params;
  TokenCounts counts;
  int num_generated = 0;
  uint64_t seed = 0;
  int choice = 0;
  SampleContext Context() const {
    return SampleContext{.params = &params,
                         .counts = &counts,
                         .num_generated = num_generated,
                         .eos_token_id = 0,
                         .seed = seed,
                         .choice = choice};
  }
};

struct DeviceResult {
  int32_t token = -1;
  cuda::SampleRowLogprobs logprobs;
};

// Packs, uploads and samples `rows` on the device (outputs poisoned first).
std::vector<DeviceResult> SampleOnDevice(const std::vector<const Row*>& rows, int vocab) {
  const int n = static_cast<int>(rows.size());
  std::vector<SampleContext> ctx;
  std::vector<float> logits;
  for (const Row* r : rows) {
    ctx.push_back(r->Context());
    logits.insert(logits.end(), r->logits.begin(), r->logits.end());
  }
  PackedSampling packed;
  PackSampleRows(ctx, n, vocab, &packed);
  std::vector<cuda::SampleEntry> block(packed.rows.size() * kSampleRowUnits +
                                       packed.entries.size());
  std::memcpy(block.data(), packed.rows.data(), packed.rows.size() * sizeof(packed.rows[0]));
  std::copy(packed.entries.begin(), packed.entries.end(),
            block.begin() + packed.rows.size() * kSampleRowUnits);
  DevArray d_logits(logits, cuda::DType::kF32);
  DevInts<cuda::SampleEntry> d_block(block);
  DevInts<int32_t> d_tokens(static_cast<size_t>(n));
  DevInts<cuda::SampleRowLogprobs> d_lp(static_cast<size_t>(n));  // poisoned 0xFF
  cuda::SampleParams p;
  p.n_rows = n;
  p.vocab_size = vocab;
  p.logits = d_logits.f32();
  p.rows = reinterpret_cast<const cuda::SampleRowParams*>(d_block.get());
  p.entries = d_block.get();
  p.tokens = d_tokens.get();
  p.logprobs = d_lp.get();
  absl::Status st = cuda::SampleRows(p, nullptr);
  EXPECT_TRUE(st.ok()) << st;
  std::vector<int32_t> tokens = d_tokens.Get(n);
  std::vector<cuda::SampleRowLogprobs> lp = d_lp.Get(n);
  std::vector<DeviceResult> out(n);
  for (int i = 0; i < n; ++i) out[i] = {tokens[i], lp[i]};
  return out;
}

// Logits like a model's: normal * scale, some rows with many exact ties (quantized values)
// and a duplicated maximum.
std::vector<float> RandomLogits(std::mt19937_64& rng, int vocab, int kind) {
  std::normal_distribution<float> normal(0.f, kind == 2 ? 1.0f : 3.0f);
  std::vector<float> x(vocab);
  for (float& v : x) v = normal(rng);
  if (kind == 1) {
    for (float& v : x) v = std::round(v * 4.f) / 4.f;  // many ties
  }
  const int hi = static_cast<int>(std::max_element(x.begin(), x.end()) - x.begin());
  if (kind == 1) x[rng() % vocab] = x[hi];  // a tied maximum (the lower id must win)
  return x;
}

struct ParamCase {
  const char* name;
  SamplingParams p;
  bool with_counts = false;
  int num_generated = 10;
};

std::vector<ParamCase> ParamGrid() {
  std::vector<ParamCase> g;
  auto add = [&](const char* name, auto set, bool counts = false, int generated = 10) {
    ParamCase c{name, SamplingParams(), counts, generated};
    set(c.p);
    g.push_back(c);
  };
  add("greedy", [](SamplingParams& p) { p.temperature = 0; });
  add("greedy_lp20", [](SamplingParams& p) { p.temperature = 0, p.logprobs = 20; });
  add(
      "greedy_penalties",
      [](SamplingParams& p) {
        p.temperature = 0, p.repetition_penalty = 1.3f, p.frequency_penalty = 0.5f,
        p.presence_penalty = 0.4f, p.logprobs = 5;
      },
      true);
  add(
      "greedy_bias_min_tokens",
      [](SamplingParams& p) {
        p.temperature = 0, p.logit_bias = {{7, 100.f}, {3, -5.f}, {7, -99.5f}, {0, 50.f}},
        p.min_tokens = 20, p.stop_token_ids = {7, 9}, p.logprobs = 0;
      },
      false, 5);
  for (float t : {0.7f, 1.0f, 1.3f}) {
    add("T", [t](SamplingParams& p) { p.temperature = t; });
    add("T_lp5", [t](SamplingParams& p) { p.temperature = t, p.logprobs = 5; });
  }
  for (int k : {1, 5, 50}) add("top_k", [k](SamplingParams& p) { p.top_k = k; });
  for (float tp : {0.5f, 0.9f}) add("top_p", [tp](SamplingParams& p) { p.top_p = tp; });
  add("min_p", [](SamplingParams& p) { p.min_p = 0.05f; });
  add("min_p_top_k_top_p", [](SamplingParams& p) {
    p.temperature = 0.8f, p.min_p = 0.05f, p.top_k = 50, p.top_p = 0.9f, p.logprobs = 20;
  });
  add("top_k_top_p", [](SamplingParams& p) { p.temperature = 1.3f, p.top_k = 5, p.top_p = 0.5f; });
  add(
      "penalties",
      [](SamplingParams& p) {
        p.temperature = 1.0f, p.repetition_penalty = 1.2f, p.frequency_penalty = -0.5f,
        p.presence_penalty = 0.8f, p.top_p = 0.9f, p.logprobs = 3;
      },
      true);
  add(
      "bias_min_tokens",
      [](SamplingParams& p) {
        p.temperature = 0.7f, p.logit_bias = {{11, 5.f}, {12, 4.5f}, {11, 0.25f}}, p.min_tokens = 3,
        p.stop_token_ids = {11}, p.top_k = 50;
      },
      false, 1);
  return g;
}

TEST(GpuSampling, KernelMatchesHostSampler) {
  BMS_SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(TestSeed());
  constexpr int kRowsPerCase = 48;
  int draws = 0, draw_matches = 0;
  for (const ParamCase& pc : ParamGrid()) {
    std::vector<Row> rows(kRowsPerCase);
    for (int i = 0; i < kRowsPerCase; ++i) {
      Row& r = rows[i];
      r.logits = RandomLogits(rng, kVocab, i % 3);
      r.params = pc.p;
      r.num_generated = pc.num_generated;
      r.seed = rng();
      r.choice = i % 3;
      if (pc.with_counts) {
        // Generated tokens: near the top of the row (where penalties matter) and random ones.
        std::vector<int> order(kVocab);
        std::iota(order.begin(), order.end(), 0);
        std::partial_sort(order.begin(), order.begin() + 8, order.end(),
                          [&](int a, int b) { return r.logits[a] > r.logits[b]; });
        for (int k = 0; k < 8; ++k) r.counts[order[k]] = 1 + rng() % 3;
        for (int k = 0; k < 40; ++k) r.counts[rng() % kVocab] += 1;
      }
    }
    std::vector<const Row*> ptrs;
    for (const Row& r : rows) ptrs.push_back(&r);
    std::vector<DeviceResult> got = SampleOnDevice(ptrs, kVocab);
    std::vector<float> scratch;
    for (int i = 0; i < kRowsPerCase; ++i) {
      const SampledToken want = SampleToken(rows[i].logits, rows[i].Context(), &scratch);
      const DeviceResult& g = got[i];
      if (pc.p.temperature == 0) {
        EXPECT_EQ(g.token, want.token) << pc.name << " row " << i;
      } else {
        ++draws;
        draw_matches += g.token == want.token;
      }
      if (pc.p.logprobs < 0) continue;
      ASSERT_EQ(g.logprobs.token, g.token) << pc.name;
      if (g.token == want.token) {
        EXPECT_NEAR(g.logprobs.logprob, want.logprob.logprob, 1e-5) << pc.name << " row " << i;
      }
      ASSERT_EQ(g.logprobs.n_top, static_cast<int>(want.logprob.top.size())) << pc.name;
      for (int k = 0; k < g.logprobs.n_top; ++k) {
        EXPECT_EQ(g.logprobs.top_ids[k], want.logprob.top[k].first) << pc.name << " row " << i;
        EXPECT_NEAR(g.logprobs.top_logprobs[k], want.logprob.top[k].second, 1e-5) << pc.name;
      }
    }
  }
  std::cout << "[ draws ] " << draw_matches << " / " << draws << " T > 0 draws equal the host"
            << std::endl;
  EXPECT_GE(draw_matches, 0.995 * draws);
}

TEST(GpuSampling, ReproducibleAndIndependentOfBatch) {
  BMS_SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(TestSeed());
  const std::vector<ParamCase> grid = ParamGrid();
  Row probe;
  probe.logits = RandomLogits(rng, kVocab, 0);
  probe.params.temperature = 0.9f;
  probe.params.top_k = 40;
  probe.params.top_p = 0.8f;
  probe.params.repetition_penalty = 1.1f;
  probe.params.logprobs = 20;
  probe.counts = {{5, 2}, {100, 1}};
  probe.seed = rng();
  std::vector<Row> others(37);
  for (int i = 0; i < 37; ++i) {
    others[i].logits = RandomLogits(rng, kVocab, i % 3);
    others[i].params = grid[i % grid.size()].p;
    others[i].seed = rng();
    others[i].counts = {{static_cast<int32_t>(rng() % kVocab), 1}};
  }
  // Draws at several positions (num_generated) so some land on different tokens.
  for (int position = 0; position < 4; ++position) {
    probe.num_generated = position;
    const DeviceResult alone = SampleOnDevice({&probe}, kVocab)[0];
    const DeviceResult again = SampleOnDevice({&probe}, kVocab)[0];
    EXPECT_EQ(alone.token, again.token);
    EXPECT_EQ(std::memcmp(&alone.logprobs, &again.logprobs, sizeof(alone.logprobs)), 0);
    for (int at : {0, 17, 37}) {
      std::vector<const Row*> batch;
      for (const Row& r : others) batch.push_back(&r);
      batch.insert(batch.begin() + at, &probe);
      const DeviceResult in_batch = SampleOnDevice(batch, kVocab)[at];
      EXPECT_EQ(in_batch.token, alone.token) << "position " << at;
      EXPECT_EQ(std::memcmp(&in_batch.logprobs, &alone.logprobs, sizeof(alone.logprobs)), 0)
          << "position " << at;
    }
  }
}

// Decodes 64 tokens greedily for 4 sequences through ForwardSampled.
std::vector<std::vector<int32_t>> DecodeSampled(Backend* b,
                                                const std::vector<std::vector<int32_t>>& prompts,
                                                const SamplingParams& sp, int steps,
                                                std::vector<std::vector<SampledToken>>* all) {
  const int n = static_cast<int>(prompts.size());
  std::vector<int32_t> toks;
  std::vector<SeqChunk> seqs;
  for (int i = 0; i < n; ++i) {
    seqs.push_back({.slot = 2 * i + 1,
                    .token_offset = static_cast<int>(toks.size()),
                    .n_tokens = static_cast<int>(prompts[i].size())});
    toks.insert(toks.end(), prompts[i].begin(), prompts[i].end());
  }
  std::vector<std::vector<int32_t>> out(n);
  std::vector<SampleContext> ctx(n, SampleContext{.params = &sp, .eos_token_id = -1});
  for (int s = 0; s < steps; ++s) {
    std::vector<SampledToken> got;
    absl::Status st = b->ForwardSampled({toks, seqs}, ctx, &got);
    EXPECT_TRUE(st.ok()) << st;
    if (!st.ok()) return out;
    toks.clear();
    for (int i = 0; i < n; ++i) {
      out[i].push_back(got[i].token);
      if (all) (*all)[i].push_back(got[i]);
      toks.push_back(got[i].token);
      seqs[i] = {.slot = 2 * i + 1, .token_offset = i, .n_tokens = 1, .first_chunk = false};
      ++ctx[i].num_generated;
    }
  }
  return out;
}

TEST(GpuSampling, BackendGreedyEqualsCpuAndGraphEqualsEager) {
  BMS_SKIP_WITHOUT_GPU();
  const ModelConfig c = *ModelConfig::Preset("tiny");
  const uint64_t seed = TestSeed();
  const ModelWeights w = MakeRandomWeights(c, seed);
  std::mt19937_64 rng(seed);
  std::vector<std::vector<int32_t>> prompts(4);
  for (auto& p : prompts)
    for (int k = 0; k < 3 + static_cast<int>(rng() % 9); ++k) p.push_back(rng() % c.vocab_size);
  SamplingParams greedy;
  greedy.temperature = 0;
  greedy.logprobs = 5;
  constexpr int kSteps = 64;

  BackendOptions o;
  o.num_slots = 8;
  o.num_threads = 1;
  auto cpu = CpuBackend::Create(w, o);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  std::vector<std::vector<SampledToken>> cpu_all(4), eager_all(4), graph_all(4);
  const auto want = DecodeSampled(cpu->get(), prompts, greedy, kSteps, &cpu_all);

  o.fp32_compute = true;
  o.device_sampling = true;
  o.cuda_graphs = false;
  auto eager = CreateCudaBackend(w, o);
  o.cuda_graphs = true;
  auto graph = CreateCudaBackend(w, o);
  ASSERT_TRUE(eager.ok() && graph.ok()) << eager.status() << graph.status();
  ASSERT_TRUE((*graph)->SamplesOnDevice());
  const auto got_eager = DecodeSampled(eager->get(), prompts, greedy, kSteps, &eager_all);
  const auto got_graph = DecodeSampled(graph->get(), prompts, greedy, kSteps, &graph_all);
  EXPECT_GT(dynamic_cast<CudaBackend*>(graph->get())->graph_replays(), 0);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(got_eager[i], want[i]) << "sequence " << i;
    EXPECT_EQ(got_graph[i], got_eager[i]) << "sequence " << i;
    for (int s = 0; s < kSteps && got_eager[i] == want[i]; ++s) {
      EXPECT_NEAR(eager_all[i][s].logprob.logprob, cpu_all[i][s].logprob.logprob, 1e-4);
      ASSERT_EQ(eager_all[i][s].logprob.top.size(), 5u);
      EXPECT_EQ(graph_all[i][s].logprob.top, eager_all[i][s].logprob.top);
    }
  }
  // Seeded sampling through the backend: graph and eager draw the same ids.
  SamplingParams hot;
  hot.temperature = 1.0f;
  hot.top_k = 20;
  hot.top_p = 0.95f;
  const auto hot_eager = DecodeSampled(eager->get(), prompts, hot, 16, nullptr);
  const auto hot_graph = DecodeSampled(graph->get(), prompts, hot, 16, nullptr);
  EXPECT_EQ(hot_eager, hot_graph);
}

}  // namespace
}  // namespace bms::gpu_test
