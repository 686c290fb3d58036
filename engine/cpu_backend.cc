#include "engine/cpu_backend.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "engine/status_macros.h"

namespace bms {
namespace {

// The tensor as fp32, after checking it holds `numel` elements (name for the error).
absl::Status ToF32(const HostTensor& t, int64_t numel, const std::string& name,
                   std::vector<float>* out) {
  if (t.empty()) return absl::InvalidArgumentError(absl::StrCat("weights: ", name, " is missing"));
  if (t.numel() != numel) {
    return absl::InvalidArgumentError(absl::StrCat("weights: ", name, " has shape ",
                                                   t.ShapeString(), " (", t.numel(),
                                                   " elements), expected ", numel, " elements"));
  }
  *out = t.ToF32();
  return absl::OkStatus();
}

// Optional tensor (a bias present only with add_bias_linear): empty stays empty.
absl::Status OptionalToF32(const HostTensor& t, int64_t numel, const std::string& name,
                           std::vector<float>* out) {
  if (t.empty()) {
    out->clear();
    return absl::OkStatus();
  }
  return ToF32(t, numel, name, out);
}

const float* OrNull(const std::vector<float>& v) { return v.empty() ? nullptr : v.data(); }

}  // namespace

size_t StateBytesPerSlot(const ModelConfig& config, StateDType dtype) {
  const size_t elem = dtype == StateDType::kF32 ? 4 : 2;
  const size_t per_layer = static_cast<size_t>(config.d_inner()) *
                           static_cast<size_t>(config.d_conv - 1 + config.d_state);
  return static_cast<size_t>(config.num_mamba_layers()) * per_layer * elem;
}

CpuBackend::CpuBackend(const ModelConfig& config, const BackendOptions& options)
    : config_(config),
      num_slots_(options.num_slots),
      state_dtype_(options.state_dtype),
      pool_(std::make_unique<ref::ThreadPool>(options.num_threads)) {
  mlp_shape_.d_model = config.d_model;
  mlp_shape_.ffn = config.ffn_hidden_size;
  mlp_shape_.gated = config.swiglu;
  mlp_shape_.activation = config.mlp_activation == MlpActivation::kSilu ? ref::Activation::kSilu
                                                                        : ref::Activation::kGelu;
}

absl::StatusOr<std::unique_ptr<CpuBackend>> CpuBackend::Create(const ModelWeights& weights,
                                                               const BackendOptions& options) {
  if (options.num_slots < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_slots = ", options.num_slots, " must be >= 1"));
  }
  if (options.num_threads < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_threads = ", options.num_threads, " must be >= 0"));
  }
  const ModelConfig& c = weights.config;
  if (static_cast<int>(weights.layers.size()) != c.num_layers ||
      static_cast<int>(c.layers.size()) != c.num_layers) {
    return absl::InvalidArgumentError("weights: layer count does not match num_layers");
  }
  std::unique_ptr<CpuBackend> b(new CpuBackend(c, options));
  BMS_RETURN_IF_ERROR(b->LoadWeights(weights));
  b->memory_bytes_ = b->WeightAndStateBytes();
  return b;
}

absl::Status CpuBackend::LoadWeights(const ModelWeights& w) {
  const ModelConfig& c = config_;
  const int64_t d = c.d_model, di = c.d_inner(), n = c.d_state, r = c.dt_rank(), wc = c.d_conv;
  const int64_t e_count = c.n_experts, rows1 = c.fc1_rows(), f = c.ffn_hidden_size;
  BMS_RETURN_IF_ERROR(ToF32(w.embedding, c.vocab_size * d, "embedding", &embedding_));
  BMS_RETURN_IF_ERROR(ToF32(w.final_norm, d, "final_layernorm.weight", &final_norm_));
  BMS_RETURN_IF_ERROR(ToF32(w.final_norm_bias, d, "final_layernorm.bias", &final_norm_bias_));
  const int64_t slots = num_slots_ + 1;
  layers_.resize(c.num_layers);
  for (int i = 0; i < c.num_layers; ++i) {
    const LayerWeights& lw = w.layers[i];
    Layer& l = layers_[i];
    const std::string p = absl::StrCat("decoder.layers.", i, ".");
    l.kind = c.layers[i];
    if (lw.kind != l.kind) return absl::InvalidArgumentError(p + " kind differs from config");
    BMS_RETURN_IF_ERROR(ToF32(lw.norm, d, p + "norm.weight", &l.norm));
    if (l.kind == LayerKind::kMamba) {
      const MambaWeights& m = lw.mamba;
      MambaLayer& ml = l.mamba;
      const std::string q = p + "mixer.";
      BMS_RETURN_IF_ERROR(ToF32(m.in_proj, 2 * di * d, q + "in_proj.weight", &ml.in_proj));
      BMS_RETURN_IF_ERROR(
          OptionalToF32(m.in_proj_bias, 2 * di, q + "in_proj.bias", &ml.in_proj_bias));
      BMS_RETURN_IF_ERROR(ToF32(m.conv_weight, di * wc, q + "conv1d.weight", &ml.conv_weight));
      BMS_RETURN_IF_ERROR(ToF32(m.conv_bias, di, q + "conv1d.bias", &ml.conv_bias));
      BMS_RETURN_IF_ERROR(ToF32(m.x_proj, (r + 2 * n) * di, q + "x_proj.weight", &ml.x_proj));
      BMS_RETURN_IF_ERROR(ToF32(m.dt_proj, di * r, q + "dt_proj.weight", &ml.dt_proj));
      BMS_RETURN_IF_ERROR(ToF32(m.dt_proj_bias, di, q + "dt_proj.bias", &ml.dt_proj_bias));
      BMS_RETURN_IF_ERROR(ToF32(m.A_log, di * n, q + "A_log", &ml.A));
      for (float& a : ml.A) a = -std::exp(a);
      BMS_RETURN_IF_ERROR(ToF32(m.D, di, q + "D", &ml.D));
      BMS_RETURN_IF_ERROR(ToF32(m.out_proj, d * di, q + "out_proj.weight", &ml.out_proj));
      BMS_RETURN_IF_ERROR(
          OptionalToF32(m.out_proj_bias, d, q + "out_proj.bias", &ml.out_proj_bias));
      const size_t conv_n = static_cast<size_t>(slots * di * (wc - 1));
      const size_t ssm_n = static_cast<size_t>(slots * di * n);
      if (state_dtype_ == StateDType::kF32) {
        ml.conv_f32.assign(conv_n, 0.f);
        ml.ssm_f32.assign(ssm_n, 0.f);
      } else {
        ml.conv_bf16.assign(conv_n, 0);
        ml.ssm_bf16.assign(ssm_n, 0);
      }
    } else {
      const bool moe = l.kind == LayerKind::kMoe;
      const std::vector<MlpWeights> dense = {lw.dense};
      const std::vector<MlpWeights>& experts = moe ? lw.moe.experts : dense;
      const int64_t count = moe ? e_count : 1;
      if (static_cast<int64_t>(experts.size()) != count) {
        return absl::InvalidArgumentError(
            absl::StrCat(p, "mixer has ", experts.size(), " experts, expected ", count));
      }
      MlpLayer& ml = l.mlp;
      if (moe) {
        BMS_RETURN_IF_ERROR(
            ToF32(lw.moe.router, e_count * d, p + "mixer.router.weight", &ml.router));
        BMS_RETURN_IF_ERROR(
            OptionalToF32(lw.moe.router_bias, e_count, p + "mixer.router.bias", &ml.router_bias));
      }
      const bool has_bias = !experts[0].fc1_bias.empty();
      for (int64_t e = 0; e < count; ++e) {
        const std::string q = moe ? absl::StrCat(p, "mixer.local_experts.", e, ".") : p + "mixer.";
        std::vector<float> fc1, fc2, b1, b2;
        BMS_RETURN_IF_ERROR(ToF32(experts[e].fc1, rows1 * d, q + "linear_fc1.weight", &fc1));
        BMS_RETURN_IF_ERROR(ToF32(experts[e].fc2, d * f, q + "linear_fc2.weight", &fc2));
        ml.fc1.insert(ml.fc1.end(), fc1.begin(), fc1.end());
        ml.fc2.insert(ml.fc2.end(), fc2.begin(), fc2.end());
        if (has_bias) {
          BMS_RETURN_IF_ERROR(ToF32(experts[e].fc1_bias, rows1, q + "linear_fc1.bias", &b1));
          BMS_RETURN_IF_ERROR(ToF32(experts[e].fc2_bias, d, q + "linear_fc2.bias", &b2));
          ml.fc1_bias.insert(ml.fc1_bias.end(), b1.begin(), b1.end());
          ml.fc2_bias.insert(ml.fc2_bias.end(), b2.begin(), b2.end());
        }
      }
    }
  }
  return absl::OkStatus();
}

size_t CpuBackend::state_bytes_per_slot() const { return StateBytesPerSlot(config_, state_dtype_); }

std::vector<std::vector<int64_t>> CpuBackend::ExpertTokenCounts() {
  std::vector<std::vector<int64_t>> out;
  for (const Layer& l : layers_) {
    if (l.kind != LayerKind::kMoe) continue;
    std::vector<int64_t> counts = l.mlp.routed_tokens;
    counts.resize(config_.n_experts, 0);
    out.push_back(std::move(counts));
  }
  return out;
}

size_t CpuBackend::WeightAndStateBytes() const {
  size_t n = 0;
  auto add = [&n](const auto& v) { n += v.size() * sizeof(v[0]); };
  add(embedding_);
  add(final_norm_);
  add(final_norm_bias_);
  for (const Layer& l : layers_) {
    add(l.norm);
    const MambaLayer& m = l.mamba;
    for (const auto* v :
         {&m.in_proj, &m.in_proj_bias, &m.conv_weight, &m.conv_bias, &m.x_proj, &m.dt_proj,
          &m.dt_proj_bias, &m.A, &m.D, &m.out_proj, &m.out_proj_bias, &m.conv_f32, &m.ssm_f32}) {
      add(*v);
    }
    add(m.conv_bf16);
    add(m.ssm_bf16);
    for (const auto* v : {&l.mlp.fc1, &l.mlp.fc1_bias, &l.mlp.fc2, &l.mlp.fc2_bias, &l.mlp.router,
                          &l.mlp.router_bias}) {
      add(*v);
    }
  }
  return n;
}

ref::StateStorage CpuBackend::state_storage() const {
  return state_dtype_ == StateDType::kF32 ? ref::StateStorage::kF32 : ref::StateStorage::kBF16;
}

absl::Status CpuBackend::ValidateInput(const StepInput& input) const {
  std::vector<uint8_t> used(static_cast<size_t>(num_slots_) + 1, 0);
  const int64_t n_tokens = static_cast<int64_t>(input.tokens.size());
  for (size_t i = 0; i < input.seqs.size(); ++i) {
    const SeqChunk& s = input.seqs[i];
    const std::string where = absl::StrCat("seqs[", i, "]");
    if (s.slot < 0 || s.slot > num_slots_) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ".slot = ", s.slot, " is outside [0, ", num_slots_, "]"));
    }
    if (used[s.slot]) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ".slot = ", s.slot, " is used by an earlier chunk of this step"));
    }
    used[s.slot] = 1;
    if (s.n_tokens < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ".n_tokens = ", s.n_tokens, " must be >= 1"));
    }
    if (s.token_offset < 0 || s.token_offset + static_cast<int64_t>(s.n_tokens) > n_tokens) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, " tokens [", s.token_offset, ", ",
                       static_cast<int64_t>(s.token_offset) + s.n_tokens,
                       ") are outside the step's ", n_tokens, " tokens"));
    }
    if (s.logits != LogitsMode::kNone && s.logits != LogitsMode::kLast &&
        s.logits != LogitsMode::kAll) {
      return absl::InvalidArgumentError(absl::StrCat(where, ".logits is not a LogitsMode"));
    }
    for (int t = s.token_offset; t < s.token_offset + s.n_tokens; ++t) {
      if (input.tokens[t] < 0 || input.tokens[t] >= config_.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat(
            "tokens[", t, "] = ", input.tokens[t], " is outside [0, ", config_.vocab_size, ")"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::Forward(const StepInput& input, std::vector<float>* logits) {
  if (logits == nullptr) return absl::InvalidArgumentError("logits output is null");
  BMS_RETURN_IF_ERROR(ValidateInput(input));
  logits->clear();
  const int d = config_.d_model;

  // Internal row order: prefill chunks first, then single-token continuations (decodes).
  Batch& bt = batch_;
  bt = Batch();
  bt.cu_seqlens.push_back(0);
  std::vector<int> chunk_row(input.seqs.size());  // first internal row of each chunk
  std::vector<int32_t> tokens;
  for (int pass = 0; pass < 2; ++pass) {
    for (size_t i = 0; i < input.seqs.size(); ++i) {
      const SeqChunk& s = input.seqs[i];
      const bool decode = s.n_tokens == 1 && !s.first_chunk;
      if (decode != (pass == 1)) continue;
      chunk_row[i] = static_cast<int>(tokens.size());
      tokens.insert(tokens.end(), input.tokens.begin() + s.token_offset,
                    input.tokens.begin() + s.token_offset + s.n_tokens);
      if (decode) {
        bt.decode_slots.push_back(s.slot);
      } else {
        bt.cu_seqlens.push_back(static_cast<int32_t>(tokens.size()));
        bt.prefill_slots.push_back(s.slot);
        bt.prefill_has_state.push_back(s.first_chunk ? 0 : 1);
      }
    }
    if (pass == 0) bt.n_prefill_tokens = static_cast<int>(tokens.size());
  }
  bt.n_tokens = static_cast<int>(tokens.size());
  const int T = bt.n_tokens;
  if (T == 0) return absl::OkStatus();

  std::vector<float> h(static_cast<size_t>(T) * d);         // [T, d_model] layer output
  std::vector<float> residual(static_cast<size_t>(T) * d);  // [T, d_model]
  std::vector<float> x(static_cast<size_t>(T) * d);         // [T, d_model] normalized input
  BMS_RETURN_IF_ERROR(ref::Embedding({.n_tokens = T,
                                      .vocab_size = config_.vocab_size,
                                      .d_model = d,
                                      .tokens = tokens.data(),
                                      .table = embedding_.data(),
                                      .out = h.data(),
                                      .pool = pool_.get()}));
  for (int i = 0; i < config_.num_layers; ++i) {
    Layer& l = layers_[i];
    BMS_RETURN_IF_ERROR(ref::AddRmsNorm({.n_tokens = T,
                                         .d_model = d,
                                         .h = h.data(),
                                         .residual = residual.data(),
                                         .first_layer = i == 0,
                                         .weight = l.norm.data(),
                                         .eps = config_.layernorm_epsilon,
                                         .out = x.data(),
                                         .pool = pool_.get()}));
    switch (l.kind) {
      case LayerKind::kMamba:
        BMS_RETURN_IF_ERROR(MambaForward(l.mamba, x.data(), h.data()));
        break;
      case LayerKind::kMoe:
        BMS_RETURN_IF_ERROR(MoeForward(l.mlp, x.data(), h.data()));
        break;
      case LayerKind::kDenseMlp:
        BMS_RETURN_IF_ERROR(ref::Mlp({.n_tokens = T,
                                      .shape = mlp_shape_,
                                      .x = x.data(),
                                      .fc1 = l.mlp.fc1.data(),
                                      .fc1_bias = OrNull(l.mlp.fc1_bias),
                                      .fc2 = l.mlp.fc2.data(),
                                      .fc2_bias = OrNull(l.mlp.fc2_bias),
                                      .out = h.data(),
                                      .pool = pool_.get()}));
        break;
    }
  }

  // Final norm + tied head, only for the rows whose logits were asked for (chunk order).
  std::vector<int> rows;
  for (size_t i = 0; i < input.seqs.size(); ++i) {
    const SeqChunk& s = input.seqs[i];
    if (s.logits == LogitsMode::kAll) {
      for (int t = 0; t < s.n_tokens; ++t) rows.push_back(chunk_row[i] + t);
    } else if (s.logits == LogitsMode::kLast) {
      rows.push_back(chunk_row[i] + s.n_tokens - 1);
    }
  }
  if (rows.empty()) return absl::OkStatus();
  const int R = static_cast<int>(rows.size());
  std::vector<float> sel_h(static_cast<size_t>(R) * d), sel_res(static_cast<size_t>(R) * d);
  for (int j = 0; j < R; ++j) {
    std::memcpy(sel_h.data() + static_cast<size_t>(j) * d,
                h.data() + static_cast<size_t>(rows[j]) * d, sizeof(float) * d);
    std::memcpy(sel_res.data() + static_cast<size_t>(j) * d,
                residual.data() + static_cast<size_t>(rows[j]) * d, sizeof(float) * d);
  }
  std::vector<float> y(static_cast<size_t>(R) * d);  // [R, d_model]
  BMS_RETURN_IF_ERROR(ref::AddLayerNorm({.n_tokens = R,
                                         .d_model = d,
                                         .h = sel_h.data(),
                                         .residual = sel_res.data(),
                                         .weight = final_norm_.data(),
                                         .bias = final_norm_bias_.data(),
                                         .eps = config_.layernorm_epsilon,
                                         .out = y.data(),
                                         .pool = pool_.get()}));
  logits->resize(static_cast<size_t>(R) * config_.vocab_size);  // [R, vocab_size]
  return ref::Linear({.m = R,
                      .n = config_.vocab_size,
                      .k = d,
                      .x = y.data(),
                      .w = embedding_.data(),
                      .y = logits->data()});
}

absl::Status CpuBackend::MambaForward(MambaLayer& ml, const float* x, float* out) {
  const Batch& bt = batch_;
  const int T = bt.n_tokens, P = bt.n_prefill_tokens, n_dec = T - P;
  const int d = config_.d_model, di = config_.d_inner(), n = config_.d_state;
  const int r = config_.dt_rank(), w = config_.d_conv, n_slots = num_slots_ + 1;
  const int xdbl = r + 2 * n;
  const ref::StateStorage st = state_storage();
  xz_.resize(static_cast<size_t>(T) * 2 * di);  // [T, 2*d_inner]: x | z
  xc_.resize(static_cast<size_t>(T) * di);      // [T, d_inner] conv output
  dbc_.resize(static_cast<size_t>(T) * xdbl);   // [T, dt_rank + 2*d_state]: dt_low | B | C
  delta_.resize(static_cast<size_t>(T) * di);   // [T, d_inner] dt before bias/softplus
  y_.resize(static_cast<size_t>(T) * di);       // [T, d_inner] gated scan output
  BMS_RETURN_IF_ERROR(ref::Linear({.m = T,
                                   .n = 2 * di,
                                   .k = d,
                                   .x = x,
                                   .w = ml.in_proj.data(),
                                   .bias = OrNull(ml.in_proj_bias),
                                   .y = xz_.data()}));
  const float* xs = xz_.data();
  const float* zs = xz_.data() + di;
  const int64_t xz_stride = 2 * di;
  const int n_prefill = static_cast<int>(bt.prefill_slots.size());
  BMS_RETURN_IF_ERROR(ref::CausalConv1dVarlen({.batch = n_prefill,
                                               .d_inner = di,
                                               .d_conv = w,
                                               .n_slots = n_slots,
                                               .cu_seqlens = bt.cu_seqlens.data(),
                                               .slots = bt.prefill_slots.data(),
                                               .has_initial_state = bt.prefill_has_state.data(),
                                               .x = xs,
                                               .x_stride = xz_stride,
                                               .weight = ml.conv_weight.data(),
                                               .bias = ml.conv_bias.data(),
                                               .silu = true,
                                               .out = xc_.data(),
                                               .conv_state = ml.conv_state(),
                                               .conv_state_dtype = st,
                                               .pool = pool_.get()}));
  BMS_RETURN_IF_ERROR(ref::CausalConv1dUpdate({.batch = n_dec,
                                               .d_inner = di,
                                               .d_conv = w,
                                               .n_slots = n_slots,
                                               .slots = bt.decode_slots.data(),
                                               .x = xs + static_cast<int64_t>(P) * xz_stride,
                                               .x_stride = xz_stride,
                                               .weight = ml.conv_weight.data(),
                                               .bias = ml.conv_bias.data(),
                                               .silu = true,
                                               .out = xc_.data() + static_cast<int64_t>(P) * di,
                                               .conv_state = ml.conv_state(),
                                               .conv_state_dtype = st,
                                               .pool = pool_.get()}));
  BMS_RETURN_IF_ERROR(ref::Linear(
      {.m = T, .n = xdbl, .k = di, .x = xc_.data(), .w = ml.x_proj.data(), .y = dbc_.data()}));
  BMS_RETURN_IF_ERROR(ref::Linear({.m = T,
                                   .n = di,
                                   .k = r,
                                   .x = dbc_.data(),
                                   .x_stride = xdbl,
                                   .w = ml.dt_proj.data(),
                                   .y = delta_.data()}));
  const float* Bs = dbc_.data() + r;
  const float* Cs = dbc_.data() + r + n;
  BMS_RETURN_IF_ERROR(ref::SelectiveScanVarlen({.batch = n_prefill,
                                                .d_inner = di,
                                                .d_state = n,
                                                .n_slots = n_slots,
                                                .cu_seqlens = bt.cu_seqlens.data(),
                                                .slots = bt.prefill_slots.data(),
                                                .has_initial_state = bt.prefill_has_state.data(),
                                                .u = xc_.data(),
                                                .delta = delta_.data(),
                                                .delta_bias = ml.dt_proj_bias.data(),
                                                .delta_softplus = true,
                                                .A = ml.A.data(),
                                                .B = Bs,
                                                .B_stride = xdbl,
                                                .C = Cs,
                                                .C_stride = xdbl,
                                                .D = ml.D.data(),
                                                .z = zs,
                                                .z_stride = xz_stride,
                                                .out = y_.data(),
                                                .ssm_state = ml.ssm_state(),
                                                .ssm_state_dtype = st,
                                                .pool = pool_.get()}));
  const int64_t Pl = P;
  BMS_RETURN_IF_ERROR(ref::SelectiveStateUpdate({.batch = n_dec,
                                                 .d_inner = di,
                                                 .d_state = n,
                                                 .n_slots = n_slots,
                                                 .slots = bt.decode_slots.data(),
                                                 .u = xc_.data() + Pl * di,
                                                 .delta = delta_.data() + Pl * di,
                                                 .delta_bias = ml.dt_proj_bias.data(),
                                                 .delta_softplus = true,
                                                 .A = ml.A.data(),
                                                 .B = Bs + Pl * xdbl,
                                                 .B_stride = xdbl,
                                                 .C = Cs + Pl * xdbl,
                                                 .C_stride = xdbl,
                                                 .D = ml.D.data(),
                                                 .z = zs + Pl * xz_stride,
                                                 .z_stride = xz_stride,
                                                 .out = y_.data() + Pl * di,
                                                 .ssm_state = ml.ssm_state(),
                                                 .ssm_state_dtype = st,
                                                 .pool = pool_.get()}));
  return ref::Linear({.m = T,
                      .n = d,
                      .k = di,
                      .x = y_.data(),
                      .w = ml.out_proj.data(),
                      .bias = OrNull(ml.out_proj_bias),
                      .y = out});
}

absl::Status CpuBackend::MoeForward(MlpLayer& ml, const float* x, float* out) {
  const int T = batch_.n_tokens, E = config_.n_experts;
  expert_.resize(T);
  scale_.resize(T);
  offsets_.resize(E + 1);
  perm_.resize(T);
  BMS_RETURN_IF_ERROR(ref::Router({.n_tokens = T,
                                   .d_model = config_.d_model,
                                   .n_experts = E,
                                   .x = x,
                                   .weight = ml.router.data(),
                                   .bias = OrNull(ml.router_bias),
                                   .expert = expert_.data(),
                                   .scale = scale_.data(),
                                   .pool = pool_.get()}));
  BMS_RETURN_IF_ERROR(ref::MoeGroup({.n_tokens = T,
                                     .n_experts = E,
                                     .expert = expert_.data(),
                                     .expert_offsets = offsets_.data(),
                                     .permutation = perm_.data()}));
  ml.routed_tokens.resize(E, 0);
  for (int e = 0; e < E; ++e) ml.routed_tokens[e] += offsets_[e + 1] - offsets_[e];
  return ref::MoeExperts({.n_tokens = T,
                          .n_experts = E,
                          .shape = mlp_shape_,
                          .x = x,
                          .expert_offsets = offsets_.data(),
                          .permutation = perm_.data(),
                          .scale = scale_.data(),
                          .fc1 = ml.fc1.data(),
                          .fc1_bias = OrNull(ml.fc1_bias),
                          .fc2 = ml.fc2.data(),
                          .fc2_bias = OrNull(ml.fc2_bias),
                          .out = out,
                          .pool = pool_.get()});
}

absl::Status CpuBackend::CopyState(int src_slot, int dst_slot) {
  for (int s : {src_slot, dst_slot}) {
    if (s < 0 || s > num_slots_) {
      return absl::InvalidArgumentError(
          absl::StrCat("CopyState: slot ", s, " is outside [0, ", num_slots_, "]"));
    }
  }
  if (src_slot == dst_slot) return absl::OkStatus();
  const size_t conv_n = static_cast<size_t>(config_.d_inner()) * (config_.d_conv - 1);
  const size_t ssm_n = static_cast<size_t>(config_.d_inner()) * config_.d_state;
  auto copy = [&](auto& v, size_t per_slot) {
    if (v.empty()) return;
    std::copy_n(v.begin() + src_slot * per_slot, per_slot, v.begin() + dst_slot * per_slot);
  };
  for (Layer& l : layers_) {
    if (l.kind != LayerKind::kMamba) continue;
    copy(l.mamba.conv_f32, conv_n);
    copy(l.mamba.ssm_f32, ssm_n);
    copy(l.mamba.conv_bf16, conv_n);
    copy(l.mamba.ssm_bf16, ssm_n);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> CpuBackend::ReadState(int slot) {
  if (slot < 0 || slot > num_slots_) {
    return absl::InvalidArgumentError(
        absl::StrCat("ReadState: slot ", slot, " is outside [0, ", num_slots_, "]"));
  }
  const int64_t conv_n = static_cast<int64_t>(config_.d_inner()) * (config_.d_conv - 1);
  const int64_t ssm_n = static_cast<int64_t>(config_.d_inner()) * config_.d_state;
  const ref::StateStorage st = state_storage();
  std::vector<float> out;
  out.reserve(state_bytes_per_slot() / (st == ref::StateStorage::kF32 ? 4 : 2));
  for (Layer& l : layers_) {
    if (l.kind != LayerKind::kMamba) continue;
    for (int64_t i = 0; i < conv_n; ++i) {
      out.push_back(ref::LoadState(l.mamba.conv_state(), st, slot * conv_n + i));
    }
    for (int64_t i = 0; i < ssm_n; ++i) {
      out.push_back(ref::LoadState(l.mamba.ssm_state(), st, slot * ssm_n + i));
    }
  }
  return out;
}

}  // namespace bms
