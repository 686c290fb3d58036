// Micro-benchmark of the decode Mamba mixer between in_proj and out_proj and of the fused norm +
// MoE routing kernel at blackmamba-2.8b shapes (d_model 1472, d_inner 2944, d_state 16, dt_rank
// 92, 8 experts; bf16 activations and weights). Mixer variants per batch: `unfused` (conv update,
// x_proj GEMM, dt_proj GEMM, scan update: 4 launches), `partials` (MambaDecodeConvXProj +
// MambaDecodeScan: 2 launches) and `gemm` (conv update, x_proj GEMM, fused dt_proj + scan: 3).
// Every call uses a different set of slots of a state pool larger than L2 (state from HBM).
// GPU time by CUDA events, median of the calls after 3 warm-up calls; floor = bytes moved
// (state read + write, weights once, activations) / measured device-copy bandwidth.
// Usage: bms_kernel_bench_decode [--reps N]   (no gRPC, no model)
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "bench/engine/kernel_bench_util.h"
#include "kernels/cuda/device_memory.h"
#include "kernels/cuda/event_timer.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/ops.h"

namespace bms {
namespace {

constexpr int kD = 1472, kDi = 2944, kN = 16, kR = 92, kW = 4, kE = 8, kXdbl = kR + 2 * kN;
constexpr int kWarm = 3;

using kernel_bench::Median;

using kernel_bench::Fail;
// Small finite values in both fp32 and bf16 views.
constexpr auto Random = kernel_bench::RandomSmallFinite;

int Main(int argc, char** argv) {
  int reps = 30;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--reps") == 0 && i + 1 < argc) {
      reps = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: %s [--reps N]\n", argv[0]);
      return 2;
    }
  }
  if (reps < 1) return Fail(absl::InvalidArgumentError("--reps must be >= 1"));
  std::string why;
  if (!cuda::DeviceAvailable(&why)) {
    std::fprintf(stderr, "no GPU: %s\n", why.c_str());
    return 1;
  }
  std::printf("device: %s\n", cuda::DeviceDescription().c_str());
  auto stream_or = cuda::CreateStream();
  if (!stream_or.ok()) return Fail(stream_or.status());
  cuda::Stream stream = *stream_or;
  auto timed = [&](const std::function<absl::Status(int)>& fn) -> absl::StatusOr<float> {
    auto t = cuda::TimeEachCall(fn, kWarm + reps, stream);
    if (!t.ok()) return t.status();
    return Median(std::vector<float>(t->begin() + kWarm, t->end()));
  };
  const size_t copy_bytes = size_t{1} << 30;
  double bw = 0;
  {
    auto c0 = cuda::DeviceBuffer::Alloc(copy_bytes, "copy src");
    auto c1 = cuda::DeviceBuffer::Alloc(copy_bytes, "copy dst");
    if (!c0.ok() || !c1.ok()) return Fail(c0.ok() ? c1.status() : c0.status());
    auto us = timed([&](int) {
      return cuda::CopyDeviceToDeviceAsync(c1->get(), c0->get(), copy_bytes, stream);
    });
    if (!us.ok()) return Fail(us.status());
    bw = 2.0 * copy_bytes / (*us * 1e-6);
  }
  std::printf("device copy: %.0f GB/s (read + write)\n", bw / 1e9);
  auto gemm = cuda::GemmRunner::Create();
  if (!gemm.ok()) return Fail(gemm.status());

  const int max_b = 1024, pool = 2048, n_sets = kWarm + reps;
  auto xz = Random(size_t{max_b} * 2 * kDi * 2, "xz", 1);
  auto xc = cuda::DeviceBuffer::Alloc(size_t{max_b} * kDi * 2, "xc");
  auto dbc = cuda::DeviceBuffer::Alloc(size_t{max_b} * kXdbl * 2, "dbc");
  auto dtb = cuda::DeviceBuffer::Alloc(size_t{max_b} * kDi * 2, "dt");
  auto y = cuda::DeviceBuffer::Alloc(size_t{max_b} * kDi * 2, "y");
  auto part = cuda::DeviceBuffer::Alloc(cuda::MambaDecodePartialFloats(max_b, kDi, kXdbl) * 4, "p");
  auto xproj = Random(size_t{kXdbl} * kDi * 2, "x_proj", 2);
  auto dtproj = Random(size_t{kDi} * kR * 2, "dt_proj", 3);
  auto vec = cuda::DeviceBuffer::Alloc(size_t{kDi} * kN * 4, "A");
  auto cw = cuda::DeviceBuffer::Alloc(size_t{kDi} * kW * 4, "conv w");
  auto bias = cuda::DeviceBuffer::Alloc(size_t{kDi} * 4, "bias");
  for (auto* b : {&xz, &xc, &dbc, &dtb, &y, &part, &xproj, &dtproj, &vec, &cw, &bias})
    if (!b->ok()) return Fail(b->status());
  {
    std::vector<float> a(kDi * kN, -0.5f), w(kDi * kW, 0.1f), bb(kDi, -2.f);
    if (auto s = cuda::CopyToDevice(vec->get(), a.data(), a.size() * 4); !s.ok()) return Fail(s);
    if (auto s = cuda::CopyToDevice(cw->get(), w.data(), w.size() * 4); !s.ok()) return Fail(s);
    if (auto s = cuda::CopyToDevice(bias->get(), bb.data(), bb.size() * 4); !s.ok()) return Fail(s);
  }
  std::vector<int32_t> cu(max_b + 1);
  std::iota(cu.begin(), cu.end(), 0);
  std::vector<uint8_t> has(max_b, 1);
  auto dcu = cuda::DeviceBuffer::Alloc(cu.size() * 4, "cu");
  auto dhas = cuda::DeviceBuffer::Alloc(has.size(), "has");
  auto dslots = cuda::DeviceBuffer::Alloc(size_t{n_sets} * max_b * 4, "slots");
  if (!dcu.ok() || !dhas.ok() || !dslots.ok()) return Fail(absl::InternalError("alloc meta"));
  if (auto s = cuda::CopyToDevice(dcu->get(), cu.data(), cu.size() * 4); !s.ok()) return Fail(s);
  if (auto s = cuda::CopyToDevice(dhas->get(), has.data(), has.size()); !s.ok()) return Fail(s);

  std::printf("\n%-34s %10s %10s %9s %7s\n", "case", "MB", "floor us", "us", "floor/t");
  auto row = [&](const std::string& name, double bytes, float us) {
    const double floor_us = bytes / bw * 1e6;
    std::printf("%-34s %10.2f %10.2f %9.2f %7.2f\n", name.c_str(), bytes / 1e6, floor_us, us,
                floor_us / us);
  };
  for (cuda::StateStorage st : {cuda::StateStorage::kF32, cuda::StateStorage::kBF16}) {
    const int e = st == cuda::StateStorage::kF32 ? 4 : 2;
    const char* sname = st == cuda::StateStorage::kF32 ? "f32" : "bf16";
    auto ssm = cuda::DeviceBuffer::Alloc(size_t{pool} * kDi * kN * e, "ssm pool");
    auto conv = cuda::DeviceBuffer::Alloc(size_t{pool} * kDi * (kW - 1) * e, "conv pool");
    if (!ssm.ok() || !conv.ok()) return Fail(ssm.ok() ? conv.status() : ssm.status());
    (void)cuda::FillBytes(ssm->get(), 0, ssm->size());
    (void)cuda::FillBytes(conv->get(), 0, conv->size());
    const std::vector<int> batches = st == cuda::StateStorage::kF32
                                         ? std::vector<int>{1, 2, 4, 8, 16, 32, 64, 256, 1024}
                                         : std::vector<int>{1, 64, 256, 1024};
    for (int B : batches) {
      std::vector<int32_t> slots(size_t{n_sets} * B);
      for (int s = 0; s < n_sets; ++s)
        for (int b = 0; b < B; ++b) slots[size_t{s} * B + b] = (s * B + b * 7) % pool;
      if (auto s2 = cuda::CopyToDevice(dslots->get(), slots.data(), slots.size() * 4); !s2.ok())
        return Fail(s2);
      const int32_t* sl = dslots->as<int32_t>();
      const double state_bytes = 2.0 * B * kDi * (kN + kW - 1) * e;
      const double bytes = state_bytes + (kXdbl + kR) * double{kDi} * 2 + B * 3.0 * kDi * 2;
      auto params = [&](int i) {
        return cuda::MambaDecodeParams{.batch = B,
                                       .d_inner = kDi,
                                       .d_conv = kW,
                                       .d_state = kN,
                                       .dt_rank = kR,
                                       .dtype = cuda::DType::kBF16,
                                       .slots = sl + size_t{i} * B,
                                       .has_initial_state = dhas->as<uint8_t>(),
                                       .xz = xz->get(),
                                       .conv_weight = cw->as<float>(),
                                       .conv_bias = bias->as<float>(),
                                       .conv_state = conv->get(),
                                       .conv_state_dtype = st,
                                       .x_proj = xproj->get(),
                                       .dt_proj = dtproj->get(),
                                       .dt_bias = bias->as<float>(),
                                       .A = vec->as<float>(),
                                       .D = bias->as<float>(),
                                       .ssm_state = ssm->get(),
                                       .ssm_state_dtype = st,
                                       .xc = xc->get(),
                                       .out = y->get()};
      };
      auto conv_upd = [&](int i) {
        return cuda::CausalConv1dVarlen({.batch = B,
                                         .n_tokens = B,
                                         .d_inner = kDi,
                                         .d_conv = kW,
                                         .n_slots = pool,
                                         .dtype = cuda::DType::kBF16,
                                         .cu_seqlens = dcu->as<int32_t>(),
                                         .slots = sl + size_t{i} * B,
                                         .has_initial_state = dhas->as<uint8_t>(),
                                         .x = xz->get(),
                                         .x_stride = 2 * kDi,
                                         .weight = cw->as<float>(),
                                         .bias = bias->as<float>(),
                                         .out = xc->get(),
                                         .conv_state = conv->get(),
                                         .conv_state_dtype = st},
                                        stream);
      };
      auto xproj_gemm = [&] {
        return (*gemm)->Linear({.m = B,
                                .n = kXdbl,
                                .k = kDi,
                                .in_dtype = cuda::DType::kBF16,
                                .out_dtype = cuda::DType::kBF16,
                                .x = xc->get(),
                                .w = xproj->get(),
                                .y = dbc->get()},
                               stream);
      };
      auto unfused = timed([&](int i) -> absl::Status {
        if (auto s = conv_upd(i); !s.ok()) return s;
        if (auto s = xproj_gemm(); !s.ok()) return s;
        if (auto s = (*gemm)->Linear({.m = B,
                                      .n = kDi,
                                      .k = kR,
                                      .in_dtype = cuda::DType::kBF16,
                                      .out_dtype = cuda::DType::kBF16,
                                      .x = dbc->get(),
                                      .x_stride = kXdbl,
                                      .w = dtproj->get(),
                                      .y = dtb->get()},
                                     stream);
            !s.ok())
          return s;
        const char* d = dbc->as<char>();
        return cuda::SelectiveScanVarlen({.batch = B,
                                          .n_tokens = B,
                                          .d_inner = kDi,
                                          .d_state = kN,
                                          .n_slots = pool,
                                          .dtype = cuda::DType::kBF16,
                                          .cu_seqlens = dcu->as<int32_t>(),
                                          .slots = sl + size_t{i} * B,
                                          .has_initial_state = dhas->as<uint8_t>(),
                                          .u = xc->get(),
                                          .delta = dtb->get(),
                                          .delta_bias = bias->as<float>(),
                                          .A = vec->as<float>(),
                                          .B = d + kR * 2,
                                          .B_stride = kXdbl,
                                          .C = d + (kR + kN) * 2,
                                          .C_stride = kXdbl,
                                          .D = bias->as<float>(),
                                          .z = xz->as<char>() + kDi * 2,
                                          .z_stride = 2 * kDi,
                                          .out = y->get(),
                                          .ssm_state = ssm->get(),
                                          .ssm_state_dtype = st},
                                         stream);
      });
      auto partials = timed([&](int i) -> absl::Status {
        cuda::MambaDecodeParams p = params(i);
        p.partials = part->as<float>();
        if (auto s = cuda::MambaDecodeConvXProj(p, stream); !s.ok()) return s;
        return cuda::MambaDecodeScan(p, stream);
      });
      auto gemm_path = timed([&](int i) -> absl::Status {
        cuda::MambaDecodeParams p = params(i);
        p.dbc = dbc->get();
        if (auto s = conv_upd(i); !s.ok()) return s;
        if (auto s = xproj_gemm(); !s.ok()) return s;
        return cuda::MambaDecodeScan(p, stream);
      });
      auto scan_only = timed([&](int i) -> absl::Status {
        cuda::MambaDecodeParams p = params(i);
        p.dbc = dbc->get();
        return cuda::MambaDecodeScan(p, stream);
      });
      for (auto* r : {&unfused, &partials, &gemm_path, &scan_only})
        if (!r->ok()) return Fail(r->status());
      const std::string tag = std::string("mixer ") + sname + " b" + std::to_string(B);
      row(tag + " unfused", bytes, *unfused);
      row(tag + " partials", bytes, *partials);
      row(tag + " gemm", bytes, *gemm_path);
      row(tag + " scan+dt only", 2.0 * B * kDi * kN * e + kR * double{kDi} * 2, *scan_only);
    }
  }

  // AddRmsNormRoute (norm + router + selection + grouping) at decode batch sizes.
  {
    auto h = Random(size_t{max_b} * kD * 2, "h", 5);
    auto res = Random(size_t{max_b} * kD * 4, "res", 6);
    auto nw = Random(size_t{kD} * 4, "norm w", 7);
    auto router = Random(size_t{kE} * kD * 4, "router", 8);
    auto out = cuda::DeviceBuffer::Alloc(size_t{max_b} * kD * 2, "out");
    auto ints = cuda::DeviceBuffer::Alloc(size_t{max_b} * 16 + 4096, "route ints");
    for (auto* b : {&h, &res, &nw, &router, &out, &ints})
      if (!b->ok()) return Fail(b->status());
    (void)cuda::FillBytes(ints->get(), 0, ints->size());
    char* base = ints->as<char>();
    for (int B : {1, 64, 256, 1024}) {
      // Residual rows rewritten each call; keep them finite by re-running the same inputs.
      auto us = timed([&](int) {
        return cuda::AddRmsNormRoute(
            {.norm = {.n_rows = B,
                      .d_model = kD,
                      .dtype = cuda::DType::kBF16,
                      .h = h->get(),
                      .residual = res->as<float>(),
                      .write_residual = false,
                      .weight = nw->as<float>(),
                      .out = out->get()},
             .n_experts = kE,
             .router = router->as<float>(),
             .expert = reinterpret_cast<int32_t*>(base),
             .scale = reinterpret_cast<float*>(base + size_t{max_b} * 4),
             .routing_counts = reinterpret_cast<unsigned long long*>(base + size_t{max_b} * 8),
             .expert_offsets = reinterpret_cast<int32_t*>(base + size_t{max_b} * 8 + 512),
             .permutation = reinterpret_cast<int32_t*>(base + size_t{max_b} * 8 + 1024),
             .ticket = reinterpret_cast<unsigned int*>(base + size_t{max_b} * 12 + 2048)},
            stream);
      });
      if (!us.ok()) return Fail(us.status());
      row("AddNormRoute b" + std::to_string(B), B * double{kD} * (4 + 2 + 2) + kE * kD * 4.0, *us);
    }
  }
  return 0;
}

}  // namespace
}  // namespace bms

int main(int argc, char** argv) { return bms::Main(argc, argv); }
