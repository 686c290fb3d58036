// GPU MoE tests (label gpu): router selection, the device-side grouping (counts, prefix sum,
// stable permutation) and the grouped expert GEMM (fc1 + gated activation, fc2 + routing scale
// + un-permute) against the CPU reference, over routing patterns: all tokens on one expert,
// empty experts, one token, 8192 tokens, ragged counts; every kernel variant (the Hopper wgmma
// ones included: elsewhere they fall back to the size rule's choice).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <tuple>
#include <utility>

#include "kernels/cuda/gemm.h"
#include "tests/gpu/gpu_test_util.h"

namespace bms::gpu_test {
namespace {

using cuda::DType;

class MoeTest : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override { BMS_SKIP_WITHOUT_GPU(); }
  DType dt() const { return GetParam(); }
  std::vector<float> In(std::vector<float> v) const {
    return dt() == DType::kBF16 ? RoundBf16(std::move(v)) : v;
  }
};

TEST_P(MoeTest, RouterSelectAndGroupMatchReference) {
  std::mt19937_64 rng(TestSeed());
  const int n = 3000, e = 8, d = 64;
  const auto x = RandomVector(rng, n * d, -1, 1), w = RandomVector(rng, e * d, -1, 1);
  auto bias = RandomVector(rng, e, -0.5, 0.5);
  bias[5] = bias[2];  // so equal logits below give exactly equal probabilities
  // Router logits from the reference GEMM (the selection is what is tested here).
  std::vector<float> logits(n * e);
  BMS_ASSERT_OK(
      ref::Linear({.m = n, .n = e, .k = d, .x = x.data(), .w = w.data(), .y = logits.data()}));
  // Every 10th token gets an exact tie between experts 2 and 5: first index must win.
  for (int t = 0; t < n; t += 10) {
    const float top = *std::max_element(logits.begin() + t * e, logits.begin() + (t + 1) * e);
    logits[t * e + 2] = top + 1.0f;
    logits[t * e + 5] = top + 1.0f;
  }
  DevArray dlogits(logits, DType::kF32), dbias(bias, DType::kF32), dscale(n, DType::kF32);
  DevInts<int32_t> dexpert(n), doffsets(e + 1), dperm(n);
  DevInts<unsigned long long> dcounts(std::vector<unsigned long long>(e, 5));
  BMS_ASSERT_OK(cuda::RouterSelect({.n_tokens = n,
                                    .n_experts = e,
                                    .logits = dlogits.f32(),
                                    .bias = dbias.f32(),
                                    .expert = dexpert.get(),
                                    .scale = dscale.f32(),
                                    .routing_counts = dcounts.get()},
                                   nullptr));
  BMS_ASSERT_OK(cuda::MoeGroup({.n_tokens = n,
                                .n_experts = e,
                                .expert = dexpert.get(),
                                .expert_offsets = doffsets.get(),
                                .permutation = dperm.get()},
                               nullptr));
  // Reference: sigmoid + first-index argmax on the same logits (identity weight trick: x = logits).
  std::vector<float> eye(e * e, 0.f);
  for (int i = 0; i < e; ++i) eye[i * e + i] = 1.f;
  std::vector<int32_t> want_expert(n), want_offsets(e + 1), want_perm(n);
  std::vector<float> want_scale(n);
  BMS_ASSERT_OK(ref::Router({.n_tokens = n,
                             .d_model = e,
                             .n_experts = e,
                             .x = logits.data(),
                             .weight = eye.data(),
                             .bias = bias.data(),
                             .expert = want_expert.data(),
                             .scale = want_scale.data()}));
  BMS_ASSERT_OK(ref::MoeGroup({.n_tokens = n,
                               .n_experts = e,
                               .expert = want_expert.data(),
                               .expert_offsets = want_offsets.data(),
                               .permutation = want_perm.data()}));
  EXPECT_EQ(dexpert.Get(n), want_expert);
  EXPECT_LT(NormalizedError(dscale.Get(), want_scale), 1e-6);
  EXPECT_EQ(doffsets.Get(e + 1), want_offsets);
  EXPECT_EQ(dperm.Get(n), want_perm);
  for (int t = 0; t < n; t += 10) EXPECT_EQ(want_expert[t], 2) << "tie at token " << t;
  const auto counts = dcounts.Get(e);
  for (int i = 0; i < e; ++i)
    EXPECT_EQ(counts[i], 5u + (want_offsets[i + 1] - want_offsets[i])) << "expert " << i;
}

// Routing patterns for the grouped GEMM.
std::vector<int32_t> Routing(const std::string& kind, int n, int e, std::mt19937_64& rng) {
  std::vector<int32_t> ex(n);
  for (int t = 0; t < n; ++t) {
    if (kind == "one_expert")
      ex[t] = 5;
    else if (kind == "empty_experts")
      ex[t] = (rng() % 2) ? 1 : 6;
    else if (kind == "ragged")
      ex[t] = static_cast<int32_t>(std::min<uint64_t>(rng() % 20, e - 1));
    else
      ex[t] = static_cast<int32_t>(rng() % e);
  }
  return ex;
}

TEST_P(MoeTest, GroupedExpertsMatchReference) {
  std::mt19937_64 rng(TestSeed());
  const int e = 8;
  using Case = std::tuple<std::string, int, int, int, bool, ref::Activation, bool>;
  // (routing, tokens, d_model, ffn, gated, activation, biases)
  const std::vector<Case> cases = {
      {"one_expert", 300, 128, 96, true, ref::Activation::kGelu, false},
      {"empty_experts", 133, 64, 128, true, ref::Activation::kGelu, false},
      {"uniform", 1, 128, 96, true, ref::Activation::kGelu, false},
      {"uniform", 8192, 128, 96, true, ref::Activation::kGelu, false},
      {"ragged", 517, 72, 200, true, ref::Activation::kSilu, true},
      {"ragged", 211, 64, 80, false, ref::Activation::kGelu, true},
      // k not a multiple of 8 (fc1 k = 60, fc2 k = 52): the register-staged fallback path.
      {"ragged", 77, 60, 52, true, ref::Activation::kGelu, false},
      // <= 8 rows (decode): the bf16 one-warp-per-column kernel, every epilogue.
      {"ragged", 7, 72, 200, true, ref::Activation::kSilu, true},
      {"ragged", 5, 64, 80, false, ref::Activation::kGelu, true},
      // Odd ffn (scalar stores, fc2 k not a multiple of 8) and long k with partial k stages.
      {"ragged", 300, 264, 97, true, ref::Activation::kGelu, true},
      {"uniform", 40, 1472, 392, true, ref::Activation::kGelu, false},
      {"one_expert", 24, 1472, 392, true, ref::Activation::kSilu, true},
      // Streaming GEMV variants (sgemv_*): 16 rows per expert (several row passes over weights
      // kept in registers), one-row fc2 with k > 2048 (16 vectors per lane), gated fc1 with
      // k > 2048 (two k chunks per pass), one row of the 2.8b d_model.
      {"uniform", 128, 256, 520, true, ref::Activation::kGelu, true},
      {"one_expert", 3, 64, 2056, false, ref::Activation::kSilu, true},
      {"ragged", 20, 2056, 64, true, ref::Activation::kGelu, false},
      {"one_expert", 1, 1472, 200, true, ref::Activation::kGelu, true},
      // Several 64/128-row tiles per expert over a long k with a partial last k tile (fc2
      // k = 264) and a partial last column tile: the wgmma pipeline and its swizzled layout.
      {"ragged", 400, 1472, 264, true, ref::Activation::kSilu, true},
  };
  // bf16: every kernel variant, the heuristic (-1) and the timing tuner (kTuned); fp32 has one.
  constexpr int kTuned = -2;
  // (variant, tight row-tile grid): the tiled variants (2..) and the heuristic also with the
  // tight grid (GroupedGemmTightGrid), on the cases up to 1000 tokens.
  std::vector<std::pair<int, bool>> variants = {{-1, false}};
  if (dt() == DType::kBF16) {
    for (int v = 0; v < cuda::GroupedGemmVariantCount(); ++v) variants.push_back({v, false});
    variants.push_back({kTuned, false});
    variants.push_back({-1, true});
    for (int v = 2; v < cuda::GroupedGemmVariantCount(); ++v) variants.push_back({v, true});
  }
  cuda::GroupedGemmTuner tuner(/*timing=*/true);
  for (const auto& [kind, n, d, f, gated, act, with_bias] : cases) {
    for (const auto& [variant, tight] : variants) {
      if (tight && n > 1000) continue;
      cuda::SetGroupedGemmTightGrid(tight);
      SCOPED_TRACE(testing::Message()
                   << "tight_grid=" << tight << " " << kind << " n=" << n << " d=" << d
                   << " f=" << f << " gated=" << gated << " bias=" << with_bias << " variant="
                   << (variant >= 0        ? cuda::GroupedGemmVariantName(variant)
                       : variant == kTuned ? "tuned"
                                           : "heuristic"));
      const int rows1 = gated ? 2 * f : f;
      const float ws = 1.0f / std::sqrt(static_cast<float>(d));
      const auto x = In(RandomVector(rng, n * d, -1, 1));
      const auto fc1 = In(RandomVector(rng, e * rows1 * d, -ws, ws));
      const auto fc2 = In(RandomVector(rng, e * d * f, -ws, ws));
      const auto b1 = RandomVector(rng, e * rows1, -0.2, 0.2),
                 b2 = RandomVector(rng, e * d, -0.2, 0.2);
      const auto scale = RandomVector(rng, n, 0.1, 1.0);
      const auto expert = Routing(kind, n, e, rng);
      DevArray dx(x, dt()), dfc1(fc1, dt()), dfc2(fc2, dt()), db1(b1, DType::kF32),
          db2(b2, DType::kF32), dscale(scale, DType::kF32), dact(n * f, dt()), dout(n * d, dt());
      DevInts<int32_t> dexpert(expert), doffsets(e + 1), dperm(n);
      BMS_ASSERT_OK(cuda::MoeGroup({.n_tokens = n,
                                    .n_experts = e,
                                    .expert = dexpert.get(),
                                    .expert_offsets = doffsets.get(),
                                    .permutation = dperm.get()},
                                   nullptr));
      BMS_ASSERT_OK(cuda::GroupedGemm(
          {.n_rows = n,
           .n_experts = e,
           .n = f,
           .k = d,
           .dtype = dt(),
           .epilogue = gated ? cuda::GroupedEpilogue::kGatedAct : cuda::GroupedEpilogue::kAct,
           .activation = act,
           .expert_offsets = doffsets.get(),
           .a = dx.get(),
           .a_rows = dperm.get(),
           .w = dfc1.get(),
           .bias = with_bias ? db1.f32() : nullptr,
           .out = dact.get(),
           .variant = std::max(variant, -1),
           .tuner = variant == kTuned ? &tuner : nullptr},
          nullptr));
      BMS_ASSERT_OK(cuda::GroupedGemm({.n_rows = n,
                                       .n_experts = e,
                                       .n = d,
                                       .k = f,
                                       .dtype = dt(),
                                       .epilogue = cuda::GroupedEpilogue::kScaleScatter,
                                       .expert_offsets = doffsets.get(),
                                       .a = dact.get(),
                                       .w = dfc2.get(),
                                       .bias = with_bias ? db2.f32() : nullptr,
                                       .scale = dscale.f32(),
                                       .out_rows = dperm.get(),
                                       .out = dout.get(),
                                       .variant = std::max(variant, -1),
                                       .tuner = variant == kTuned ? &tuner : nullptr},
                                      nullptr));
      std::vector<int32_t> offsets(e + 1), perm(n);
      BMS_ASSERT_OK(ref::MoeGroup({.n_tokens = n,
                                   .n_experts = e,
                                   .expert = expert.data(),
                                   .expert_offsets = offsets.data(),
                                   .permutation = perm.data()}));
      std::vector<float> want(n * d);
      BMS_ASSERT_OK(
          ref::MoeExperts({.n_tokens = n,
                           .n_experts = e,
                           .shape = {.d_model = d, .ffn = f, .gated = gated, .activation = act},
                           .x = x.data(),
                           .expert_offsets = offsets.data(),
                           .permutation = perm.data(),
                           .scale = scale.data(),
                           .fc1 = fc1.data(),
                           .fc1_bias = with_bias ? b1.data() : nullptr,
                           .fc2 = fc2.data(),
                           .fc2_bias = with_bias ? b2.data() : nullptr,
                           .out = want.data()}));
      EXPECT_EQ(doffsets.Get(e + 1), offsets);
      EXPECT_LT(NormalizedError(dout.Get(), want), Tolerance(dt()));
    }
  }
  cuda::SetGroupedGemmTightGrid(false);
  if (dt() == DType::kBF16) {
    const std::string described = tuner.Describe();
    EXPECT_NE(described.find("rows<="), std::string::npos) << described;
    std::printf("[ tuner ]\n%s", described.c_str());
  }
}

// Every variant twice on the same operands (outputs poisoned before each run): bit-identical
// (fixed-order reductions, no atomics), at 1 row, 16 rows per expert and ragged decode counts.
TEST_P(MoeTest, GroupedGemmIsDeterministic) {
  if (dt() != DType::kBF16) GTEST_SKIP() << "bf16 variants only";
  std::mt19937_64 rng(TestSeed());
  const int e = 8, d = 1472, f = 392;
  for (auto [kind, n] : {std::pair{std::string("uniform"), 1}, std::pair{std::string("uniform"), 128},
                         std::pair{std::string("ragged"), 13}}) {
    const auto x = In(RandomVector(rng, n * d, -1, 1));
    const auto fc1 = In(RandomVector(rng, e * 2 * f * d, -0.03, 0.03));
    const auto fc2 = In(RandomVector(rng, e * d * f, -0.05, 0.05));
    const auto scale = RandomVector(rng, n, 0.1, 1.0);
    DevArray dx(x, dt()), dfc1(fc1, dt()), dfc2(fc2, dt()), dscale(scale, DType::kF32);
    DevInts<int32_t> dexpert(Routing(kind, n, e, rng)), doffsets(e + 1), dperm(n);
    BMS_ASSERT_OK(cuda::MoeGroup({.n_tokens = n,
                                  .n_experts = e,
                                  .expert = dexpert.get(),
                                  .expert_offsets = doffsets.get(),
                                  .permutation = dperm.get()},
                                 nullptr));
    for (int v = 0; v < cuda::GroupedGemmVariantCount(); ++v) {
      SCOPED_TRACE(testing::Message() << kind << " n=" << n << " variant "
                                      << cuda::GroupedGemmVariantName(v));
      std::vector<float> runs[2];
      for (auto& run : runs) {
        DevArray dact(n * f, dt()), dout(n * d, dt());
        BMS_ASSERT_OK(cuda::GroupedGemm({.n_rows = n,
                                         .n_experts = e,
                                         .n = f,
                                         .k = d,
                                         .dtype = dt(),
                                         .epilogue = cuda::GroupedEpilogue::kGatedAct,
                                         .expert_offsets = doffsets.get(),
                                         .a = dx.get(),
                                         .a_rows = dperm.get(),
                                         .w = dfc1.get(),
                                         .out = dact.get(),
                                         .variant = v},
                                        nullptr));
        BMS_ASSERT_OK(cuda::GroupedGemm({.n_rows = n,
                                         .n_experts = e,
                                         .n = d,
                                         .k = f,
                                         .dtype = dt(),
                                         .epilogue = cuda::GroupedEpilogue::kScaleScatter,
                                         .expert_offsets = doffsets.get(),
                                         .a = dact.get(),
                                         .w = dfc2.get(),
                                         .scale = dscale.f32(),
                                         .out_rows = dperm.get(),
                                         .out = dout.get(),
                                         .variant = v},
                                        nullptr));
        run = dout.Get();
      }
      ASSERT_EQ(runs[0].size(), runs[1].size());
      EXPECT_EQ(std::memcmp(runs[0].data(), runs[1].data(), runs[0].size() * sizeof(float)), 0);
      for (float val : runs[0]) ASSERT_FALSE(std::isnan(val));
    }
  }
}

TEST_P(MoeTest, GroupedGemmRejectsBadVariant) {
  DevArray x(64, dt()), w(64, dt()), out(64, dt());
  DevInts<int32_t> offsets(std::vector<int32_t>{0, 1});
  const absl::Status s = cuda::GroupedGemm({.n_rows = 1,
                                            .n_experts = 1,
                                            .n = 8,
                                            .k = 8,
                                            .dtype = dt(),
                                            .expert_offsets = offsets.get(),
                                            .a = x.get(),
                                            .w = w.get(),
                                            .out = out.get(),
                                            .variant = cuda::GroupedGemmVariantCount()},
                                           nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("variant"), std::string::npos) << s;
}

INSTANTIATE_TEST_SUITE_P(DTypes, MoeTest, ::testing::Values(DType::kF32, DType::kBF16),
                         [](const auto& info) { return std::string(DTypeLabel(info.param)); });

}  // namespace
}  // namespace bms::gpu_test
