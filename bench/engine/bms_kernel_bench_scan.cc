// Micro-benchmark of the Mamba sequence kernels at blackmamba-2.8b shapes (d_inner 2944 =
// 2 * d_model, d_state 16, dt_rank 92, d_conv 4; bf16 activations; --d_inner N for others): the
// decode conv update and selective state update at batch 1/64/256/1024 (fp32 and bf16 state),
// the prefill conv and scan at 1 x 512/2048/4096, 4 x 512 and 16 x 128 tokens (the scan: the
// parallel kernel, the previous chunked one and legacy), each new kernel next to the legacy one.
// GPU time by CUDA events, median of 20 calls after 3 warm-up calls; decode calls use a
// different set of slots each from a state pool larger than L2, so state traffic comes from HBM.
// Prints bytes moved, the bandwidth floor (bytes / measured device-copy bandwidth) and floor /
// measured.
// Usage: bms_kernel_bench_scan [--reps N] [--prefill_only] [--d_inner N]   (no gRPC, no model)
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "bench/engine/kernel_bench_util.h"
#include "kernels/cuda/device_memory.h"
#include "kernels/cuda/event_timer.h"
#include "kernels/cuda/ops.h"

namespace bms {
namespace {

constexpr int kN = 16, kW = 4;
constexpr int kWarm = 3;

struct Row {
  std::string name;
  double bytes, us_new, us_legacy;
  double us_prev = 0;  // the previous new kernel (prefill scan: chunked), 0 = none
};

using kernel_bench::Median;

using kernel_bench::Fail;
// Small finite values in both fp32 and bf16 views.
constexpr auto Random = kernel_bench::RandomSmallFinite;

int Main(int argc, char** argv) {
  int reps = 20;
  bool prefill_only = false;
  int d_inner = 2944;  // blackmamba-2.8b (d_model 1472)
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--reps") == 0 && i + 1 < argc) {
      reps = std::atoi(argv[++i]);
    } else if (std::strcmp(argv[i], "--prefill_only") == 0) {
      prefill_only = true;
    } else if (std::strcmp(argv[i], "--d_inner") == 0 && i + 1 < argc) {
      d_inner = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: %s [--reps N] [--prefill_only] [--d_inner N]\n", argv[0]);
      return 2;
    }
  }
  if (reps < 1) {
    std::fprintf(stderr, "--reps must be >= 1\n");
    return 2;
  }
  if (d_inner < 16 || d_inner % 16 != 0) {
    std::fprintf(stderr, "--d_inner must be a positive multiple of 16\n");
    return 2;
  }
  const int dt_rank = (d_inner / 2 + 15) / 16;  // ceil(d_model / 16)
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

  // Device copy bandwidth (read + write counted), 1 GiB.
  const size_t copy_bytes = size_t{1} << 30;
  auto c0 = cuda::DeviceBuffer::Alloc(copy_bytes, "copy src");
  auto c1 = cuda::DeviceBuffer::Alloc(copy_bytes, "copy dst");
  if (!c0.ok() || !c1.ok()) return Fail(c0.ok() ? c1.status() : c0.status());
  auto copy_us = timed(
      [&](int) { return cuda::CopyDeviceToDeviceAsync(c1->get(), c0->get(), copy_bytes, stream); });
  if (!copy_us.ok()) return Fail(copy_us.status());
  const double bw = 2.0 * copy_bytes / (*copy_us * 1e-6);  // bytes / s
  std::printf("device copy: %.0f GB/s (read + write)\n", bw / 1e9);
  *c0 = cuda::DeviceBuffer();
  *c1 = cuda::DeviceBuffer();

  // Shared inputs, sized for the largest case (4096 tokens).
  const int max_t = 4096, xdbl = dt_rank + 2 * kN;
  auto xz = Random(static_cast<size_t>(max_t) * 2 * d_inner * 2, "xz", 1);
  auto xc = Random(static_cast<size_t>(max_t) * d_inner * 2, "xc", 2);
  auto dbc = Random(static_cast<size_t>(max_t) * xdbl * 2, "dbc", 3);
  auto dtb = Random(static_cast<size_t>(max_t) * d_inner * 2, "dt", 4);
  auto out = cuda::DeviceBuffer::Alloc(static_cast<size_t>(max_t) * d_inner * 2, "out");
  auto conv_w = cuda::DeviceBuffer::Alloc(static_cast<size_t>(d_inner) * kW * 4, "conv w");
  auto vec = cuda::DeviceBuffer::Alloc(static_cast<size_t>(d_inner) * kN * 4, "A");
  for (auto* b : {&xz, &xc, &dbc, &dtb, &out, &conv_w, &vec})
    if (!b->ok()) return Fail(b->status());
  {
    std::vector<float> w(d_inner * kW, 0.1f), a(d_inner * kN, -0.5f);
    if (auto s = cuda::CopyToDevice(conv_w->get(), w.data(), w.size() * 4); !s.ok()) return Fail(s);
    if (auto s = cuda::CopyToDevice(vec->get(), a.data(), a.size() * 4); !s.ok()) return Fail(s);
  }
  const float* A = vec->as<float>();
  const float* conv_weight = conv_w->as<float>();
  const char* dbc_p = dbc->as<char>();
  // The engine's conv / scan calls over the shared buffers (bf16 activations; B / C inside the
  // x_proj rows at dt_rank, z = the second half of the in_proj rows).
  auto conv_params = [&](int batch, int n_tokens, int n_slots, const void* cu, const int32_t* slots,
                         const void* has, void* state, cuda::StateStorage st, bool legacy) {
    return cuda::CausalConv1dParams{.batch = batch,
                                    .n_tokens = n_tokens,
                                    .d_inner = d_inner,
                                    .d_conv = kW,
                                    .n_slots = n_slots,
                                    .dtype = cuda::DType::kBF16,
                                    .cu_seqlens = static_cast<const int32_t*>(cu),
                                    .slots = slots,
                                    .has_initial_state = static_cast<const uint8_t*>(has),
                                    .x = xz->get(),
                                    .x_stride = 2 * d_inner,
                                    .weight = conv_weight,
                                    .silu = true,
                                    .out = out->get(),
                                    .conv_state = state,
                                    .conv_state_dtype = st,
                                    .legacy = legacy};
  };
  auto scan_params = [&](int batch, int n_tokens, int n_slots, const void* cu, const int32_t* slots,
                         const void* has, void* state, cuda::StateStorage st, bool legacy) {
    return cuda::SelectiveScanParams{.batch = batch,
                                     .n_tokens = n_tokens,
                                     .d_inner = d_inner,
                                     .d_state = kN,
                                     .n_slots = n_slots,
                                     .dtype = cuda::DType::kBF16,
                                     .cu_seqlens = static_cast<const int32_t*>(cu),
                                     .slots = slots,
                                     .has_initial_state = static_cast<const uint8_t*>(has),
                                     .u = xc->get(),
                                     .delta = dtb->get(),
                                     .delta_softplus = true,
                                     .A = A,
                                     .B = dbc_p + dt_rank * 2,
                                     .B_stride = xdbl,
                                     .C = dbc_p + (dt_rank + kN) * 2,
                                     .C_stride = xdbl,
                                     .z = xz->as<char>() + d_inner * 2,
                                     .z_stride = 2 * d_inner,
                                     .out = out->get(),
                                     .ssm_state = state,
                                     .ssm_state_dtype = st,
                                     .legacy = legacy};
  };

  std::vector<Row> rows;
  // ---- Decode: batch B of 1-token sequences on rotating slots of a pool > L2. ----
  const int pool = 2048;
  const int max_b = 1024;
  std::vector<int32_t> cu(max_b + 1);
  std::iota(cu.begin(), cu.end(), 0);
  std::vector<uint8_t> has(max_b, 1);
  auto dcu = cuda::DeviceBuffer::Alloc(cu.size() * 4, "cu");
  auto dhas = cuda::DeviceBuffer::Alloc(has.size(), "has");
  const int n_sets = kWarm + reps;
  auto dslots = cuda::DeviceBuffer::Alloc(static_cast<size_t>(n_sets) * max_b * 4, "slots");
  if (!dcu.ok() || !dhas.ok() || !dslots.ok()) return Fail(absl::InternalError("alloc meta"));
  if (auto s = cuda::CopyToDevice(dcu->get(), cu.data(), cu.size() * 4); !s.ok()) return Fail(s);
  if (auto s = cuda::CopyToDevice(dhas->get(), has.data(), has.size()); !s.ok()) return Fail(s);
  for (cuda::StateStorage st : {cuda::StateStorage::kF32, cuda::StateStorage::kBF16}) {
    if (prefill_only) break;
    const int e = st == cuda::StateStorage::kF32 ? 4 : 2;
    const char* sname = st == cuda::StateStorage::kF32 ? "f32" : "bf16";
    auto ssm = cuda::DeviceBuffer::Alloc(static_cast<size_t>(pool) * d_inner * kN * e, "ssm pool");
    auto conv =
        cuda::DeviceBuffer::Alloc(static_cast<size_t>(pool) * d_inner * (kW - 1) * e, "conv pool");
    if (!ssm.ok() || !conv.ok()) return Fail(ssm.ok() ? conv.status() : ssm.status());
    if (auto s = cuda::FillBytes(ssm->get(), 0, ssm->size()); !s.ok()) return Fail(s);
    if (auto s = cuda::FillBytes(conv->get(), 0, conv->size()); !s.ok()) return Fail(s);
    for (int B : {1, 64, 256, 1024}) {
      // Call r uses slots [(r * B + i) % pool]: consecutive calls touch different state.
      std::vector<int32_t> sl(static_cast<size_t>(n_sets) * max_b);
      for (int r = 0; r < n_sets; ++r)
        for (int i = 0; i < B; ++i) sl[static_cast<size_t>(r) * max_b + i] = (r * B + i) % pool;
      if (auto s = cuda::CopyToDevice(dslots->get(), sl.data(), sl.size() * 4); !s.ok())
        return Fail(s);
      const int32_t* slots = dslots->as<int32_t>();
      float us[2][2];  // [conv, scan][new, legacy]
      for (int legacy = 0; legacy < 2; ++legacy) {
        auto conv_t = timed([&](int r) {
          return cuda::CausalConv1dVarlen(
              conv_params(B, B, pool, dcu->get(), slots + static_cast<size_t>(r) * max_b,
                          dhas->get(), conv->get(), st, legacy == 1),
              stream);
        });
        auto scan_t = timed([&](int r) {
          return cuda::SelectiveScanVarlen(
              scan_params(B, B, pool, dcu->get(), slots + static_cast<size_t>(r) * max_b,
                          dhas->get(), ssm->get(), st, legacy == 1),
              stream);
        });
        if (!conv_t.ok()) return Fail(conv_t.status());
        if (!scan_t.ok()) return Fail(scan_t.status());
        us[0][legacy] = *conv_t;
        us[1][legacy] = *scan_t;
      }
      const double act = 2.0;  // bf16 activations
      // conv: window read + write, x in, out.
      const double conv_bytes = double(B) * d_inner * ((kW - 1) * e * 2.0 + 2 * act);
      // scan: state read + write, u, dt, z in, out, B and C rows.
      const double scan_bytes = double(B) * d_inner * (kN * e * 2.0 + 4 * act) + B * 2.0 * kN * act;
      rows.push_back({"decode conv  B=" + std::to_string(B) + " state " + sname, conv_bytes,
                      us[0][0], us[0][1]});
      rows.push_back({"decode scan  B=" + std::to_string(B) + " state " + sname, scan_bytes,
                      us[1][0], us[1][1]});
    }
  }

  // ---- Prefill: `nseq` sequences of T tokens each, first chunks, fp32 state, bf16
  // activations, the engine's layouts (u = conv output, dt = dt_proj output, B / C inside the
  // x_proj rows at dt_rank, z = second half of the in_proj rows). Scan: parallel / chunked /
  // legacy kernels; conv: new / legacy. ----
  {
    constexpr int kMaxSeq = 16;
    auto ssm = cuda::DeviceBuffer::Alloc(static_cast<size_t>(kMaxSeq) * d_inner * kN * 4, "ssm");
    auto conv =
        cuda::DeviceBuffer::Alloc(static_cast<size_t>(kMaxSeq) * d_inner * (kW - 1) * 4, "conv");
    if (!ssm.ok() || !conv.ok()) return Fail(absl::InternalError("alloc prefill state"));
    std::vector<int32_t> seq_slots(kMaxSeq);
    std::iota(seq_slots.begin(), seq_slots.end(), 0);
    const std::vector<uint8_t> first(kMaxSeq, 0);
    auto dslot = cuda::DeviceBuffer::Alloc(kMaxSeq * 4, "slot");
    auto dfirst = cuda::DeviceBuffer::Alloc(kMaxSeq, "first");
    auto dcu2 = cuda::DeviceBuffer::Alloc((kMaxSeq + 1) * 4, "cu");
    if (!dslot.ok() || !dfirst.ok() || !dcu2.ok()) return Fail(absl::InternalError("alloc"));
    if (auto s = cuda::CopyToDevice(dslot->get(), seq_slots.data(), kMaxSeq * 4); !s.ok())
      return Fail(s);
    if (auto s = cuda::CopyToDevice(dfirst->get(), first.data(), kMaxSeq); !s.ok()) return Fail(s);
    const std::pair<int, int> shapes[] = {{1, 512}, {1, 2048}, {1, 4096}, {4, 512}, {16, 128}};
    for (const auto& [nseq, T] : shapes) {
      const int n_tok = nseq * T;
      std::vector<int32_t> cu2(nseq + 1);
      for (int i = 0; i <= nseq; ++i) cu2[i] = i * T;
      if (auto s = cuda::CopyToDevice(dcu2->get(), cu2.data(), cu2.size() * 4); !s.ok())
        return Fail(s);
      auto conv_call = [&](bool legacy) {
        return cuda::CausalConv1dVarlen(
            conv_params(nseq, n_tok, kMaxSeq, dcu2->get(), dslot->as<int32_t>(), dfirst->get(),
                        conv->get(), cuda::StateStorage::kF32, legacy),
            stream);
      };
      auto scan_call = [&](bool legacy, cuda::ScanPrefillKernel kernel) {
        cuda::SelectiveScanParams q =
            scan_params(nseq, n_tok, kMaxSeq, dcu2->get(), dslot->as<int32_t>(), dfirst->get(),
                        ssm->get(), cuda::StateStorage::kF32, legacy);
        q.prefill_kernel = kernel;
        return cuda::SelectiveScanVarlen(q, stream);
      };
      float conv_us[2], scan_us[3];
      for (int legacy = 0; legacy < 2; ++legacy) {
        auto t = timed([&](int) { return conv_call(legacy == 1); });
        if (!t.ok()) return Fail(t.status());
        conv_us[legacy] = *t;
      }
      const cuda::ScanPrefillKernel kinds[3] = {cuda::ScanPrefillKernel::kParallel,
                                                cuda::ScanPrefillKernel::kChunked,
                                                cuda::ScanPrefillKernel::kDefault};
      for (int k = 0; k < 3; ++k) {
        auto t = timed([&](int) { return scan_call(k == 2, kinds[k]); });
        if (!t.ok()) return Fail(t.status());
        scan_us[k] = *t;
      }
      const std::string shape = std::to_string(nseq) + "x" + std::to_string(T);
      rows.push_back(
          {"prefill conv " + shape, double(n_tok) * d_inner * 2 * 2.0, conv_us[0], conv_us[1]});
      // u, dt, z in, out; B and C rows; the final state written.
      rows.push_back({"prefill scan " + shape,
                      double(n_tok) * d_inner * 2 * 4.0 + double(n_tok) * 2 * kN * 2 +
                          double(nseq) * d_inner * kN * 4,
                      scan_us[0], scan_us[2], scan_us[1]});
    }
  }

  std::printf("\n%-30s %9s %9s %9s %9s %9s %6s %7s\n", "kernel", "MB", "floor us", "new us",
              "legacy us", "prev us", "ratio", "speedup");
  for (const Row& r : rows) {
    const double floor_us = r.bytes / bw * 1e6;
    const double prev = r.us_prev > 0 ? r.us_prev : r.us_legacy;
    char prev_txt[32] = "-";
    if (r.us_prev > 0) std::snprintf(prev_txt, sizeof(prev_txt), "%.1f", r.us_prev);
    std::printf("%-30s %9.2f %9.1f %9.1f %9.1f %9s %6.2f %7.2f\n", r.name.c_str(), r.bytes / 1e6,
                floor_us, r.us_new, r.us_legacy, prev_txt, floor_us / r.us_new, prev / r.us_new);
  }
  std::printf(
      "d_inner %d, dt_rank %d. ratio = floor / new (1.0 = at the copy bandwidth); speedup = prev "
      "(the previous chunked prefill scan; else legacy) / new; prefill scan new = the parallel "
      "scan; median of %d calls\n",
      d_inner, dt_rank, reps);
  std::printf("\n%-30s %10s %10s %10s %10s %7s %7s\n", "kernel", "MB", "floor us", "new us",
              "legacy us", "ratio", "speedup");
  for (const Row& r : rows) {
    const double floor_us = r.bytes / bw * 1e6;
    std::printf("%-30s %10.2f %10.1f %10.1f %10.1f %7.2f %7.2f\n", r.name.c_str(), r.bytes / 1e6,
                floor_us, r.us_new, r.us_legacy, floor_us / r.us_new, r.us_legacy / r.us_new);
  }
  std::printf("ratio = floor / new (1.0 = at the copy bandwidth); median of %d calls\n", reps);
  cuda::DestroyStream(stream);
  return 0;
}

}  // namespace
}  // namespace bms

int main(int argc, char** argv) { return bms::Main(argc, argv); }
