#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "engine/rng.h"

namespace bms {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Orders token ids by value descending, lower id first on ties.
template <typename V>
auto ByValueDesc(const V& values) {
  return [&values](int32_t a, int32_t b) {
    return values[a] > values[b] || (values[a] == values[b] && a < b);
  };
}

// max(x), in independent lanes so the compiler vectorizes it (NaNs are skipped unless first).
float MaxValue(std::span<const float> x) {
  constexpr size_t kLanes = 16;
  const size_t n = x.size();
  if (n < kLanes) {
    float m = x[0];
    for (size_t i = 1; i < n; ++i) m = x[i] > m ? x[i] : m;
    return m;
  }
  float lane[kLanes];
  for (size_t l = 0; l < kLanes; ++l) lane[l] = x[l];
  size_t i = kLanes;
  for (; i + kLanes <= n; i += kLanes) {
    for (size_t l = 0; l < kLanes; ++l) lane[l] = x[i + l] > lane[l] ? x[i + l] : lane[l];
  }
  float m = lane[0];
  for (size_t l = 1; l < kLanes; ++l) m = lane[l] > m ? lane[l] : m;
  for (; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

// The first index holding the maximum.
int32_t ArgMax(std::span<const float> x) {
  const float m = MaxValue(x);
  for (size_t i = 0; i < x.size(); ++i) {
    if (x[i] == m) return static_cast<int32_t>(i);
  }
  return 0;  // only when the maximum is NaN
}

bool InRange(float v, float lo, float hi) { return v >= lo && v <= hi; }  // false for NaN

// Inverse-CDF draw from softmax(x / temperature) in token-id order.
int32_t SampleUnfiltered(std::span<const float> x, float temperature, double u) {
  thread_local std::vector<double> w;
  const int vocab = static_cast<int>(x.size());
  const float max_logit = MaxValue(x);
  if (std::isinf(max_logit)) return ArgMax(x);
  const double inv_t = 1.0 / static_cast<double>(temperature);
  w.resize(vocab);
  double total = 0;
  for (int i = 0; i < vocab; ++i) total += w[i] = std::exp((x[i] - max_logit) * inv_t);
  const double target = u * total;
  double cum = 0;
  int32_t last_positive = 0;
  for (int i = 0; i < vocab; ++i) {
    if (w[i] <= 0) continue;
    cum += w[i];
    last_positive = i;
    if (target < cum) return i;
  }
  return last_positive;
}

}  // namespace

bool NeedsLogitProcessing(const SampleContext& ctx) {
  const SamplingParams& p = *ctx.params;
  bool has_history = ctx.counts != nullptr && !ctx.counts->empty();
  return !p.logit_bias.empty() || ctx.num_generated < p.min_tokens ||
         (has_history && (p.repetition_penalty != 1.0f || p.frequency_penalty != 0.0f ||
                          p.presence_penalty != 0.0f));
}

void ProcessLogits(std::span<float> logits, const SampleContext& ctx) {
  const SamplingParams& p = *ctx.params;
  const int vocab = static_cast<int>(logits.size());
  for (const auto& [token, bias] : p.logit_bias) {
    if (token >= 0 && token < vocab) logits[token] += bias;
  }
  if (ctx.num_generated < p.min_tokens) {
    if (!p.ignore_eos && ctx.eos_token_id >= 0 && ctx.eos_token_id < vocab) {
      logits[ctx.eos_token_id] = kNegInf;
    }
    for (int32_t s : p.stop_token_ids) {
      if (s >= 0 && s < vocab) logits[s] = kNegInf;
    }
  }
  if (ctx.counts == nullptr) return;
  for (const auto& [token, count] : *ctx.counts) {
    if (token < 0 || token >= vocab || count <= 0) continue;
    float& x = logits[token];
    if (p.repetition_penalty != 1.0f) {
      x = x > 0 ? x / p.repetition_penalty : x * p.repetition_penalty;
    }
    x -= p.frequency_penalty * static_cast<float>(count) + p.presence_penalty;
  }
}

std::vector<std::pair<int32_t, double>> FilteredDistribution(std::span<const float> processed,
                                                             const SamplingParams& params) {
  const int vocab = static_cast<int>(processed.size());
  const double inv_t = 1.0 / static_cast<double>(params.temperature);
  const double max_logit = MaxValue(processed);
  // Unnormalized probabilities relative to the most likely token (which gets 1).
  thread_local std::vector<double> w;
  w.resize(vocab);
  for (int i = 0; i < vocab; ++i) {
    w[i] = std::isinf(max_logit) ? (processed[i] == max_logit ? 1.0 : 0.0)
                                 : std::exp((processed[i] - max_logit) * inv_t);
  }
  std::vector<int32_t> kept;
  kept.reserve(vocab);
  const double min_w = static_cast<double>(params.min_p);  // min_p * max(p), max weight is 1
  for (int i = 0; i < vocab; ++i) {
    if (w[i] > 0 && w[i] >= min_w) kept.push_back(i);
  }
  if (kept.empty()) kept.push_back(ArgMax(processed));
  const bool top_k = params.top_k > 0 && params.top_k < static_cast<int>(kept.size());
  const bool top_p = params.top_p < 1.0f;
  if (top_k) {
    std::partial_sort(kept.begin(), kept.begin() + params.top_k, kept.end(), ByValueDesc(w));
    kept.resize(params.top_k);
  }
  double total = 0;
  for (int32_t t : kept) total += w[t];
  if (top_p) {
    const double target = static_cast<double>(params.top_p) * total;
    // Find a most-likely-first prefix holding the target mass without sorting everything:
    // select the top k (k grows 8x until their mass suffices), then sort just those.
    size_t k = std::min<size_t>(kept.size(), 512);
    while (true) {
      if (k < kept.size()) {
        std::nth_element(kept.begin(), kept.begin() + k, kept.end(), ByValueDesc(w));
      }
      double mass = 0;
      for (size_t i = 0; i < k; ++i) mass += w[kept[i]];
      if (mass >= target || k == kept.size()) break;
      k = std::min(kept.size(), k * 8);
    }
    std::sort(kept.begin(), kept.begin() + k, ByValueDesc(w));
    double cum = 0;
    size_t n = 0;
    while (n < k) {
      cum += w[kept[n++]];
      if (cum >= target) break;
    }
    kept.resize(n);
    total = cum;
  }
  std::vector<std::pair<int32_t, double>> out;
  out.reserve(kept.size());
  for (int32_t t : kept) out.emplace_back(t, w[t] / total);
  return out;
}

TokenLogprob ComputeLogprobs(std::span<const float> processed, int32_t token, int n) {
  const int vocab = static_cast<int>(processed.size());
  const float max_logit = MaxValue(processed);
  double sum = 0;
  for (float x : processed) sum += std::exp(static_cast<double>(x) - max_logit);
  const double lse = max_logit + std::log(sum);
  TokenLogprob out;
  out.token = token;
  out.logprob = static_cast<float>(processed[token] - lse);
  n = std::min(n, vocab);
  if (n > 0) {
    std::vector<int32_t> ids(vocab);
    std::iota(ids.begin(), ids.end(), 0);
    std::partial_sort(ids.begin(), ids.begin() + n, ids.end(), ByValueDesc(processed));
    for (int i = 0; i < n; ++i) {
      out.top.emplace_back(ids[i], static_cast<float>(processed[ids[i]] - lse));
    }
  }
  return out;
}

SampledToken SampleToken(std::span<const float> raw_logits, const SampleContext& ctx,
                         std::vector<float>* scratch) {
  const SamplingParams& p = *ctx.params;
  std::span<const float> processed = raw_logits;
  if (NeedsLogitProcessing(ctx)) {
    scratch->assign(raw_logits.begin(), raw_logits.end());
    ProcessLogits(*scratch, ctx);
    processed = *scratch;
  }
  SampledToken out;
  if (p.temperature == 0.0f) {
    out.token = ArgMax(processed);
  } else if ((p.top_k <= 0 || p.top_k >= static_cast<int>(processed.size())) && p.top_p >= 1.0f &&
             p.min_p <= 0.0f) {
    // No filter: draw straight from softmax(x / T) without building the kept list.
    out.token = SampleUnfiltered(processed, p.temperature,
                                 CounterUniform(ctx.seed, ctx.choice, ctx.num_generated));
  } else {
    std::vector<std::pair<int32_t, double>> dist = FilteredDistribution(processed, p);
    const double u = CounterUniform(ctx.seed, ctx.choice, ctx.num_generated);
    double cum = 0;
    out.token = dist.back().first;
    for (const auto& [token, prob] : dist) {
      cum += prob;
      if (u < cum) {
        out.token = token;
        break;
      }
    }
  }
  if (p.logprobs >= 0) out.logprob = ComputeLogprobs(processed, out.token, p.logprobs);
  return out;
}

absl::Status ValidateSamplingParams(const SamplingParams& p, int vocab_size, int max_tokens_limit) {
  auto bad = [](auto... parts) { return absl::InvalidArgumentError(absl::StrCat(parts...)); };
  if (!InRange(p.temperature, 0.0f, 2.0f)) return bad("temperature must be in [0, 2]");
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) return bad("top_p must be in (0, 1]");
  if (p.top_k < -1) return bad("top_k must be >= 0 (0 or -1 disables it)");
  if (!InRange(p.min_p, 0.0f, 1.0f)) return bad("min_p must be in [0, 1]");
  if (!InRange(p.presence_penalty, -2.0f, 2.0f)) return bad("presence_penalty must be in [-2, 2]");
  if (!InRange(p.frequency_penalty, -2.0f, 2.0f)) {
    return bad("frequency_penalty must be in [-2, 2]");
  }
  if (!(p.repetition_penalty > 0.0f && std::isfinite(p.repetition_penalty))) {
    return bad("repetition_penalty must be > 0");
  }
  for (const auto& [token, bias] : p.logit_bias) {
    if (token < 0 || token >= vocab_size) {
      return bad("logit_bias token id ", token, " must be in [0, ", vocab_size, ")");
    }
    if (!InRange(bias, -100.0f, 100.0f)) return bad("logit_bias values must be in [-100, 100]");
  }
  if (p.max_tokens < 1 || p.max_tokens > max_tokens_limit) {
    return bad("max_tokens must be in [1, ", max_tokens_limit, "]");
  }
  if (p.min_tokens < 0 || p.min_tokens > p.max_tokens) {
    return bad("min_tokens must be in [0, max_tokens]");
  }
  for (int32_t s : p.stop_token_ids) {
    if (s < 0 || s >= vocab_size) {
      return bad("stop_token_ids: token id ", s, " must be in [0, ", vocab_size, ")");
    }
  }
  if (p.logprobs < -1 || p.logprobs > 20) return bad("logprobs must be in [0, 20]");
  return absl::OkStatus();
}

}  // namespace bms
