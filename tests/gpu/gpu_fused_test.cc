// GPU tests (label gpu) for the fused decode kernels: the register-staged AddNorm (decode and
// odd shapes), the small-M GEMV behind GemmRunner::Linear (4- and 16-byte paths, strides, fp32
// output) and AddRmsNormRoute (norm + router + selection + grouping in one launch), each against
// the CPU reference on fresh random inputs with NaN-poisoned outputs: normalized error < 1e-5 in
// fp32, < 1e-2 in bf16; routing: the same expert as the reference wherever the reference's top
// two probabilities are clearly apart, first index on exact ties, offsets / permutation / counts
// exactly those of the reference grouping of the kernel's experts.
#include <algorithm>
#include <tuple>

#include "kernels/cuda/gemm.h"
#include "tests/gpu/gpu_test_util.h"

namespace bms::gpu_test {
namespace {

using cuda::DType;

class FusedTest : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override { BMS_SKIP_WITHOUT_GPU(); }
  DType dt() const { return GetParam(); }
  std::vector<float> In(std::vector<float> v) const {
    return dt() == DType::kBF16 ? RoundBf16(std::move(v)) : v;
  }
};

TEST_P(FusedTest, AddRmsNormDecodeShapesMatchReference) {
  std::mt19937_64 rng(TestSeed());
  // 1472: the 2.8b width (2 float4 slices per thread, ragged); 4096: the widest fast shape;
  // 602: not a multiple of 4 (the shared-memory kernel).
  for (auto [n, d] : {std::pair{1, 1472}, std::pair{3, 4096}, std::pair{5, 602}}) {
    const auto h = In(RandomVector(rng, n * d, -2, 2));
    const auto res0 = RandomVector(rng, n * d, -2, 2);
    const auto w = RandomVector(rng, d, 0.5, 1.5);
    DevArray dh(h, dt()), dres(res0, DType::kF32), dw(w, DType::kF32), dout(n * d, dt()),
        dout32(n * d, DType::kF32);
    BMS_ASSERT_OK(cuda::AddRmsNorm({.n_rows = n,
                                    .d_model = d,
                                    .dtype = dt(),
                                    .h = dh.get(),
                                    .residual = dres.f32(),
                                    .weight = dw.f32(),
                                    .eps = 1e-5f,
                                    .out = dout.get(),
                                    .out_f32 = dout32.f32()},
                                   nullptr));
    std::vector<float> res = res0, want(n * d);
    BMS_ASSERT_OK(ref::AddRmsNorm({.n_tokens = n,
                                   .d_model = d,
                                   .h = h.data(),
                                   .residual = res.data(),
                                   .weight = w.data(),
                                   .eps = 1e-5f,
                                   .out = want.data()}));
    EXPECT_LT(NormalizedError(dres.Get(), res), 1e-6) << "d=" << d;
    EXPECT_LT(NormalizedError(dout32.Get(), want), 1e-5) << "d=" << d;
    EXPECT_LT(NormalizedError(dout.Get(), want), Tolerance(dt())) << "d=" << d;
  }
}

TEST_P(FusedTest, SmallMLinearMatchesReferenceAndCublas) {
  std::mt19937_64 rng(TestSeed());
  auto gemm = cuda::GemmRunner::Create();
  ASSERT_TRUE(gemm.ok()) << gemm.status();
  // (m, n, k, x_stride, y_stride, fp32 out): x_proj, dt_proj (k = 92, x stride 124: the 4-byte
  // path), wider outputs (< 4 MB of fp32 weights), 8 rows, odd sizes.
  for (auto [m, n, k, xs, ys, f32_out] :
       {std::tuple{1, 124, 2944, 2944, 124, false}, std::tuple{2, 2944, 92, 124, 2944, false},
        std::tuple{1, 600, 1472, 1472, 600, false}, std::tuple{3, 300, 2944, 2944, 400, true},
        std::tuple{8, 124, 2944, 2944, 124, false}, std::tuple{5, 300, 36, 40, 301, true},
        std::tuple{7, 33, 2, 2, 33, false}}) {
    const auto x = In(RandomVector(rng, m * xs, -1, 1));
    const auto w = In(RandomVector(rng, n * k, -1, 1));
    const DType out_dt = f32_out ? DType::kF32 : dt();
    const cuda::LinearParams lp{.m = m,
                                .n = n,
                                .k = k,
                                .in_dtype = dt(),
                                .out_dtype = out_dt,
                                .x_stride = xs,
                                .y_stride = ys};
    ASSERT_TRUE(cuda::SmallMLinearSupported(lp)) << "m=" << m << " n=" << n << " k=" << k;
    DevArray dx(x, dt()), dw(w, dt()), dy(m * ys, out_dt), dy_blas(m * ys, out_dt);
    cuda::LinearParams p = lp;
    p.x = dx.get();
    p.w = dw.get();
    p.y = dy.get();
    BMS_ASSERT_OK(cuda::SmallMLinear(p, nullptr));
    p.y = dy_blas.get();
    BMS_ASSERT_OK((*gemm)->LinearCublas(p, nullptr));
    std::vector<float> want(m * ys, 0.f);
    BMS_ASSERT_OK(ref::Linear({.m = m,
                               .n = n,
                               .k = k,
                               .x = x.data(),
                               .x_stride = xs,
                               .w = w.data(),
                               .y = want.data(),
                               .y_stride = ys}));
    const std::vector<float> got = dy.Get(), blas = dy_blas.Get();
    std::vector<float> g, b, wv;
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j) {
        g.push_back(got[i * ys + j]);
        b.push_back(blas[i * ys + j]);
        wv.push_back(want[i * ys + j]);
      }
    const double tol =
        Tolerance(out_dt == DType::kF32 && dt() == DType::kF32 ? DType::kF32 : DType::kBF16);
    EXPECT_LT(NormalizedError(g, wv), tol) << "m=" << m << " n=" << n << " k=" << k;
    EXPECT_LT(NormalizedError(b, wv), tol) << "cuBLASLt m=" << m << " n=" << n << " k=" << k;
    // Columns past n in a strided y stay untouched (poison).
    if (ys > n) EXPECT_TRUE(std::isnan(got[n])) << "m=" << m << " n=" << n;
  }
  // Shapes the small-M path must refuse (Linear then uses cuBLASLt).
  EXPECT_FALSE(cuda::SmallMLinearSupported({.m = 9, .n = 8, .k = 8, .in_dtype = dt()}));
  EXPECT_FALSE(cuda::SmallMLinearSupported(
      {.m = 8, .n = 4096, .k = 4096, .in_dtype = dt(), .out_dtype = dt()}));
  EXPECT_FALSE(cuda::SmallMLinearSupported(  // in_proj of the 2.8b preset: cuBLASLt
      {.m = 1, .n = 5888, .k = 1472, .in_dtype = dt(), .out_dtype = dt()}));
}

// Reference routing of fp32 normalized rows: expert, scale and the top-two probability gap.
void RefRoute(const std::vector<float>& xn, const std::vector<float>& router,
              const std::vector<float>& bias, int n, int d, int e, std::vector<int32_t>* expert,
              std::vector<float>* scale, std::vector<float>* gap) {
  expert->assign(n, -1);
  scale->assign(n, 0.f);
  gap->assign(n, 0.f);
  BMS_ASSERT_OK(ref::Router({.n_tokens = n,
                             .d_model = d,
                             .n_experts = e,
                             .x = xn.data(),
                             .weight = router.data(),
                             .bias = bias.data(),
                             .expert = expert->data(),
                             .scale = scale->data()}));
  for (int t = 0; t < n; ++t) {
    std::vector<double> prob;
    for (int j = 0; j < e; ++j) {
      if (e >= 6 && j == 5) continue;  // the copy of expert 2 (an intended exact tie)
      double s = bias[j];
      for (int c = 0; c < d; ++c) s += static_cast<double>(xn[t * d + c]) * router[j * d + c];
      prob.push_back(1.0 / (1.0 + std::exp(-s)));
    }
    std::sort(prob.begin(), prob.end(), std::greater<>());
    (*gap)[t] = static_cast<float>(prob[0] - (prob.size() > 1 ? prob[1] : 0.0));
  }
}

TEST_P(FusedTest, AddRmsNormRouteMatchesReference) {
  std::mt19937_64 rng(TestSeed());
  DevInts<unsigned int> ticket(std::vector<unsigned int>{0u});
  // (rows, d_model, experts, rows counted; -1 = all)
  for (auto [n, d, e, counted] : {std::tuple{1, 1472, 8, -1}, std::tuple{7, 1472, 8, 5},
                                  std::tuple{300, 64, 8, -1}, std::tuple{1500, 1472, 8, 1400},
                                  std::tuple{33, 3000, 12, -1}, std::tuple{64, 256, 1, 64}}) {
    const auto h = In(RandomVector(rng, n * d, -2, 2));
    const auto res0 = RandomVector(rng, n * d, -2, 2);
    const auto w = RandomVector(rng, d, 0.5, 1.5);
    auto router = RandomVector(rng, e * d, -0.05f, 0.05f);
    auto bias = RandomVector(rng, e, -0.5, 0.5);
    if (e >= 6) {  // experts 2 and 5 identical: every tie between them must go to 2
      std::copy(router.begin() + 2 * d, router.begin() + 3 * d, router.begin() + 5 * d);
      bias[5] = bias[2];
    }
    DevArray dh(h, dt()), dres(res0, DType::kF32), dw(w, DType::kF32), dout(n * d, dt()),
        drouter(router, DType::kF32), dbias(bias, DType::kF32), dscale(n, DType::kF32);
    DevInts<int32_t> dexpert(n), doffsets(e + 1), dperm(n);
    DevInts<int32_t> dcounted(std::vector<int32_t>{counted});
    DevInts<unsigned long long> dcounts(std::vector<unsigned long long>(e, 7));
    cuda::AddNormRouteParams p{.norm = {.n_rows = n,
                                        .d_model = d,
                                        .dtype = dt(),
                                        .h = dh.get(),
                                        .residual = dres.f32(),
                                        .weight = dw.f32(),
                                        .eps = 1e-5f,
                                        .out = dout.get()},
                               .n_experts = e,
                               .router = drouter.f32(),
                               .router_bias = dbias.f32(),
                               .expert = dexpert.get(),
                               .scale = dscale.f32(),
                               .routing_counts = dcounts.get(),
                               .n_counted = counted >= 0 ? dcounted.get() : nullptr,
                               .expert_offsets = doffsets.get(),
                               .permutation = dperm.get(),
                               .ticket = ticket.get()};
    ASSERT_TRUE(cuda::AddRmsNormRouteSupported(p)) << "d=" << d;
    BMS_ASSERT_OK(cuda::AddRmsNormRoute(p, nullptr));

    std::vector<float> res = res0, xn(n * d);
    BMS_ASSERT_OK(ref::AddRmsNorm({.n_tokens = n,
                                   .d_model = d,
                                   .h = h.data(),
                                   .residual = res.data(),
                                   .weight = w.data(),
                                   .eps = 1e-5f,
                                   .out = xn.data()}));
    EXPECT_LT(NormalizedError(dres.Get(), res), 1e-6) << "n=" << n << " d=" << d;
    EXPECT_LT(NormalizedError(dout.Get(), xn), Tolerance(dt())) << "n=" << n << " d=" << d;
    std::vector<int32_t> want_expert;
    std::vector<float> want_scale, gap;
    RefRoute(xn, router, bias, n, d, e, &want_expert, &want_scale, &gap);
    const auto got_expert = dexpert.Get(n);
    const auto got_scale = dscale.Get();
    int clear = 0;
    for (int t = 0; t < n; ++t) {
      ASSERT_GE(got_expert[t], 0);
      ASSERT_LT(got_expert[t], e);
      if (e >= 6) EXPECT_NE(got_expert[t], 5) << "tie 2/5 at row " << t << " went to 5";
      if (gap[t] > 1e-4f || e == 1) {
        ++clear;
        EXPECT_EQ(got_expert[t], want_expert[t]) << "row " << t;
        EXPECT_NEAR(got_scale[t], want_scale[t], 1e-5) << "row " << t;
      }
    }
    EXPECT_GE(clear, n * 9 / 10) << "too few rows with a clear routing margin";
    // Grouping and counters: exactly the reference grouping of the kernel's own choices.
    std::vector<int32_t> want_offsets(e + 1), want_perm(n);
    BMS_ASSERT_OK(ref::MoeGroup({.n_tokens = n,
                                 .n_experts = e,
                                 .expert = got_expert.data(),
                                 .expert_offsets = want_offsets.data(),
                                 .permutation = want_perm.data()}));
    EXPECT_EQ(doffsets.Get(e + 1), want_offsets) << "n=" << n;
    EXPECT_EQ(dperm.Get(n), want_perm) << "n=" << n;
    std::vector<unsigned long long> want_counts(e, 7);
    for (int t = 0; t < (counted >= 0 ? counted : n); ++t) ++want_counts[got_expert[t]];
    EXPECT_EQ(dcounts.Get(e), want_counts) << "n=" << n;
    EXPECT_EQ(ticket.Get(1)[0], 0u) << "ticket left non-zero";
  }
}

INSTANTIATE_TEST_SUITE_P(DTypes, FusedTest, ::testing::Values(DType::kF32, DType::kBF16),
                         [](const auto& info) { return std::string(DTypeLabel(info.param)); });

}  // namespace
}  // namespace bms::gpu_test
