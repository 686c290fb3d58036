// Sampler unit tests: the logit processor's exact arithmetic, greedy ties, the filtered
// distribution, logprobs, a chi-square goodness-of-fit test of seeded sampling, and validation.
#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>

#include "engine/rng.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace bms {
namespace {

using ::testing::HasSubstr;

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

TEST(LogitProcessor, PenaltiesAndBiasExactly) {
  SamplingParams p;
  p.repetition_penalty = 2.0f;
  p.frequency_penalty = 0.5f;
  p.presence_penalty = 0.25f;
  p.logit_bias = {{1, 3.0f}, {4, -1.0f}};
  TokenCounts counts = {{0, 2}, {2, 1}, {3, 3}};
  SampleContext ctx{.params = &p, .counts = &counts, .num_generated = 6, .eos_token_id = 5};
  std::vector<float> x = {4.0f, 1.0f, -2.0f, 0.0f, 1.5f, 7.0f};
  ProcessLogits(x, ctx);
  // token 0: bias none; positive -> /2 = 2; minus 0.5*2 + 0.25 = 0.75
  EXPECT_FLOAT_EQ(x[0], 4.0f / 2 - 0.5f * 2 - 0.25f);
  // token 1: not generated: only the bias.
  EXPECT_FLOAT_EQ(x[1], 4.0f);
  // token 2: negative -> *2 = -4; minus 0.5 + 0.25
  EXPECT_FLOAT_EQ(x[2], -4.0f - 0.5f - 0.25f);
  // token 3: zero stays zero under the repetition penalty; minus 1.5 + 0.25
  EXPECT_FLOAT_EQ(x[3], 0.0f - 1.5f - 0.25f);
  EXPECT_FLOAT_EQ(x[4], 0.5f);  // bias only
  EXPECT_FLOAT_EQ(x[5], 7.0f);  // EOS untouched: min_tokens is 0
}

TEST(LogitProcessor, BiasIsAppliedBeforeRepetitionPenalty) {
  SamplingParams p;
  p.repetition_penalty = 2.0f;
  p.logit_bias = {{0, 2.0f}};
  TokenCounts counts = {{0, 1}};
  SampleContext ctx{.params = &p, .counts = &counts, .num_generated = 1};
  std::vector<float> x = {-1.0f, 0.0f};
  ProcessLogits(x, ctx);
  EXPECT_FLOAT_EQ(x[0], (-1.0f + 2.0f) / 2.0f);
}

TEST(LogitProcessor, MinTokensMasksEosAndStopIds) {
  SamplingParams p;
  p.min_tokens = 3;
  p.stop_token_ids = {2};
  SampleContext ctx{.params = &p, .counts = nullptr, .num_generated = 2, .eos_token_id = 0};
  std::vector<float> x = {9.0f, 1.0f, 8.0f, 0.5f};
  ProcessLogits(x, ctx);
  EXPECT_EQ(x[0], kNegInf);
  EXPECT_EQ(x[2], kNegInf);
  EXPECT_FLOAT_EQ(x[1], 1.0f);
  // Greedy now picks token 1.
  std::vector<float> scratch;
  p.temperature = 0;
  std::vector<float> raw = {9.0f, 1.0f, 8.0f, 0.5f};
  EXPECT_EQ(SampleToken(raw, ctx, &scratch).token, 1);
  // Once min_tokens were generated nothing is masked.
  ctx.num_generated = 3;
  EXPECT_EQ(SampleToken(raw, ctx, &scratch).token, 0);
  // ignore_eos keeps EOS unmasked even before min_tokens (stop ids still masked).
  p.ignore_eos = true;
  ctx.num_generated = 0;
  EXPECT_EQ(SampleToken(raw, ctx, &scratch).token, 0);
}

TEST(Sampler, GreedyTakesFirstIndexOnTies) {
  SamplingParams p;
  p.temperature = 0;
  SampleContext ctx{.params = &p};
  std::vector<float> scratch;
  std::vector<float> x = {1.0f, 3.0f, 2.0f, 3.0f};
  EXPECT_EQ(SampleToken(x, ctx, &scratch).token, 1);
}

TEST(Sampler, LogprobsAreLogSoftmaxOfProcessedLogits) {
  SamplingParams p;
  p.temperature = 0;
  p.logprobs = 2;
  p.logit_bias = {{2, 1.0f}};
  SampleContext ctx{.params = &p};
  std::vector<float> scratch;
  std::vector<float> x = {0.0f, 1.0f, 1.0f, -1.0f};
  SampledToken s = SampleToken(x, ctx, &scratch);
  // processed = {0, 1, 2, -1}
  const double lse = std::log(std::exp(0.0) + std::exp(1.0) + std::exp(2.0) + std::exp(-1.0));
  EXPECT_EQ(s.token, 2);
  EXPECT_NEAR(s.logprob.logprob, 2.0 - lse, 1e-6);
  ASSERT_EQ(s.logprob.top.size(), 2u);
  EXPECT_EQ(s.logprob.top[0].first, 2);
  EXPECT_EQ(s.logprob.top[1].first, 1);
  EXPECT_NEAR(s.logprob.top[1].second, 1.0 - lse, 1e-6);
}

// The filtered distribution, recomputed here from the documented rules with plain loops.
std::map<int, double> ReferenceFiltered(const std::vector<float>& x, float t, int top_k,
                                        float top_p, float min_p) {
  const int v = static_cast<int>(x.size());
  std::vector<double> p(v);
  double mx = *std::max_element(x.begin(), x.end()), z = 0;
  for (int i = 0; i < v; ++i) z += p[i] = std::exp((x[i] - mx) / t);
  for (double& q : p) q /= z;
  const double pmax = *std::max_element(p.begin(), p.end());
  std::vector<int> order(v);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return p[a] > p[b]; });
  std::vector<int> kept;
  for (int i : order) {
    if (p[i] >= min_p * pmax) kept.push_back(i);
  }
  if (top_k > 0 && top_k < static_cast<int>(kept.size())) kept.resize(top_k);
  double mass = 0;
  for (int i : kept) mass += p[i];
  std::vector<int> final_kept;
  double cum = 0;
  for (int i : kept) {
    final_kept.push_back(i);
    cum += p[i] / mass;
    if (cum >= top_p) break;
  }
  std::map<int, double> out;
  double total = 0;
  for (int i : final_kept) total += p[i];
  for (int i : final_kept) out[i] = p[i] / total;
  return out;
}

TEST(Sampler, FilteredDistributionMatchesReference) {
  const std::vector<float> x = {0.3f, 2.0f, -1.0f, 1.2f, 0.9f, 1.9f, -3.0f, 0.0f, 1.0f, 0.5f};
  struct Case {
    float t;
    int k;
    float p;
    float min_p;
  };
  for (Case c : {Case{1, 0, 1, 0}, Case{1, 4, 1, 0}, Case{0.7f, 0, 0.8f, 0}, Case{1.3f, 0, 1, 0.2f},
                 Case{1, 6, 0.9f, 0.05f}}) {
    SamplingParams p;
    p.temperature = c.t;
    p.top_k = c.k;
    p.top_p = c.p;
    p.min_p = c.min_p;
    auto got = FilteredDistribution(x, p);
    auto want = ReferenceFiltered(x, c.t, c.k, c.p, c.min_p);
    ASSERT_EQ(got.size(), want.size()) << "t=" << c.t << " k=" << c.k << " p=" << c.p;
    for (auto [token, prob] : got) {
      ASSERT_TRUE(want.count(token)) << token;
      EXPECT_NEAR(prob, want[token], 1e-9);
    }
  }
}

// Regularized upper incomplete gamma Q(a, x) (series / continued fraction, Numerical Recipes
// style), for the chi-square p-value.
double GammaQ(double a, double x) {
  if (x <= 0) return 1.0;
  const double gln = std::lgamma(a);
  if (x < a + 1) {
    double ap = a, sum = 1.0 / a, del = sum;
    for (int n = 0; n < 1000; ++n) {
      ap += 1;
      del *= x / ap;
      sum += del;
      if (std::fabs(del) < std::fabs(sum) * 1e-15) break;
    }
    return 1.0 - sum * std::exp(-x + a * std::log(x) - gln);
  }
  double b = x + 1 - a, c = 1e300, d = 1 / b, h = d;
  for (int i = 1; i < 1000; ++i) {
    double an = -i * (i - a);
    b += 2;
    d = an * d + b;
    if (std::fabs(d) < 1e-300) d = 1e-300;
    c = b + an / c;
    if (std::fabs(c) < 1e-300) c = 1e-300;
    d = 1 / d;
    double del = d * c;
    h *= del;
    if (std::fabs(del - 1) < 1e-15) break;
  }
  return std::exp(-x + a * std::log(x) - gln) * h;
}

TEST(Sampler, ChiSquareGoodnessOfFitOverSeeds) {
  ASSERT_NEAR(GammaQ(1.0, 2.0), std::exp(-2.0), 1e-12);  // chi2 with 2 dof: Q = e^{-x/2}
  const std::vector<float> x = {0.3f,  2.0f, -1.0f, 1.2f, 0.9f, 1.9f,
                                -3.0f, 0.0f, 1.0f,  0.5f, 1.4f, -0.2f};
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_k = 8;
  p.top_p = 0.95f;
  p.min_p = 0.05f;
  auto want = ReferenceFiltered(x, 1.0f, 8, 0.95f, 0.05f);
  ASSERT_GE(want.size(), 4u);
  const int draws = 40000;
  std::map<int, int> seen;
  std::vector<float> scratch;
  for (int s = 0; s < draws; ++s) {
    SampleContext ctx{.params = &p, .seed = static_cast<uint64_t>(s) * 7919 + 1};
    ++seen[SampleToken(x, ctx, &scratch).token];
  }
  double chi2 = 0;
  for (auto [token, count] : seen) ASSERT_TRUE(want.count(token)) << "filtered token " << token;
  for (auto [token, prob] : want) {
    const double e = prob * draws;
    const double o = seen.count(token) ? seen[token] : 0;
    chi2 += (o - e) * (o - e) / e;
  }
  const double dof = static_cast<double>(want.size()) - 1;
  const double p_value = GammaQ(dof / 2, chi2 / 2);
  EXPECT_GT(p_value, 0.001) << "chi2=" << chi2 << " dof=" << dof;
}

TEST(Sampler, ChiSquareUnfilteredTemperature) {
  const std::vector<float> x = {0.3f, 2.0f, -1.0f, 1.2f, 0.9f, 1.9f, -3.0f, 0.0f};
  SamplingParams p;
  p.temperature = 0.7f;
  auto want = ReferenceFiltered(x, 0.7f, 0, 1.0f, 0.0f);
  ASSERT_EQ(want.size(), x.size());
  const int draws = 40000;
  std::map<int, int> seen;
  std::vector<float> scratch;
  for (int s = 0; s < draws; ++s) {
    SampleContext ctx{.params = &p, .num_generated = s % 13, .seed = static_cast<uint64_t>(s)};
    ++seen[SampleToken(x, ctx, &scratch).token];
  }
  double chi2 = 0;
  for (auto [token, prob] : want) {
    const double e = prob * draws;
    const double o = seen.count(token) ? seen[token] : 0;
    chi2 += (o - e) * (o - e) / e;
  }
  const double dof = static_cast<double>(want.size()) - 1;
  EXPECT_GT(GammaQ(dof / 2, chi2 / 2), 0.001) << "chi2=" << chi2;
}

TEST(Sampler, SameSeedSameToken_DifferentChoiceDifferentStream) {
  std::vector<float> x(50, 0.0f);  // uniform over 50 tokens
  SamplingParams p;
  std::vector<float> scratch;
  int same = 0;
  for (int pos = 0; pos < 200; ++pos) {
    SampleContext a{.params = &p, .num_generated = pos, .seed = 42, .choice = 0};
    SampleContext b{.params = &p, .num_generated = pos, .seed = 42, .choice = 1};
    EXPECT_EQ(SampleToken(x, a, &scratch).token, SampleToken(x, a, &scratch).token);
    same += SampleToken(x, a, &scratch).token == SampleToken(x, b, &scratch).token;
  }
  EXPECT_LT(same, 30);  // independent streams agree ~1/50 of the time
}

TEST(Rng, CounterUniformInRangeAndMeanHalf) {
  double sum = 0;
  for (int i = 0; i < 10000; ++i) {
    double u = CounterUniform(7, 0, i);
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
  }
  EXPECT_NEAR(sum / 10000, 0.5, 0.02);
}

TEST(Validation, NamesTheField) {
  auto check = [](auto mutate, const char* field) {
    SamplingParams p;
    mutate(p);
    absl::Status s = ValidateSamplingParams(p, 100, 1000);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << field;
    EXPECT_THAT(std::string(s.message()), HasSubstr(field));
  };
  check([](SamplingParams& p) { p.temperature = 2.5f; }, "temperature must be in [0, 2]");
  check([](SamplingParams& p) { p.temperature = std::nanf(""); }, "temperature");
  check([](SamplingParams& p) { p.top_p = 0; }, "top_p");
  check([](SamplingParams& p) { p.top_k = -2; }, "top_k");
  check([](SamplingParams& p) { p.min_p = 1.5f; }, "min_p");
  check([](SamplingParams& p) { p.presence_penalty = 3; }, "presence_penalty");
  check([](SamplingParams& p) { p.frequency_penalty = -3; }, "frequency_penalty");
  check([](SamplingParams& p) { p.repetition_penalty = 0; }, "repetition_penalty");
  check([](SamplingParams& p) { p.logit_bias = {{100, 1.0f}}; }, "logit_bias");
  check([](SamplingParams& p) { p.logit_bias = {{1, 101.0f}}; }, "logit_bias");
  check([](SamplingParams& p) { p.max_tokens = 0; }, "max_tokens");
  check([](SamplingParams& p) { p.max_tokens = 1001; }, "max_tokens");
  check([](SamplingParams& p) { p.min_tokens = 17; }, "min_tokens");
  check([](SamplingParams& p) { p.stop_token_ids = {-1}; }, "stop_token_ids");
  check([](SamplingParams& p) { p.logprobs = 21; }, "logprobs must be in [0, 20]");
  EXPECT_TRUE(ValidateSamplingParams(SamplingParams{}, 100, 1000).ok());
}

}  // namespace
}  // namespace bms
