// CpuBackend consistency tests: prefill == decode steps == uneven chunks (logits and state),
// batch independence in mixed packed batches, untouched slots, bf16 state storage, thread-count
// independence, CopyState, input validation and the backend registry.
#include "engine/cpu_backend.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "engine/backend_registry.h"
#include "engine/model_weights.h"

namespace bms {
namespace {

// A small model with every layer kind and option the backend has.
ModelConfig SmallConfig(bool gated, bool bias, MlpActivation act) {
  ModelConfig c;
  c.num_layers = 4;
  c.d_model = 32;
  c.ffn_hidden_size = 48;
  c.vocab_size = 97;
  c.n_experts = 4;
  c.swiglu = gated;
  c.add_bias_linear = bias;
  c.mlp_activation = act;
  c.layers = {LayerKind::kMamba, LayerKind::kMoe, LayerKind::kMamba, LayerKind::kDenseMlp};
  return c;
}

std::unique_ptr<CpuBackend> MakeBackend(const ModelConfig& c, uint64_t seed,
                                        StateDType dtype = StateDType::kF32, int threads = 2) {
  BackendOptions o;
  o.num_slots = 8;
  o.state_dtype = dtype;
  o.num_threads = threads;
  auto b = CpuBackend::Create(MakeRandomWeights(c, seed), o);
  EXPECT_TRUE(b.ok()) << b.status();
  return std::move(*b);
}

std::vector<int32_t> Tokens(int n, int vocab, int salt) {
  std::vector<int32_t> t(n);
  for (int i = 0; i < n; ++i) t[i] = (i * 37 + salt * 11 + 5) % vocab;
  return t;
}

// Runs one chunk on its own; returns its logits.
std::vector<float> RunChunk(Backend& b, int slot, std::span<const int32_t> tokens, bool first,
                            LogitsMode mode) {
  SeqChunk s{.slot = slot,
             .token_offset = 0,
             .n_tokens = static_cast<int>(tokens.size()),
             .first_chunk = first,
             .logits = mode};
  std::vector<float> logits;
  absl::Status st = b.Forward({tokens, std::span<const SeqChunk>(&s, 1)}, &logits);
  EXPECT_TRUE(st.ok()) << st;
  return logits;
}

// max |a - b| / max(max |b|, 1e-6)
double RelErr(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double diff = 0, scale = 1e-6;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(a[i]) - b[i]));
    scale = std::max(scale, std::abs(static_cast<double>(b[i])));
  }
  return diff / scale;
}

std::vector<float> State(Backend& b, int slot) {
  auto s = b.ReadState(slot);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *s : std::vector<float>();
}

constexpr double kTol = 2e-5;

class PrefillVsDecode : public ::testing::TestWithParam<int> {};

TEST_P(PrefillVsDecode, SameLogitsAndState) {
  const int T = GetParam();
  for (int variant = 0; variant < 2; ++variant) {
    ModelConfig c = variant == 0 ? SmallConfig(true, false, MlpActivation::kGelu)
                                 : SmallConfig(false, true, MlpActivation::kSilu);
    auto b = MakeBackend(c, 7 + variant);
    const std::vector<int32_t> tok = Tokens(T, c.vocab_size, T);
    // Whole prompt in one chunk (slot 0).
    std::vector<float> full = RunChunk(*b, 0, tok, true, LogitsMode::kAll);
    ASSERT_EQ(full.size(), static_cast<size_t>(T) * c.vocab_size);
    // Token by token (slot 1): a 1-token first chunk, then decode steps.
    std::vector<float> steps;
    for (int t = 0; t < T; ++t) {
      std::vector<float> l =
          RunChunk(*b, 1, std::span(tok).subspan(t, 1), t == 0, LogitsMode::kLast);
      steps.insert(steps.end(), l.begin(), l.end());
    }
    EXPECT_LT(RelErr(steps, full), kTol) << "T=" << T;
    EXPECT_LT(RelErr(State(*b, 1), State(*b, 0)), kTol);
    // Uneven chunks (slot 2): 2, 1, 3, 1, 2, ... tokens.
    std::vector<float> chunked;
    const int pattern[] = {2, 1, 3, 1};
    for (int t = 0, k = 0; t < T; ++k) {
      int n = std::min(pattern[k % 4], T - t);
      std::vector<float> l =
          RunChunk(*b, 2, std::span(tok).subspan(t, n), t == 0, LogitsMode::kAll);
      chunked.insert(chunked.end(), l.begin(), l.end());
      t += n;
    }
    EXPECT_LT(RelErr(chunked, full), kTol);
    EXPECT_LT(RelErr(State(*b, 2), State(*b, 0)), kTol);
    // kLast gives the last row of kAll.
    std::vector<float> last = RunChunk(*b, 3, tok, true, LogitsMode::kLast);
    std::vector<float> full_last(full.end() - c.vocab_size, full.end());
    EXPECT_LT(RelErr(last, full_last), kTol);
  }
}

// T = 1, T < d_conv - 1, T = d_conv - 1, T = d_conv, longer.
INSTANTIATE_TEST_SUITE_P(Lengths, PrefillVsDecode, ::testing::Values(1, 2, 3, 4, 11));

TEST(CpuBackendTest, FirstChunkIgnoresOldSlotContents) {
  ModelConfig c = SmallConfig(true, false, MlpActivation::kGelu);
  auto b = MakeBackend(c, 3);
  const std::vector<int32_t> tok = Tokens(5, c.vocab_size, 1);
  std::vector<float> fresh = RunChunk(*b, 0, tok, true, LogitsMode::kAll);
  RunChunk(*b, 1, Tokens(6, c.vocab_size, 9), true, LogitsMode::kNone);  // dirty slot 1
  std::vector<float> reused = RunChunk(*b, 1, tok, true, LogitsMode::kAll);
  EXPECT_EQ(reused, fresh);
  EXPECT_EQ(State(*b, 1), State(*b, 0));
}

TEST(CpuBackendTest, MixedBatchMatchesEachAlone) {
  ModelConfig c = SmallConfig(true, true, MlpActivation::kGelu);
  auto mixed = MakeBackend(c, 11);
  auto alone = MakeBackend(c, 11);
  const int V = c.vocab_size;
  // History: slots 1 and 2 and 5 hold earlier prefixes on both backends.
  for (Backend* b : {static_cast<Backend*>(mixed.get()), static_cast<Backend*>(alone.get())}) {
    RunChunk(*b, 1, Tokens(3, V, 1), true, LogitsMode::kNone);
    RunChunk(*b, 2, Tokens(6, V, 2), true, LogitsMode::kNone);
    RunChunk(*b, 5, Tokens(4, V, 5), true, LogitsMode::kNone);
  }
  const std::vector<float> untouched_before = State(*mixed, 5);
  // One packed step: decode (slot 2), new prompt (slot 0), continuation chunk (slot 1),
  // a 1-token first chunk (slot 3), in that order.
  std::vector<int32_t> a = Tokens(1, V, 20), p0 = Tokens(5, V, 21), p1 = Tokens(4, V, 22),
                       p3 = Tokens(1, V, 23);
  std::vector<int32_t> packed;
  for (auto* v : {&a, &p0, &p1, &p3}) packed.insert(packed.end(), v->begin(), v->end());
  const SeqChunk seqs[] = {
      {.slot = 2,
       .token_offset = 0,
       .n_tokens = 1,
       .first_chunk = false,
       .logits = LogitsMode::kLast},
      {.slot = 0,
       .token_offset = 1,
       .n_tokens = 5,
       .first_chunk = true,
       .logits = LogitsMode::kAll},
      {.slot = 1,
       .token_offset = 6,
       .n_tokens = 4,
       .first_chunk = false,
       .logits = LogitsMode::kNone},
      {.slot = 3,
       .token_offset = 10,
       .n_tokens = 1,
       .first_chunk = true,
       .logits = LogitsMode::kLast},
  };
  std::vector<float> logits;
  ASSERT_TRUE(mixed->Forward({packed, seqs}, &logits).ok());
  ASSERT_EQ(logits.size(), static_cast<size_t>(1 + 5 + 0 + 1) * V);
  std::vector<float> expect;
  for (const std::vector<float>& l : {RunChunk(*alone, 2, a, false, LogitsMode::kLast),
                                      RunChunk(*alone, 0, p0, true, LogitsMode::kAll),
                                      RunChunk(*alone, 1, p1, false, LogitsMode::kNone),
                                      RunChunk(*alone, 3, p3, true, LogitsMode::kLast)}) {
    expect.insert(expect.end(), l.begin(), l.end());
  }
  EXPECT_LT(RelErr(logits, expect), kTol);
  for (int slot : {0, 1, 2, 3}) {
    EXPECT_LT(RelErr(State(*mixed, slot), State(*alone, slot)), kTol) << "slot " << slot;
  }
  EXPECT_EQ(State(*mixed, 5), untouched_before);
  EXPECT_EQ(State(*mixed, 4), std::vector<float>(untouched_before.size(), 0.f));
}

TEST(CpuBackendTest, ThreadCountDoesNotChangeResults) {
  ModelConfig c = SmallConfig(true, false, MlpActivation::kGelu);
  auto one = MakeBackend(c, 5, StateDType::kF32, 1);
  auto three = MakeBackend(c, 5, StateDType::kF32, 3);
  const std::vector<int32_t> tok = Tokens(9, c.vocab_size, 4);
  EXPECT_EQ(RunChunk(*one, 0, tok, true, LogitsMode::kAll),
            RunChunk(*three, 0, tok, true, LogitsMode::kAll));
  EXPECT_EQ(State(*one, 0), State(*three, 0));
}

TEST(CpuBackendTest, Bf16StateStaysCloseToF32) {
  ModelConfig c = SmallConfig(true, false, MlpActivation::kGelu);
  auto f32 = MakeBackend(c, 13, StateDType::kF32);
  auto bf16 = MakeBackend(c, 13, StateDType::kBF16);
  EXPECT_EQ(bf16->state_bytes_per_slot() * 2, f32->state_bytes_per_slot());
  EXPECT_EQ(f32->state_bytes_per_slot(),
            static_cast<size_t>(2 * c.d_inner() * (c.d_conv - 1 + c.d_state) * 4));
  const std::vector<int32_t> tok = Tokens(12, c.vocab_size, 6);
  std::vector<float> a, b;
  // Prefill 6, then 6 decode steps: state goes through bf16 storage at every step.
  a = RunChunk(*f32, 0, std::span(tok).first(6), true, LogitsMode::kLast);
  b = RunChunk(*bf16, 0, std::span(tok).first(6), true, LogitsMode::kLast);
  for (int t = 6; t < 12; ++t) {
    auto la = RunChunk(*f32, 0, std::span(tok).subspan(t, 1), false, LogitsMode::kLast);
    auto lb = RunChunk(*bf16, 0, std::span(tok).subspan(t, 1), false, LogitsMode::kLast);
    a.insert(a.end(), la.begin(), la.end());
    b.insert(b.end(), lb.begin(), lb.end());
  }
  const double err = RelErr(b, a);
  EXPECT_LT(err, 3e-2);
  EXPECT_GT(err, 0.0);  // bf16 storage did round something
  EXPECT_LT(RelErr(State(*bf16, 0), State(*f32, 0)), 2e-2);
}

TEST(CpuBackendTest, CopyStateForksASequence) {
  ModelConfig c = SmallConfig(true, false, MlpActivation::kGelu);
  auto b = MakeBackend(c, 17);
  RunChunk(*b, 0, Tokens(7, c.vocab_size, 3), true, LogitsMode::kNone);
  ASSERT_TRUE(b->CopyState(0, 4).ok());
  EXPECT_EQ(State(*b, 4), State(*b, 0));
  const std::vector<int32_t> next = {42};
  EXPECT_EQ(RunChunk(*b, 4, next, false, LogitsMode::kLast),
            RunChunk(*b, 0, next, false, LogitsMode::kLast));
  EXPECT_EQ(b->CopyState(0, 9).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(b->CopyState(-1, 0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(b->CopyState(0, b->padding_slot()).ok());
}

TEST(CpuBackendTest, InvalidInputChangesNothing) {
  ModelConfig c = SmallConfig(true, false, MlpActivation::kGelu);
  auto b = MakeBackend(c, 19);
  RunChunk(*b, 0, Tokens(5, c.vocab_size, 3), true, LogitsMode::kNone);
  const std::vector<float> before = State(*b, 0);
  auto expect_invalid = [&](std::vector<int32_t> tokens, std::vector<SeqChunk> seqs) {
    std::vector<float> logits;
    absl::Status st = b->Forward({tokens, seqs}, &logits);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
    EXPECT_EQ(State(*b, 0), before);
  };
  const SeqChunk ok0{.slot = 0, .token_offset = 0, .n_tokens = 1, .first_chunk = false};
  expect_invalid({1, 2}, {ok0, {.slot = 9, .token_offset = 1, .n_tokens = 1}});   // bad slot
  expect_invalid({1, 2}, {ok0, {.slot = -1, .token_offset = 1, .n_tokens = 1}});  // bad slot
  expect_invalid({1, 2}, {ok0, {.slot = 0, .token_offset = 1, .n_tokens = 1}});   // duplicate
  expect_invalid({1, 97}, {ok0, {.slot = 1, .token_offset = 1, .n_tokens = 1}});  // token id
  expect_invalid({1, -3}, {ok0, {.slot = 1, .token_offset = 1, .n_tokens = 1}});  // token id
  expect_invalid({1, 2}, {ok0, {.slot = 1, .token_offset = 1, .n_tokens = 2}});   // past end
  expect_invalid({1, 2}, {ok0, {.slot = 1, .token_offset = 1, .n_tokens = 0}});   // empty
  EXPECT_EQ(b->ReadState(10).status().code(), absl::StatusCode::kInvalidArgument);
  // The padding slot is usable.
  const std::vector<int32_t> one = {3};
  EXPECT_EQ(RunChunk(*b, b->padding_slot(), one, true, LogitsMode::kLast).size(),
            static_cast<size_t>(c.vocab_size));
}

TEST(CpuBackendTest, EmptyStepIsOk) {
  ModelConfig c = SmallConfig(true, false, MlpActivation::kGelu);
  auto b = MakeBackend(c, 1);
  std::vector<float> logits = {1.f};
  EXPECT_TRUE(b->Forward({}, &logits).ok());
  EXPECT_TRUE(logits.empty());
}

TEST(BackendRegistryTest, CreatesByName) {
  ModelConfig c = SmallConfig(true, false, MlpActivation::kGelu);
  ModelWeights w = MakeRandomWeights(c, 2);
  BackendOptions o;
  o.num_slots = 2;
  auto cpu = CreateBackend("cpu", w, o);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  EXPECT_EQ((*cpu)->name(), "cpu");
  EXPECT_EQ((*cpu)->num_slots(), 2);
  EXPECT_EQ(CreateBackend("tpu", w, o).status().code(), absl::StatusCode::kInvalidArgument);
  if (!CudaBackendCompiled()) {
    EXPECT_EQ(CreateBackend("cuda", w, o).status().code(), absl::StatusCode::kFailedPrecondition);
  }
  o.num_slots = 0;
  EXPECT_EQ(CreateBackend("cpu", w, o).status().code(), absl::StatusCode::kInvalidArgument);
  // A weight of the wrong size is refused, naming it.
  o.num_slots = 2;
  w.layers[0].mamba.D = HostTensor::FromF32(std::vector<float>(3, 1.f), {3});
  auto bad = CreateBackend("cpu", w, o);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("decoder.layers.0.mixer.D"), std::string::npos);
}

}  // namespace
}  // namespace bms
