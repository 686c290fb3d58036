// GPU op tests (label gpu): each CUDA op of kernels/cuda/ops.h against the CPU reference
// (kernels/ref/ops.h) on fresh random inputs, with NaN-poisoned outputs. Normalized error
// < 1e-5 in fp32, < 1e-2 in bf16; state slots outside the batch stay bit-identical. Without a
// GPU every test skips with the reason.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <tuple>

#include "kernels/cuda/gemm.h"
#include "tests/gpu/gpu_test_util.h"

namespace bms::gpu_test {
namespace {

using cuda::DType;
using ref::StateStorage;

class OpsTest : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override { BMS_SKIP_WITHOUT_GPU(); }
  DType dt() const { return GetParam(); }
  // Inputs as the GPU sees them (bf16-rounded in bf16 mode).
  std::vector<float> In(std::vector<float> v) const {
    return dt() == DType::kBF16 ? RoundBf16(std::move(v)) : v;
  }
};

TEST_P(OpsTest, EmbeddingGathersRows) {
  std::mt19937_64 rng(TestSeed());
  const int vocab = 300, d = 72, n = 41;
  const auto table = In(RandomVector(rng, vocab * d, -1, 1));
  std::vector<int32_t> tokens(n);
  for (auto& t : tokens) t = static_cast<int32_t>(rng() % vocab);
  DevArray dtable(table, dt()), dout(n * d, dt());
  DevInts<int32_t> dtok(tokens);
  BMS_ASSERT_OK(cuda::Embedding({.n_tokens = n,
                                 .d_model = d,
                                 .dtype = dt(),
                                 .tokens = dtok.get(),
                                 .table = dtable.get(),
                                 .out = dout.get()},
                                nullptr));
  std::vector<float> want(n * d);
  BMS_ASSERT_OK(ref::Embedding({.n_tokens = n,
                                .vocab_size = vocab,
                                .d_model = d,
                                .tokens = tokens.data(),
                                .table = table.data(),
                                .out = want.data()}));
  EXPECT_EQ(dout.Get(), want);
}

TEST_P(OpsTest, AddRmsNormMatchesReference) {
  std::mt19937_64 rng(TestSeed());
  const int n = 37, d = 600;
  for (bool first : {true, false}) {
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
                                    .first_layer = first,
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
                                   .first_layer = first,
                                   .weight = w.data(),
                                   .eps = 1e-5f,
                                   .out = want.data()}));
    EXPECT_LT(NormalizedError(dres.Get(), res), 1e-6) << "first_layer=" << first;
    EXPECT_LT(NormalizedError(dout32.Get(), want), 1e-5) << "fp32 copy, first_layer=" << first;
    EXPECT_LT(NormalizedError(dout.Get(), want), Tolerance(dt())) << "first_layer=" << first;
  }
}

TEST_P(OpsTest, AddLayerNormOnSelectedRowsMatchesReference) {
  std::mt19937_64 rng(TestSeed());
  const int n = 50, d = 1000;
  const std::vector<int32_t> rows = {49, 0, 17, 18, 3};
  const int r = static_cast<int>(rows.size());
  const auto h = In(RandomVector(rng, n * d, -2, 2));
  const auto res0 = RandomVector(rng, n * d, -2, 2);
  const auto w = RandomVector(rng, d, 0.5, 1.5), b = RandomVector(rng, d, -0.5, 0.5);
  DevArray dh(h, dt()), dres(res0, DType::kF32), dw(w, DType::kF32), db(b, DType::kF32),
      dout(r * d, dt());
  DevInts<int32_t> drows(rows);
  BMS_ASSERT_OK(cuda::AddLayerNorm({.n_rows = r,
                                    .d_model = d,
                                    .dtype = dt(),
                                    .h = dh.get(),
                                    .residual = dres.f32(),
                                    .write_residual = false,
                                    .rows = drows.get(),
                                    .weight = dw.f32(),
                                    .bias = db.f32(),
                                    .eps = 1e-5f,
                                    .out = dout.get()},
                                   nullptr));
  std::vector<float> sh, sr, want(r * d);
  for (int i : rows) {
    sh.insert(sh.end(), h.begin() + i * d, h.begin() + (i + 1) * d);
    sr.insert(sr.end(), res0.begin() + i * d, res0.begin() + (i + 1) * d);
  }
  BMS_ASSERT_OK(ref::AddLayerNorm({.n_tokens = r,
                                   .d_model = d,
                                   .h = sh.data(),
                                   .residual = sr.data(),
                                   .weight = w.data(),
                                   .bias = b.data(),
                                   .eps = 1e-5f,
                                   .out = want.data()}));
  EXPECT_LT(NormalizedError(dout.Get(), want), Tolerance(dt()));
  EXPECT_EQ(dres.Get(), res0);  // residual untouched
}

TEST_P(OpsTest, LinearWithStridesMatchesReference) {
  std::mt19937_64 rng(TestSeed());
  auto gemm = cuda::GemmRunner::Create();
  ASSERT_TRUE(gemm.ok()) << gemm.status();
  for (auto [m, n, k, xs, ys, f32_out] :
       {std::tuple{37, 100, 72, 80, 104, false}, std::tuple{1, 512, 64, 64, 512, true},
        std::tuple{300, 36, 96, 96, 36, false}, std::tuple{5, 96, 4, 36, 96, false}}) {
    const auto x = In(RandomVector(rng, m * xs, -1, 1));
    const auto w = In(RandomVector(rng, n * k, -1, 1));
    const DType out_dt = f32_out ? DType::kF32 : dt();
    DevArray dx(x, dt()), dw(w, dt()), dy(m * ys, out_dt);
    BMS_ASSERT_OK((*gemm)->Linear({.m = m,
                                   .n = n,
                                   .k = k,
                                   .in_dtype = dt(),
                                   .out_dtype = out_dt,
                                   .x = dx.get(),
                                   .x_stride = xs,
                                   .w = dw.get(),
                                   .y = dy.get(),
                                   .y_stride = ys},
                                  nullptr));
    std::vector<float> want(m * ys, 0.f);
    BMS_ASSERT_OK(ref::Linear({.m = m,
                               .n = n,
                               .k = k,
                               .x = x.data(),
                               .x_stride = xs,
                               .w = w.data(),
                               .y = want.data(),
                               .y_stride = ys}));
    std::vector<float> got = dy.Get(), g, wv;
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j) {
        g.push_back(got[i * ys + j]);
        wv.push_back(want[i * ys + j]);
      }
    EXPECT_LT(NormalizedError(g, wv),
              Tolerance(out_dt == DType::kF32 && dt() == DType::kF32 ? DType::kF32 : DType::kBF16))
        << "m=" << m << " n=" << n << " k=" << k;
  }
}

// The weight-streaming small-M Linear (StreamLinear, bf16 in) at m = 1..8: the 2.8b in_proj,
// out_proj and LM head shapes and odd ones (odd n, k > 2048, padded strides, fp32 out), against
// the CPU reference; columns past n in a padded output row stay poisoned; two runs bit-identical;
// GemmRunner::Linear routes to it when enabled.
TEST_P(OpsTest, StreamLinearMatchesReference) {
  if (dt() != DType::kBF16) {
    EXPECT_FALSE(cuda::StreamLinearSupported({.m = 1, .n = 8, .k = 8, .in_dtype = dt()}));
    GTEST_SKIP() << "bf16 only";
  }
  EXPECT_FALSE(cuda::StreamLinearSupported({.m = 9, .n = 8, .k = 8, .in_dtype = dt()}));
  EXPECT_FALSE(cuda::StreamLinearSupported({.m = 1, .n = 8, .k = 92, .in_dtype = dt()}));
  // The auto rule's choices at the 2.8b decode shapes (m = 1).
  auto path = [](int m, int n, int k) {
    return cuda::StreamLinearAutoPath({.m = m, .n = n, .k = k, .in_dtype = DType::kBF16});
  };
  EXPECT_EQ(path(1, 5888, 1472), cuda::SmallMPath::kCublas);       // in_proj
  EXPECT_EQ(path(1, 1472, 2944), cuda::SmallMPath::kStreamRing);   // out_proj
  EXPECT_EQ(path(1, 50304, 1472), cuda::SmallMPath::kStreamRegs);  // LM head
  EXPECT_EQ(path(2, 1472, 2944), cuda::SmallMPath::kCublas);
  std::mt19937_64 rng(TestSeed());
  auto gemm = cuda::GemmRunner::Create();
  ASSERT_TRUE(gemm.ok()) << gemm.status();
  struct Shape {
    int n, k, xs, ys;
    bool f32_out;
    std::vector<int> ms;
  };
  const std::vector<Shape> shapes = {
      {5888, 1472, 1472, 5888, false, {1, 2, 3, 4, 5, 6, 7, 8}},  // in_proj
      {1472, 2944, 2944, 1472, false, {1, 2, 3, 4, 5, 6, 7, 8}},  // out_proj
      {50304, 1472, 1472, 50304, true, {1, 8}},                   // LM head (fp32 logits)
      {37, 8, 16, 40, false, {1, 5, 8}},
      {1, 2056, 2064, 3, true, {1, 7}},
      {301, 2056, 2056, 301, false, {2, 8}},
      {124, 2944, 2952, 124, true, {1, 3}},
      {5, 8200, 8200, 5, false, {1, 4}},  // k too long for the cp.async ring: register kernel
  };
  for (const Shape& sh : shapes) {
    const auto w = In(RandomVector(rng, static_cast<size_t>(sh.n) * sh.k, -1, 1));
    DevArray dw(w, dt());
    for (const int m : sh.ms) {
      SCOPED_TRACE(testing::Message() << "m=" << m << " n=" << sh.n << " k=" << sh.k);
      const auto x = In(RandomVector(rng, m * sh.xs, -1, 1));
      const DType out_dt = sh.f32_out ? DType::kF32 : dt();
      DevArray dx(x, dt());
      // Runs: the ring kernel, GemmRunner::Linear (forced onto StreamLinear), the register kernel.
      std::vector<float> runs[3];
      for (int run = 0; run < 3; ++run) {
        DevArray dy(static_cast<size_t>(m) * sh.ys, out_dt);
        const cuda::LinearParams lp{.m = m,
                                    .n = sh.n,
                                    .k = sh.k,
                                    .in_dtype = dt(),
                                    .out_dtype = out_dt,
                                    .x = dx.get(),
                                    .x_stride = sh.xs,
                                    .w = dw.get(),
                                    .y = dy.get(),
                                    .y_stride = sh.ys};
        ASSERT_TRUE(cuda::StreamLinearSupported(lp));
        if (run != 1) {
          cuda::SetStreamLinearPipelined(run == 0);
          const absl::Status s = cuda::StreamLinear(lp, nullptr);
          cuda::SetStreamLinearPipelined(true);
          BMS_ASSERT_OK(s);
        } else {
          const int saved = cuda::StreamLinearMaxRows();
          cuda::SetStreamLinearMaxRows(cuda::kSmallMMaxRows);
          const absl::Status s = (*gemm)->Linear(lp, nullptr);
          cuda::SetStreamLinearMaxRows(saved);
          BMS_ASSERT_OK(s);
        }
        runs[run] = dy.Get();
      }
      EXPECT_EQ(std::memcmp(runs[0].data(), runs[1].data(), runs[0].size() * sizeof(float)), 0);
      std::vector<float> want(static_cast<size_t>(m) * sh.ys, 0.f);
      BMS_ASSERT_OK(ref::Linear({.m = m,
                                 .n = sh.n,
                                 .k = sh.k,
                                 .x = x.data(),
                                 .x_stride = sh.xs,
                                 .w = w.data(),
                                 .y = want.data(),
                                 .y_stride = sh.ys}));
      for (int run : {0, 2}) {
        std::vector<float> g, wv;
        for (int i = 0; i < m; ++i) {
          for (int j = 0; j < sh.n; ++j) {
            g.push_back(runs[run][static_cast<size_t>(i) * sh.ys + j]);
            wv.push_back(want[static_cast<size_t>(i) * sh.ys + j]);
          }
          for (int j = sh.n; j < sh.ys; ++j)
            EXPECT_TRUE(std::isnan(runs[run][static_cast<size_t>(i) * sh.ys + j])) << "col " << j;
        }
        EXPECT_LT(NormalizedError(g, wv), Tolerance(DType::kBF16)) << "run " << run;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(DTypes, OpsTest, ::testing::Values(DType::kF32, DType::kBF16),
                         [](const auto& info) { return std::string(DTypeLabel(info.param)); });

// ---- Sequence ops: conv1d and selective scan, over dtype x state storage. ----

struct SeqCase {
  int len;
  int slot;
  uint8_t has_state;
};

class SeqOpsTest : public ::testing::TestWithParam<std::tuple<DType, StateStorage>> {
 protected:
  void SetUp() override { BMS_SKIP_WITHOUT_GPU(); }
  DType dt() const { return std::get<0>(GetParam()); }
  StateStorage st() const { return std::get<1>(GetParam()); }
  std::vector<float> In(std::vector<float> v) const {
    return dt() == DType::kBF16 ? RoundBf16(std::move(v)) : v;
  }
  // Random state storage (raw bytes) for n elements.
  std::vector<uint8_t> RandomState(std::mt19937_64& rng, size_t n) const {
    std::vector<uint8_t> raw(n * (st() == StateStorage::kF32 ? 4 : 2));
    const auto v = RandomVector(rng, n, -1, 1);
    for (size_t i = 0; i < n; ++i) ref::StoreState(raw.data(), st(), i, v[i]);
    return raw;
  }
  // bf16 storage: the two sides' fp32 values may round to neighbouring bf16 values.
  double StateTolerance() const { return st() == StateStorage::kBF16 ? 1e-2 : Tolerance(dt()); }
  std::vector<float> StateValues(const std::vector<uint8_t>& raw, size_t begin, size_t n) const {
    std::vector<float> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = ref::LoadState(raw.data(), st(), begin + i);
    return v;
  }
};

// The mixed batch of the brief: continuations shorter than d_conv, T = 1, a first chunk, a
// 4096-token prompt, a zero-length sequence, and the padding slot.
const std::vector<SeqCase> kMixedBatch = {{1, 3, 1},  {2, 7, 1}, {3, 0, 0}, {4096, 10, 0},
                                          {37, 5, 1}, {0, 2, 1}, {1, 11, 0}};
// Decode: single tokens on scattered, non-contiguous slots.
const std::vector<SeqCase> kDecodeBatch = {{1, 9, 1}, {1, 2, 1}, {1, 6, 1}, {1, 0, 1}, {1, 4, 1}};
constexpr int kSlots = 12;

TEST_P(SeqOpsTest, CausalConv1dVarlenMatchesReference) {
  std::mt19937_64 rng(TestSeed());
  const int di = 300, w = 4, w1 = w - 1;
  for (const auto* batch : {&kMixedBatch, &kDecodeBatch}) {
    const bool decode = batch == &kDecodeBatch;
    std::vector<int32_t> cu{0}, slots;
    std::vector<uint8_t> has;
    for (const SeqCase& s : *batch) {
      cu.push_back(cu.back() + s.len);
      slots.push_back(s.slot);
      has.push_back(s.has_state);
    }
    const int T = cu.back(), B = static_cast<int>(slots.size());
    const auto x = In(RandomVector(rng, T * 2 * di, -2, 2));  // x half of a [T, 2*d_inner]
    const auto weight = RandomVector(rng, di * w, -1, 1), bias = RandomVector(rng, di, -1, 1);
    const auto state0 = RandomState(rng, kSlots * di * w1);
    DevArray dx(x, dt()), dw(weight, DType::kF32), db(bias, DType::kF32), dout(T * di, dt());
    DevInts<int32_t> dcu(cu), dslots(slots);
    DevInts<uint8_t> dhas(has);
    DevInts<uint8_t> dstate(state0);
    BMS_ASSERT_OK(cuda::CausalConv1dVarlen({.batch = B,
                                            .n_tokens = T,
                                            .d_inner = di,
                                            .d_conv = w,
                                            .n_slots = kSlots,
                                            .dtype = dt(),
                                            .cu_seqlens = dcu.get(),
                                            .slots = dslots.get(),
                                            .has_initial_state = dhas.get(),
                                            .x = dx.get(),
                                            .x_stride = 2 * di,
                                            .weight = dw.f32(),
                                            .bias = db.f32(),
                                            .silu = true,
                                            .out = dout.get(),
                                            .conv_state = dstate.get(),
                                            .conv_state_dtype = st()},
                                           nullptr));
    std::vector<uint8_t> state = state0;
    std::vector<float> want(T * di, 0.f);
    if (decode) {
      BMS_ASSERT_OK(ref::CausalConv1dUpdate({.batch = B,
                                             .d_inner = di,
                                             .d_conv = w,
                                             .n_slots = kSlots,
                                             .slots = slots.data(),
                                             .x = x.data(),
                                             .x_stride = 2 * di,
                                             .weight = weight.data(),
                                             .bias = bias.data(),
                                             .silu = true,
                                             .out = want.data(),
                                             .conv_state = state.data(),
                                             .conv_state_dtype = st()}));
    } else {
      BMS_ASSERT_OK(ref::CausalConv1dVarlen({.batch = B,
                                             .d_inner = di,
                                             .d_conv = w,
                                             .n_slots = kSlots,
                                             .cu_seqlens = cu.data(),
                                             .slots = slots.data(),
                                             .has_initial_state = has.data(),
                                             .x = x.data(),
                                             .x_stride = 2 * di,
                                             .weight = weight.data(),
                                             .bias = bias.data(),
                                             .silu = true,
                                             .out = want.data(),
                                             .conv_state = state.data(),
                                             .conv_state_dtype = st()}));
    }
    EXPECT_LT(NormalizedError(dout.Get(), want), Tolerance(dt())) << "decode=" << decode;
    const auto got_state = dstate.Get(state0.size());
    const size_t per = di * w1, elem = st() == StateStorage::kF32 ? 4 : 2;
    for (int s = 0; s < kSlots; ++s) {
      const bool in_batch = std::find(slots.begin(), slots.end(), s) != slots.end();
      if (!in_batch) {
        EXPECT_TRUE(std::equal(got_state.begin() + s * per * elem,
                               got_state.begin() + (s + 1) * per * elem,
                               state0.begin() + s * per * elem))
            << "slot " << s << " outside the batch changed";
        continue;
      }
      EXPECT_LT(
          NormalizedError(StateValues(got_state, s * per, per), StateValues(state, s * per, per)),
          StateTolerance())
          << "conv state of slot " << s;
    }
  }
}

TEST_P(SeqOpsTest, SelectiveScanVarlenMatchesReference) {
  std::mt19937_64 rng(TestSeed());
  const int di = 300, n = 16, r = 8, xdbl = r + 2 * n;
  for (const auto* batch : {&kMixedBatch, &kDecodeBatch}) {
    const bool decode = batch == &kDecodeBatch;
    std::vector<int32_t> cu{0}, slots;
    std::vector<uint8_t> has;
    for (const SeqCase& s : *batch) {
      cu.push_back(cu.back() + s.len);
      slots.push_back(s.slot);
      has.push_back(s.has_state);
    }
    const int T = cu.back(), B = static_cast<int>(slots.size());
    const auto u = In(RandomVector(rng, T * di, -2, 2));
    const auto delta = In(RandomVector(rng, T * di, -4, 1));
    const auto dbc = In(RandomVector(rng, T * xdbl, -1, 1));  // dt_low | B | C rows
    const auto z = In(RandomVector(rng, T * 2 * di, -3, 3));  // z is the second half
    const auto dbias = RandomVector(rng, di, -1, 1), D = RandomVector(rng, di, -1, 1);
    auto A = RandomVector(rng, di * n, -1, 1.5);
    for (float& a : A) a = -std::exp(a);
    const auto state0 = RandomState(rng, kSlots * di * n);
    DevArray du(u, dt()), ddelta(delta, dt()), ddbc(dbc, dt()), dz(z, dt()),
        ddb(dbias, DType::kF32), dD(D, DType::kF32), dA(A, DType::kF32), dout(T * di, dt());
    DevInts<int32_t> dcu(cu), dslots(slots);
    DevInts<uint8_t> dhas(has), dstate(state0);
    const int e = cuda::DTypeBytes(dt());
    char* dbc_base = static_cast<char*>(ddbc.get());
    BMS_ASSERT_OK(cuda::SelectiveScanVarlen({.batch = B,
                                             .d_inner = di,
                                             .d_state = n,
                                             .n_slots = kSlots,
                                             .dtype = dt(),
                                             .cu_seqlens = dcu.get(),
                                             .slots = dslots.get(),
                                             .has_initial_state = dhas.get(),
                                             .u = du.get(),
                                             .delta = ddelta.get(),
                                             .delta_bias = ddb.f32(),
                                             .delta_softplus = true,
                                             .A = dA.f32(),
                                             .B = dbc_base + r * e,
                                             .B_stride = xdbl,
                                             .C = dbc_base + (r + n) * e,
                                             .C_stride = xdbl,
                                             .D = dD.f32(),
                                             .z = static_cast<char*>(dz.get()) + di * e,
                                             .z_stride = 2 * di,
                                             .out = dout.get(),
                                             .ssm_state = dstate.get(),
                                             .ssm_state_dtype = st()},
                                            nullptr));
    std::vector<uint8_t> state = state0;
    std::vector<float> want(T * di, 0.f);
    if (decode) {
      BMS_ASSERT_OK(ref::SelectiveStateUpdate({.batch = B,
                                               .d_inner = di,
                                               .d_state = n,
                                               .n_slots = kSlots,
                                               .slots = slots.data(),
                                               .u = u.data(),
                                               .delta = delta.data(),
                                               .delta_bias = dbias.data(),
                                               .delta_softplus = true,
                                               .A = A.data(),
                                               .B = dbc.data() + r,
                                               .B_stride = xdbl,
                                               .C = dbc.data() + r + n,
                                               .C_stride = xdbl,
                                               .D = D.data(),
                                               .z = z.data() + di,
                                               .z_stride = 2 * di,
                                               .out = want.data(),
                                               .ssm_state = state.data(),
                                               .ssm_state_dtype = st()}));
    } else {
      BMS_ASSERT_OK(ref::SelectiveScanVarlen({.batch = B,
                                              .d_inner = di,
                                              .d_state = n,
                                              .n_slots = kSlots,
                                              .cu_seqlens = cu.data(),
                                              .slots = slots.data(),
                                              .has_initial_state = has.data(),
                                              .u = u.data(),
                                              .delta = delta.data(),
                                              .delta_bias = dbias.data(),
                                              .delta_softplus = true,
                                              .A = A.data(),
                                              .B = dbc.data() + r,
                                              .B_stride = xdbl,
                                              .C = dbc.data() + r + n,
                                              .C_stride = xdbl,
                                              .D = D.data(),
                                              .z = z.data() + di,
                                              .z_stride = 2 * di,
                                              .out = want.data(),
                                              .ssm_state = state.data(),
                                              .ssm_state_dtype = st()}));
    }
    EXPECT_LT(NormalizedError(dout.Get(), want), Tolerance(dt())) << "decode=" << decode;
    const auto got_state = dstate.Get(state0.size());
    const size_t per = di * n, elem = st() == StateStorage::kF32 ? 4 : 2;
    for (int s = 0; s < kSlots; ++s) {
      const bool in_batch = std::find(slots.begin(), slots.end(), s) != slots.end();
      if (!in_batch) {
        EXPECT_TRUE(std::equal(got_state.begin() + s * per * elem,
                               got_state.begin() + (s + 1) * per * elem,
                               state0.begin() + s * per * elem))
            << "slot " << s << " outside the batch changed";
        continue;
      }
      EXPECT_LT(
          NormalizedError(StateValues(got_state, s * per, per), StateValues(state, s * per, per)),
          StateTolerance())
          << "ssm state of slot " << s << " decode=" << decode;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(DTypes, SeqOpsTest,
                         ::testing::Combine(::testing::Values(DType::kF32, DType::kBF16),
                                            ::testing::Values(StateStorage::kF32,
                                                              StateStorage::kBF16)),
                         [](const auto& info) {
                           return std::string(DTypeLabel(std::get<0>(info.param))) + "_state_" +
                                  (std::get<1>(info.param) == StateStorage::kF32 ? "f32" : "bf16");
                         });

}  // namespace
}  // namespace bms::gpu_test
