// CUDA backend start-up and state access (engine/cuda_backend.h): config checks, one weight
// upload into a single device allocation, the state pool, CopyState / ReadState and the routing
// counters. The forward pass lives in engine/cuda_forward.cc.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/cuda_backend_impl.h"
#include "engine/host_tensor.h"
#include "engine/status_macros.h"

namespace bms {
namespace {

constexpr size_t kAlign = 256;
size_t AlignUp(size_t v) { return (v + kAlign - 1) / kAlign * kAlign; }
double GiB(size_t b) { return static_cast<double>(b) / (1024.0 * 1024.0 * 1024.0); }

// Lays tensors out in one device allocation (256-byte aligned) and, unless dry, converts and
// copies them there.
class WeightPacker {
 public:
  WeightPacker(char* base, cuda::DType dtype) : base_(base), dtype_(dtype) {}
  size_t bytes() const { return offset_; }

  // A group of tensors stored back to back (stacked experts); each must hold `numel` elements.
  absl::StatusOr<void*> Put(const std::vector<const HostTensor*>& parts, int64_t numel, bool as_f32,
                            const std::string& name) {
    const size_t elem = as_f32 ? 4 : cuda::DTypeBytes(dtype_);
    const size_t start = offset_;
    for (size_t i = 0; i < parts.size(); ++i) {
      const HostTensor& t = *parts[i];
      if (t.empty())
        return absl::InvalidArgumentError(absl::StrCat("weights: ", name, " is missing"));
      if (t.numel() != numel)
        return absl::InvalidArgumentError(absl::StrCat(
            "weights: ", name, " has shape ", t.ShapeString(), ", expected ", numel, " elements"));
      if (base_) BMS_RETURN_IF_ERROR(Write(t.ToF32(), start + i * numel * elem, as_f32));
    }
    offset_ = AlignUp(start + parts.size() * numel * elem);
    return base_ ? static_cast<void*>(base_ + start) : nullptr;
  }
  absl::StatusOr<void*> Put(const HostTensor& t, int64_t numel, bool as_f32,
                            const std::string& name) {
    return Put(std::vector<const HostTensor*>{&t}, numel, as_f32, name);
  }
  // Optional fp32 tensor group: all empty = absent (null).
  absl::StatusOr<const float*> PutOptional(const std::vector<const HostTensor*>& parts,
                                           int64_t numel, const std::string& name) {
    if (parts.empty() || parts[0]->empty()) return nullptr;
    auto p = Put(parts, numel, true, name);
    if (!p.ok()) return p.status();
    return static_cast<const float*>(*p);
  }
  absl::StatusOr<const float*> PutValues(const std::vector<float>& v) {
    const size_t start = offset_;
    if (base_) BMS_RETURN_IF_ERROR(Write(v, start, true));
    offset_ = AlignUp(start + v.size() * 4);
    return base_ ? reinterpret_cast<const float*>(base_ + start) : nullptr;
  }

 private:
  absl::Status Write(const std::vector<float>& v, size_t offset, bool as_f32) {
    if (as_f32 || dtype_ == cuda::DType::kF32)
      return cuda::CopyToDevice(base_ + offset, v.data(), v.size() * 4);
    std::vector<uint16_t> h(v.size());
    for (size_t i = 0; i < v.size(); ++i) h[i] = F32ToBF16(v[i]);
    return cuda::CopyToDevice(base_ + offset, h.data(), h.size() * 2);
  }
  char* base_;
  cuda::DType dtype_;
  size_t offset_ = 0;
};

}  // namespace

CudaBackendImpl::CudaBackendImpl(const ModelConfig& config, const BackendOptions& options)
    : config_(config),
      num_slots_(options.num_slots),
      state_dtype_(options.state_dtype),
      dtype_(options.fp32_compute ? cuda::DType::kF32 : cuda::DType::kBF16),
      memory_fraction_(options.gpu_memory_fraction),
      use_graphs_(options.cuda_graphs),
      cuda_graph_max_batch_(options.cuda_graph_max_batch),
      device_sampling_(options.device_sampling) {}

CudaBackendImpl::~CudaBackendImpl() {
  if (stream_) (void)cuda::SynchronizeStream(stream_);
  graphs_.reset();
  FreeSampling();
  cuda::FreeHost(meta_host_);
  cuda::DestroyStream(stream_);
}

cuda::StateStorage CudaBackendImpl::state_storage() const {
  return state_dtype_ == StateDType::kF32 ? cuda::StateStorage::kF32 : cuda::StateStorage::kBF16;
}

size_t CudaBackendImpl::state_bytes_per_slot() const {
  const size_t elem = state_dtype_ == StateDType::kF32 ? 4 : 2;
  return static_cast<size_t>(config_.num_mamba_layers()) * config_.d_inner() *
         (config_.d_conv - 1 + config_.d_state) * elem;
}

absl::StatusOr<std::unique_ptr<CudaBackendImpl>> CudaBackendImpl::Create(
    const ModelWeights& weights, const BackendOptions& options) {
  const ModelConfig& c = weights.config;
  if (options.num_slots < 0)
    return absl::InvalidArgumentError(
        absl::StrCat("num_slots = ", options.num_slots, " must be >= 1 (or 0: as many as fit)"));
  if (options.cuda_graph_max_batch < 0)
    return absl::InvalidArgumentError(absl::StrCat(
        "cuda_graph_max_batch = ", options.cuda_graph_max_batch, " must be >= 0 (0 = no cap)"));
  if (!(options.gpu_memory_fraction > 0.0 && options.gpu_memory_fraction <= 1.0))
    return absl::InvalidArgumentError(
        absl::StrCat("gpu_memory_fraction = ", options.gpu_memory_fraction, " must be in (0, 1]"));
  if (c.d_state != 16)
    return absl::InvalidArgumentError(
        absl::StrCat("state_size = ", c.d_state, ": the CUDA backend supports state_size 16 only"));
  if (c.d_conv < 2 || c.d_conv > 16)
    return absl::InvalidArgumentError(
        absl::StrCat("conv_dimension = ", c.d_conv, ": the CUDA backend supports 2..16"));
  if (c.n_experts < 1 || c.n_experts > 64)
    return absl::InvalidArgumentError(
        absl::StrCat("num_moe_experts = ", c.n_experts, ": the CUDA backend supports 1..64"));
  if (c.d_model > 12288)
    return absl::InvalidArgumentError(
        absl::StrCat("hidden_size = ", c.d_model, ": the CUDA backend supports at most 12288"));
  if (static_cast<int>(weights.layers.size()) != c.num_layers ||
      static_cast<int>(c.layers.size()) != c.num_layers)
    return absl::InvalidArgumentError("weights: layer count does not match num_layers");
  std::string why;
  if (!cuda::DeviceAvailable(&why)) return absl::FailedPreconditionError(why);
  std::unique_ptr<CudaBackendImpl> b(new CudaBackendImpl(c, options));
  BMS_RETURN_IF_ERROR(b->Init(weights));
  return b;
}

absl::Status CudaBackendImpl::Init(const ModelWeights& weights) {
  auto stream = cuda::CreateStream();
  if (!stream.ok()) return stream.status();
  stream_ = *stream;

  // Budget: weights + state pool must fit under gpu_memory_fraction of the device.
  size_t weight_bytes = 0;
  BMS_RETURN_IF_ERROR(UploadWeights(weights, /*dry_run=*/true, &weight_bytes));
  size_t free_b = 0, total_b = 0;
  BMS_RETURN_IF_ERROR(cuda::MemInfo(&free_b, &total_b));
  const double cap = std::min<double>(static_cast<double>(free_b),
                                      memory_fraction_ * static_cast<double>(total_b));
  if (num_slots_ == 0) BMS_RETURN_IF_ERROR(SizeSlotsFromBudget(cap, weight_bytes));
  const size_t state_bytes = state_bytes_per_slot() * (static_cast<size_t>(num_slots_) + 1);
  if (static_cast<double>(weight_bytes) > cap)
    return absl::ResourceExhaustedError(absl::StrFormat(
        "CUDA backend: the weights need %.2f GiB but only %.2f GiB of GPU memory are usable "
        "(gpu_memory_fraction %.2f, %.2f GiB free of %.2f GiB)",
        GiB(weight_bytes), GiB(static_cast<size_t>(cap)), memory_fraction_, GiB(free_b),
        GiB(total_b)));
  if (static_cast<double>(weight_bytes + state_bytes) > cap)
    return absl::ResourceExhaustedError(absl::StrFormat(
        "CUDA backend: the state pool for %d slots (+1 padding) needs %.2f GiB but only %.2f GiB "
        "are left after %.2f GiB of weights (gpu_memory_fraction %.2f); lower num_slots",
        num_slots_, GiB(state_bytes), GiB(static_cast<size_t>(cap) - weight_bytes),
        GiB(weight_bytes), memory_fraction_));

  auto wbuf = cuda::DeviceBuffer::Alloc(weight_bytes, "model weights");
  if (!wbuf.ok()) return wbuf.status();
  weights_ = std::move(*wbuf);
  BMS_RETURN_IF_ERROR(UploadWeights(weights, /*dry_run=*/false, &weight_bytes));

  auto sbuf = cuda::DeviceBuffer::Alloc(
      state_bytes, absl::StrCat("the state pool (", num_slots_, " slots + 1 padding)"));
  if (!sbuf.ok()) return sbuf.status();
  state_ = std::move(*sbuf);
  BMS_RETURN_IF_ERROR(cuda::FillBytes(state_.get(), 0, state_.size(), stream_));
  const size_t elem = state_dtype_ == StateDType::kF32 ? 4 : 2;
  const size_t slots = static_cast<size_t>(num_slots_) + 1;
  const size_t conv_bytes = slots * config_.d_inner() * (config_.d_conv - 1) * elem;
  const size_t ssm_bytes = slots * config_.d_inner() * config_.d_state * elem;
  char* p = state_.as<char>();
  int n_moe = 0;
  for (Layer& l : layers_) {
    if (l.kind == LayerKind::kMamba) {
      l.mamba.conv_state = p;
      l.mamba.ssm_state = p + conv_bytes;
      p += conv_bytes + ssm_bytes;
    } else if (l.kind == LayerKind::kMoe) {
      l.mlp.moe_index = n_moe++;
    }
  }
  const size_t counts_bytes = std::max<size_t>(1, n_moe) * config_.n_experts * 8;
  auto cbuf = cuda::DeviceBuffer::Alloc(counts_bytes, "routing counters");
  if (!cbuf.ok()) return cbuf.status();
  routing_counts_ = std::move(*cbuf);
  BMS_RETURN_IF_ERROR(cuda::FillBytes(routing_counts_.get(), 0, counts_bytes, stream_));

  auto gemm = cuda::GemmRunner::Create(kGemmWorkspaceBytes);
  if (!gemm.ok()) return gemm.status();
  gemm_ = std::move(*gemm);
  BMS_RETURN_IF_ERROR(cuda::SynchronizeStream(stream_));
  UpdateBytesInUse();
  std::fprintf(stderr,
               "cuda backend: %s; %s weights %.3f GiB; %d state slots (+1 padding) x %zu bytes "
               "(%s) = %.3f GiB\n",
               cuda::DeviceDescription().c_str(), dtype_ == cuda::DType::kF32 ? "fp32" : "bf16",
               GiB(weights_.size()), num_slots_, state_bytes_per_slot(),
               state_dtype_ == StateDType::kF32 ? "fp32" : "bf16", GiB(state_bytes));
  return absl::OkStatus();
}

absl::Status CudaBackendImpl::SizeSlotsFromBudget(double cap, size_t weight_bytes) {
  // Held next to the state pool: the activation workspace for a prefill chunk of
  // kSizingReserveTokens tokens (the engine's token budget, with slack), the GEMM workspace and
  // a fixed margin for the CUDA libraries' own allocations and graph executables. With CUDA
  // graphs, each slot also costs one activation row (decode graphs size the workspace for
  // num_slots rows, logits row included).
  constexpr size_t kSizingReserveTokens = 4096;
  constexpr size_t kMarginBytes = size_t{512} << 20;
  const ModelConfig& c = config_;
  const size_t e = cuda::DTypeBytes(dtype_);
  const size_t d = c.d_model, di = c.d_inner(), xdbl = c.dt_rank() + 2 * c.d_state;
  const size_t token_row = d * (2 * e + 8) + di * 5 * e + xdbl * e + c.n_experts * 4 + 12 +
                           static_cast<size_t>(c.ffn_hidden_size) * e;
  const size_t logits_row = d * e + static_cast<size_t>(c.vocab_size) * 4;
  const size_t reserve =
      kSizingReserveTokens * token_row + 64 * logits_row + kGemmWorkspaceBytes + kMarginBytes;
  const size_t per_slot = state_bytes_per_slot() + (use_graphs_ ? token_row + logits_row : 0);
  const double avail = cap - static_cast<double>(weight_bytes + reserve + state_bytes_per_slot());
  const double n = std::floor(avail / static_cast<double>(per_slot));
  if (n < 1)
    return absl::ResourceExhaustedError(absl::StrFormat(
        "CUDA backend: num_slots = 0 (as many as fit): not one state slot fits: %.2f GiB usable, "
        "%.2f GiB of weights, %.2f GiB reserved for activations (gpu_memory_fraction %.2f)",
        GiB(static_cast<size_t>(cap)), GiB(weight_bytes), GiB(reserve), memory_fraction_));
  num_slots_ = static_cast<int>(std::min(n, 1.0e9));
  std::fprintf(stderr,
               "cuda backend: num_slots = 0: %d state slots fit (%zu bytes each%s; %.2f GiB "
               "usable, %.2f GiB weights, %.2f GiB reserved for activations)\n",
               num_slots_, state_bytes_per_slot(), use_graphs_ ? " + one graph activation row" : "",
               GiB(static_cast<size_t>(cap)), GiB(weight_bytes), GiB(reserve));
  return absl::OkStatus();
}

absl::Status CudaBackendImpl::UploadWeights(const ModelWeights& w, bool dry_run, size_t* bytes) {
  const ModelConfig& c = config_;
  const int64_t d = c.d_model, di = c.d_inner(), n = c.d_state, r = c.dt_rank(), wc = c.d_conv;
  const int64_t rows1 = c.fc1_rows(), f = c.ffn_hidden_size, e_count = c.n_experts;
  WeightPacker pk(dry_run ? nullptr : weights_.as<char>(), dtype_);
#define BMS_ASSIGN(lhs, expr, type)   \
  do {                                \
    auto _v = (expr);                 \
    if (!_v.ok()) return _v.status(); \
    lhs = static_cast<type>(*_v);     \
  } while (0)
  BMS_ASSIGN(embedding_, pk.Put(w.embedding, c.vocab_size * d, false, "embedding"), const void*);
  BMS_ASSIGN(final_norm_, pk.Put(w.final_norm, d, true, "final_layernorm.weight"), const float*);
  BMS_ASSIGN(final_bias_, pk.Put(w.final_norm_bias, d, true, "final_layernorm.bias"), const float*);
  layers_.assign(c.num_layers, Layer{});
  for (int i = 0; i < c.num_layers; ++i) {
    const LayerWeights& lw = w.layers[i];
    Layer& l = layers_[i];
    const std::string p = absl::StrCat("decoder.layers.", i, ".");
    l.kind = c.layers[i];
    if (lw.kind != l.kind) return absl::InvalidArgumentError(p + " kind differs from config");
    BMS_ASSIGN(l.norm, pk.Put(lw.norm, d, true, p + "norm.weight"), const float*);
    if (l.kind == LayerKind::kMamba) {
      const MambaWeights& m = lw.mamba;
      MambaLayer& ml = l.mamba;
      const std::string q = p + "mixer.";
      BMS_ASSIGN(ml.in_proj, pk.Put(m.in_proj, 2 * di * d, false, q + "in_proj.weight"),
                 const void*);
      BMS_ASSIGN(ml.in_proj_bias, pk.PutOptional({&m.in_proj_bias}, 2 * di, q + "in_proj.bias"),
                 const float*);
      BMS_ASSIGN(ml.conv_weight, pk.Put(m.conv_weight, di * wc, true, q + "conv1d.weight"),
                 const float*);
      BMS_ASSIGN(ml.conv_bias, pk.Put(m.conv_bias, di, true, q + "conv1d.bias"), const float*);
      BMS_ASSIGN(ml.x_proj, pk.Put(m.x_proj, (r + 2 * n) * di, false, q + "x_proj.weight"),
                 const void*);
      BMS_ASSIGN(ml.dt_proj, pk.Put(m.dt_proj, di * r, false, q + "dt_proj.weight"), const void*);
      BMS_ASSIGN(ml.dt_bias, pk.Put(m.dt_proj_bias, di, true, q + "dt_proj.bias"), const float*);
      if (m.A_log.numel() != di * n)
        return absl::InvalidArgumentError(
            absl::StrCat("weights: ", q, "A_log has shape ", m.A_log.ShapeString()));
      std::vector<float> A = dry_run ? std::vector<float>(di * n) : m.A_log.ToF32();
      for (float& a : A) a = -std::exp(a);
      BMS_ASSIGN(ml.A, pk.PutValues(A), const float*);
      BMS_ASSIGN(ml.D, pk.Put(m.D, di, true, q + "D"), const float*);
      BMS_ASSIGN(ml.out_proj, pk.Put(m.out_proj, d * di, false, q + "out_proj.weight"),
                 const void*);
      BMS_ASSIGN(ml.out_proj_bias, pk.PutOptional({&m.out_proj_bias}, d, q + "out_proj.bias"),
                 const float*);
      continue;
    }
    const bool moe = l.kind == LayerKind::kMoe;
    const std::vector<MlpWeights> dense = {lw.dense};
    const std::vector<MlpWeights>& experts = moe ? lw.moe.experts : dense;
    const int64_t count = moe ? e_count : 1;
    if (static_cast<int64_t>(experts.size()) != count)
      return absl::InvalidArgumentError(
          absl::StrCat(p, "mixer has ", experts.size(), " experts, expected ", count));
    MlpLayer& ml = l.mlp;
    ml.n_experts = static_cast<int>(count);
    if (moe) {
      BMS_ASSIGN(ml.router, pk.Put(lw.moe.router, e_count * d, true, p + "mixer.router.weight"),
                 const float*);
      BMS_ASSIGN(ml.router_bias,
                 pk.PutOptional({&lw.moe.router_bias}, e_count, p + "mixer.router.bias"),
                 const float*);
    }
    std::vector<const HostTensor*> fc1, fc2, b1, b2;
    for (const MlpWeights& e : experts) {
      fc1.push_back(&e.fc1);
      fc2.push_back(&e.fc2);
      b1.push_back(&e.fc1_bias);
      b2.push_back(&e.fc2_bias);
    }
    const std::string q = moe ? p + "mixer.local_experts.*." : p + "mixer.";
    BMS_ASSIGN(ml.fc1, pk.Put(fc1, rows1 * d, false, q + "linear_fc1.weight"), const void*);
    BMS_ASSIGN(ml.fc2, pk.Put(fc2, d * f, false, q + "linear_fc2.weight"), const void*);
    BMS_ASSIGN(ml.fc1_bias, pk.PutOptional(b1, rows1, q + "linear_fc1.bias"), const float*);
    BMS_ASSIGN(ml.fc2_bias, pk.PutOptional(b2, d, q + "linear_fc2.bias"), const float*);
  }
#undef BMS_ASSIGN
  *bytes = pk.bytes();
  return absl::OkStatus();
}

absl::Status CudaBackendImpl::CopyState(int src_slot, int dst_slot) {
  for (int s : {src_slot, dst_slot})
    if (s < 0 || s > num_slots_)
      return absl::InvalidArgumentError(
          absl::StrCat("CopyState: slot ", s, " is outside [0, ", num_slots_, "]"));
  if (src_slot == dst_slot) return absl::OkStatus();
  const size_t elem = state_dtype_ == StateDType::kF32 ? 4 : 2;
  const size_t conv = static_cast<size_t>(config_.d_inner()) * (config_.d_conv - 1) * elem;
  const size_t ssm = static_cast<size_t>(config_.d_inner()) * config_.d_state * elem;
  BMS_RETURN_IF_ERROR(cuda::SynchronizeStream(stream_));
  for (const Layer& l : layers_) {
    if (l.kind != LayerKind::kMamba) continue;
    char* c = static_cast<char*>(l.mamba.conv_state);
    char* s = static_cast<char*>(l.mamba.ssm_state);
    // On the compute stream: the next step's kernels (non-blocking stream) must see the copy.
    // A plain cudaMemcpy runs on the legacy default stream, which a non-blocking stream does
    // not wait for.
    BMS_RETURN_IF_ERROR(
        cuda::CopyDeviceToDeviceAsync(c + dst_slot * conv, c + src_slot * conv, conv, stream_));
    BMS_RETURN_IF_ERROR(
        cuda::CopyDeviceToDeviceAsync(s + dst_slot * ssm, s + src_slot * ssm, ssm, stream_));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> CudaBackendImpl::ReadState(int slot) {
  if (slot < 0 || slot > num_slots_)
    return absl::InvalidArgumentError(
        absl::StrCat("ReadState: slot ", slot, " is outside [0, ", num_slots_, "]"));
  const bool f32 = state_dtype_ == StateDType::kF32;
  const size_t elem = f32 ? 4 : 2;
  const size_t conv_n = static_cast<size_t>(config_.d_inner()) * (config_.d_conv - 1);
  const size_t ssm_n = static_cast<size_t>(config_.d_inner()) * config_.d_state;
  BMS_RETURN_IF_ERROR(cuda::SynchronizeStream(stream_));
  std::vector<float> out;
  std::vector<char> raw;
  for (const Layer& l : layers_) {
    if (l.kind != LayerKind::kMamba) continue;
    for (auto [base, n] : {std::pair<void*, size_t>{l.mamba.conv_state, conv_n},
                           std::pair<void*, size_t>{l.mamba.ssm_state, ssm_n}}) {
      raw.resize(n * elem);
      BMS_RETURN_IF_ERROR(
          cuda::CopyToHost(raw.data(), static_cast<char*>(base) + slot * n * elem, n * elem));
      for (size_t i = 0; i < n; ++i) {
        if (f32) {
          float v;
          std::memcpy(&v, raw.data() + i * 4, 4);
          out.push_back(v);
        } else {
          uint16_t v;
          std::memcpy(&v, raw.data() + i * 2, 2);
          out.push_back(BF16ToF32(v));
        }
      }
    }
  }
  return out;
}

absl::StatusOr<std::vector<int64_t>> CudaBackendImpl::ReadRoutingCounts() {
  BMS_RETURN_IF_ERROR(cuda::SynchronizeStream(stream_));
  const size_t n = static_cast<size_t>(config_.num_moe_layers()) * config_.n_experts;
  std::vector<uint64_t> raw(n);
  BMS_RETURN_IF_ERROR(cuda::CopyToHost(raw.data(), routing_counts_.get(), n * 8));
  return std::vector<int64_t>(raw.begin(), raw.end());
}

std::vector<std::vector<int64_t>> CudaBackendImpl::ExpertTokenCounts() {
  auto flat = ReadRoutingCounts();
  if (!flat.ok()) return {};
  std::vector<std::vector<int64_t>> out(config_.num_moe_layers());
  for (size_t l = 0; l < out.size(); ++l)
    out[l].assign(flat->begin() + l * config_.n_experts,
                  flat->begin() + (l + 1) * config_.n_experts);
  return out;
}

void CudaBackendImpl::UpdateBytesInUse() {
  workspace_bytes_.store(ws_.buffer.size());
  bytes_in_use_.store(weights_.size() + state_.size() + routing_counts_.size() + ws_.buffer.size() +
                      meta_dev_.size() + kGemmWorkspaceBytes + graph_bytes_.load());
}

absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(const ModelWeights& weights,
                                                           const BackendOptions& options) {
  auto b = CudaBackendImpl::Create(weights, options);
  if (!b.ok()) return b.status();
  return std::unique_ptr<Backend>(std::move(*b));
}

bool CudaDeviceAvailable(std::string* why) { return cuda::DeviceAvailable(why); }

}  // namespace bms
