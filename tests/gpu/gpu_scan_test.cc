// GPU tests (label gpu) of the Mamba sequence kernels behind CausalConv1dVarlen and
// SelectiveScanVarlen: the decode kernels (conv window update, selective state update; chosen
// when n_tokens == batch), the vectorized prefill conv, both prefill scans (the warp-per-channel
// parallel scan, scan_parallel.cu, and the previous chunked scan, scan_prefill.cu), and the
// legacy kernels kept for A/B, each against the CPU reference (kernels/ref) on fresh random
// inputs with NaN-poisoned outputs. Cases: T < d_conv, T = 1, T = 4096, chunk boundaries +-1
// of every scan tiling (128 and 256 tokens; the parallel scan's bf16 tiling depends on the mean
// sequence length, so one batch of long and one of short sequences), ragged lengths in one call,
// mixed first / continuation chunks, zero-length sequences, scattered non-contiguous slots and
// slot -1 padding rows (zeros in, nothing stored), d_inner with and without the 8-channel vector
// alignment. Every slot outside the batch stays bit-identical.
#include <algorithm>
#include <tuple>

#include "tests/gpu/gpu_test_util.h"

namespace bms::gpu_test {
namespace {

using cuda::DType;
using ref::StateStorage;

struct Seq {
  int len;
  int slot;  // -1: padding row
  uint8_t has_state;
};

constexpr int kSlots = 12;
constexpr int kW = 4;   // d_conv
constexpr int kN = 16;  // d_state
constexpr int kR = 8;   // dt_rank

// Prefill: T = 1, T < d_conv continuations, a 4096-token first chunk, chunk boundaries (128 and
// 256 +-1), a zero-length sequence, padding rows (one claiming state, which must be ignored).
// Mean length ~480: the parallel scan runs 256-token chunks for bf16 (128 for fp32).
const std::vector<Seq> kPrefill = {{1, 3, 1}, {2, 7, 1},   {3, 0, 0},    {4096, 10, 0}, {130, 5, 1},
                                   {0, 2, 1}, {1, -1, 1},  {129, 11, 0}, {37, -1, 0},   {128, 1, 1},
                                   {5, 8, 1}, {255, 4, 1}, {256, 6, 0},  {257, 9, 1}};
// Short prompts (mean 75 tokens: the parallel scan's 128-token chunks for bf16 too): 128 +-1,
// 256 - 1, T = 1, T < d_conv, a padding row, a zero-length sequence.
const std::vector<Seq> kShortPrefill = {{127, 0, 1}, {128, 1, 0}, {129, 2, 1}, {1, 3, 0},
                                        {2, 4, 1},   {3, -1, 1},  {64, 5, 1},  {0, 6, 1},
                                        {255, 7, 0}, {40, 8, 1}};
// Decode: one token each on scattered slots, a first token (no state), padding rows.
const std::vector<Seq> kDecode = {{1, 9, 1}, {1, 2, 1}, {1, -1, 1}, {1, 6, 1},
                                  {1, 0, 0}, {1, 4, 1}, {1, -1, 0}, {1, 11, 1}};

// Which kernels run: the defaults with the parallel prefill scan, the previous chunked prefill
// scan, or the legacy kernels.
enum class Kernels { kParallel, kChunked, kLegacy };

// (compute dtype, state storage, kernels)
class ScanKernelTest : public ::testing::TestWithParam<std::tuple<DType, StateStorage, Kernels>> {
 protected:
  void SetUp() override { BMS_SKIP_WITHOUT_GPU(); }
  DType dt() const { return std::get<0>(GetParam()); }
  StateStorage st() const { return std::get<1>(GetParam()); }
  Kernels kernels() const { return std::get<2>(GetParam()); }
  bool legacy() const { return kernels() == Kernels::kLegacy; }
  // The chunked variant differs from the parallel one only in the prefill scan.
  bool ScanPrefillOnly() const { return kernels() == Kernels::kChunked; }
  size_t Elem() const { return st() == StateStorage::kF32 ? 4 : 2; }
  std::vector<float> In(std::vector<float> v) const {
    return dt() == DType::kBF16 ? RoundBf16(std::move(v)) : v;
  }
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
  double StateTolerance() const { return st() == StateStorage::kBF16 ? 1e-2 : Tolerance(dt()); }

  // The batch as the GPU sees it, and as the reference sees it: padding rows get their own
  // scratch slots past kSlots with no initial state.
  struct Packed {
    std::vector<int32_t> cu{0}, slots, ref_slots;
    std::vector<uint8_t> has, ref_has;
    int T = 0, B = 0, ref_slots_total = kSlots;
  };
  static Packed Pack(const std::vector<Seq>& batch) {
    Packed k;
    for (const Seq& s : batch) {
      k.cu.push_back(k.cu.back() + s.len);
      k.slots.push_back(s.slot);
      k.has.push_back(s.has_state);
      const bool pad = s.slot < 0;
      k.ref_slots.push_back(pad ? k.ref_slots_total++ : s.slot);
      k.ref_has.push_back(pad ? 0 : s.has_state);
    }
    k.T = k.cu.back();
    k.B = static_cast<int>(batch.size());
    return k;
  }

  // got: the GPU state (kSlots slots); want: the reference's (first kSlots slots used).
  void CheckStates(const Packed& k, const std::vector<uint8_t>& state0,
                   const std::vector<uint8_t>& got, const std::vector<uint8_t>& want, size_t per,
                   const char* what) const {
    const size_t e = Elem();
    for (int s = 0; s < kSlots; ++s) {
      const bool in_batch = std::find(k.slots.begin(), k.slots.end(), s) != k.slots.end();
      if (!in_batch) {
        EXPECT_TRUE(std::equal(got.begin() + s * per * e, got.begin() + (s + 1) * per * e,
                               state0.begin() + s * per * e))
            << what << ": slot " << s << " outside the batch changed";
        continue;
      }
      EXPECT_LT(NormalizedError(StateValues(got, s * per, per), StateValues(want, s * per, per)),
                StateTolerance())
          << what << " state of slot " << s;
    }
  }

  void RunConv(const std::vector<Seq>& batch, int di) {
    std::mt19937_64 rng(TestSeed());
    const Packed k = Pack(batch);
    const int w1 = kW - 1, T = k.T;
    const auto x = In(RandomVector(rng, T * 2 * di, -2, 2));  // x half of [T, 2*d_inner]
    const auto weight = RandomVector(rng, di * kW, -1, 1), bias = RandomVector(rng, di, -1, 1);
    const size_t per = static_cast<size_t>(di) * w1;
    const auto state0 = RandomState(rng, kSlots * per);
    DevArray dx(x, dt()), dw(weight, DType::kF32), db(bias, DType::kF32), dout(T * di, dt());
    DevInts<int32_t> dcu(k.cu), dslots(k.slots);
    DevInts<uint8_t> dhas(k.has), dstate(state0);
    BMS_ASSERT_OK(cuda::CausalConv1dVarlen({.batch = k.B,
                                            .n_tokens = T,
                                            .d_inner = di,
                                            .d_conv = kW,
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
                                            .conv_state_dtype = st(),
                                            .legacy = legacy()},
                                           nullptr));
    std::vector<uint8_t> state = state0;
    state.resize(k.ref_slots_total * per * Elem(), 0);
    std::vector<float> want(T * di, 0.f);
    BMS_ASSERT_OK(ref::CausalConv1dVarlen({.batch = k.B,
                                           .d_inner = di,
                                           .d_conv = kW,
                                           .n_slots = k.ref_slots_total,
                                           .cu_seqlens = k.cu.data(),
                                           .slots = k.ref_slots.data(),
                                           .has_initial_state = k.ref_has.data(),
                                           .x = x.data(),
                                           .x_stride = 2 * di,
                                           .weight = weight.data(),
                                           .bias = bias.data(),
                                           .silu = true,
                                           .out = want.data(),
                                           .conv_state = state.data(),
                                           .conv_state_dtype = st()}));
    EXPECT_LT(NormalizedError(dout.Get(), want), Tolerance(dt())) << "conv output";
    CheckStates(k, state0, dstate.Get(state0.size()), state, per, "conv");
  }

  void RunScan(const std::vector<Seq>& batch, int di) {
    std::mt19937_64 rng(TestSeed());
    const Packed k = Pack(batch);
    const int T = k.T, xdbl = kR + 2 * kN;
    const auto u = In(RandomVector(rng, T * di, -2, 2));
    const auto delta = In(RandomVector(rng, T * di, -4, 1));
    const auto dbc = In(RandomVector(rng, T * xdbl, -1, 1));  // dt_low | B | C rows
    const auto z = In(RandomVector(rng, T * 2 * di, -3, 3));  // z is the second half
    const auto dbias = RandomVector(rng, di, -1, 1), D = RandomVector(rng, di, -1, 1);
    auto A = RandomVector(rng, di * kN, -1, 1.5);
    for (float& a : A) a = -std::exp(a);
    const size_t per = static_cast<size_t>(di) * kN;
    const auto state0 = RandomState(rng, kSlots * per);
    DevArray du(u, dt()), ddelta(delta, dt()), ddbc(dbc, dt()), dz(z, dt()),
        ddb(dbias, DType::kF32), dD(D, DType::kF32), dA(A, DType::kF32), dout(T * di, dt());
    DevInts<int32_t> dcu(k.cu), dslots(k.slots);
    DevInts<uint8_t> dhas(k.has), dstate(state0);
    const int e = cuda::DTypeBytes(dt());
    char* dbc_base = static_cast<char*>(ddbc.get());
    BMS_ASSERT_OK(cuda::SelectiveScanVarlen(
        {.batch = k.B,
         .n_tokens = T,
         .d_inner = di,
         .d_state = kN,
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
         .B = dbc_base + kR * e,
         .B_stride = xdbl,
         .C = dbc_base + (kR + kN) * e,
         .C_stride = xdbl,
         .D = dD.f32(),
         .z = static_cast<char*>(dz.get()) + di * e,
         .z_stride = 2 * di,
         .out = dout.get(),
         .ssm_state = dstate.get(),
         .ssm_state_dtype = st(),
         .legacy = legacy(),
         .prefill_kernel = kernels() == Kernels::kChunked ? cuda::ScanPrefillKernel::kChunked
                                                          : cuda::ScanPrefillKernel::kParallel},
        nullptr));
    std::vector<uint8_t> state = state0;
    state.resize(k.ref_slots_total * per * Elem(), 0);
    std::vector<float> want(T * di, 0.f);
    BMS_ASSERT_OK(ref::SelectiveScanVarlen({.batch = k.B,
                                            .d_inner = di,
                                            .d_state = kN,
                                            .n_slots = k.ref_slots_total,
                                            .cu_seqlens = k.cu.data(),
                                            .slots = k.ref_slots.data(),
                                            .has_initial_state = k.ref_has.data(),
                                            .u = u.data(),
                                            .delta = delta.data(),
                                            .delta_bias = dbias.data(),
                                            .delta_softplus = true,
                                            .A = A.data(),
                                            .B = dbc.data() + kR,
                                            .B_stride = xdbl,
                                            .C = dbc.data() + kR + kN,
                                            .C_stride = xdbl,
                                            .D = D.data(),
                                            .z = z.data() + di,
                                            .z_stride = 2 * di,
                                            .out = want.data(),
                                            .ssm_state = state.data(),
                                            .ssm_state_dtype = st()}));
    EXPECT_LT(NormalizedError(dout.Get(), want), Tolerance(dt())) << "scan output";
    CheckStates(k, state0, dstate.Get(state0.size()), state, per, "ssm");
  }
};

// d_inner 320: the 16-byte vector paths; 300: tails and the scalar / legacy fallbacks.
TEST_P(ScanKernelTest, ConvPrefillMixedBatch) {
  if (ScanPrefillOnly()) GTEST_SKIP() << "same conv kernels as the parallel variant";
  for (int di : {320, 300}) {
    SCOPED_TRACE(testing::Message() << "d_inner=" << di);
    RunConv(kPrefill, di);
  }
}
TEST_P(ScanKernelTest, ConvDecodeScatteredSlots) {
  if (ScanPrefillOnly()) GTEST_SKIP() << "same conv kernels as the parallel variant";
  for (int di : {320, 300}) {
    SCOPED_TRACE(testing::Message() << "d_inner=" << di);
    RunConv(kDecode, di);
  }
}
TEST_P(ScanKernelTest, ScanPrefillMixedBatch) {
  for (int di : {320, 300}) {
    SCOPED_TRACE(testing::Message() << "d_inner=" << di);
    RunScan(kPrefill, di);
  }
}
TEST_P(ScanKernelTest, ScanShortPrefillBatch) {
  for (int di : {320, 300}) {
    SCOPED_TRACE(testing::Message() << "d_inner=" << di);
    RunScan(kShortPrefill, di);
  }
}
TEST_P(ScanKernelTest, ScanDecodeScatteredSlots) {
  if (ScanPrefillOnly()) GTEST_SKIP() << "same decode kernel as the parallel variant";
  for (int di : {320, 300}) {
    SCOPED_TRACE(testing::Message() << "d_inner=" << di);
    RunScan(kDecode, di);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Kernels, ScanKernelTest,
    ::testing::Combine(::testing::Values(DType::kF32, DType::kBF16),
                       ::testing::Values(StateStorage::kF32, StateStorage::kBF16),
                       ::testing::Values(Kernels::kParallel, Kernels::kChunked, Kernels::kLegacy)),
    [](const auto& info) {
      const Kernels k = std::get<2>(info.param);
      return std::string(DTypeLabel(std::get<0>(info.param))) + "_state_" +
             (std::get<1>(info.param) == StateStorage::kF32 ? "f32" : "bf16") +
             (k == Kernels::kParallel  ? "_parallel"
              : k == Kernels::kChunked ? "_chunked"
                                       : "_legacy");
    });

}  // namespace
}  // namespace bms::gpu_test
