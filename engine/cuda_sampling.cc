// Device sampling for the CUDA backend (engine/cuda_backend_impl.h, kernels/cuda/sampling.h):
// ForwardSampled packs each logits row's sampling params and sparse lists (logit_bias, masked
// ids, generated-token counts) into one pinned block copied to the device with one H2D copy,
// runs the sampling kernel right after the head GEMM (inside the decode graph for all-decode
// steps, engine/cuda_graph.cc) and copies back only the ids, plus the logprobs records when some
// row asked for them.
//
// Input block layout (8-byte units): SampleRowParams [n rows] then SampleEntry [entries]; the
// entry ranges in the params count from the block's start, so the rows and their entries are
// one contiguous copy of the bytes in use. Capacity grows by doubling; growing reallocates the
// device block, which drops the sampled decode graphs (they read it at a fixed address).
#include "engine/cuda_sampling.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "engine/cuda_backend_impl.h"
#include "engine/rng.h"
#include "engine/status_macros.h"

namespace bms {
namespace {

constexpr size_t kUnit = sizeof(cuda::SampleEntry);

}  // namespace

void CudaBackendImpl::FreeSampling() {
  cuda::FreeHost(sampling_.in_host);
  cuda::FreeHost(sampling_.out_host);
  sampling_ = SamplingBuffers();
}

void PackSampleRows(std::span<const SampleContext> rows, int padded_rows, int vocab_size,
                    PackedSampling* out) {
  const int n = static_cast<int>(rows.size());
  out->rows.assign(std::max(padded_rows, n), cuda::SampleRowParams());
  out->entries.clear();
  out->any_logprobs = false;
  std::vector<cuda::SampleEntry>& e = out->entries;
  const int32_t first = static_cast<int32_t>(out->rows.size() * kSampleRowUnits);
  auto here = [&] { return first + static_cast<int32_t>(e.size()); };
  for (int r = 0; r < n; ++r) {
    const SampleContext& ctx = rows[r];
    const SamplingParams& sp = *ctx.params;
    cuda::SampleRowParams& p = out->rows[r];
    p.temperature = sp.temperature;
    p.top_p = sp.top_p;
    p.top_k = sp.top_k;
    p.min_p = sp.min_p;
    p.repetition_penalty = sp.repetition_penalty;
    p.frequency_penalty = sp.frequency_penalty;
    p.presence_penalty = sp.presence_penalty;
    p.logprobs = std::min(sp.logprobs, cuda::kMaxTopLogprobs);
    out->any_logprobs |= p.logprobs >= 0;
    p.uniform =
        sp.temperature > 0.0f ? CounterUniform(ctx.seed, ctx.choice, ctx.num_generated) : 0.0;
    // logit_bias, stably sorted by token (the kernel adds each token's run in order).
    p.bias_begin = here();
    const size_t bias_at = e.size();
    for (const auto& [token, bias] : sp.logit_bias) e.push_back({token, bias});
    std::stable_sort(
        e.begin() + bias_at, e.end(),
        [](const cuda::SampleEntry& a, const cuda::SampleEntry& b) { return a.token < b.token; });
    p.bias_end = here();
    p.mask_begin = here();
    if (ctx.num_generated < sp.min_tokens) {
      if (!sp.ignore_eos && ctx.eos_token_id >= 0 && ctx.eos_token_id < vocab_size)
        e.push_back({ctx.eos_token_id, 0.f});
      for (int32_t s : sp.stop_token_ids) e.push_back({s, 0.f});
    }
    p.mask_end = here();
    p.count_begin = here();
    const bool penalties = sp.repetition_penalty != 1.0f || sp.frequency_penalty != 0.0f ||
                           sp.presence_penalty != 0.0f;
    if (penalties && ctx.counts != nullptr) {
      for (const auto& [token, count] : *ctx.counts)
        if (count > 0) e.push_back({token, static_cast<float>(count)});
    }
    p.count_end = here();
    p.active = 1;
  }
  for (size_t r = n; r < out->rows.size(); ++r) out->rows[r].active = 0;
}

absl::Status CudaBackendImpl::PackSampling(std::span<const SampleContext> rows, int padded_rows) {
  SamplingBuffers& b = sampling_;
  const int n = static_cast<int>(rows.size());
  const int max_rows = num_slots_ + 1;
  if (n > padded_rows || padded_rows > max_rows)
    return absl::InternalError(absl::StrCat("PackSampling: ", n, " rows padded to ", padded_rows,
                                            " (at most ", max_rows, ")"));
  PackSampleRows(rows, padded_rows, config_.vocab_size, &b.packed);
  b.any_logprobs = b.packed.any_logprobs;
  const std::vector<cuda::SampleEntry>& e = b.packed.entries;

  // Capacity: rows for every slot, entries doubling (a reallocation drops the sampled graphs).
  const size_t need_units = static_cast<size_t>(padded_rows) * kSampleRowUnits + e.size();
  const size_t cap_units = static_cast<size_t>(max_rows) * kSampleRowUnits + b.entry_capacity;
  if (b.max_rows == 0 || need_units > cap_units) {
    const size_t entries = std::max<size_t>({b.min_entries, 2 * b.entry_capacity, e.size()});
    const size_t bytes = (max_rows * kSampleRowUnits + entries) * kUnit;
    cuda::FreeHost(b.in_host);
    b.in_host = nullptr;
    b.in_dev = cuda::DeviceBuffer();
    b.entry_capacity = 0;
    b.max_rows = max_rows;
    auto host = cuda::AllocHost(bytes);
    if (!host.ok()) return host.status();
    b.in_host = *host;
    auto dev = cuda::DeviceBuffer::Alloc(bytes, "sampling parameters");
    if (!dev.ok()) return dev.status();
    b.in_dev = std::move(*dev);
    b.entry_capacity = entries;
    if (b.out_host == nullptr) {
      auto out_host = cuda::AllocHost(b.out_block_bytes());
      if (!out_host.ok()) return out_host.status();
      b.out_host = *out_host;
      auto out_dev = cuda::DeviceBuffer::Alloc(b.out_block_bytes(), "sampling results");
      if (!out_dev.ok()) return out_dev.status();
      b.out_dev = std::move(*out_dev);
    }
  }
  char* host = static_cast<char*>(b.in_host);
  std::memcpy(host, b.packed.rows.data(), b.packed.rows.size() * sizeof(cuda::SampleRowParams));
  std::memcpy(host + padded_rows * kSampleRowUnits * kUnit, e.data(), e.size() * kUnit);
  b.in_bytes = need_units * kUnit;
  return cuda::CopyToDeviceAsync(b.in_dev.get(), b.in_host, b.in_bytes, stream_);
}

absl::Status CudaBackendImpl::EnqueueSampling(int n_rows) {
  const SamplingBuffers& b = sampling_;
  cuda::SampleParams p;
  p.n_rows = n_rows;
  p.vocab_size = config_.vocab_size;
  p.logits = ws_.logits;
  p.rows = b.in_dev.as<const cuda::SampleRowParams>();
  p.entries = b.in_dev.as<const cuda::SampleEntry>();
  p.tokens = b.out_dev.as<int32_t>();
  p.logprobs = reinterpret_cast<cuda::SampleRowLogprobs*>(b.out_dev.as<int32_t>() + b.max_rows);
  return cuda::SampleRows(p, stream_);
}

absl::Status CudaBackendImpl::FinishSampling(std::span<const SampleContext> rows,
                                             std::vector<SampledToken>* out) {
  const SamplingBuffers& b = sampling_;
  const size_t n = rows.size();
  if (n > 0) {
    BMS_RETURN_IF_ERROR(cuda::CopyToHostAsync(b.out_host, b.out_dev.get(), n * 4, stream_));
    if (b.any_logprobs)
      BMS_RETURN_IF_ERROR(cuda::CopyToHostAsync(static_cast<int32_t*>(b.out_host) + b.max_rows,
                                                b.out_dev.as<int32_t>() + b.max_rows,
                                                n * sizeof(cuda::SampleRowLogprobs), stream_));
  }
  // The one sync of the step (state writes done, asynchronous kernel errors surface here).
  BMS_RETURN_IF_ERROR(cuda::SynchronizeStream(stream_));
  out->resize(n);
  const int32_t* tokens = static_cast<const int32_t*>(b.out_host);
  const auto* lp = reinterpret_cast<const cuda::SampleRowLogprobs*>(
      static_cast<int32_t*>(b.out_host) + b.max_rows);
  for (size_t r = 0; r < n; ++r) {
    SampledToken& s = (*out)[r];
    s = SampledToken();
    s.token = tokens[r];
    if (rows[r].params->logprobs >= 0) {
      s.logprob.token = s.token;
      s.logprob.logprob = lp[r].logprob;
      for (int k = 0; k < lp[r].n_top; ++k)
        s.logprob.top.emplace_back(lp[r].top_ids[k], lp[r].top_logprobs[k]);
    }
  }
  return absl::OkStatus();
}

absl::Status CudaBackendImpl::ForwardSampled(const StepInput& input,
                                             std::span<const SampleContext> rows,
                                             std::vector<SampledToken>* out) {
  if (!device_sampling_) return Backend::ForwardSampled(input, rows, out);
  step_start_ = std::chrono::steady_clock::now();
  if (out == nullptr) return absl::InvalidArgumentError("ForwardSampled: out is null");
  BMS_RETURN_IF_ERROR(CheckSampledInput(input, rows.size()));
  for (size_t r = 0; r < rows.size(); ++r)
    if (rows[r].params == nullptr)
      return absl::InvalidArgumentError(absl::StrCat("rows[", r, "].params is null"));
  BMS_RETURN_IF_ERROR(ValidateInput(input));
  out->clear();
  auto graphed = LaunchDecodeGraph(input, &rows);
  if (!graphed.ok()) return graphed.status();
  if (!*graphed) {
    const int n = static_cast<int>(rows.size());
    if (n > 0) BMS_RETURN_IF_ERROR(PackSampling(rows, n));
    int n_logits_rows = 0;
    BMS_RETURN_IF_ERROR(EnqueueEager(input, &n_logits_rows));
    if (n_logits_rows != n)
      return absl::InternalError(
          absl::StrCat("step wrote ", n_logits_rows, " logits rows for ", n, " sampling rows"));
    if (n > 0) BMS_RETURN_IF_ERROR(EnqueueSampling(n));
  }
  MarkEnqueued();
  return FinishSampling(rows, out);
}

}  // namespace bms
