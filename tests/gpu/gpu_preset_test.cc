// Opt-in GPU smoke test on a full-size preset (label gpu): set BMS_GPU_PRESET=blackmamba-1.5b (or
// -2.8b) to run it; otherwise it skips. Random weights of the preset's shapes: the fp32 CUDA
// backend must match the fp32 CPU backend on a mixed prefill step (asserted); the bf16 backend's
// deviation is printed next to what rounding the weights alone does on the CPU; then prefill and
// decode step times are printed for information (no timing assertions).
#include <algorithm>
#include <chrono>
#include <cstdlib>

#include "engine/cpu_backend.h"
#include "engine/cuda_backend.h"
#include "engine/model_weights.h"
#include "tests/gpu/gpu_test_util.h"

namespace bms::gpu_test {
namespace {

double Seconds(std::chrono::steady_clock::time_point a) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count();
}

TEST(PresetSmoke, Bf16MatchesCpuAndReportsStepTimes) {
  BMS_SKIP_WITHOUT_GPU();
  const char* preset = std::getenv("BMS_GPU_PRESET");
  if (preset == nullptr) GTEST_SKIP() << "set BMS_GPU_PRESET=blackmamba-1.5b to run";
  auto config = ModelConfig::Preset(preset);
  ASSERT_TRUE(config.ok()) << config.status();
  const ModelConfig& c = *config;
  auto t0 = std::chrono::steady_clock::now();
  const ModelWeights w = MakeRandomWeights(c, 11);
  std::cout << "[ preset ] " << preset << ": random weights in " << Seconds(t0) << " s\n";
  BackendOptions o;
  o.num_slots = 256;
  t0 = std::chrono::steady_clock::now();
  auto gpu = CreateCudaBackend(w, o);
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  std::cout << "[ preset ] CUDA backend start-up " << Seconds(t0) << " s\n";
  BackendOptions o32 = o;
  o32.fp32_compute = true;
  auto gpu32 = CreateCudaBackend(w, o32);
  ASSERT_TRUE(gpu32.ok()) << gpu32.status();
  auto cpu = CpuBackend::Create(w, o);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  auto cpu16 = CpuBackend::Create(RoundGemmWeightsToBf16(w), o);
  ASSERT_TRUE(cpu16.ok()) << cpu16.status();

  // Mixed step: 4 prompts of different lengths, last-token logits.
  std::mt19937_64 rng(5);
  std::vector<int32_t> toks;
  std::vector<SeqChunk> seqs;
  for (int s = 0; s < 4; ++s) {
    const int len = 1 + s * 21;
    seqs.push_back({.slot = 7 * s, .token_offset = static_cast<int>(toks.size()), .n_tokens = len});
    for (int i = 0; i < len; ++i) toks.push_back(static_cast<int32_t>(rng() % c.vocab_size));
  }
  std::vector<float> lc, lc16, lg, lg32;
  ASSERT_TRUE((*cpu)->Forward({toks, seqs}, &lc).ok());
  ASSERT_TRUE((*cpu16)->Forward({toks, seqs}, &lc16).ok());
  absl::Status st = (*gpu)->Forward({toks, seqs}, &lg);
  ASSERT_TRUE(st.ok()) << st;
  st = (*gpu32)->Forward({toks, seqs}, &lg32);
  ASSERT_TRUE(st.ok()) << st;
  auto top1 = [&](const std::vector<float>& x, const std::vector<float>& y) {
    int agree = 0;
    for (int r = 0; r < 4; ++r) {
      const float* a = &x[static_cast<size_t>(r) * c.vocab_size];
      const float* b = &y[static_cast<size_t>(r) * c.vocab_size];
      agree +=
          std::max_element(a, a + c.vocab_size) - a == std::max_element(b, b + c.vocab_size) - b;
    }
    return agree;
  };
  std::cout << "[ preset ] fp32 CUDA vs fp32 CPU: logits normalized error "
            << NormalizedError(lg32, lc) << ", top-1 " << top1(lg32, lc) << "/4\n"
            << "[ preset ] bf16 CUDA vs fp32 CPU: error " << NormalizedError(lg, lc) << ", top-1 "
            << top1(lg, lc) << "/4; vs fp32 CPU on bf16 weights: error "
            << NormalizedError(lg, lc16) << "; weight rounding alone (CPU): error "
            << NormalizedError(lc16, lc) << ", top-1 " << top1(lc16, lc) << "/4\n";
  EXPECT_LT(NormalizedError(lg32, lc), 1e-4);
  EXPECT_EQ(top1(lg32, lc), 4);

  // Prefill timing: one 2048-token prompt.
  std::vector<int32_t> prompt(2048);
  for (auto& t : prompt) t = static_cast<int32_t>(rng() % c.vocab_size);
  const std::vector<SeqChunk> one = {{.slot = 100, .n_tokens = 2048}};
  ASSERT_TRUE((*gpu)->Forward({prompt, one}, &lg).ok());  // warm-up (workspace, GEMM plans)
  t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 3; ++i) ASSERT_TRUE((*gpu)->Forward({prompt, one}, &lg).ok());
  const double prefill = Seconds(t0) / 3;
  std::cout << "[ preset ] prefill 2048 tokens: " << prefill * 1e3 << " ms (" << 2048 / prefill
            << " tokens/s)\n";

  // Decode timing: batch sizes 1, 32, 128, one token per sequence per step.
  for (int batch : {1, 32, 128}) {
    std::vector<int32_t> dt(batch);
    std::vector<SeqChunk> ds;
    for (int b = 0; b < batch; ++b) {
      dt[b] = static_cast<int32_t>(rng() % c.vocab_size);
      ds.push_back({.slot = b, .token_offset = b, .n_tokens = 1, .first_chunk = false});
    }
    ASSERT_TRUE((*gpu)->Forward({dt, ds}, &lg).ok());
    t0 = std::chrono::steady_clock::now();
    const int steps = 10;
    for (int i = 0; i < steps; ++i) ASSERT_TRUE((*gpu)->Forward({dt, ds}, &lg).ok());
    const double step = Seconds(t0) / steps;
    std::cout << "[ preset ] decode batch " << batch << ": " << step * 1e3 << " ms/step ("
              << batch / step << " tokens/s, no CUDA graphs)\n";
  }

  // Per-op times at the preset's prefill shapes (2048 tokens, one sequence), for the perf work.
  const int T = 2048, d = c.d_model, di = c.d_inner(), f = c.ffn_hidden_size, e = c.n_experts;
  std::vector<int32_t> expert(T), cu = {0, T}, slot = {0};
  for (auto& x : expert) x = static_cast<int32_t>(rng() % e);
  DevArray x(RandomVector(rng, size_t{T} * d, -1, 1), cuda::DType::kBF16);
  DevArray w1(RandomVector(rng, size_t{e} * 2 * f * d, -0.03f, 0.03f), cuda::DType::kBF16);
  DevArray w2(RandomVector(rng, size_t{e} * d * f, -0.03f, 0.03f), cuda::DType::kBF16);
  DevArray act(size_t{T} * f, cuda::DType::kBF16), out(size_t{T} * d, cuda::DType::kBF16);
  DevArray u(RandomVector(rng, size_t{T} * di, -1, 1), cuda::DType::kBF16);
  DevArray dtv(RandomVector(rng, size_t{T} * di, -4, 0), cuda::DType::kBF16);
  DevArray bc(RandomVector(rng, size_t{T} * 32, -1, 1), cuda::DType::kBF16);
  DevArray A(std::vector<float>(size_t{di} * 16, -1.f), cuda::DType::kF32);
  DevArray y(size_t{T} * di, cuda::DType::kBF16), state(size_t{di} * 16, cuda::DType::kF32);
  DevInts<int32_t> dexp(expert), doff(e + 1), dperm(T), dcu(cu), dslot(slot);
  auto time_op = [&](const char* name, double flops, auto&& op) {
    ASSERT_TRUE(op().ok());
    ASSERT_TRUE(cuda::DeviceSynchronize().ok());
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < 10; ++i) ASSERT_TRUE(op().ok());
    ASSERT_TRUE(cuda::DeviceSynchronize().ok());
    const double s = Seconds(start) / 10;
    std::cout << "[ preset ] op " << name << ": " << s * 1e3 << " ms";
    if (flops > 0) std::cout << " (" << flops / s * 1e-12 << " TFLOP/s)";
    std::cout << "\n";
  };
  time_op("moe group", 0, [&] {
    return cuda::MoeGroup({.n_tokens = T,
                           .n_experts = e,
                           .expert = dexp.get(),
                           .expert_offsets = doff.get(),
                           .permutation = dperm.get()},
                          nullptr);
  });
  time_op("grouped fc1+gate", 2.0 * T * 2 * f * d, [&] {
    return cuda::GroupedGemm({.n_rows = T,
                              .n_experts = e,
                              .n = f,
                              .k = d,
                              .dtype = cuda::DType::kBF16,
                              .epilogue = cuda::GroupedEpilogue::kGatedAct,
                              .expert_offsets = doff.get(),
                              .a = x.get(),
                              .a_rows = dperm.get(),
                              .w = w1.get(),
                              .out = act.get()},
                             nullptr);
  });
  time_op("grouped fc2+scatter", 2.0 * T * f * d, [&] {
    return cuda::GroupedGemm({.n_rows = T,
                              .n_experts = e,
                              .n = d,
                              .k = f,
                              .dtype = cuda::DType::kBF16,
                              .epilogue = cuda::GroupedEpilogue::kScaleScatter,
                              .expert_offsets = doff.get(),
                              .a = act.get(),
                              .w = w2.get(),
                              .out_rows = dperm.get(),
                              .out = out.get()},
                             nullptr);
  });
  time_op("selective scan", 0, [&] {
    char* bcp = static_cast<char*>(bc.get());
    return cuda::SelectiveScanVarlen({.batch = 1,
                                      .d_inner = di,
                                      .d_state = 16,
                                      .n_slots = 1,
                                      .dtype = cuda::DType::kBF16,
                                      .cu_seqlens = dcu.get(),
                                      .slots = dslot.get(),
                                      .u = u.get(),
                                      .delta = dtv.get(),
                                      .A = A.f32(),
                                      .B = bcp,
                                      .B_stride = 32,
                                      .C = bcp + 32,
                                      .C_stride = 32,
                                      .out = y.get(),
                                      .ssm_state = state.get()},
                                     nullptr);
  });
}

}  // namespace
}  // namespace bms::gpu_test
