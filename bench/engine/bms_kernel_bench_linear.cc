// bms_kernel_bench_linear: GPU micro-benchmark of the dense small-M Linear (kernels/cuda/gemm.h)
// at the blackmamba-2.8b decode shapes (in_proj [5888, 1472], out_proj [1472, 2944], LM head
// [50304, 1472] with fp32 logits; bf16 weights), m = 1 and 8 rows. Per shape and path (cuBLASLt,
// the weight-streaming StreamLinear, and the older SmallMLinear where it applies) it prints the
// median over --reps samples of the time per call of 10 back-to-back calls (rotating over weight
// sets larger than L2, so every call streams its weights from DRAM), the bytes floor (weights +
// activations at the measured copy bandwidth), achieved TB/s and floor / measured, and the error of
// each path against cuBLASLt.
//   bms_kernel_bench_linear [--rows=1,8] [--reps=30]
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

// Output values as floats (bf16 or fp32 storage).
std::vector<float> Fetch(const DeviceBuffer& y, size_t n, bool f32) {
  std::vector<float> out(n);
  if (f32) {
    (void)cuda::CopyToHost(out.data(), y.get(), n * 4);
  } else {
    std::vector<uint16_t> h(n);
    (void)cuda::CopyToHost(h.data(), y.get(), n * 2);
    for (size_t i = 0; i < n; ++i) out[i] = FromBf16(h[i]);
  }
  return out;
}

// Grouped expert GEMM (2.8b MoE: d_model 1472, ffn 3872, 8 experts) with the same batched
// timing: the decode-sized variants (names starting with 's' or 't16') and the heuristic.
int GroupedSection(double bw, const std::vector<int>& tokens_list, int reps, std::mt19937_64& rng) {
  constexpr int kD = 1472, kF = 3872, kE = 8, kSets = 3;
  std::vector<DeviceBuffer> fc1, fc2;
  for (int s = 0; s < kSets; ++s) {
    auto a = RandomBf16(size_t{kE} * 2 * kF * kD, 1.f / std::sqrt(float(kD)), rng);
    auto b = RandomBf16(size_t{kE} * kD * kF, 1.f / std::sqrt(float(kF)), rng);
    BENCH_CHECK(a.status());
    BENCH_CHECK(b.status());
    fc1.push_back(std::move(*a));
    fc2.push_back(std::move(*b));
  }
  std::printf("\n%6s %4s %-12s %9s %9s %7s %7s\n", "M", "fc", "variant", "us", "floor_us", "TB/s",
              "floor%");
  for (const int m : tokens_list) {
    const kernel_bench::RandomRouting routing(m, kE, rng);
    const std::vector<int32_t>&expert = routing.expert, &offsets = routing.offsets,
          &perm = routing.perm;
    const int touched = routing.touched;
    auto d_off = DeviceBuffer::Alloc((kE + 1) * 4, "offsets");
    auto d_perm = DeviceBuffer::Alloc(size_t(m) * 4, "perm");
    auto x = RandomBf16(size_t(m) * kD, 1.f, rng);
    auto act = RandomBf16(size_t(m) * kF, 1.f, rng);
    auto out = DeviceBuffer::Alloc(size_t(m) * kF * 2, "out");
    BENCH_CHECK(d_off.status());
    BENCH_CHECK(d_perm.status());
    BENCH_CHECK(x.status());
    BENCH_CHECK(act.status());
    BENCH_CHECK(out.status());
    BENCH_CHECK(cuda::CopyToDevice(d_off->get(), offsets.data(), (kE + 1) * 4));
    BENCH_CHECK(cuda::CopyToDevice(d_perm->get(), perm.data(), size_t(m) * 4));
    for (int fc = 1; fc <= 2; ++fc) {
      auto params = [&](int v, int set) {
        cuda::GroupedGemmParams p{.n_rows = m,
                                  .n_experts = kE,
                                  .n = fc == 1 ? kF : kD,
                                  .k = fc == 1 ? kD : kF,
                                  .dtype = DType::kBF16,
                                  .epilogue = fc == 1 ? cuda::GroupedEpilogue::kGatedAct
                                                      : cuda::GroupedEpilogue::kScaleScatter,
                                  .expert_offsets = d_off->as<int32_t>(),
                                  .a = fc == 1 ? x->get() : act->get(),
                                  .a_rows = fc == 1 ? d_perm->as<int32_t>() : nullptr,
                                  .w = fc == 1 ? fc1[set].get() : fc2[set].get(),
                                  .out_rows = fc == 1 ? nullptr : d_perm->as<int32_t>(),
                                  .out = out->get(),
                                  .variant = v};
        return p;
      };
      const double w_bytes = double(touched) * (fc == 1 ? 2.0 * kF * kD : 1.0 * kD * kF) * 2;
      const double floor_us = w_bytes / bw * 1e6;
      for (int v = -1; v < cuda::GroupedGemmVariantCount(); ++v) {
        const std::string name = v < 0 ? "heuristic" : cuda::GroupedGemmVariantName(v);
        if (v >= 0 && name[0] != 's' && name.rfind("t16", 0) != 0) continue;
        if (v >= 0 && !cuda::GroupedGemmVariantApplies(params(v, 0), v)) continue;
        BENCH_CHECK(cuda::GroupedGemm(params(v, 0), nullptr));
        constexpr int kBatch = 10;
        int call = 0;
        auto t = cuda::TimeOnStream(
            [&] {
              for (int b = 0; b < kBatch; ++b)
                if (absl::Status s =
                        cuda::GroupedGemm(params(v, 1 + (call++) % (kSets - 1)), nullptr);
                    !s.ok())
                  return s;
              return absl::OkStatus();
            },
            reps, nullptr);
        BENCH_CHECK(t.status());
        const double us = Median(*t) / kBatch;
        std::printf("%6d %4s %-12s %9.1f %9.1f %7.2f %6.0f%%\n", m, fc == 1 ? "fc1" : "fc2",
                    name.c_str(), us, floor_us, w_bytes / (us * 1e-6) / 1e12,
                    100.0 * floor_us / us);
      }
    }
  }
  return 0;
}

int Main(int argc, char** argv) {
  std::vector<int> rows_list = {1, 8};
  int reps = 30;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("--rows=", 0) == 0) {
      rows_list.clear();
      for (absl::string_view part : absl::StrSplit(a.substr(7), ',')) {
        int r = 0;
        if (!absl::SimpleAtoi(part, &r) || r <= 0) {
          std::fprintf(stderr, "--rows: bad value '%s'\n", std::string(part).c_str());
          return 2;
        }
        rows_list.push_back(r);
      }
    } else if (a.rfind("--reps=", 0) == 0) {
      if (!absl::SimpleAtoi(a.substr(7), &reps) || reps <= 0)
        return std::fprintf(stderr, "--reps: bad value\n"), 2;
    } else {
      std::fprintf(stderr,
                   "usage: bms_kernel_bench_linear [--rows=1,8] [--reps=30]\n"
                   "unknown flag '%s'\n",
                   a.c_str());
      return 2;
    }
  }
  std::string why;
  if (!cuda::DeviceAvailable(&why)) {
    std::fprintf(stderr, "no CUDA device: %s\n", why.c_str());
    return 1;
  }
  std::printf("device: %s\n", cuda::DeviceDescription().c_str());
  std::mt19937_64 rng(1234);
  double bw = 0;
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
  }
  std::printf("measured copy bandwidth %.2f TB/s (floors below use it)\n", bw / 1e12);
  auto gemm = cuda::GemmRunner::Create();
  BENCH_CHECK(gemm.status());

  struct Shape {
    const char* name;
    int n, k;
    bool f32_out;
  };
  const Shape shapes[] = {
      {"in_proj", 5888, 1472, false}, {"out_proj", 1472, 2944, false}, {"head", 50304, 1472, true}};
  std::printf("\n%-9s %3s %-9s %9s %9s %7s %7s %8s\n", "shape", "m", "path", "us", "floor_us",
              "TB/s", "floor%", "err");
  for (const Shape& sh : shapes) {
    const size_t w_elems = size_t{1} * sh.n * sh.k;
    // Enough weight sets that the rotation never finds its weights in L2 (>= 150 MB in all).
    const int sets = static_cast<int>(std::max<size_t>(2, (size_t{150} << 20) / (w_elems * 2) + 1));
    std::vector<DeviceBuffer> w;
    for (int s = 0; s < sets; ++s) {
      auto b = RandomBf16(w_elems, 1.f / std::sqrt(float(sh.k)), rng);
      BENCH_CHECK(b.status());
      w.push_back(std::move(*b));
    }
    for (const int m : rows_list) {
      auto x = RandomBf16(size_t(m) * sh.k, 1.f, rng);
      auto y = DeviceBuffer::Alloc(size_t(m) * sh.n * 4, "y");
      BENCH_CHECK(x.status());
      BENCH_CHECK(y.status());
      auto params = [&](int set) {
        return cuda::LinearParams{.m = m,
                                  .n = sh.n,
                                  .k = sh.k,
                                  .in_dtype = DType::kBF16,
                                  .out_dtype = sh.f32_out ? DType::kF32 : DType::kBF16,
                                  .x = x->get(),
                                  .w = w[set].get(),
                                  .y = y->get()};
      };
      const double bytes =
          double(w_elems) * 2 + double(m) * sh.k * 2 + double(m) * sh.n * (sh.f32_out ? 4 : 2);
      const double floor_us = bytes / bw * 1e6;
      std::vector<float> ref;
      for (const char* path : {"cublaslt", "stream", "streamreg", "smallm"}) {
        auto run = [&](int set) -> absl::Status {
          const cuda::LinearParams lp = params(set);
          if (std::strcmp(path, "cublaslt") == 0) return (*gemm)->LinearCublas(lp, nullptr);
          if (std::strcmp(path, "smallm") == 0) return cuda::SmallMLinear(lp, nullptr);
          cuda::SetStreamLinearPipelined(std::strcmp(path, "stream") == 0);
          const absl::Status s = cuda::StreamLinear(lp, nullptr);
          cuda::SetStreamLinearPipelined(true);
          return s;
        };
        if (std::strncmp(path, "stream", 6) == 0 && !cuda::StreamLinearSupported(params(0)))
          continue;
        if (std::strcmp(path, "smallm") == 0 && !cuda::SmallMLinearSupported(params(0))) continue;
        BENCH_CHECK(run(0));
        BENCH_CHECK(cuda::SynchronizeStream(nullptr));
        const std::vector<float> got = Fetch(*y, size_t(m) * sh.n, sh.f32_out);
        double err = 0;
        if (ref.empty()) {
          ref = got;
        } else {
          double num = 0, den = 0;
          for (size_t i = 0; i < got.size(); ++i) {
            const double d = double(got[i]) - ref[i];
            num += std::isnan(d) ? 1e30 : d * d;
            den += double(ref[i]) * ref[i];
          }
          err = std::sqrt(num / std::max(den, 1e-30));
        }
        // kBatch back-to-back calls per timed sample (as in a replayed graph: no launch gaps
        // counted), rotating weight sets.
        constexpr int kBatch = 10;
        int call = 0;
        auto t = cuda::TimeOnStream(
            [&] {
              for (int b = 0; b < kBatch; ++b)
                if (absl::Status s = run(1 + (call++) % (sets - 1)); !s.ok()) return s;
              return absl::OkStatus();
            },
            reps, nullptr);
        BENCH_CHECK(t.status());
        const double us = Median(*t) / kBatch;
        std::printf("%-9s %3d %-9s %9.1f %9.1f %7.2f %6.0f%% %8.1e\n", sh.name, m, path, us,
                    floor_us, bytes / (us * 1e-6) / 1e12, 100.0 * floor_us / us, err);
      }
    }
  }
  return GroupedSection(bw, {1, 8, 64, 128}, reps, rng);
}

}  // namespace
}  // namespace bms

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  return bms::Main(argc, argv);
}
