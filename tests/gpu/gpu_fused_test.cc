// GPU tests (label gpu) for the fused decode kernels: the register-staged AddNorm (decode and
// odd shapes), the small-M GEMV behind GemmRunner::Linear (4- and 16-byte paths, strides, fp32
// output) and AddRmsNormRoute (norm + router + selection + grouping in one launch), each against
// the CPU reference on fresh random inputs with NaN-poisoned outputs: normalized error < 1e-5 in
// fp32, < 1e-2 in bf16; routing: the same expert as the reference wherever the reference's top
// two probabilities are clearly apart, first index on exact ties, offsets / permutation / counts
// exactly those of the reference grouping of the kernel's experts.
#include <algorithm>
#include <numeric>
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
  // (rows, d_model, experts, rows counted; -1 = all). The last two route every row to expert
  // 6 (zero router weights, bias favouring 6): one full expert, seven empty ones.
  const std::vector<std::tuple<int, int, int, int>> cases = {
      {1, 1472, 8, -1},      {7, 1472, 8, 5},       {300, 64, 8, -1},
      {1500, 1472, 8, 1400}, {33, 3000, 12, -1},    {64, 256, 1, 64},
      {1024, 1472, 8, -1},   {1024, 1472, 8, 1000}, {3, 1472, 8, -1}};
  for (size_t ci = 0; ci < cases.size(); ++ci) {
    const auto [n, d, e, counted] = cases[ci];
    const bool one_expert = ci == 7 || ci == 8;
    const auto h = In(RandomVector(rng, n * d, -2, 2));
    const auto res0 = RandomVector(rng, n * d, -2, 2);
    const auto w = RandomVector(rng, d, 0.5, 1.5);
    auto router = RandomVector(rng, e * d, -0.05f, 0.05f);
    auto bias = RandomVector(rng, e, -0.5, 0.5);
    if (e >= 6) {  // experts 2 and 5 identical: every tie between them must go to 2
      std::copy(router.begin() + 2 * d, router.begin() + 3 * d, router.begin() + 5 * d);
      bias[5] = bias[2];
    }
    if (one_expert) {
      std::fill(router.begin(), router.end(), 0.f);
      std::fill(bias.begin(), bias.end(), -1.f);
      bias[6] = 1.f;
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
    if (one_expert) {
      EXPECT_EQ(doffsets.Get(e + 1), (std::vector<int32_t>{0, 0, 0, 0, 0, 0, 0, n, n}));
    }
  }
}

// MoeGroup (the shared block grouping routine, moe_group.cuh): random ids with empty experts,
// all rows on one expert, 0 / 1 / 31 / 1024 / 5000 rows, 1..64 experts; offsets and the stable
// permutation exactly those of the reference.
TEST(MoeGroupTest, MatchesReferenceExactly) {
  BMS_SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(TestSeed());
  for (auto [n, e, used] :
       {std::tuple{0, 8, 8}, std::tuple{1, 8, 8}, std::tuple{31, 8, 3}, std::tuple{1024, 8, 1},
        std::tuple{5000, 64, 64}, std::tuple{1024, 33, 5}, std::tuple{777, 8, 8}}) {
    std::vector<int32_t> expert(n);
    for (auto& x : expert) x = static_cast<int32_t>(rng() % used) * (e / used);
    DevInts<int32_t> dexpert(expert), doffsets(e + 1), dperm(std::max(n, 1));
    BMS_ASSERT_OK(cuda::MoeGroup({.n_tokens = n,
                                  .n_experts = e,
                                  .expert = dexpert.get(),
                                  .expert_offsets = doffsets.get(),
                                  .permutation = dperm.get()},
                                 nullptr));
    std::vector<int32_t> want_offsets(e + 1), want_perm(n);
    BMS_ASSERT_OK(ref::MoeGroup({.n_tokens = n,
                                 .n_experts = e,
                                 .expert = expert.data(),
                                 .expert_offsets = want_offsets.data(),
                                 .permutation = want_perm.data()}));
    EXPECT_EQ(doffsets.Get(e + 1), want_offsets) << "n=" << n << " e=" << e;
    if (n > 0) EXPECT_EQ(dperm.Get(n), want_perm) << "n=" << n << " e=" << e;
  }
}

// ---- Decode Mamba mixer (MambaDecodeConvXProj + MambaDecodeScan) ----

// (compute dtype, state storage)
class MambaDecodeTest : public ::testing::TestWithParam<std::tuple<DType, ref::StateStorage>> {
 protected:
  void SetUp() override { BMS_SKIP_WITHOUT_GPU(); }
  DType dt() const { return std::get<0>(GetParam()); }
  ref::StateStorage st() const { return std::get<1>(GetParam()); }
  size_t Elem() const { return st() == ref::StateStorage::kF32 ? 4 : 2; }
  std::vector<float> In(std::vector<float> v) const {
    return dt() == DType::kBF16 ? RoundBf16(std::move(v)) : v;
  }
  std::vector<float> Act(std::vector<float> v) const { return In(std::move(v)); }
  std::vector<uint8_t> RandomState(std::mt19937_64& rng, size_t n) const {
    std::vector<uint8_t> raw(n * Elem());
    const auto v = RandomVector(rng, n, -1, 1);
    for (size_t i = 0; i < n; ++i) ref::StoreState(raw.data(), st(), i, v[i]);
    return raw;
  }
  std::vector<float> StateValues(const std::vector<uint8_t>& raw, size_t begin, size_t n) const {
    std::vector<float> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = ref::LoadState(raw.data(), st(), begin + i);
    return v;
  }
  void Run(int B, int di, int r, bool partials);
};

void MambaDecodeTest::Run(int B, int di, int r, bool partials) {
  SCOPED_TRACE(testing::Message() << "batch=" << B << " d_inner=" << di << " dt_rank=" << r
                                  << (partials ? " partials" : " dbc"));
  std::mt19937_64 rng(TestSeed());
  constexpr int kW = 4, kN = 16;
  const int xdbl = r + 2 * kN, n_slots = B + 7;
  // Scattered slots (a shuffled subset), every 5th row padding (slot -1), some first tokens.
  std::vector<int32_t> order(n_slots), slots(B), ref_slots(B);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  std::vector<uint8_t> has(B), ref_has(B);
  int ref_total = n_slots;
  for (int b = 0; b < B; ++b) {
    slots[b] = b % 5 == 2 ? -1 : order[b];
    has[b] = b % 7 == 3 ? 0 : 1;
    ref_slots[b] = slots[b] < 0 ? ref_total++ : slots[b];
    ref_has[b] = slots[b] < 0 ? 0 : has[b];
  }
  const auto xz = In(RandomVector(rng, static_cast<size_t>(B) * 2 * di, -2, 2));
  const auto conv_w = RandomVector(rng, di * kW, -0.6f, 0.6f);
  const auto conv_b = RandomVector(rng, di, -0.5, 0.5);
  const auto x_proj = In(RandomVector(rng, static_cast<size_t>(xdbl) * di, -0.05f, 0.05f));
  const auto dt_proj = In(RandomVector(rng, static_cast<size_t>(di) * r, -0.3f, 0.3f));
  const auto dt_bias = RandomVector(rng, di, -3, -1), D = RandomVector(rng, di, -1, 1);
  auto A = RandomVector(rng, di * kN, -1, 1.5);
  for (float& a : A) a = -std::exp(a);
  const size_t conv_per = static_cast<size_t>(di) * (kW - 1),
               ssm_per = static_cast<size_t>(di) * kN;
  const auto conv0 = RandomState(rng, n_slots * conv_per);
  const auto ssm0 = RandomState(rng, n_slots * ssm_per);

  DevArray dxz(xz, dt()), dcw(conv_w, DType::kF32), dcb(conv_b, DType::kF32), dxp(x_proj, dt()),
      ddtp(dt_proj, dt()), ddtb(dt_bias, DType::kF32), dD(D, DType::kF32), dA(A, DType::kF32);
  DevInts<int32_t> dslots(slots);
  DevInts<uint8_t> dhas(has);
  auto gemm = cuda::GemmRunner::Create();
  ASSERT_TRUE(gemm.ok()) << gemm.status();

  // One fused run from the initial states: y and both states (raw bytes).
  struct Result {
    std::vector<float> y;
    std::vector<uint8_t> y_raw, conv, ssm;
  };
  auto run_fused = [&](Result* res) {
    DevInts<uint8_t> dconv(conv0), dssm(ssm0);
    DevArray dxc(static_cast<size_t>(B) * di, dt()), dy(static_cast<size_t>(B) * di, dt()),
        ddbc(static_cast<size_t>(B) * xdbl, dt()),
        dpart(cuda::MambaDecodePartialFloats(B, di, xdbl), DType::kF32);
    cuda::MambaDecodeParams p{.batch = B,
                              .d_inner = di,
                              .d_conv = kW,
                              .d_state = kN,
                              .dt_rank = r,
                              .dtype = dt(),
                              .slots = dslots.get(),
                              .has_initial_state = dhas.get(),
                              .xz = dxz.get(),
                              .conv_weight = dcw.f32(),
                              .conv_bias = dcb.f32(),
                              .conv_state = dconv.get(),
                              .conv_state_dtype = st(),
                              .x_proj = dxp.get(),
                              .dt_proj = ddtp.get(),
                              .dt_bias = ddtb.f32(),
                              .A = dA.f32(),
                              .D = dD.f32(),
                              .ssm_state = dssm.get(),
                              .ssm_state_dtype = st(),
                              .xc = dxc.get(),
                              .out = dy.get()};
    ASSERT_TRUE(cuda::MambaDecodeSupported(p));
    if (partials) {
      p.partials = dpart.f32();
      BMS_ASSERT_OK(cuda::MambaDecodeConvXProj(p, nullptr));
    } else {
      // The large-batch path: the conv update kernel, x_proj as a GEMM, then the fused scan.
      std::vector<int32_t> cu(B + 1);
      std::iota(cu.begin(), cu.end(), 0);
      DevInts<int32_t> dcu(cu);
      BMS_ASSERT_OK(cuda::CausalConv1dVarlen({.batch = B,
                                              .n_tokens = B,
                                              .d_inner = di,
                                              .d_conv = kW,
                                              .n_slots = n_slots,
                                              .dtype = dt(),
                                              .cu_seqlens = dcu.get(),
                                              .slots = dslots.get(),
                                              .has_initial_state = dhas.get(),
                                              .x = dxz.get(),
                                              .x_stride = 2 * di,
                                              .weight = dcw.f32(),
                                              .bias = dcb.f32(),
                                              .out = dxc.get(),
                                              .conv_state = dconv.get(),
                                              .conv_state_dtype = st()},
                                             nullptr));
      BMS_ASSERT_OK((*gemm)->Linear({.m = B,
                                     .n = xdbl,
                                     .k = di,
                                     .in_dtype = dt(),
                                     .out_dtype = dt(),
                                     .x = dxc.get(),
                                     .w = dxp.get(),
                                     .y = ddbc.get()},
                                    nullptr));
      p.dbc = ddbc.get();
      BMS_ASSERT_OK(cuda::DeviceSynchronize());  // dcu goes out of scope
    }
    BMS_ASSERT_OK(cuda::MambaDecodeScan(p, nullptr));
    res->y = dy.Get();
    std::vector<uint8_t> raw(static_cast<size_t>(B) * di * cuda::DTypeBytes(dt()));
    BMS_ASSERT_OK(cuda::CopyToHost(raw.data(), dy.get(), raw.size()));
    res->y_raw = raw;
    res->conv = dconv.Get(conv0.size());
    res->ssm = dssm.Get(ssm0.size());
  };
  Result got, again;
  run_fused(&got);
  run_fused(&again);
  EXPECT_EQ(got.y_raw, again.y_raw) << "two runs differ (y)";
  EXPECT_EQ(got.conv, again.conv) << "two runs differ (conv state)";
  EXPECT_EQ(got.ssm, again.ssm) << "two runs differ (ssm state)";

  // CPU reference of the same chain, activations rounded to the compute dtype where the GPU
  // stores them (xc, dbc, dt); padding rows use scratch slots with no state.
  std::vector<uint8_t> conv_ref = conv0, ssm_ref = ssm0;
  conv_ref.resize(ref_total * conv_per * Elem(), 0);
  ssm_ref.resize(ref_total * ssm_per * Elem(), 0);
  std::vector<int32_t> cu(B + 1);
  std::iota(cu.begin(), cu.end(), 0);
  std::vector<float> xc(static_cast<size_t>(B) * di), dbc(static_cast<size_t>(B) * xdbl),
      dtv(static_cast<size_t>(B) * di), want(static_cast<size_t>(B) * di);
  BMS_ASSERT_OK(ref::CausalConv1dVarlen({.batch = B,
                                         .d_inner = di,
                                         .d_conv = kW,
                                         .n_slots = ref_total,
                                         .cu_seqlens = cu.data(),
                                         .slots = ref_slots.data(),
                                         .has_initial_state = ref_has.data(),
                                         .x = xz.data(),
                                         .x_stride = 2 * di,
                                         .weight = conv_w.data(),
                                         .bias = conv_b.data(),
                                         .silu = true,
                                         .out = xc.data(),
                                         .conv_state = conv_ref.data(),
                                         .conv_state_dtype = st()}));
  xc = Act(std::move(xc));
  BMS_ASSERT_OK(ref::Linear(
      {.m = B, .n = xdbl, .k = di, .x = xc.data(), .w = x_proj.data(), .y = dbc.data()}));
  dbc = Act(std::move(dbc));
  BMS_ASSERT_OK(ref::Linear({.m = B,
                             .n = di,
                             .k = r,
                             .x = dbc.data(),
                             .x_stride = xdbl,
                             .w = dt_proj.data(),
                             .y = dtv.data()}));
  dtv = Act(std::move(dtv));
  BMS_ASSERT_OK(ref::SelectiveScanVarlen({.batch = B,
                                          .d_inner = di,
                                          .d_state = kN,
                                          .n_slots = ref_total,
                                          .cu_seqlens = cu.data(),
                                          .slots = ref_slots.data(),
                                          .has_initial_state = ref_has.data(),
                                          .u = xc.data(),
                                          .delta = dtv.data(),
                                          .delta_bias = dt_bias.data(),
                                          .delta_softplus = true,
                                          .A = A.data(),
                                          .B = dbc.data() + r,
                                          .B_stride = xdbl,
                                          .C = dbc.data() + r + kN,
                                          .C_stride = xdbl,
                                          .D = D.data(),
                                          .z = xz.data() + di,
                                          .z_stride = 2 * di,
                                          .out = want.data(),
                                          .ssm_state = ssm_ref.data(),
                                          .ssm_state_dtype = st()}));
  // bf16 activations: rounding of xc / dbc / dt may flip a bf16 step, so the bound is 2x the
  // usual bf16 one; bf16 state adds one more rounding per step.
  const double tol = dt() == DType::kF32 && st() == ref::StateStorage::kF32 ? 2e-5 : 2e-2;
  EXPECT_LT(NormalizedError(got.y, want), tol) << "y vs reference";
  for (int s = 0; s < n_slots; ++s) {
    const bool in_batch = std::find(slots.begin(), slots.end(), s) != slots.end();
    for (auto [got_state, ref_state, init, per, what] :
         {std::tuple{&got.conv, &conv_ref, &conv0, conv_per, "conv"},
          std::tuple{&got.ssm, &ssm_ref, &ssm0, ssm_per, "ssm"}}) {
      const size_t bytes = per * Elem();
      if (!in_batch) {
        EXPECT_TRUE(std::equal(got_state->begin() + s * bytes, got_state->begin() + (s + 1) * bytes,
                               init->begin() + s * bytes))
            << what << ": slot " << s << " outside the batch changed";
      } else {
        EXPECT_LT(NormalizedError(StateValues(*got_state, s * per, per),
                                  StateValues(*ref_state, s * per, per)),
                  tol)
            << what << " state of slot " << s;
      }
    }
  }
}

TEST_P(MambaDecodeTest, PartialsMatchReference) {
  for (int b : {1, 3, 64, 256, 1024}) Run(b, 2944, 92, /*partials=*/true);
  Run(5, 192, 12, true);
}
TEST_P(MambaDecodeTest, GemmXProjMatchesReference) {
  for (int b : {1, 3, 64, 256, 1024}) Run(b, 2944, 92, /*partials=*/false);
  Run(5, 192, 12, false);
}
TEST_P(MambaDecodeTest, RefusesUnsupportedShapes) {
  cuda::MambaDecodeParams p{.batch = 1, .d_inner = 2944, .d_conv = 4, .d_state = 16, .dt_rank = 92};
  EXPECT_FALSE(cuda::MambaDecodeSupported({.batch = 1, .d_inner = 300, .d_conv = 4}));
  p.d_conv = 3;
  EXPECT_FALSE(cuda::MambaDecodeSupported(p));
  EXPECT_FALSE(cuda::MambaDecodeScan(p, nullptr).ok());
}

INSTANTIATE_TEST_SUITE_P(Kernels, MambaDecodeTest,
                         ::testing::Combine(::testing::Values(DType::kF32, DType::kBF16),
                                            ::testing::Values(ref::StateStorage::kF32,
                                                              ref::StateStorage::kBF16)),
                         [](const auto& info) {
                           return std::string(DTypeLabel(std::get<0>(info.param))) + "_state_" +
                                  (std::get<1>(info.param) == ref::StateStorage::kF32 ? "f32"
                                                                                      : "bf16");
                         });

INSTANTIATE_TEST_SUITE_P(DTypes, FusedTest, ::testing::Values(DType::kF32, DType::kBF16),
                         [](const auto& info) { return std::string(DTypeLabel(info.param)); });

}  // namespace
}  // namespace bms::gpu_test
