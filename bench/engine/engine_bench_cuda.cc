// EngineBench measurements on the CUDA backend (bench/engine/engine_bench.h); CUDA builds only.
// Ceilings first (device copy bandwidth; cuBLASLt bf16 GEMM rate), then per preset: prefill and
// TTFT rows, decode rows per batch (graph path; eager with --eager; bf16 state), and capacity.
// Floors: decode = bytes the step must read / copy bandwidth; prefill and TTFT = the larger of
// FLOPs / GEMM rate and every weight read once / copy bandwidth.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bench/engine/engine_bench.h"
#include "engine/cuda_backend.h"
#include "engine/engine.h"
#include "engine/model_weights.h"
#include "kernels/cuda/device_memory.h"
#include "kernels/cuda/gemm.h"
#include "tools/make_model.h"

namespace bms {
namespace {

using BenchClock = std::chrono::steady_clock;
double MsSince(BenchClock::time_point t) {
  return std::chrono::duration<double, std::milli>(BenchClock::now() - t).count();
}
double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

uint16_t RandomBf16(std::mt19937& rng) {
  const float v = std::uniform_real_distribution<float>(-1.f, 1.f)(rng);
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  return static_cast<uint16_t>(bits >> 16);
}

// Copy bandwidth in bytes/s, counting bytes read + written (1 GiB copies, median of 20).
absl::StatusOr<double> MeasureCopyBandwidth() {
  const size_t bytes = size_t{1} << 30;
  auto a = cuda::DeviceBuffer::Alloc(bytes, "bandwidth src");
  if (!a.ok()) return a.status();
  auto b = cuda::DeviceBuffer::Alloc(bytes, "bandwidth dst");
  if (!b.ok()) return b.status();
  if (auto s = cuda::FillBytes(a->get(), 0x3c, bytes); !s.ok()) return s;
  if (auto s = cuda::DeviceSynchronize(); !s.ok()) return s;
  std::vector<double> ms;
  for (int i = 0; i < 23; ++i) {
    const auto t = BenchClock::now();
    if (auto s = cuda::CopyDeviceToDevice(b->get(), a->get(), bytes); !s.ok()) return s;
    if (auto s = cuda::DeviceSynchronize(); !s.ok()) return s;
    if (i >= 3) ms.push_back(MsSince(t));
  }
  return 2.0 * bytes / (Median(ms) * 1e-3);
}

// bf16 GEMM rate (FLOP/s) of cuBLASLt on random 8192^3 operands (median of 10 batches of 10).
absl::StatusOr<double> MeasureGemmFlops() {
  const int n = 8192;
  const size_t elems = size_t{n} * n;
  std::mt19937 rng(7);
  std::vector<uint16_t> host(elems);
  for (auto& v : host) v = RandomBf16(rng);
  std::vector<cuda::DeviceBuffer> bufs;
  for (const char* what : {"gemm x", "gemm w", "gemm y"}) {
    auto b = cuda::DeviceBuffer::Alloc(elems * 2, what);
    if (!b.ok()) return b.status();
    bufs.push_back(std::move(*b));
  }
  for (int i = 0; i < 2; ++i)
    if (auto s = cuda::CopyToDevice(bufs[i].get(), host.data(), elems * 2); !s.ok()) return s;
  auto gemm = cuda::GemmRunner::Create();
  if (!gemm.ok()) return gemm.status();
  auto stream = cuda::CreateStream();
  if (!stream.ok()) return stream.status();
  const cuda::LinearParams p{.m = n,
                             .n = n,
                             .k = n,
                             .in_dtype = cuda::DType::kBF16,
                             .out_dtype = cuda::DType::kBF16,
                             .x = bufs[0].get(),
                             .w = bufs[1].get(),
                             .y = bufs[2].get()};
  std::vector<double> ms;
  absl::Status st;
  for (int rep = 0; rep < 11 && st.ok(); ++rep) {
    const auto t = BenchClock::now();
    for (int i = 0; i < 10 && st.ok(); ++i) st = (*gemm)->Linear(p, *stream);
    if (st.ok()) st = cuda::SynchronizeStream(*stream);
    if (rep > 0) ms.push_back(MsSince(t) / 10);
  }
  cuda::DestroyStream(*stream);
  if (!st.ok()) return st;
  return 2.0 * n * n * static_cast<double>(n) / (Median(ms) * 1e-3);
}

// Bytes a decode step of `batch` tokens must read (bf16 weights): every non-expert weight, the
// experts a random routing touches (E * (1 - (1 - 1/E)^B) per MoE layer), state read + write,
// and `logits_rows` fp32 logits rows written (decode: one per sequence).
double DecodeBytes(const ModelConfig& c, double batch, size_t state_bytes_per_slot,
                   double logits_rows) {
  const double d = c.d_model, di = c.d_inner(), n = c.d_state, r = c.dt_rank(), E = c.n_experts;
  const double mamba =
      2 * (2 * di * d + (r + 2 * n) * di + di * r + d * di) + 4 * (di * c.d_conv + 3 * di + di * n);
  const double expert = 2.0 * (double{1} * c.fc1_rows() * d + d * c.ffn_hidden_size);
  const double touched = E * (1 - std::pow(1 - 1 / E, batch));
  double bytes = 2.0 * c.vocab_size * d + 4.0 * logits_rows * c.vocab_size;
  for (LayerKind k : c.layers) {
    if (k == LayerKind::kMamba) bytes += mamba;
    if (k == LayerKind::kMoe) bytes += 4 * E * d + touched * expert;
    if (k == LayerKind::kDenseMlp) bytes += expert;
  }
  return bytes + 2.0 * batch * static_cast<double>(state_bytes_per_slot);
}

// Floor of a prefill of `tokens` tokens (one prompt, last-row logits): the larger of its FLOPs
// (2 x active GEMM params per token, head for one row) over the GEMM rate and reading every
// weight the prompt touches once over the copy bandwidth.
double PrefillFloorMs(const ModelConfig& c, int tokens, double bw, double flops) {
  const double head = double{1} * c.vocab_size * c.d_model;
  const double f = 2.0 * tokens * (static_cast<double>(c.ActiveParams()) - head) + 2.0 * head;
  return std::max(f / flops, DecodeBytes(c, tokens, 0, 1) / bw) * 1e3;
}

// Greedy argmax of one logits row (first index on ties).
int32_t ArgMax(const float* row, int n) {
  return static_cast<int32_t>(std::max_element(row, row + n) - row);
}

// One step as a server runs it, with a greedy token per kLast chunk in *tokens: ForwardSampled
// (sampling on the device, only ids copied back), or with --host_sampling the old path: Forward,
// the logits copy, and the argmax on the host.
absl::Status StepAndSample(Backend& b, const StepInput& in, bool host_sampling,
                           std::vector<float>* logits, std::vector<int32_t>* tokens) {
  tokens->clear();
  if (host_sampling) {
    if (auto s = b.Forward(in, logits); !s.ok()) return s;
    const int vocab = b.config().vocab_size;
    for (size_t r = 0; r * vocab < logits->size(); ++r)
      tokens->push_back(ArgMax(logits->data() + r * vocab, vocab));
    return absl::OkStatus();
  }
  static const SamplingParams kGreedy = [] {
    SamplingParams p;
    p.temperature = 0;
    return p;
  }();
  size_t n_rows = 0;
  for (const SeqChunk& c : in.seqs) n_rows += c.logits == LogitsMode::kLast ? 1 : 0;
  std::vector<SampleContext> rows(n_rows, SampleContext{.params = &kGreedy});
  std::vector<SampledToken> sampled;
  if (auto s = b.ForwardSampled(in, rows, &sampled); !s.ok()) return s;
  for (const SampledToken& t : sampled) tokens->push_back(t.token);
  return absl::OkStatus();
}

class PresetBench {
 public:
  PresetBench(const EngineBenchOptions& o, std::FILE* log, EngineBenchReport* report,
              const std::string& preset, const ModelConfig& config, const ModelWeights& w)
      : o_(o), log_(log), report_(report), preset_(preset), c_(config), w_(w) {}

  // Prefill + TTFT rows and decode rows on one backend configuration.
  absl::Status RunBackend(bool graphs, StateDType state, const std::vector<int>& batches,
                          bool with_prefill);
  absl::Status RunCapacity();

 private:
  int Chunk() const {
    return o_.prefill_chunk > 0 ? o_.prefill_chunk : EngineOptions().max_num_batched_tokens;
  }
  // Prefills `len` random tokens into `slot` in chunks (kLast on the last chunk only) and
  // returns the first generated (greedy) token.
  absl::StatusOr<int32_t> Prefill(Backend& b, int slot, int len);
  void Add(EngineBenchRow r) {
    r.preset = preset_;
    r.ratio = r.floor_ms > 0 ? r.ms / r.floor_ms : 0;
    report_->rows.push_back(r);
  }

  const EngineBenchOptions& o_;
  std::FILE* log_;
  EngineBenchReport* report_;
  std::string preset_;
  const ModelConfig& c_;
  const ModelWeights& w_;
  std::mt19937_64 rng_{99};
};

absl::StatusOr<int32_t> PresetBench::Prefill(Backend& b, int slot, int len) {
  std::vector<float> logits;
  std::vector<int32_t> sampled;
  std::vector<int32_t> toks(std::min(len, Chunk()));
  for (int done = 0; done < len;) {
    const int n = std::min(Chunk(), len - done);
    for (int i = 0; i < n; ++i) toks[i] = static_cast<int32_t>(rng_() % c_.vocab_size);
    const SeqChunk seq{.slot = slot,
                       .token_offset = 0,
                       .n_tokens = n,
                       .first_chunk = done == 0,
                       .logits = done + n == len ? LogitsMode::kLast : LogitsMode::kNone};
    const std::vector<SeqChunk> seqs = {seq};
    if (auto s = StepAndSample(b, {std::span<const int32_t>(toks.data(), n), seqs},
                               o_.host_sampling, &logits, &sampled);
        !s.ok())
      return s;
    done += n;
  }
  if (sampled.size() != 1)
    return absl::InternalError(absl::StrCat("prefill sampled ", sampled.size(), " tokens, not 1"));
  return sampled[0];
}

absl::Status PresetBench::RunBackend(bool graphs, StateDType state, const std::vector<int>& batches,
                                     bool with_prefill) {
  const bool bf16 = state == StateDType::kBF16;
  const char* mode = graphs ? "graph" : "eager";
  const char* state_name = bf16 ? "bf16" : "f32";
  BackendOptions bo;
  bo.num_slots =
      std::max(1, batches.empty() ? 1 : *std::max_element(batches.begin(), batches.end()));
  bo.state_dtype = state;
  bo.cuda_graphs = graphs;
  bo.device_sampling = !o_.host_sampling;
  auto backend = CreateCudaBackend(w_, bo);
  if (!backend.ok()) return backend.status();
  Backend& b = **backend;
  auto* cb = dynamic_cast<CudaBackend*>(&b);
  std::vector<float> logits;
  const double bw = report_->copy_bytes_per_s, flops = report_->gemm_flop_per_s;
  // Prefill and TTFT first: a prefill that grows the activation workspace drops the graphs.
  if (with_prefill) {
    for (int len : o_.prompts) {
      std::vector<double> ms;
      for (int i = 0; i < 4; ++i) {
        const bool profiled = o_.profile_steps && i == 3;
        if (profiled) cuda::ProfilerStart();
        const auto t = BenchClock::now();
        const absl::StatusOr<int32_t> st = Prefill(b, 0, len);
        if (profiled) cuda::ProfilerStop();
        if (!st.ok())
          return absl::Status(st.status().code(),
                              absl::StrCat("prefill ", len, ": ", st.status().message()));
        if (i > 0) ms.push_back(MsSince(t));
      }
      const double med = Median(ms);
      Add({.kind = "prefill",
           .mode = "eager",
           .state = state_name,
           .size = len,
           .ms = med,
           .tokens_per_s = len / (med * 1e-3),
           .floor_ms = PrefillFloorMs(c_, len, bw, flops)});
    }
    for (int len : o_.ttft_prompts) {
      std::vector<double> ms;
      for (int i = 0; i < 6; ++i) {
        const auto t = BenchClock::now();
        // The first token is on the host when Prefill returns (sampled on the device).
        const absl::StatusOr<int32_t> st = Prefill(b, 0, len);
        if (!st.ok())
          return absl::Status(st.status().code(),
                              absl::StrCat("ttft ", len, ": ", st.status().message()));
        if (i > 0) ms.push_back(MsSince(t));
      }
      const double med = Median(ms);
      Add({.kind = "ttft",
           .mode = "eager",
           .state = state_name,
           .size = len,
           .ms = med,
           .tokens_per_s = len / (med * 1e-3),
           .floor_ms = PrefillFloorMs(c_, len, bw, flops)});
    }
  }
  for (int batch : batches) {
    std::vector<int> slots(bo.num_slots);
    std::iota(slots.begin(), slots.end(), 0);
    std::shuffle(slots.begin(), slots.end(), rng_);
    std::vector<SeqChunk> seqs;
    for (int i = 0; i < batch; ++i)
      seqs.push_back({.slot = slots[i], .token_offset = i, .n_tokens = 1, .first_chunk = false});
    std::vector<int32_t> toks(batch), sampled;
    std::vector<double> ms, host;
    const int steps = batch >= 512 ? std::max(5, o_.steps / 2) : o_.steps;
    for (int i = 0; i < steps + 3; ++i) {
      for (auto& t : toks) t = static_cast<int32_t>(rng_() % c_.vocab_size);
      const bool profiled = o_.profile_steps && !graphs && i == steps + 2;
      if (profiled) cuda::ProfilerStart();
      const auto t = BenchClock::now();
      const absl::Status st = StepAndSample(b, {toks, seqs}, o_.host_sampling, &logits, &sampled);
      if (profiled) cuda::ProfilerStop();
      if (!st.ok())
        return absl::Status(st.code(), absl::StrCat("decode batch ", batch, ": ", st.message()));
      if (i >= 3) {  // the first steps of a bucket capture its graph
        ms.push_back(MsSince(t));
        host.push_back(cb->last_step_host_us());
      }
    }
    const double med = Median(ms);
    Add({.kind = "decode",
         .mode = mode,
         .state = state_name,
         .size = batch,
         .ms = med,
         .tokens_per_s = batch / (med * 1e-3),
         .host_us = Median(host),
         .floor_ms = DecodeBytes(c_, batch, b.state_bytes_per_slot(), batch) / bw * 1e3});
    std::fprintf(log_, "%s decode %s %s batch %d: %.3f ms/step\n", preset_.c_str(), mode,
                 state_name, batch, med);
  }
  std::fprintf(log_, "%s %s (%s state): graphs captured %d, replays %lld\n", preset_.c_str(), mode,
               state_name, cb->graphs_captured(), static_cast<long long>(cb->graph_replays()));
  return absl::OkStatus();
}

absl::Status PresetBench::RunCapacity() {
  BackendOptions bo;
  bo.num_slots = 0;  // as many as fit next to the weights under the memory fraction
  bo.state_dtype = StateDType::kF32;
  bo.cuda_graphs = false;
  bo.device_sampling = !o_.host_sampling;
  bo.gpu_memory_fraction = o_.gpu_memory_fraction;
  size_t free0 = 0, total = 0;
  if (auto s = cuda::MemInfo(&free0, &total); !s.ok()) return s;
  auto backend = CreateCudaBackend(w_, bo);
  if (!backend.ok()) return backend.status();
  Backend& b = **backend;
  auto* cb = dynamic_cast<CudaBackend*>(&b);
  CapacityResult r;
  r.preset = preset_;
  r.slots = b.num_slots();
  r.state_bytes_per_slot = b.state_bytes_per_slot();
  r.state_pool_bytes = cb->state_pool_bytes();
  r.weight_bytes = cb->weight_bytes();
  r.ideal_slots =
      (o_.gpu_memory_fraction * static_cast<double>(total) - static_cast<double>(r.weight_bytes)) /
      static_cast<double>(r.state_bytes_per_slot);
  std::fprintf(log_, "%s capacity: %d slots x %zu bytes = %.2f GiB of state\n", preset_.c_str(),
               r.slots, r.state_bytes_per_slot, r.state_pool_bytes / 1073741824.0);
  auto used = [&]() -> absl::StatusOr<size_t> {
    if (auto s = cuda::DeviceSynchronize(); !s.ok()) return s;
    size_t f = 0, t = 0;
    if (auto s = cuda::MemInfo(&f, &t); !s.ok()) return s;
    return t - f;
  };
  std::vector<float> logits;
  std::vector<int32_t> sampled;
  // Warm-up: one full chunk in the last slot sizes the activation workspace for the token
  // budget (it depends on the chunk size, never on the context length).
  if (auto s = Prefill(b, r.slots - 1, Chunk()); !s.ok()) return s.status();
  auto u0 = used();
  if (!u0.ok()) return u0.status();
  r.used_before = *u0;
  for (int ctx : o_.capacity_contexts) {
    const auto t = BenchClock::now();
    absl::StatusOr<int32_t> first = Prefill(b, 0, ctx);
    if (!first.ok())
      return absl::Status(first.status().code(),
                          absl::StrCat("capacity context ", ctx, ": ", first.status().message()));
    r.context_prefill_s.push_back(MsSince(t) / 1e3);
    // Then a few greedy decode steps continuing that context.
    std::vector<int32_t> tok = {*first};
    const std::vector<SeqChunk> seqs = {
        {.slot = 0, .token_offset = 0, .n_tokens = 1, .first_chunk = false}};
    for (int i = 0; i < 4; ++i) {
      if (auto s = StepAndSample(b, {tok, seqs}, o_.host_sampling, &logits, &sampled); !s.ok())
        return s;
      tok = sampled;
    }
    auto u = used();
    if (!u.ok()) return u.status();
    r.contexts.push_back(ctx);
    r.used_bytes.push_back(*u);
    std::fprintf(log_, "%s capacity: %d-token context in %.2f s, %.3f GiB in use\n",
                 preset_.c_str(), ctx, r.context_prefill_s.back(), *u / 1073741824.0);
  }
  report_->rows.push_back({.preset = preset_,
                           .kind = "capacity",
                           .mode = "eager",
                           .state = "f32",
                           .size = r.slots,
                           .ratio = r.slots / std::max(1.0, r.ideal_slots)});
  report_->capacity.push_back(r);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<EngineBenchReport> RunEngineBench(const EngineBenchOptions& o, std::FILE* log) {
  std::vector<ModelConfig> configs;
  for (const std::string& p : o.presets) {
    auto c = ModelConfig::Preset(p);
    if (!c.ok())
      return absl::InvalidArgumentError(absl::StrCat("flag --presets: ", c.status().message()));
    configs.push_back(*c);
  }
  std::string why;
  if (!CudaDeviceAvailable(&why))
    return absl::FailedPreconditionError(absl::StrCat("no usable GPU: ", why));
  EngineBenchReport report;
  report.device = cuda::DeviceDescription();
  auto bw = MeasureCopyBandwidth();
  if (!bw.ok()) return bw.status();
  auto flops = MeasureGemmFlops();
  if (!flops.ok()) return flops.status();
  report.copy_bytes_per_s = *bw;
  report.gemm_flop_per_s = *flops;
  std::fprintf(log, "device %s: copy %.0f GB/s (read+write), bf16 GEMM %.0f TFLOP/s\n",
               report.device.c_str(), *bw / 1e9, *flops / 1e12);
  for (size_t i = 0; i < configs.size(); ++i) {
    const std::string& preset = o.presets[i];
    auto record = [&](const char* what, const absl::Status& s) {
      if (s.ok()) return;
      report.errors.push_back(absl::StrCat(preset, " ", what, ": ", s.ToString()));
      std::fprintf(log, "ERROR %s\n", report.errors.back().c_str());
    };
    const auto tw = BenchClock::now();
    const ModelWeights w = MakeRandomWeights(configs[i], o.seed);
    std::fprintf(log, "random %s weights (seed %llu): %.1f s\n", preset.c_str(),
                 static_cast<unsigned long long>(o.seed), MsSince(tw) / 1e3);
    if (!o.save_weights_dir.empty()) {
      const auto ts = BenchClock::now();
      MakeModelOptions mo;
      mo.seed = o.seed;
      mo.dtype = DType::kBF16;
      const std::string dir = absl::StrCat(o.save_weights_dir, "/", preset);
      record("save_weights", MakeModel(configs[i], mo, dir));
      std::fprintf(log, "wrote %s (bf16 safetensors): %.1f s\n", dir.c_str(), MsSince(ts) / 1e3);
    }
    PresetBench pb(o, log, &report, preset, configs[i], w);
    record("graph f32", pb.RunBackend(true, StateDType::kF32, o.batches, true));
    if (o.eager) record("eager f32", pb.RunBackend(false, StateDType::kF32, o.batches, false));
    if (!o.bf16_state_batches.empty())
      record("graph bf16", pb.RunBackend(true, StateDType::kBF16, o.bf16_state_batches, false));
    if (o.capacity) record("capacity", pb.RunCapacity());
  }
  return report;
}

}  // namespace bms
