// The random-weight model is a useful demo: on the CPU reference backend its greedy output
// varies (neither one token repeated nor the input echoed back through the tied embedding).
#include <cstdio>
#include <cstdlib>
#include <set>

#include "absl/strings/str_join.h"
#include "engine/cpu_backend.h"
#include "engine/model_weights.h"
#include "gtest/gtest.h"

namespace bms {
namespace {

// Greedy continuation of `prompt` for `steps` tokens.
std::vector<int32_t> Greedy(Backend& backend, std::vector<int32_t> prompt, int steps) {
  const int vocab = backend.config().vocab_size;
  std::vector<int32_t> out;
  std::vector<float> logits;
  std::vector<int32_t> tokens = prompt;
  bool first = true;
  for (int s = 0; s < steps; ++s) {
    SeqChunk chunk{.slot = 0,
                   .token_offset = 0,
                   .n_tokens = static_cast<int>(tokens.size()),
                   .first_chunk = first,
                   .logits = LogitsMode::kLast};
    StepInput in{.tokens = tokens, .seqs = {&chunk, 1}};
    EXPECT_TRUE(backend.Forward(in, &logits).ok());
    EXPECT_EQ(logits.size(), static_cast<size_t>(vocab));
    int32_t best = 0;
    for (int v = 1; v < vocab; ++v) best = logits[v] > logits[best] ? v : best;
    out.push_back(best);
    tokens = {best};
    first = false;
  }
  return out;
}

TEST(RandomModel, GreedyOutputVaries) {
  ModelConfig tiny = *ModelConfig::Preset("tiny");
  for (uint64_t seed : {1, 2}) {
    auto backend =
        CpuBackend::Create(MakeRandomWeights(tiny, seed), {.num_slots = 1, .num_threads = 1});
    ASSERT_TRUE(backend.ok()) << backend.status();
    std::vector<int32_t> out = Greedy(**backend, {72, 101, 108, 108, 111}, 48);
    std::set<int32_t> distinct(out.begin(), out.end());
    int echoes = 0, repeats = 0;
    for (size_t i = 1; i < out.size(); ++i) {
      echoes += out[i] == out[i - 1];  // predicting the token just fed in
    }
    for (size_t i = 2; i < out.size(); ++i) repeats += out[i] == out[i - 2];
    const std::string seq = "seed " + std::to_string(seed) + ": " + absl::StrJoin(out, " ");
    EXPECT_GE(distinct.size(), 30u) << seq;
    EXPECT_LE(echoes, 3) << seq;
    EXPECT_LE(repeats, 12) << seq;
    if (std::getenv("BMS_PRINT_GREEDY")) std::printf("%s\n", seq.c_str());
  }
}

}  // namespace
}  // namespace bms
