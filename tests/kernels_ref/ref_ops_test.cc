// Reference op tests: each op against a direct, naive evaluation of its formula (DESIGN.md §1),
// state semantics (short chunks, continuation, bf16 storage, slot indexing), MoE routing ties and
// grouping, argument validation and the thread pool.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <random>
#include <vector>

#include "kernels/ref/ops.h"
#include "kernels/ref/thread_pool.h"

namespace bms::ref {
namespace {

std::vector<float> RandomVec(size_t n, uint32_t seed, float scale = 1.f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

float MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  float m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

// ---- conv1d --------------------------------------------------------------------------------

// Naive conv of one full sequence `x` [T, D] (zeros before the start): out [T, D].
std::vector<float> NaiveConv(const std::vector<float>& x, int T, int D, int W,
                             const std::vector<float>& w, const std::vector<float>& bias) {
  std::vector<float> out(static_cast<size_t>(T) * D);
  for (int t = 0; t < T; ++t) {
    for (int c = 0; c < D; ++c) {
      float acc = bias[c];
      for (int k = 0; k < W; ++k) {
        int src = t - (W - 1) + k;
        if (src >= 0) acc += x[src * D + c] * w[c * W + k];
      }
      out[t * D + c] = Silu(acc);
    }
  }
  return out;
}

TEST(CausalConv1dTest, ChunkedVarlenMatchesNaiveAndKeepsState) {
  const int D = 6, W = 4, T = 9, kSlots = 5;
  const std::vector<float> x = RandomVec(T * D, 1), w = RandomVec(D * W, 2), b = RandomVec(D, 3);
  const std::vector<float> want = NaiveConv(x, T, D, W, w, b);
  for (StateStorage st : {StateStorage::kF32, StateStorage::kBF16}) {
    // Slot 3 runs the sequence in chunks 1, 2 (shorter than W-1), 1 (decode), 5.
    std::vector<float> state_f(kSlots * D * (W - 1), 7.f);        // garbage: first chunk ignores it
    std::vector<uint16_t> state_b(kSlots * D * (W - 1), 0x40E0);  // 7.0 in bf16
    void* state = st == StateStorage::kF32 ? (void*)state_f.data() : (void*)state_b.data();
    std::vector<float> out(T * D, -1.f);
    const int slot = 3;
    const int chunks[] = {1, 2, 1, 5};
    int t0 = 0;
    for (int ci = 0; ci < 4; ++ci) {
      const int n = chunks[ci];
      if (ci == 2) {
        ASSERT_TRUE(CausalConv1dUpdate({.batch = 1,
                                        .d_inner = D,
                                        .d_conv = W,
                                        .n_slots = kSlots,
                                        .slots = &slot,
                                        .x = x.data() + t0 * D,
                                        .weight = w.data(),
                                        .bias = b.data(),
                                        .out = out.data() + t0 * D,
                                        .conv_state = state,
                                        .conv_state_dtype = st})
                        .ok());
      } else {
        const int32_t cu[2] = {0, n};
        const uint8_t has = ci > 0;
        ASSERT_TRUE(CausalConv1dVarlen({.batch = 1,
                                        .d_inner = D,
                                        .d_conv = W,
                                        .n_slots = kSlots,
                                        .cu_seqlens = cu,
                                        .slots = &slot,
                                        .has_initial_state = &has,
                                        .x = x.data() + t0 * D,
                                        .weight = w.data(),
                                        .bias = b.data(),
                                        .out = out.data() + t0 * D,
                                        .conv_state = state,
                                        .conv_state_dtype = st})
                        .ok());
      }
      t0 += n;
    }
    // bf16 storage rounds the stored inputs (relative 2^-8).
    const float tol = st == StateStorage::kF32 ? 1e-6f : 5e-2f;
    EXPECT_LT(MaxAbsDiff(out, want), tol);
    // Final state = last W-1 inputs, oldest first.
    for (int c = 0; c < D; ++c) {
      for (int k = 0; k < W - 1; ++k) {
        float expect = x[(T - (W - 1) + k) * D + c];
        EXPECT_NEAR(LoadState(state, st, slot * D * (W - 1) + c * (W - 1) + k), expect,
                    st == StateStorage::kF32 ? 0.f : std::abs(expect) / 128);
      }
    }
    // Other slots untouched.
    EXPECT_EQ(LoadState(state, st, 0), 7.f);
    EXPECT_EQ(LoadState(state, st, (kSlots - 1) * D * (W - 1)), 7.f);
  }
}

TEST(CausalConv1dTest, PackedBatchEqualsSeparateRunsWithStrides) {
  const int D = 5, W = 3, kSlots = 4;
  // Input rows are the first half of [T, 2D] rows (like in_proj's x half).
  const int lens[] = {4, 0, 1, 3};
  const int T = 8;
  const std::vector<float> xz = RandomVec(T * 2 * D, 4), w = RandomVec(D * W, 5),
                           b = RandomVec(D, 6);
  const int32_t cu[5] = {0, 4, 4, 5, 8};
  const int32_t slots[4] = {2, 0, 3, 1};
  const uint8_t has[4] = {0, 0, 1, 1};
  std::vector<float> state = RandomVec(kSlots * D * (W - 1), 7);
  std::vector<float> state_sep = state;
  std::vector<float> out(T * D);
  ASSERT_TRUE(CausalConv1dVarlen({.batch = 4,
                                  .d_inner = D,
                                  .d_conv = W,
                                  .n_slots = kSlots,
                                  .cu_seqlens = cu,
                                  .slots = slots,
                                  .has_initial_state = has,
                                  .x = xz.data(),
                                  .x_stride = 2 * D,
                                  .weight = w.data(),
                                  .bias = b.data(),
                                  .out = out.data(),
                                  .conv_state = state.data()})
                  .ok());
  int t0 = 0;
  for (int s = 0; s < 4; ++s) {
    std::vector<float> o(std::max(lens[s], 1) * D);
    const int32_t cu1[2] = {0, lens[s]};
    ASSERT_TRUE(CausalConv1dVarlen({.batch = 1,
                                    .d_inner = D,
                                    .d_conv = W,
                                    .n_slots = kSlots,
                                    .cu_seqlens = cu1,
                                    .slots = &slots[s],
                                    .has_initial_state = &has[s],
                                    .x = xz.data() + t0 * 2 * D,
                                    .x_stride = 2 * D,
                                    .weight = w.data(),
                                    .bias = b.data(),
                                    .out = o.data(),
                                    .conv_state = state_sep.data()})
                    .ok());
    for (int i = 0; i < lens[s] * D; ++i) EXPECT_EQ(out[t0 * D + i], o[i]);
    t0 += lens[s];
  }
  EXPECT_EQ(state, state_sep);  // includes slot 0 (zero-length: untouched)
}

// ---- selective scan ------------------------------------------------------------------------

TEST(SelectiveScanTest, MatchesNaiveRecurrenceAcrossChunks) {
  const int D = 4, N = 3, T = 7, kSlots = 3, slot = 1;
  const std::vector<float> u = RandomVec(T * D, 10), delta = RandomVec(T * D, 11),
                           dbias = RandomVec(D, 12), Bm = RandomVec(T * N, 13),
                           Cm = RandomVec(T * N, 14), Dv = RandomVec(D, 15),
                           z = RandomVec(T * D, 16);
  std::vector<float> A = RandomVec(D * N, 17);
  for (float& a : A) a = -std::exp(a);
  // Naive, in double.
  std::vector<double> h(D * N, 0.0);
  std::vector<float> want(T * D);
  for (int t = 0; t < T; ++t) {
    for (int c = 0; c < D; ++c) {
      double dt = std::log1p(std::exp(static_cast<double>(delta[t * D + c]) + dbias[c]));
      double y = 0;
      for (int n = 0; n < N; ++n) {
        double& hn = h[c * N + n];
        hn = hn * std::exp(dt * A[c * N + n]) + dt * u[t * D + c] * Bm[t * N + n];
        y += hn * Cm[t * N + n];
      }
      y += Dv[c] * u[t * D + c];
      double zz = z[t * D + c];
      want[t * D + c] = static_cast<float>(y * zz / (1 + std::exp(-zz)));
    }
  }
  std::vector<float> state(kSlots * D * N, 3.f), out(T * D);
  const int chunks[] = {2, 1, 4};
  for (int ci = 0, t0 = 0; ci < 3; t0 += chunks[ci], ++ci) {
    if (ci == 1) {
      ASSERT_TRUE(SelectiveStateUpdate({.batch = 1,
                                        .d_inner = D,
                                        .d_state = N,
                                        .n_slots = kSlots,
                                        .slots = &slot,
                                        .u = u.data() + t0 * D,
                                        .delta = delta.data() + t0 * D,
                                        .delta_bias = dbias.data(),
                                        .A = A.data(),
                                        .B = Bm.data() + t0 * N,
                                        .C = Cm.data() + t0 * N,
                                        .D = Dv.data(),
                                        .z = z.data() + t0 * D,
                                        .out = out.data() + t0 * D,
                                        .ssm_state = state.data()})
                      .ok());
      continue;
    }
    const int32_t cu[2] = {0, chunks[ci]};
    const uint8_t has = ci > 0;
    ASSERT_TRUE(SelectiveScanVarlen({.batch = 1,
                                     .d_inner = D,
                                     .d_state = N,
                                     .n_slots = kSlots,
                                     .cu_seqlens = cu,
                                     .slots = &slot,
                                     .has_initial_state = &has,
                                     .u = u.data() + t0 * D,
                                     .delta = delta.data() + t0 * D,
                                     .delta_bias = dbias.data(),
                                     .A = A.data(),
                                     .B = Bm.data() + t0 * N,
                                     .C = Cm.data() + t0 * N,
                                     .D = Dv.data(),
                                     .z = z.data() + t0 * D,
                                     .out = out.data() + t0 * D,
                                     .ssm_state = state.data()})
                    .ok());
  }
  EXPECT_LT(MaxAbsDiff(out, want), 1e-5f);
  for (int i = 0; i < D * N; ++i) EXPECT_NEAR(state[D * N + i], h[i], 1e-5);
  EXPECT_EQ(state[0], 3.f);
  EXPECT_EQ(state[2 * D * N], 3.f);
}

TEST(SelectiveScanTest, SoftplusMatchesPyTorchThreshold) {
  EXPECT_FLOAT_EQ(Softplus(25.f), 25.f);
  EXPECT_NEAR(Softplus(0.f), std::log(2.f), 1e-7);
  EXPECT_NEAR(Softplus(-30.f), std::exp(-30.f), 1e-18);
  EXPECT_NEAR(GeluErf(1.f), 0.8413447460685429f, 1e-6);
  EXPECT_NEAR(Silu(1.f), 0.7310585786300049f, 1e-6);
  EXPECT_EQ(Bf16RoundTrip(1.f + 1.f / 256), 1.f);              // tie rounds to even
  EXPECT_EQ(Bf16RoundTrip(1.f + 3.f / 256), 1.f + 4.f / 256);  // tie rounds to even (up)
}

// ---- MoE -----------------------------------------------------------------------------------

TEST(MoeTest, RouterPicksFirstIndexOnTiesAndGroupIsStable) {
  const int d = 2, E = 4, T = 3;
  // Expert rows: e1 and e3 score the same for every token.
  const std::vector<float> w = {0, 0, 1, 1, -1, 0, 1, 1};
  const std::vector<float> x = {1, 2, -3, -1, 0.5f, 0.25f};
  std::vector<int32_t> expert(T);
  std::vector<float> scale(T);
  ASSERT_TRUE(Router({.n_tokens = T,
                      .d_model = d,
                      .n_experts = E,
                      .x = x.data(),
                      .weight = w.data(),
                      .expert = expert.data(),
                      .scale = scale.data()})
                  .ok());
  // token 0: logits 0,3,-1,3 -> 1; token 1: 0,-4,3,-4 -> 2; token 2: 0,.75,-.5,.75 -> 1.
  EXPECT_EQ(expert, (std::vector<int32_t>{1, 2, 1}));
  EXPECT_FLOAT_EQ(scale[0], 1.f / (1.f + std::exp(-3.f)));
  EXPECT_FLOAT_EQ(scale[1], 1.f / (1.f + std::exp(-3.f)));
  std::vector<int32_t> offsets(E + 1), perm(T);
  ASSERT_TRUE(MoeGroup({.n_tokens = T,
                        .n_experts = E,
                        .expert = expert.data(),
                        .expert_offsets = offsets.data(),
                        .permutation = perm.data()})
                  .ok());
  EXPECT_EQ(offsets, (std::vector<int32_t>{0, 0, 2, 3, 3}));
  EXPECT_EQ(perm, (std::vector<int32_t>{0, 2, 1}));
}

TEST(MoeTest, ExpertsEqualPerTokenMlpScaled) {
  for (bool gated : {true, false}) {
    const MlpShape s{.d_model = 6, .ffn = 5, .gated = gated, .activation = Activation::kGelu};
    const int E = 3, T = 7;
    const std::vector<float> x = RandomVec(T * s.d_model, 20),
                             fc1 = RandomVec(E * s.fc1_rows() * s.d_model, 21),
                             fc2 = RandomVec(E * s.d_model * s.ffn, 22),
                             b1 = RandomVec(E * s.fc1_rows(), 23),
                             b2 = RandomVec(E * s.d_model, 24), scale = RandomVec(T, 25);
    const std::vector<int32_t> expert = {2, 0, 2, 1, 0, 0, 2};
    std::vector<int32_t> offsets(E + 1), perm(T);
    ASSERT_TRUE(MoeGroup({.n_tokens = T,
                          .n_experts = E,
                          .expert = expert.data(),
                          .expert_offsets = offsets.data(),
                          .permutation = perm.data()})
                    .ok());
    std::vector<float> out(T * s.d_model);
    ASSERT_TRUE(MoeExperts({.n_tokens = T,
                            .n_experts = E,
                            .shape = s,
                            .x = x.data(),
                            .expert_offsets = offsets.data(),
                            .permutation = perm.data(),
                            .scale = scale.data(),
                            .fc1 = fc1.data(),
                            .fc1_bias = b1.data(),
                            .fc2 = fc2.data(),
                            .fc2_bias = b2.data(),
                            .out = out.data()})
                    .ok());
    for (int t = 0; t < T; ++t) {
      const int e = expert[t];
      // Naive MLP for this token.
      std::vector<float> a(s.fc1_rows());
      for (int j = 0; j < s.fc1_rows(); ++j) {
        double acc = b1[e * s.fc1_rows() + j];
        for (int i = 0; i < s.d_model; ++i) {
          acc += x[t * s.d_model + i] * fc1[(e * s.fc1_rows() + j) * s.d_model + i];
        }
        a[j] = static_cast<float>(acc);
      }
      std::vector<float> g(s.ffn);
      for (int j = 0; j < s.ffn; ++j) g[j] = gated ? GeluErf(a[j]) * a[s.ffn + j] : GeluErf(a[j]);
      for (int i = 0; i < s.d_model; ++i) {
        double acc = b2[e * s.d_model + i];
        for (int j = 0; j < s.ffn; ++j) acc += g[j] * fc2[(e * s.d_model + i) * s.ffn + j];
        EXPECT_NEAR(out[t * s.d_model + i], scale[t] * acc, 1e-4) << "t=" << t << " i=" << i;
      }
    }
  }
}

// ---- norms, embedding, validation, pool ----------------------------------------------------

TEST(NormTest, RmsAndLayerNormFormulas) {
  const int d = 4;
  std::vector<float> h = {1, 2, 3, 4}, res(d, 100.f), out(d), w = {1, 1, 2, 2}, b = {0, 1, 0, 1};
  ASSERT_TRUE(AddRmsNorm({.n_tokens = 1,
                          .d_model = d,
                          .h = h.data(),
                          .residual = res.data(),
                          .first_layer = true,
                          .weight = w.data(),
                          .eps = 1e-5f,
                          .out = out.data()})
                  .ok());
  EXPECT_EQ(res, h);  // first layer: residual = h
  const float rms = std::sqrt(30.f / 4 + 1e-5f);
  EXPECT_NEAR(out[3], 4 / rms * 2, 1e-6);
  ASSERT_TRUE(AddLayerNorm({.n_tokens = 1,
                            .d_model = d,
                            .h = h.data(),
                            .residual = res.data(),
                            .weight = w.data(),
                            .bias = b.data(),
                            .eps = 1e-5f,
                            .out = out.data()})
                  .ok());
  EXPECT_EQ(res, (std::vector<float>{2, 4, 6, 8}));  // residual += h
  // mean 5, var 5
  EXPECT_NEAR(out[0], (2 - 5) / std::sqrt(5 + 1e-5f) * 1 + 0, 1e-6);
  EXPECT_NEAR(out[3], (8 - 5) / std::sqrt(5 + 1e-5f) * 2 + 1, 1e-6);
}

TEST(ValidationTest, BadArgumentsAreInvalidArgument) {
  std::vector<float> table(4 * 2), out(2 * 2);
  const int32_t bad_tokens[2] = {1, 4};
  EXPECT_EQ(Embedding({.n_tokens = 2,
                       .vocab_size = 4,
                       .d_model = 2,
                       .tokens = bad_tokens,
                       .table = table.data(),
                       .out = out.data()})
                .code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<float> x(4 * 2), w(2 * 3), o(4 * 2), st(3 * 2 * 2);
  const int32_t dup[2] = {1, 1}, oob[2] = {0, 3}, cu_bad[3] = {0, 3, 2}, cu[3] = {0, 2, 4};
  auto conv = [&](const int32_t* slots, const int32_t* cus) {
    return CausalConv1dVarlen({.batch = 2,
                               .d_inner = 2,
                               .d_conv = 3,
                               .n_slots = 3,
                               .cu_seqlens = cus,
                               .slots = slots,
                               .x = x.data(),
                               .weight = w.data(),
                               .out = o.data(),
                               .conv_state = st.data()})
        .code();
  };
  EXPECT_EQ(conv(dup, cu), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(conv(oob, cu), absl::StatusCode::kInvalidArgument);
  const int32_t good[2] = {0, 2};
  EXPECT_EQ(conv(good, cu_bad), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(conv(good, cu), absl::StatusCode::kOk);
  EXPECT_EQ(Linear({.m = 1, .n = 2, .k = 3, .x = nullptr, .w = w.data(), .y = o.data()}).code(),
            absl::StatusCode::kInvalidArgument);
  const int32_t bad_expert[1] = {5};
  int32_t off[3], perm[1];
  EXPECT_EQ(MoeGroup({.n_tokens = 1,
                      .n_experts = 2,
                      .expert = bad_expert,
                      .expert_offsets = off,
                      .permutation = perm})
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ThreadPoolTest, CoversEveryIndexOnce) {
  ThreadPool pool(3);
  EXPECT_EQ(pool.num_threads(), 3);
  for (int64_t n : {0, 1, 2, 5, 1000}) {
    for (int rep = 0; rep < 20; ++rep) {
      std::vector<std::atomic<int>> hits(n);
      pool.ParallelFor(n, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) hits[i]++;
      });
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "n=" << n;
    }
  }
}

}  // namespace
}  // namespace bms::ref
