// bms_kernel_bench_moe: GPU micro-benchmark of the grouped expert GEMM (kernels/cuda/ops.h
// GroupedGemm) at the blackmamba-2.8b MoE shapes (d_model 1472, ffn 3872, 8 experts, gated GELU
// fc1, fc2 with routing scale + un-permute), bf16. For each token count M (random routing) and
// each kernel variant (plus "heuristic": the fixed size rule, "auto": the timing tuner) it times
// fc1 and fc2 with CUDA events (median of --reps calls, rotating over --sets weight sets so no call
// finds its weights in L2) and prints the bytes floor (touched experts' weights + activations at
// the measured copy bandwidth), the FLOP floor (at the measured cuBLASLt bf16 rate), the measured
// time and floor / measured. Each variant's fc2 output is compared with the mma64 variant's (rel.
// error), and last, per M and fc, the best Hopper wgmma variant (wg*) against the best other
// variant. No gRPC; links bms_kernels only.
//   bms_kernel_bench_moe [--rows=1,8,64,256,1024,2048] [--reps=20] [--sets=4] [--variants=all]
//                        [--tight_grid=0|1]
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "bench/engine/kernel_bench_util.h"
#include "kernels/cuda/device_memory.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/ops.h"

namespace bms {
namespace {

using cuda::DeviceBuffer;
using cuda::DType;
using kernel_bench::FromBf16;
using kernel_bench::Median;
using kernel_bench::RandomBf16;
using kernel_bench::ToBf16;

constexpr int kD = 1472, kF = 3872, kE = 8;

int Main(int argc, char** argv) {
  std::vector<int> rows_list = {1, 8, 64, 256, 1024, 2048};
  int reps = 20, sets = 4;
  std::string variants_flag = "all";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](const char* name) -> const char* {
      const size_t len = std::strlen(name);
      return a.compare(0, len, name) == 0 ? a.c_str() + len : nullptr;
    };
    if (const char* v = value("--rows=")) {
      rows_list.clear();
      for (absl::string_view part : absl::StrSplit(v, ',')) {
        int r = 0;
        if (!absl::SimpleAtoi(part, &r) || r <= 0) {
          std::fprintf(stderr, "--rows: bad value '%s'\n", std::string(part).c_str());
          return 2;
        }
        rows_list.push_back(r);
      }
    } else if (const char* v = value("--reps=")) {
      if (!absl::SimpleAtoi(v, &reps) || reps <= 0) return std::fprintf(stderr, "--reps: bad\n"), 2;
    } else if (const char* v = value("--sets=")) {
      if (!absl::SimpleAtoi(v, &sets) || sets <= 0) return std::fprintf(stderr, "--sets: bad\n"), 2;
    } else if (const char* v = value("--variants=")) {
      variants_flag = v;
    } else if (const char* v = value("--tight_grid=")) {
      cuda::SetGroupedGemmTightGrid(std::strcmp(v, "1") == 0);
    } else {
      std::fprintf(stderr,
                   "usage: bms_kernel_bench_moe [--rows=1,8,...] [--reps=20] [--sets=4] "
                   "[--variants=all|name,name,...] [--tight_grid=0|1]\nunknown flag '%s'\n",
                   a.c_str());
      return 2;
    }
  }
  std::string why;
  if (!cuda::DeviceAvailable(&why)) {
    std::fprintf(stderr, "no CUDA device: %s\n", why.c_str());
    return 1;
  }
  std::printf("device: %s, tight grid %d\n", cuda::DeviceDescription().c_str(),
              cuda::GroupedGemmTightGrid() ? 1 : 0);
  std::mt19937_64 rng(1234);

  // Measured copy bandwidth (read + write of 1 GiB) and cuBLASLt bf16 rate (8192^3).
  double bw = 0, peak = 0;
  {
    const size_t bytes = size_t{1} << 30;
    auto src = DeviceBuffer::Alloc(bytes, "bw src"), dst = DeviceBuffer::Alloc(bytes, "bw dst");
    BENCH_CHECK(src.status());
    BENCH_CHECK(dst.status());
    BENCH_CHECK(cuda::FillBytes(src->get(), 1, bytes));
    auto t = cuda::TimeOnStream(
        [&] { return cuda::CopyDeviceToDevice(dst->get(), src->get(), bytes); }, 7, nullptr);
    BENCH_CHECK(t.status());
    bw = 2.0 * bytes / (Median(*t) * 1e-6);
    auto gemm = cuda::GemmRunner::Create();
    BENCH_CHECK(gemm.status());
    const int n = 8192;
    auto x = RandomBf16(size_t{n} * n, 1.f, rng), w = RandomBf16(size_t{n} * n, 1.f, rng);
    auto y = DeviceBuffer::Alloc(size_t{n} * n * 2, "y");
    BENCH_CHECK(x.status());
    BENCH_CHECK(w.status());
    BENCH_CHECK(y.status());
    const cuda::LinearParams lp{.m = n,
                                .n = n,
                                .k = n,
                                .in_dtype = DType::kBF16,
                                .out_dtype = DType::kBF16,
                                .x = x->get(),
                                .w = w->get(),
                                .y = y->get()};
    auto tg = cuda::TimeOnStream([&] { return (*gemm)->Linear(lp, nullptr); }, 7, nullptr);
    BENCH_CHECK(tg.status());
    peak = 2.0 * n * n * double(n) / (Median(*tg) * 1e-6);
  }
  std::printf("measured copy bandwidth %.2f TB/s, cuBLASLt bf16 8192^3 %.0f TFLOP/s\n", bw / 1e12,
              peak / 1e12);

  // Weight sets: fc1 [E, 2F, D], fc2 [E, D, F].
  const size_t fc1_elems = size_t{kE} * 2 * kF * kD, fc2_elems = size_t{kE} * kD * kF;
  std::vector<DeviceBuffer> fc1, fc2;
  for (int s = 0; s < sets; ++s) {
    auto a = RandomBf16(fc1_elems, 1.f / std::sqrt(float(kD)), rng);
    auto b = RandomBf16(fc2_elems, 1.f / std::sqrt(float(kF)), rng);
    BENCH_CHECK(a.status());
    BENCH_CHECK(b.status());
    fc1.push_back(std::move(*a));
    fc2.push_back(std::move(*b));
  }

  std::vector<int> variants;
  for (int v = 0; v < cuda::GroupedGemmVariantCount(); ++v) {
    const std::string name = cuda::GroupedGemmVariantName(v);
    if (variants_flag == "all" ||
        ("," + variants_flag + ",").find("," + name + ",") != std::string::npos)
      variants.push_back(v);
  }
  constexpr int kAuto = -2, kHeuristic = -1;
  variants.push_back(kHeuristic);
  variants.push_back(kAuto);
  cuda::GroupedGemmTuner tuner(/*timing=*/true);

  // Per (M, fc): the best Hopper wgmma variant ("wg*") against the best of the others.
  struct Best {
    int m = 0, fc = 0;
    double wg_us = 0, other_us = 0, flop = 0;
    std::string wg, other;
  };
  std::vector<Best> best;
  std::printf("\n%6s %4s %-11s %9s %9s %9s %7s %7s %7s %8s\n", "M", "fc", "variant", "us",
              "bytes_us", "flop_us", "TB/s", "TFLOP/s", "floor%", "err");
  for (const int m : rows_list) {
    const kernel_bench::RandomRouting routing(m, kE, rng);
    const std::vector<int32_t>&expert = routing.expert, &offsets = routing.offsets,
          &perm = routing.perm;
    const int touched = routing.touched;
    auto d_offsets = DeviceBuffer::Alloc((kE + 1) * 4, "offsets");
    auto d_perm = DeviceBuffer::Alloc(size_t(m) * 4, "perm");
    auto d_scale = DeviceBuffer::Alloc(size_t(m) * 4, "scale");
    auto x = RandomBf16(size_t(m) * kD, 1.f, rng);
    auto act = DeviceBuffer::Alloc(size_t(m) * kF * 2, "act");
    auto out = DeviceBuffer::Alloc(size_t(m) * kD * 2, "out");
    BENCH_CHECK(d_offsets.status());
    BENCH_CHECK(d_perm.status());
    BENCH_CHECK(d_scale.status());
    BENCH_CHECK(x.status());
    BENCH_CHECK(act.status());
    BENCH_CHECK(out.status());
    std::vector<float> scale(m);
    for (auto& s : scale) s = 0.1f + 0.9f * float(rng() % 1000) / 1000.f;
    BENCH_CHECK(cuda::CopyToDevice(d_offsets->get(), offsets.data(), (kE + 1) * 4));
    BENCH_CHECK(cuda::CopyToDevice(d_perm->get(), perm.data(), size_t(m) * 4));
    BENCH_CHECK(cuda::CopyToDevice(d_scale->get(), scale.data(), size_t(m) * 4));

    auto fc1_params = [&](int v, int set) {
      return cuda::GroupedGemmParams{.n_rows = m,
                                     .n_experts = kE,
                                     .n = kF,
                                     .k = kD,
                                     .dtype = DType::kBF16,
                                     .epilogue = cuda::GroupedEpilogue::kGatedAct,
                                     .activation = cuda::Activation::kGelu,
                                     .expert_offsets = d_offsets->as<int32_t>(),
                                     .a = x->get(),
                                     .a_rows = d_perm->as<int32_t>(),
                                     .w = fc1[set].get(),
                                     .out = act->get(),
                                     .variant = std::max(v, -1),
                                     .tuner = v == kAuto ? &tuner : nullptr};
    };
    auto fc2_params = [&](int v, int set) {
      return cuda::GroupedGemmParams{.n_rows = m,
                                     .n_experts = kE,
                                     .n = kD,
                                     .k = kF,
                                     .dtype = DType::kBF16,
                                     .epilogue = cuda::GroupedEpilogue::kScaleScatter,
                                     .expert_offsets = d_offsets->as<int32_t>(),
                                     .a = act->get(),
                                     .w = fc2[set].get(),
                                     .scale = d_scale->as<float>(),
                                     .out_rows = d_perm->as<int32_t>(),
                                     .out = out->get(),
                                     .variant = std::max(v, -1),
                                     .tuner = v == kAuto ? &tuner : nullptr};
    };
    std::vector<float> ref_out;
    for (const int v : variants) {
      if (v == 1 && m > 64) continue;  // gemv re-reads the weights per 8 rows
      const char* name = v == kAuto        ? "auto"
                         : v == kHeuristic ? "heuristic"
                                           : cuda::GroupedGemmVariantName(v);
      // Warm up (and tune for auto), on set 0, fc1 then fc2 (fc2 reads fc1's output).
      BENCH_CHECK(cuda::GroupedGemm(fc1_params(v, 0), nullptr));
      BENCH_CHECK(cuda::GroupedGemm(fc2_params(v, 0), nullptr));
      BENCH_CHECK(cuda::SynchronizeStream(nullptr));
      std::vector<uint16_t> got(size_t(m) * kD);
      BENCH_CHECK(cuda::CopyToHost(got.data(), out->get(), got.size() * 2));
      double err = 0;
      if (ref_out.empty()) {
        for (uint16_t h : got) ref_out.push_back(FromBf16(h));
      } else {
        double num = 0, den = 0;
        for (size_t i = 0; i < got.size(); ++i) {
          const double d = double(FromBf16(got[i])) - ref_out[i];
          num += std::isnan(d) ? 1e30 : d * d;
          den += double(ref_out[i]) * ref_out[i];
        }
        err = std::sqrt(num / std::max(den, 1e-30));
      }
      for (int fc = 1; fc <= 2; ++fc) {
        int call = 0;
        auto t = cuda::TimeOnStream(
            [&] {
              const int set = 1 % sets + call++;
              return cuda::GroupedGemm(
                  fc == 1 ? fc1_params(v, set % sets) : fc2_params(v, set % sets), nullptr);
            },
            reps, nullptr);
        BENCH_CHECK(t.status());
        const double us = Median(*t);
        const double n = fc == 1 ? 2.0 * kF : kD, k = fc == 1 ? kD : kF;
        const double w_bytes = touched * n * k * 2;
        const double io_bytes = fc == 1 ? m * (kD + kF) * 2.0 : m * (kF + kD) * 2.0;
        const double bytes_us = (w_bytes + io_bytes) / bw * 1e6;
        const double flop = 2.0 * m * n * k, flop_us = flop / peak * 1e6;
        const double floor_us = std::max(bytes_us, flop_us);
        if (v >= 0) {
          const bool wg = std::strncmp(name, "wg", 2) == 0;
          auto it = std::find_if(best.begin(), best.end(),
                                 [&](const Best& b) { return b.m == m && b.fc == fc; });
          if (it == best.end()) {
            best.push_back({.m = m, .fc = fc, .flop = flop});
            it = best.end() - 1;
          }
          double& slot = wg ? it->wg_us : it->other_us;
          if (slot == 0 || us < slot) {
            slot = us;
            (wg ? it->wg : it->other) = name;
          }
        }
        std::printf("%6d %4s %-11s %9.1f %9.1f %9.1f %7.2f %7.0f %6.0f%% %8.1e\n", m,
                    fc == 1 ? "fc1" : "fc2", name, us, bytes_us, flop_us,
                    (w_bytes + io_bytes) / (us * 1e-6) / 1e12, flop / (us * 1e-6) / 1e12,
                    100.0 * floor_us / us, err);
      }
    }
  }
  std::printf("\ntuner choices:\n%s", tuner.Describe().c_str());
  if (std::any_of(best.begin(), best.end(), [](const Best& b) { return b.wg_us > 0; })) {
    std::printf("\nbest wgmma variant vs best other variant (speed-up = other / wgmma)\n");
    std::printf("%6s %4s %-11s %9s %7s %-11s %9s %7s %8s\n", "M", "fc", "wgmma", "us", "TFLOP/s",
                "other", "us", "TFLOP/s", "speedup");
    for (const Best& b : best) {
      if (b.wg_us <= 0 || b.other_us <= 0) continue;
      std::printf("%6d %4s %-11s %9.1f %7.0f %-11s %9.1f %7.0f %7.2fx\n", b.m,
                  b.fc == 1 ? "fc1" : "fc2", b.wg.c_str(), b.wg_us, b.flop / b.wg_us * 1e-6,
                  b.other.c_str(), b.other_us, b.flop / b.other_us * 1e-6, b.other_us / b.wg_us);
    }
  }
  return 0;
}

}  // namespace
}  // namespace bms

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  return bms::Main(argc, argv);
}
