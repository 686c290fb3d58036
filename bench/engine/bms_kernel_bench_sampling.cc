// bms_kernel_bench_sampling: GPU micro-benchmark of the device sampling kernel
// (kernels/cuda/sampling.h SampleRows) on random fp32 logits rows of the model vocabulary
// (50304), for several batch sizes and parameter mixes (greedy, greedy with 20 logprobs,
// temperature only, temperature + min_p + top_k + top_p with 5 logprobs, penalties + bias).
// Times each launch with CUDA events (median of --reps) and prints the time, the time per row
// and the logits read rate (rows * vocab * 4 bytes / time: a greedy row reads its row once).
// No gRPC; links bms_engine (for the packer) and bms_kernels.
//   bms_kernel_bench_sampling [--rows=1,64,256,1024] [--reps=20]
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "bench/engine/kernel_bench_util.h"
#include "engine/cuda_sampling.h"
#include "kernels/cuda/device_memory.h"
#include "kernels/cuda/event_timer.h"
#include "kernels/cuda/sampling.h"

namespace bms {
namespace {

constexpr int kVocab = 50304;

struct Mix {
  const char* name;
  SamplingParams p;
  bool counts;
};

std::vector<Mix> Mixes() {
  std::vector<Mix> m;
  SamplingParams p;
  p.temperature = 0;
  m.push_back({"greedy", p, false});
  p.logprobs = 20;
  m.push_back({"greedy+lp20", p, false});
  p = SamplingParams();
  p.temperature = 1.0f;
  m.push_back({"T=1", p, false});
  p.temperature = 0.8f;
  p.min_p = 0.05f;
  p.top_k = 50;
  p.top_p = 0.9f;
  p.logprobs = 5;
  m.push_back({"T+minp+topk+topp+lp5", p, false});
  p = SamplingParams();
  p.temperature = 0.7f;
  p.top_p = 0.95f;
  p.repetition_penalty = 1.1f;
  p.frequency_penalty = 0.3f;
  p.logit_bias = {{11, 2.f}, {42, -3.f}};
  m.push_back({"T+topp+penalties+bias", p, true});
  return m;
}

int Run(const std::vector<int>& rows_list, int reps) {
  std::mt19937_64 rng(7);
  std::normal_distribution<float> normal(0.f, 3.f);
  const int max_rows = *std::max_element(rows_list.begin(), rows_list.end());
  std::vector<float> logits(static_cast<size_t>(max_rows) * kVocab);
  for (float& x : logits) x = normal(rng);
  auto d_logits = cuda::DeviceBuffer::Alloc(logits.size() * 4, "logits");
  auto d_out = cuda::DeviceBuffer::Alloc(
      static_cast<size_t>(max_rows) * (4 + sizeof(cuda::SampleRowLogprobs)), "out");
  if (!d_logits.ok() || !d_out.ok()) return 1;
  BENCH_CHECK(cuda::CopyToDevice(d_logits->get(), logits.data(), logits.size() * 4));
  auto stream = cuda::CreateStream();
  BENCH_CHECK(stream.status());
  TokenCounts counts;
  for (int k = 0; k < 64; ++k) counts[static_cast<int32_t>(rng() % kVocab)] = 1 + k % 3;
  std::printf("%-24s %6s %10s %10s %10s\n", "mix", "rows", "us", "us/row", "GB/s");
  for (const Mix& mix : Mixes()) {
    for (int rows : rows_list) {
      std::vector<SampleContext> ctx(rows);
      for (int r = 0; r < rows; ++r)
        ctx[r] = SampleContext{.params = &mix.p,
                               .counts = mix.counts ? &counts : nullptr,
                               .num_generated = 5,
                               .seed = 99,
                               .choice = r};
      PackedSampling packed;
      PackSampleRows(ctx, rows, kVocab, &packed);
      std::vector<cuda::SampleEntry> block(packed.rows.size() * kSampleRowUnits +
                                           packed.entries.size());
      std::memcpy(block.data(), packed.rows.data(), packed.rows.size() * sizeof(packed.rows[0]));
      std::copy(packed.entries.begin(), packed.entries.end(),
                block.begin() + packed.rows.size() * kSampleRowUnits);
      auto d_block = cuda::DeviceBuffer::Alloc(block.size() * sizeof(block[0]), "params");
      if (!d_block.ok()) return 1;
      BENCH_CHECK(cuda::CopyToDevice(d_block->get(), block.data(), d_block->size()));
      cuda::SampleParams p;
      p.n_rows = rows;
      p.vocab_size = kVocab;
      p.logits = d_logits->as<float>();
      p.rows = d_block->as<const cuda::SampleRowParams>();
      p.entries = d_block->as<const cuda::SampleEntry>();
      p.tokens = d_out->as<int32_t>();
      p.logprobs = reinterpret_cast<cuda::SampleRowLogprobs*>(d_out->as<int32_t>() + max_rows);
      auto us =
          cuda::TimeEachCall([&](int) { return cuda::SampleRows(p, *stream); }, reps + 2, *stream);
      BENCH_CHECK(us.status());
      std::vector<float> t(us->begin() + 2, us->end());  // the first calls warm up
      std::sort(t.begin(), t.end());
      const double med = t[t.size() / 2];
      std::printf("%-24s %6d %10.1f %10.2f %10.0f\n", mix.name, rows, med, med / rows,
                  static_cast<double>(rows) * kVocab * 4 / (med * 1e-6) / 1e9);
    }
  }
  cuda::DestroyStream(*stream);
  return 0;
}

}  // namespace
}  // namespace bms

int main(int argc, char** argv) {
  std::vector<int> rows = {1, 64, 256, 1024};
  int reps = 20;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("--rows=", 0) == 0) {
      rows.clear();
      for (auto s : absl::StrSplit(a.substr(7), ',')) {
        int v = 0;
        if (!absl::SimpleAtoi(s, &v) || v < 1) {
          std::fprintf(stderr, "--rows: bad value '%s'\n", std::string(s).c_str());
          return 2;
        }
        rows.push_back(v);
      }
    } else if (a.rfind("--reps=", 0) == 0) {
      if (!absl::SimpleAtoi(a.substr(7), &reps) || reps < 1) {
        std::fprintf(stderr, "--reps must be >= 1\n");
        return 2;
      }
    } else {
      std::fprintf(stderr, "usage: %s [--rows=1,64,256,1024] [--reps=20]\n", argv[0]);
      return 2;
    }
  }
  if (rows.empty()) {
    std::fprintf(stderr, "--rows must not be empty\n");
    return 2;
  }
  return bms::Run(rows, reps);
}
