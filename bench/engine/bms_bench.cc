// bms_bench: engine-level GPU benchmark of the CUDA backend (no HTTP, no gRPC). Measures its own
// ceilings first (device-to-device copy bandwidth; cuBLASLt bf16 GEMM FLOP/s), then for a preset
// with random bf16 weights: decode ms/step and tokens/s per batch size, eager and through CUDA
// graphs, with the host time per step (packing + launches, before the final GPU wait); prefill
// tokens/s per prompt length. Each row prints its floor (decode: bytes the step must read over the
// measured bandwidth; prefill: FLOPs over the measured GEMM rate) and measured / floor.
//
//   bms_bench [--preset=blackmamba-2.8b] [--batches=1,8,32,64,128,256,1024]
//             [--prompts=512,2048] [--bf16_state_batches=256,1024] [--steps=20] [--json=PATH]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "engine/cuda_backend.h"
#include "engine/model_weights.h"
#include "kernels/cuda/device_memory.h"
#include "kernels/cuda/gemm.h"
#include "nlohmann/json.hpp"

namespace bms {
namespace {

using Clock = std::chrono::steady_clock;
double MsSince(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}
double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct Flags {
  std::string preset = "blackmamba-2.8b";
  std::vector<int> batches = {1, 8, 32, 64, 128, 256, 1024};
  std::vector<int> prompts = {512, 2048};
  std::vector<int> bf16_state_batches = {256, 1024};
  int steps = 20;
  std::string json;
  // Wrap the last timed step of every eager configuration in ProfilerStart/Stop, so
  // `ncu --profile-from-start off` sees exactly one step of each.
  bool profile_steps = false;
};

bool ParseInts(const std::string& s, std::vector<int>* out) {
  out->clear();
  for (absl::string_view p : absl::StrSplit(s, ',', absl::SkipEmpty())) {
    int v = 0;
    if (!absl::SimpleAtoi(p, &v) || v <= 0) return false;
    out->push_back(v);
  }
  return true;
}

bool ParseFlags(int argc, char** argv, Flags* f) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const size_t eq = a.find('=');
    const std::string key = a.substr(0, eq), val = eq == std::string::npos ? "" : a.substr(eq + 1);
    bool ok = true;
    if (key == "--preset")
      f->preset = val;
    else if (key == "--batches")
      ok = ParseInts(val, &f->batches);
    else if (key == "--prompts")
      ok = ParseInts(val, &f->prompts);
    else if (key == "--bf16_state_batches")
      ok = ParseInts(val, &f->bf16_state_batches);
    else if (key == "--steps")
      ok = absl::SimpleAtoi(val, &f->steps) && f->steps > 0;
    else if (key == "--json")
      f->json = val;
    else if (key == "--profile_steps")
      f->profile_steps = val.empty() || val == "1" || val == "true";
    else
      ok = false;
    if (!ok) {
      std::fprintf(stderr, "bms_bench: bad flag '%s'\n", a.c_str());
      return false;
    }
  }
  return true;
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
    const auto t = Clock::now();
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
  for (int rep = 0; rep < 11; ++rep) {
    const auto t = Clock::now();
    for (int i = 0; i < 10; ++i)
      if (auto s = (*gemm)->Linear(p, *stream); !s.ok()) return s;
    if (auto s = cuda::SynchronizeStream(*stream); !s.ok()) return s;
    if (rep > 0) ms.push_back(MsSince(t) / 10);
  }
  cuda::DestroyStream(*stream);
  return 2.0 * n * n * static_cast<double>(n) / (Median(ms) * 1e-3);
}

// Bytes a decode step of `batch` tokens must read (bf16 weights): every non-expert weight, the
// experts a random routing touches (E * (1 - (1 - 1/E)^B) per MoE layer), state read + write,
// and the logits written.
double DecodeBytes(const ModelConfig& c, int batch, size_t state_bytes_per_slot) {
  const double d = c.d_model, di = c.d_inner(), n = c.d_state, r = c.dt_rank(), E = c.n_experts;
  const double mamba =
      2 * (2 * di * d + (r + 2 * n) * di + di * r + d * di) + 4 * (di * c.d_conv + 3 * di + di * n);
  const double expert = 2.0 * (double{1} * c.fc1_rows() * d + d * c.ffn_hidden_size);
  const double touched = E * (1 - std::pow(1 - 1 / E, batch));
  double bytes = 2.0 * c.vocab_size * d + 4.0 * batch * c.vocab_size;
  for (LayerKind k : c.layers) {
    if (k == LayerKind::kMamba) bytes += mamba;
    if (k == LayerKind::kMoe) bytes += 4 * E * d + touched * expert;
    if (k == LayerKind::kDenseMlp) bytes += expert;
  }
  return bytes + 2.0 * batch * static_cast<double>(state_bytes_per_slot);
}

// FLOPs of a prefill of `tokens` tokens: 2 * active GEMM params per token, head for one row.
double PrefillFlops(const ModelConfig& c, int tokens) {
  const double head = double{1} * c.vocab_size * c.d_model;
  return 2.0 * tokens * (static_cast<double>(c.ActiveParams()) - head) + 2.0 * head;
}

struct Row {
  std::string kind, mode, state;
  int size = 0;
  double ms = 0, tok_s = 0, host_us = 0, floor_ms = 0;
};

int Run(const Flags& f) {
  auto config = ModelConfig::Preset(f.preset);
  if (!config.ok()) {
    std::fprintf(stderr, "bms_bench: %s\n", config.status().ToString().c_str());
    return 2;
  }
  std::string why;
  if (!CudaDeviceAvailable(&why)) {
    std::fprintf(stderr, "bms_bench: no GPU: %s\n", why.c_str());
    return 2;
  }
  const std::string device = cuda::DeviceDescription();
  auto bw = MeasureCopyBandwidth();
  auto flops = MeasureGemmFlops();
  if (!bw.ok() || !flops.ok()) {
    std::fprintf(stderr, "bms_bench: ceilings: %s %s\n", bw.status().ToString().c_str(),
                 flops.status().ToString().c_str());
    return 1;
  }
  std::printf("device %s: copy %.0f GB/s (read+write), bf16 GEMM %.0f TFLOP/s\n", device.c_str(),
              *bw / 1e9, *flops / 1e12);
  const auto tw = Clock::now();
  const ModelWeights w = MakeRandomWeights(*config, 1234);
  std::printf("random %s weights: %.1f s\n", f.preset.c_str(), MsSince(tw) / 1e3);
  const int max_batch = *std::max_element(f.batches.begin(), f.batches.end());
  std::vector<Row> rows;
  std::mt19937_64 rng(99);

  struct Mode {
    const char* name;
    bool graphs;
    StateDType state;
  };
  const Mode modes[] = {{"eager", false, StateDType::kF32},
                        {"graph", true, StateDType::kF32},
                        {"graph", true, StateDType::kBF16}};
  for (const Mode& m : modes) {
    const bool bf16_state = m.state == StateDType::kBF16;
    std::vector<int> batches = bf16_state ? f.bf16_state_batches : f.batches;
    if (batches.empty()) continue;
    BackendOptions o;
    o.num_slots = std::max(max_batch, *std::max_element(batches.begin(), batches.end()));
    o.state_dtype = m.state;
    o.cuda_graphs = m.graphs;
    auto backend = CreateCudaBackend(w, o);
    if (!backend.ok()) {
      std::fprintf(stderr, "bms_bench: %s\n", backend.status().ToString().c_str());
      return 1;
    }
    auto* cb = dynamic_cast<CudaBackend*>(backend->get());
    std::vector<float> logits;
    // Prefill (eager in every mode): one prompt in slot 0, last-row logits.
    if (!m.graphs)
      for (int len : f.prompts) {
        std::vector<int32_t> toks(len);
        for (auto& t : toks) t = static_cast<int32_t>(rng() % config->vocab_size);
        const std::vector<SeqChunk> seqs = {{.slot = 0, .token_offset = 0, .n_tokens = len}};
        std::vector<double> ms;
        for (int i = 0; i < 6; ++i) {
          const bool profiled = f.profile_steps && i == 5;
          if (profiled) cuda::ProfilerStart();
          const auto t = Clock::now();
          const absl::Status st = (*backend)->Forward({toks, seqs}, &logits);
          if (profiled) cuda::ProfilerStop();
          if (auto s = st; !s.ok()) {
            std::fprintf(stderr, "bms_bench: prefill: %s\n", s.ToString().c_str());
            return 1;
          }
          if (i > 0) ms.push_back(MsSince(t));
        }
        const double med = Median(ms);
        rows.push_back({"prefill", m.name, "f32", len, med, len / (med * 1e-3),
                        cb->last_step_host_us(), PrefillFlops(*config, len) / *flops * 1e3});
      }
    for (int b : batches) {
      std::vector<int> slots(o.num_slots);
      std::iota(slots.begin(), slots.end(), 0);
      std::shuffle(slots.begin(), slots.end(), rng);
      std::vector<SeqChunk> seqs;
      for (int i = 0; i < b; ++i)
        seqs.push_back({.slot = slots[i], .token_offset = i, .n_tokens = 1, .first_chunk = false});
      std::vector<int32_t> toks(b);
      std::vector<double> ms, host;
      const int steps = b >= 512 ? std::max(5, f.steps / 2) : f.steps;
      for (int i = 0; i < steps + 3; ++i) {
        for (auto& t : toks) t = static_cast<int32_t>(rng() % config->vocab_size);
        const bool profiled = f.profile_steps && !m.graphs && i == steps + 2;
        if (profiled) cuda::ProfilerStart();
        const auto t = Clock::now();
        const absl::Status st = (*backend)->Forward({toks, seqs}, &logits);
        if (profiled) cuda::ProfilerStop();
        if (auto s = st; !s.ok()) {
          std::fprintf(stderr, "bms_bench: decode: %s\n", s.ToString().c_str());
          return 1;
        }
        if (i >= 3) {  // the first steps of a bucket capture its graph
          ms.push_back(MsSince(t));
          host.push_back(cb->last_step_host_us());
        }
      }
      const double med = Median(ms);
      rows.push_back({"decode", m.name, bf16_state ? "bf16" : "f32", b, med, b / (med * 1e-3),
                      Median(host),
                      DecodeBytes(*config, b, (*backend)->state_bytes_per_slot()) / *bw * 1e3});
    }
    std::printf("%s (%s state): graphs captured %d, replays %lld\n", m.name,
                bf16_state ? "bf16" : "f32", cb->graphs_captured(),
                static_cast<long long>(cb->graph_replays()));
  }

  nlohmann::json j = {{"device", device},
                      {"preset", f.preset},
                      {"copy_bytes_per_s", *bw},
                      {"gemm_bf16_flop_per_s", *flops},
                      {"rows", nlohmann::json::array()}};
  std::printf("\n%-8s %-6s %-5s %6s %10s %12s %9s %9s %6s\n", "kind", "mode", "state", "size", "ms",
              "tok/s", "host_us", "floor_ms", "x_flr");
  for (const Row& r : rows) {
    std::printf("%-8s %-6s %-5s %6d %10.3f %12.0f %9.1f %9.3f %6.2f\n", r.kind.c_str(),
                r.mode.c_str(), r.state.c_str(), r.size, r.ms, r.tok_s, r.host_us, r.floor_ms,
                r.ms / r.floor_ms);
    j["rows"].push_back({{"kind", r.kind},
                         {"mode", r.mode},
                         {"state", r.state},
                         {"size", r.size},
                         {"ms", r.ms},
                         {"tokens_per_s", r.tok_s},
                         {"host_us", r.host_us},
                         {"floor_ms", r.floor_ms},
                         {"ratio", r.ms / r.floor_ms}});
  }
  if (!f.json.empty()) {
    std::ofstream out(f.json);
    out << j.dump(2) << "\n";
    if (!out) {
      std::fprintf(stderr, "bms_bench: cannot write --json=%s\n", f.json.c_str());
      return 1;
    }
  }
  return 0;
}

}  // namespace
}  // namespace bms

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  bms::Flags f;
  if (!bms::ParseFlags(argc, argv, &f)) return 2;
  return bms::Run(f);
}
