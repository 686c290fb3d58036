// The CPU backend's metrics hooks: per-layer expert routing counts and memory in use.
#include <numeric>
#include <vector>

#include "engine/cpu_backend.h"
#include "engine/model_weights.h"
#include "gtest/gtest.h"

namespace bms {
namespace {

TEST(CpuBackendMetricsTest, CountsEveryTokenOncePerMoeLayer) {
  auto config = ModelConfig::Preset("tiny");
  ASSERT_TRUE(config.ok());
  BackendOptions o;
  o.num_slots = 4;
  o.num_threads = 1;
  auto b = CpuBackend::Create(MakeRandomWeights(*config, 7), o);
  ASSERT_TRUE(b.ok()) << b.status();
  std::vector<std::vector<int64_t>> counts = (*b)->ExpertTokenCounts();
  ASSERT_EQ(static_cast<int>(counts.size()), config->num_moe_layers());
  for (const auto& layer : counts) {
    ASSERT_EQ(static_cast<int>(layer.size()), config->n_experts);
    for (int64_t c : layer) EXPECT_EQ(c, 0);
  }
  // A 5-token prefill in slot 0 and a 1-token decode in slot 1: 6 tokens through every layer.
  const std::vector<int32_t> tokens = {1, 2, 3, 4, 5, 6};
  const std::vector<SeqChunk> seqs = {{.slot = 0, .token_offset = 0, .n_tokens = 5},
                                      {.slot = 1, .token_offset = 5, .n_tokens = 1}};
  std::vector<float> logits;
  ASSERT_TRUE((*b)->Forward({tokens, seqs}, &logits).ok());
  const SeqChunk decode = {.slot = 0, .token_offset = 0, .n_tokens = 1, .first_chunk = false};
  ASSERT_TRUE(
      (*b)->Forward({std::span<const int32_t>(tokens.data(), 1), {&decode, 1}}, &logits).ok());
  counts = (*b)->ExpertTokenCounts();
  for (const auto& layer : counts) {
    EXPECT_EQ(std::accumulate(layer.begin(), layer.end(), int64_t{0}), 7);
  }
}

TEST(CpuBackendMetricsTest, MemoryIsWeightsPlusStatePool) {
  auto config = ModelConfig::Preset("tiny");
  ASSERT_TRUE(config.ok());
  BackendOptions o;
  o.num_slots = 3;
  o.num_threads = 1;
  auto b = CpuBackend::Create(MakeRandomWeights(*config, 7), o);
  ASSERT_TRUE(b.ok()) << b.status();
  // fp32 weights (the tied head counted once) plus num_slots + 1 (padding) slots of state.
  const size_t expected = static_cast<size_t>(config->TotalParams()) * sizeof(float) +
                          4 * StateBytesPerSlot(*config, StateDType::kF32);
  EXPECT_EQ((*b)->memory_bytes_in_use(), expected);
}

}  // namespace
}  // namespace bms
