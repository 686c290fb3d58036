// CUDA backend forward pass (engine/cuda_backend_impl.h): packs the step's chunks (one H2D copy
// of tokens, cu_seqlens, slots and logits rows), runs every layer on one stream with the
// kernels/cuda ops and cuBLASLt, and copies back only the requested logits rows (the step's
// single host sync).
#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "engine/cuda_backend_impl.h"
#include "engine/status_macros.h"

namespace bms {
namespace {

size_t AlignUp(size_t v) { return (v + 255) / 256 * 256; }

}  // namespace

absl::Status CudaBackendImpl::ValidateInput(const StepInput& input) const {
  std::vector<uint8_t> used(static_cast<size_t>(num_slots_) + 1, 0);
  const int64_t n_tokens = static_cast<int64_t>(input.tokens.size());
  for (size_t i = 0; i < input.seqs.size(); ++i) {
    const SeqChunk& s = input.seqs[i];
    const std::string where = absl::StrCat("seqs[", i, "]");
    if (s.slot < 0 || s.slot > num_slots_)
      return absl::InvalidArgumentError(
          absl::StrCat(where, ".slot = ", s.slot, " is outside [0, ", num_slots_, "]"));
    if (used[s.slot])
      return absl::InvalidArgumentError(
          absl::StrCat(where, ".slot = ", s.slot, " is used by an earlier chunk of this step"));
    used[s.slot] = 1;
    if (s.n_tokens < 1)
      return absl::InvalidArgumentError(
          absl::StrCat(where, ".n_tokens = ", s.n_tokens, " must be >= 1"));
    if (s.token_offset < 0 || s.token_offset + static_cast<int64_t>(s.n_tokens) > n_tokens)
      return absl::InvalidArgumentError(
          absl::StrCat(where, " tokens [", s.token_offset, ", ",
                       static_cast<int64_t>(s.token_offset) + s.n_tokens,
                       ") are outside the step's ", n_tokens, " tokens"));
    if (s.logits != LogitsMode::kNone && s.logits != LogitsMode::kLast &&
        s.logits != LogitsMode::kAll)
      return absl::InvalidArgumentError(absl::StrCat(where, ".logits is not a LogitsMode"));
    for (int t = s.token_offset; t < s.token_offset + s.n_tokens; ++t) {
      if (input.tokens[t] < 0 || input.tokens[t] >= config_.vocab_size)
        return absl::InvalidArgumentError(absl::StrCat(
            "tokens[", t, "] = ", input.tokens[t], " is outside [0, ", config_.vocab_size, ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status CudaBackendImpl::EnsureWorkspace(int tokens, int logit_rows) {
  if (tokens <= ws_.tokens && logit_rows <= ws_.logit_rows) return absl::OkStatus();
  tokens = std::max(tokens, ws_.tokens);
  logit_rows = std::max(logit_rows, ws_.logit_rows);
  const ModelConfig& c = config_;
  const size_t T = tokens, R = logit_rows, e = cuda::DTypeBytes(dtype_);
  const size_t d = c.d_model, di = c.d_inner(), xdbl = c.dt_rank() + 2 * c.d_state;
  size_t off = 0;
  std::vector<std::pair<void**, size_t>> parts;
  auto add = [&](void** p, size_t bytes) { parts.push_back({p, bytes}); };
  Workspace w;
  add(&w.h, T * d * e);
  add(reinterpret_cast<void**>(&w.residual), T * d * 4);
  add(&w.x, T * d * e);
  add(reinterpret_cast<void**>(&w.x_f32), T * d * 4);
  add(&w.xz, T * 2 * di * e);
  add(&w.xc, T * di * e);
  add(&w.dbc, T * xdbl * e);
  add(&w.dt, T * di * e);
  add(reinterpret_cast<void**>(&w.mamba_partials),
      cuda::MambaDecodePartialFloats(std::min<int>(tokens, cuda::MambaDecodePartialMaxBatch()),
                                     static_cast<int>(di), static_cast<int>(xdbl)) *
          4);
  add(&w.y, T * di * e);
  add(reinterpret_cast<void**>(&w.router_logits), T * c.n_experts * 4);
  add(reinterpret_cast<void**>(&w.expert), T * 4);
  add(reinterpret_cast<void**>(&w.scale), T * 4);
  add(reinterpret_cast<void**>(&w.offsets), (c.n_experts + 1) * 4);
  add(reinterpret_cast<void**>(&w.permutation), T * 4);
  add(reinterpret_cast<void**>(&w.ticket), 4);
  add(&w.act, T * c.ffn_hidden_size * e);
  add(&w.head_in, std::max<size_t>(R, 1) * d * e);
  add(reinterpret_cast<void**>(&w.logits), std::max<size_t>(R, 1) * c.vocab_size * 4);
  for (auto& [p, bytes] : parts) off += AlignUp(bytes);
  ws_.buffer = cuda::DeviceBuffer();  // free the old one first
  auto buf = cuda::DeviceBuffer::Alloc(
      off, absl::StrCat("activations for ", tokens, " tokens and ", logit_rows, " logits rows"));
  if (!buf.ok()) {
    ws_ = Workspace();
    UpdateBytesInUse();
    return buf.status();
  }
  w.buffer = std::move(*buf);
  char* base = w.buffer.as<char>();
  off = 0;
  for (auto& [p, bytes] : parts) {
    *p = base + off;
    off += AlignUp(bytes);
  }
  // The routing ticket must start at zero (the kernel leaves it zero after each launch).
  if (auto st = cuda::FillBytes(w.ticket, 0, 4, stream_); !st.ok()) {
    ws_ = Workspace();
    UpdateBytesInUse();
    return st;
  }
  w.tokens = tokens;
  w.logit_rows = logit_rows;
  ws_ = std::move(w);
  UpdateBytesInUse();
  return absl::OkStatus();
}

absl::Status CudaBackendImpl::EnsureMeta(size_t bytes) {
  if (bytes <= meta_capacity_) return absl::OkStatus();
  bytes = std::max(bytes, 2 * meta_capacity_);
  cuda::FreeHost(meta_host_);
  meta_host_ = nullptr;
  meta_capacity_ = 0;
  auto host = cuda::AllocHost(bytes);
  if (!host.ok()) return host.status();
  meta_host_ = *host;
  auto dev = cuda::DeviceBuffer::Alloc(bytes, "step metadata");
  if (!dev.ok()) return dev.status();
  meta_dev_ = std::move(*dev);
  meta_capacity_ = bytes;
  UpdateBytesInUse();
  return absl::OkStatus();
}

absl::Status CudaBackendImpl::Forward(const StepInput& input, std::vector<float>* logits) {
  step_start_ = std::chrono::steady_clock::now();
  if (logits == nullptr) return absl::InvalidArgumentError("logits output is null");
  BMS_RETURN_IF_ERROR(ValidateInput(input));
  logits->clear();
  auto graphed = ForwardDecodeGraph(input, logits);
  if (!graphed.ok()) return graphed.status();
  if (*graphed) return absl::OkStatus();
  int R = 0;
  BMS_RETURN_IF_ERROR(EnqueueEager(input, &R));
  MarkEnqueued();  // before the logits copy: a copy into pageable memory waits for the GPU
  if (R > 0) {
    logits->resize(static_cast<size_t>(R) * config_.vocab_size);  // [R, vocab_size]
    BMS_RETURN_IF_ERROR(
        cuda::CopyToHostAsync(logits->data(), ws_.logits, logits->size() * 4, stream_));
  }
  // The one sync of the step: logits are on the host, state writes are done, and any
  // asynchronous kernel error surfaces here.
  return cuda::SynchronizeStream(stream_);
}

absl::Status CudaBackendImpl::EnqueueEager(const StepInput& input, int* n_logits_rows) {
  const int S = static_cast<int>(input.seqs.size());

  // Pack: tokens in chunk order; logits rows in chunk order.
  std::vector<int32_t> tokens, cu{0}, slots, rows;
  std::vector<uint8_t> has_state;
  for (const SeqChunk& s : input.seqs) {
    const int first_row = static_cast<int>(tokens.size());
    tokens.insert(tokens.end(), input.tokens.begin() + s.token_offset,
                  input.tokens.begin() + s.token_offset + s.n_tokens);
    cu.push_back(static_cast<int32_t>(tokens.size()));
    slots.push_back(s.slot);
    has_state.push_back(s.first_chunk ? 0 : 1);
    if (s.logits == LogitsMode::kAll)
      for (int t = 0; t < s.n_tokens; ++t) rows.push_back(first_row + t);
    else if (s.logits == LogitsMode::kLast)
      rows.push_back(first_row + s.n_tokens - 1);
  }
  const int T = static_cast<int>(tokens.size());
  const int R = static_cast<int>(rows.size());
  *n_logits_rows = T == 0 ? 0 : R;
  if (T == 0) return absl::OkStatus();
  BMS_RETURN_IF_ERROR(EnsureWorkspace(T, R));

  // One metadata block: int32 [tokens | cu | slots | rows | dense offsets] then uint8 has_state.
  const size_t n_i32 = tokens.size() + cu.size() + slots.size() + rows.size() + 2;
  BMS_RETURN_IF_ERROR(EnsureMeta(n_i32 * 4 + has_state.size()));
  int32_t* hp = static_cast<int32_t*>(meta_host_);
  const int32_t* dp = meta_dev_.as<int32_t>();
  auto put = [&](const std::vector<int32_t>& v, const int32_t** dev) {
    std::memcpy(hp, v.data(), v.size() * 4);
    *dev = dp;
    hp += v.size();
    dp += v.size();
  };
  put(tokens, &d_tokens_);
  put(cu, &d_cu_seqlens_);
  put(slots, &d_slots_);
  put(rows, &d_rows_);
  put({0, T}, &d_dense_offsets_);
  std::memcpy(hp, has_state.data(), has_state.size());
  d_has_state_ = reinterpret_cast<const uint8_t*>(dp);
  d_n_counted_ = nullptr;
  BMS_RETURN_IF_ERROR(
      cuda::CopyToDeviceAsync(meta_dev_.get(), meta_host_, n_i32 * 4 + has_state.size(), stream_));
  return EnqueueStep(T, S, R);
}

absl::Status CudaBackendImpl::EnqueueStep(int T, int S, int R) {
  const ModelConfig& c = config_;
  BMS_RETURN_IF_ERROR(cuda::Embedding({.n_tokens = T,
                                       .d_model = c.d_model,
                                       .dtype = dtype_,
                                       .tokens = d_tokens_,
                                       .table = embedding_,
                                       .out = ws_.h},
                                      stream_));
  for (int i = 0; i < c.num_layers; ++i) {
    const Layer& l = layers_[i];
    const bool moe = l.kind == LayerKind::kMoe && l.mlp.router != nullptr;
    const cuda::AddNormParams norm{.n_rows = T,
                                   .d_model = c.d_model,
                                   .dtype = dtype_,
                                   .h = ws_.h,
                                   .residual = ws_.residual,
                                   .first_layer = i == 0,
                                   .weight = l.norm,
                                   .eps = c.layernorm_epsilon,
                                   .out = ws_.x,
                                   .out_f32 = moe ? ws_.x_f32 : nullptr};
    // In front of a MoE layer: norm, router, selection and grouping in one kernel.
    cuda::AddNormRouteParams route;
    if (moe) {
      route = {.norm = norm,
               .n_experts = l.mlp.n_experts,
               .router = l.mlp.router,
               .router_bias = l.mlp.router_bias,
               .expert = ws_.expert,
               .scale = ws_.scale,
               .routing_counts = routing_counts_.as<unsigned long long>() +
                                 static_cast<size_t>(l.mlp.moe_index) * c.n_experts,
               .n_counted = d_n_counted_,
               .expert_offsets = ws_.offsets,
               .permutation = ws_.permutation,
               .ticket = ws_.ticket};
      route.norm.out_f32 = nullptr;
    }
    const bool routed = moe && !cuda::LegacyKernels() && cuda::AddRmsNormRouteSupported(route);
    if (routed)
      BMS_RETURN_IF_ERROR(cuda::AddRmsNormRoute(route, stream_));
    else
      BMS_RETURN_IF_ERROR(cuda::AddRmsNorm(norm, stream_));
    if (l.kind == LayerKind::kMamba)
      BMS_RETURN_IF_ERROR(MambaForward(l.mamba, T, S));
    else
      BMS_RETURN_IF_ERROR(MlpForward(l.mlp, T, routed));
  }

  if (R > 0) {
    BMS_RETURN_IF_ERROR(cuda::AddLayerNorm({.n_rows = R,
                                            .d_model = c.d_model,
                                            .dtype = dtype_,
                                            .h = ws_.h,
                                            .residual = ws_.residual,
                                            .write_residual = false,
                                            .rows = d_rows_,
                                            .weight = final_norm_,
                                            .bias = final_bias_,
                                            .eps = c.layernorm_epsilon,
                                            .out = ws_.head_in},
                                           stream_));
    BMS_RETURN_IF_ERROR(gemm_->Linear({.m = R,
                                       .n = c.vocab_size,
                                       .k = c.d_model,
                                       .in_dtype = dtype_,
                                       .out_dtype = cuda::DType::kF32,
                                       .x = ws_.head_in,
                                       .w = embedding_,
                                       .y = ws_.logits},
                                      stream_));
  }
  return absl::OkStatus();
}

absl::Status CudaBackendImpl::MambaForward(const MambaLayer& l, int T, int S) {
  const ModelConfig& c = config_;
  const int d = c.d_model, di = c.d_inner(), n = c.d_state, r = c.dt_rank();
  const int xdbl = r + 2 * n, e = cuda::DTypeBytes(dtype_);
  const cuda::StateStorage st = state_storage();
  char* xz = static_cast<char*>(ws_.xz);
  char* dbc = static_cast<char*>(ws_.dbc);
  // [T, 2*d_inner] = x | z
  BMS_RETURN_IF_ERROR(gemm_->Linear({.m = T,
                                     .n = 2 * di,
                                     .k = d,
                                     .in_dtype = dtype_,
                                     .out_dtype = dtype_,
                                     .x = ws_.x,
                                     .w = l.in_proj,
                                     .y = ws_.xz},
                                    stream_));
  if (l.in_proj_bias)
    BMS_RETURN_IF_ERROR(cuda::AddBias(T, 2 * di, dtype_, ws_.xz, 0, l.in_proj_bias, stream_));
  // Decode (one token per sequence): the fused mixer (kernels/cuda/mamba_decode_fused.cu).
  // Small batches: conv + x_proj partial sums, then reduce + dt_proj + scan (two kernels);
  // up to MambaDecodeFusedScanMaxBatch: conv update, x_proj GEMM, dt_proj + scan in one kernel;
  // larger ones: the unfused kernels.
  const cuda::MambaDecodeParams md{.batch = S,
                                   .d_inner = di,
                                   .d_conv = c.d_conv,
                                   .d_state = n,
                                   .dt_rank = r,
                                   .dtype = dtype_,
                                   .slots = d_slots_,
                                   .has_initial_state = d_has_state_,
                                   .xz = ws_.xz,
                                   .conv_weight = l.conv_weight,
                                   .conv_bias = l.conv_bias,
                                   .conv_state = l.conv_state,
                                   .conv_state_dtype = st,
                                   .x_proj = l.x_proj,
                                   .dt_proj = l.dt_proj,
                                   .dt_bias = l.dt_bias,
                                   .A = l.A,
                                   .D = l.D,
                                   .ssm_state = l.ssm_state,
                                   .ssm_state_dtype = st,
                                   .xc = ws_.xc,
                                   .out = ws_.y};
  const bool fused = T == S && cuda::MambaDecodeFusedEnabled() && cuda::MambaDecodeSupported(md);
  const bool fused_scan = fused && T <= cuda::MambaDecodeFusedScanMaxBatch();
  if (fused && T >= cuda::MambaDecodePartialMinBatch() && T <= cuda::MambaDecodePartialMaxBatch()) {
    cuda::MambaDecodeParams mp = md;
    mp.partials = ws_.mamba_partials;
    BMS_RETURN_IF_ERROR(cuda::MambaDecodeConvXProj(mp, stream_));
    BMS_RETURN_IF_ERROR(cuda::MambaDecodeScan(mp, stream_));
  } else {
    BMS_RETURN_IF_ERROR(cuda::CausalConv1dVarlen({.batch = S,
                                                  .n_tokens = T,
                                                  .d_inner = di,
                                                  .d_conv = c.d_conv,
                                                  .n_slots = num_slots_ + 1,
                                                  .dtype = dtype_,
                                                  .cu_seqlens = d_cu_seqlens_,
                                                  .slots = d_slots_,
                                                  .has_initial_state = d_has_state_,
                                                  .x = ws_.xz,
                                                  .x_stride = 2 * di,
                                                  .weight = l.conv_weight,
                                                  .bias = l.conv_bias,
                                                  .silu = true,
                                                  .out = ws_.xc,
                                                  .conv_state = l.conv_state,
                                                  .conv_state_dtype = st},
                                                 stream_));
    // [T, dt_rank + 2*d_state] = dt_low | B | C
    BMS_RETURN_IF_ERROR(gemm_->Linear({.m = T,
                                       .n = xdbl,
                                       .k = di,
                                       .in_dtype = dtype_,
                                       .out_dtype = dtype_,
                                       .x = ws_.xc,
                                       .w = l.x_proj,
                                       .y = ws_.dbc},
                                      stream_));
    if (fused_scan) {
      cuda::MambaDecodeParams mp = md;
      mp.dbc = ws_.dbc;
      BMS_RETURN_IF_ERROR(cuda::MambaDecodeScan(mp, stream_));
    } else {
      // [T, d_inner] dt before bias and softplus
      BMS_RETURN_IF_ERROR(gemm_->Linear({.m = T,
                                         .n = di,
                                         .k = r,
                                         .in_dtype = dtype_,
                                         .out_dtype = dtype_,
                                         .x = ws_.dbc,
                                         .x_stride = xdbl,
                                         .w = l.dt_proj,
                                         .y = ws_.dt},
                                        stream_));
      BMS_RETURN_IF_ERROR(cuda::SelectiveScanVarlen({.batch = S,
                                                     .n_tokens = T,  // T == S: decode kernel
                                                     .d_inner = di,
                                                     .d_state = n,
                                                     .n_slots = num_slots_ + 1,
                                                     .dtype = dtype_,
                                                     .cu_seqlens = d_cu_seqlens_,
                                                     .slots = d_slots_,
                                                     .has_initial_state = d_has_state_,
                                                     .u = ws_.xc,
                                                     .delta = ws_.dt,
                                                     .delta_bias = l.dt_bias,
                                                     .delta_softplus = true,
                                                     .A = l.A,
                                                     .B = dbc + static_cast<size_t>(r) * e,
                                                     .B_stride = xdbl,
                                                     .C = dbc + static_cast<size_t>(r + n) * e,
                                                     .C_stride = xdbl,
                                                     .D = l.D,
                                                     .z = xz + static_cast<size_t>(di) * e,
                                                     .z_stride = 2 * di,
                                                     .out = ws_.y,
                                                     .ssm_state = l.ssm_state,
                                                     .ssm_state_dtype = st},
                                                    stream_));
    }
  }
  BMS_RETURN_IF_ERROR(gemm_->Linear({.m = T,
                                     .n = d,
                                     .k = di,
                                     .in_dtype = dtype_,
                                     .out_dtype = dtype_,
                                     .x = ws_.y,
                                     .w = l.out_proj,
                                     .y = ws_.h},
                                    stream_));
  if (l.out_proj_bias)
    BMS_RETURN_IF_ERROR(cuda::AddBias(T, d, dtype_, ws_.h, 0, l.out_proj_bias, stream_));
  return absl::OkStatus();
}

cuda::GroupedGemmTuner* CudaBackendImpl::GroupedTuner() {
  // One tuner per process, shared by every backend: a shape class then runs the same variant in
  // every backend of the process, so two backends over the same weights (eager vs graph, bf16 vs
  // the tests' references) compute bit-identical expert GEMMs whatever their timings said.
  // Timing on unless BMS_GROUPED_GEMM_TUNE=0 (then the deterministic size heuristic). Never
  // destroyed: it may hold device memory and must not outlive the CUDA context at exit.
  static cuda::GroupedGemmTuner* const shared = [] {
    const char* env = std::getenv("BMS_GROUPED_GEMM_TUNE");
    const bool timing = env == nullptr || std::strcmp(env, "0") != 0;
    return new cuda::GroupedGemmTuner(timing);
  }();
  return shared;
}

absl::Status CudaBackendImpl::MlpForward(const MlpLayer& l, int T, bool routed) {
  const ModelConfig& c = config_;
  const int d = c.d_model, f = c.ffn_hidden_size;
  const bool moe = l.router != nullptr;
  const int32_t* offsets = d_dense_offsets_;
  const int32_t* perm = nullptr;
  const float* scale = nullptr;
  if (moe && !routed) {
    BMS_RETURN_IF_ERROR(gemm_->Linear({.m = T,
                                       .n = l.n_experts,
                                       .k = d,
                                       .in_dtype = cuda::DType::kF32,
                                       .out_dtype = cuda::DType::kF32,
                                       .x = ws_.x_f32,
                                       .w = l.router,
                                       .y = ws_.router_logits},
                                      stream_));
    auto* counts =
        routing_counts_.as<unsigned long long>() + static_cast<size_t>(l.moe_index) * c.n_experts;
    BMS_RETURN_IF_ERROR(cuda::RouterSelect({.n_tokens = T,
                                            .n_experts = l.n_experts,
                                            .logits = ws_.router_logits,
                                            .bias = l.router_bias,
                                            .expert = ws_.expert,
                                            .scale = ws_.scale,
                                            .routing_counts = counts,
                                            .n_counted = d_n_counted_},
                                           stream_));
    BMS_RETURN_IF_ERROR(cuda::MoeGroup({.n_tokens = T,
                                        .n_experts = l.n_experts,
                                        .expert = ws_.expert,
                                        .expert_offsets = ws_.offsets,
                                        .permutation = ws_.permutation},
                                       stream_));
  }
  if (moe) {
    offsets = ws_.offsets;
    perm = ws_.permutation;
    scale = ws_.scale;
  }
  const cuda::Activation act =
      c.mlp_activation == MlpActivation::kSilu ? cuda::Activation::kSilu : cuda::Activation::kGelu;
  // fc1 + activation (+ gate): [T, f] in grouped order.
  BMS_RETURN_IF_ERROR(cuda::GroupedGemm(
      {.n_rows = T,
       .n_experts = l.n_experts,
       .n = f,
       .k = d,
       .dtype = dtype_,
       .epilogue = c.swiglu ? cuda::GroupedEpilogue::kGatedAct : cuda::GroupedEpilogue::kAct,
       .activation = act,
       .expert_offsets = offsets,
       .a = ws_.x,
       .a_rows = perm,
       .w = l.fc1,
       .bias = l.fc1_bias,
       .out = ws_.act,
       .tuner = GroupedTuner()},
      stream_));
  // fc2, routing scale and un-permute: [T, d_model] in token order.
  return cuda::GroupedGemm({.n_rows = T,
                            .n_experts = l.n_experts,
                            .n = d,
                            .k = f,
                            .dtype = dtype_,
                            .epilogue = cuda::GroupedEpilogue::kScaleScatter,
                            .expert_offsets = offsets,
                            .a = ws_.act,
                            .w = l.fc2,
                            .bias = l.fc2_bias,
                            .scale = scale,
                            .out_rows = perm,
                            .out = ws_.h,
                            .tuner = GroupedTuner()},
                           stream_);
}

}  // namespace bms
