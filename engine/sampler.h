// Sampler: turns one fp32 logits row (from Backend::Forward) into the next token of one choice,
// on the host. Everything here is a pure function of (logits, params, the choice's generated
// tokens, seed, choice index, position), so output never depends on batch composition.
//
// Semantics, in the order applied (OpenAI / vLLM meanings; penalties see GENERATED tokens only,
// never the prompt):
//   1. logit_bias:          x[t] += bias[t]
//   2. min_tokens:          while fewer than min_tokens tokens were generated, x[eos] (unless
//                           ignore_eos) and x[s] for every stop_token_id s become -inf
//   3. repetition_penalty r (HF/vLLM): for every t generated at least once,
//                           x[t] = x[t] > 0 ? x[t] / r : x[t] * r
//   4. frequency_penalty f, presence_penalty p:
//                           x[t] -= f * count[t] + p * (count[t] > 0)
//   The result is the "processed" logits. Reported logprobs are log_softmax(processed): after
//   penalties and bias, before temperature and top-k/top-p/min-p filtering (OpenAI-like).
//   5. temperature 0:       greedy argmax of the processed logits (first index on ties)
//      temperature T > 0:   s = x / T, probabilities softmax(s), then filtered in this order:
//        min_p:  drop t with p[t] < min_p * max(p)                    (vLLM order: min_p first)
//        top_k:  keep the k most likely (ties broken by lower token id); k <= 0 disables
//        top_p:  keep the smallest most-likely-first prefix whose mass is >= top_p
//      then renormalize and draw with CounterUniform(seed, choice, position).
#pragma once

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "engine/request.h"

namespace bms {

// Number of times each token id was generated so far by one choice.
using TokenCounts = absl::flat_hash_map<int32_t, int>;

// Everything about one choice the sampler needs besides the logits row.
struct SampleContext {
  const SamplingParams* params = nullptr;
  const TokenCounts* counts = nullptr;  // generated tokens of this choice (may be null: none)
  int num_generated = 0;                // tokens generated so far (= position of this draw)
  int eos_token_id = 0;
  uint64_t seed = 0;
  int choice = 0;
};

struct SampledToken {
  int32_t token = 0;
  TokenLogprob logprob;  // filled only when params->logprobs >= 0
};

// True when ProcessLogits would change anything (so the raw row can be used as is).
bool NeedsLogitProcessing(const SampleContext& ctx);

// Steps 1-4 above, in place on one row of vocab_size logits.
void ProcessLogits(std::span<float> logits, const SampleContext& ctx);

// Step 5 for T > 0: the kept tokens and their renormalized probabilities, most likely first
// when a sort was needed (top_k or top_p active), otherwise in token-id order.
std::vector<std::pair<int32_t, double>> FilteredDistribution(std::span<const float> processed,
                                                             const SamplingParams& params);

// Log-softmax of `processed` at `token`, and the `n` most likely tokens (most likely first,
// lower id first on ties).
TokenLogprob ComputeLogprobs(std::span<const float> processed, int32_t token, int n);

// The whole pipeline on one raw logits row. `scratch` is reused between calls.
SampledToken SampleToken(std::span<const float> raw_logits, const SampleContext& ctx,
                         std::vector<float>* scratch);

// InvalidArgument naming the first bad field; token ids must lie in [0, vocab_size).
absl::Status ValidateSamplingParams(const SamplingParams& params, int vocab_size,
                                    int max_tokens_limit);

}  // namespace bms
