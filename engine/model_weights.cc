#include "engine/model_weights.h"

#include <sys/stat.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/safetensors.h"
#include "engine/torch_checkpoint.h"

namespace bms {
namespace {

using Shape = std::vector<int64_t>;

// Calls f(name, shape, tensor&) for every tensor slot of `w` under its checkpoint key, in
// checkpoint order. `w.layers` (and each MoE layer's experts) must already be sized for `c`.
// The single place that knows the key layout (DESIGN.md §1); W is ModelWeights or const.
template <typename W, typename F>
void ForEachSlot(const ModelConfig& c, W& w, F&& f) {
  const int64_t d = c.d_model, di = c.d_inner(), n = c.d_state, r = c.dt_rank(),
                ffn = c.ffn_hidden_size, fc1 = c.fc1_rows(), e_count = c.n_experts;
  auto mlp = [&](const std::string& p, auto& m) {
    f(p + "linear_fc1.weight", Shape{fc1, d}, m.fc1);
    if (c.add_bias_linear) f(p + "linear_fc1.bias", Shape{fc1}, m.fc1_bias);
    f(p + "linear_fc2.weight", Shape{d, ffn}, m.fc2);
    if (c.add_bias_linear) f(p + "linear_fc2.bias", Shape{d}, m.fc2_bias);
  };
  f("embedding.word_embeddings.weight", Shape{c.vocab_size, d}, w.embedding);
  for (int i = 0; i < c.num_layers; ++i) {
    auto& layer = w.layers[i];
    const std::string p = absl::StrCat("decoder.layers.", i, ".");
    const std::string m = p + "mixer.";
    f(p + "norm.weight", Shape{d}, layer.norm);
    switch (c.layers[i]) {
      case LayerKind::kMamba: {
        auto& mb = layer.mamba;
        f(m + "in_proj.weight", Shape{2 * di, d}, mb.in_proj);
        if (c.add_bias_linear) f(m + "in_proj.bias", Shape{2 * di}, mb.in_proj_bias);
        f(m + "conv1d.weight", Shape{di, 1, c.d_conv}, mb.conv_weight);
        f(m + "conv1d.bias", Shape{di}, mb.conv_bias);
        f(m + "x_proj.weight", Shape{r + 2 * n, di}, mb.x_proj);
        f(m + "dt_proj.weight", Shape{di, r}, mb.dt_proj);
        f(m + "dt_proj.bias", Shape{di}, mb.dt_proj_bias);
        f(m + "A_log", Shape{di, n}, mb.A_log);
        f(m + "D", Shape{di}, mb.D);
        f(m + "out_proj.weight", Shape{d, di}, mb.out_proj);
        if (c.add_bias_linear) f(m + "out_proj.bias", Shape{d}, mb.out_proj_bias);
        break;
      }
      case LayerKind::kMoe:
        f(m + "router.weight", Shape{e_count, d}, layer.moe.router);
        f(m + "router.bias", Shape{e_count}, layer.moe.router_bias);
        for (int e = 0; e < c.n_experts; ++e) {
          mlp(absl::StrCat(m, "local_experts.", e, "."), layer.moe.experts[e]);
        }
        break;
      case LayerKind::kDenseMlp:
        mlp(m, layer.dense);
        break;
    }
  }
  f("decoder.final_layernorm.weight", Shape{d}, w.final_norm);
  f("decoder.final_layernorm.bias", Shape{d}, w.final_norm_bias);
}

// Sizes w.layers (kinds, experts) for the config so ForEachSlot can fill it.
void SizeLayers(const ModelConfig& c, ModelWeights* w) {
  w->config = c;
  w->layers.assign(c.num_layers, LayerWeights{});
  for (int i = 0; i < c.num_layers; ++i) {
    w->layers[i].kind = c.layers[i];
    if (c.layers[i] == LayerKind::kMoe) w->layers[i].moe.experts.resize(c.n_experts);
  }
}

std::string ShapeString(const Shape& s) { return "[" + absl::StrJoin(s, ", ") + "]"; }

bool IsFile(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

}  // namespace

std::vector<ExpectedTensor> ExpectedTensors(const ModelConfig& config) {
  ModelWeights scratch;
  SizeLayers(config, &scratch);
  std::vector<ExpectedTensor> out;
  ForEachSlot(config, scratch, [&](const std::string& name, const Shape& shape, HostTensor&) {
    out.push_back({name, shape});
  });
  return out;
}

std::vector<std::string> CheckTensors(const ModelConfig& config, const TensorMap& tensors) {
  std::vector<std::string> problems;
  for (const ExpectedTensor& e : ExpectedTensors(config)) {
    auto it = tensors.find(e.name);
    if (it == tensors.end()) {
      problems.push_back(absl::StrCat("missing tensor ", e.name, " ", ShapeString(e.shape)));
    } else if (it->second.shape != e.shape) {
      problems.push_back(absl::StrCat("tensor ", e.name, " has shape ", it->second.ShapeString(),
                                      ", expected ", ShapeString(e.shape)));
    } else if (it->second.data == nullptr && it->second.numel() > 0) {
      problems.push_back(absl::StrCat("tensor ", e.name, " has no data"));
    }
  }
  return problems;
}

absl::StatusOr<ModelWeights> BindWeights(const ModelConfig& config, const TensorMap& tensors) {
  std::vector<std::string> problems = CheckTensors(config, tensors);
  if (!problems.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("checkpoint does not match config.json (",
                                                   problems.size(), " problems):\n  ",
                                                   absl::StrJoin(problems, "\n  ")));
  }
  ModelWeights w;
  SizeLayers(config, &w);
  ForEachSlot(config, w, [&](const std::string& name, const Shape&, HostTensor& slot) {
    slot = tensors.at(name);
  });
  return w;
}

TensorMap FlattenWeights(const ModelWeights& weights) {
  TensorMap out;
  ForEachSlot(weights.config, weights,
              [&](const std::string& name, const Shape&, const HostTensor& t) { out[name] = t; });
  return out;
}

absl::StatusOr<TensorMap> ReadCheckpointTensors(const std::string& model_dir, std::string* format) {
  const std::string single = model_dir + "/model.safetensors";
  const std::string index = model_dir + "/model.safetensors.index.json";
  const std::string torch = model_dir + "/pytorch_model.bin";
  auto set_format = [&](const char* f) {
    if (format != nullptr) *format = f;
  };
  if (IsFile(single)) {
    set_format("safetensors");
    return ReadSafetensors(single);
  }
  if (IsFile(index)) {
    set_format("safetensors (sharded)");
    return ReadShardedSafetensors(index);
  }
  if (IsFile(torch)) {
    set_format("torch");
    return ReadTorchCheckpoint(torch);
  }
  return absl::NotFoundError(absl::StrCat(model_dir,
                                          ": no weights found (looked for model.safetensors, "
                                          "model.safetensors.index.json and pytorch_model.bin)"));
}

absl::StatusOr<ModelWeights> LoadModel(const std::string& model_dir) {
  auto config = ModelConfig::FromFile(model_dir + "/config.json");
  if (!config.ok()) return config.status();
  auto tensors = ReadCheckpointTensors(model_dir);
  if (!tensors.ok()) return tensors.status();
  auto weights = BindWeights(*config, *tensors);
  if (!weights.ok()) {
    return absl::Status(weights.status().code(),
                        absl::StrCat(model_dir, ": ", weights.status().message()));
  }
  return weights;
}

}  // namespace bms
