// ModelWeights: every tensor of a BlackMamba checkpoint, bound by role and validated against
// the ModelConfig (DESIGN.md §1 key names). Produced by LoadModel (from a model directory) or by
// MakeRandomWeights (the demo model and make-model); consumed by the backends at start-up.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/host_tensor.h"
#include "engine/model_config.h"

namespace bms {

// A flat name -> tensor map: what a checkpoint file holds, before binding.
using TensorMap = std::map<std::string, HostTensor>;

struct MlpWeights {
  HostTensor fc1;       // [fc1_rows, d_model]  (fc1_rows = 2f gated, f otherwise)
  HostTensor fc2;       // [d_model, f]
  HostTensor fc1_bias;  // [fc1_rows] only with add_bias_linear
  HostTensor fc2_bias;  // [d_model] only with add_bias_linear
};

struct MambaWeights {
  HostTensor in_proj;        // [2*d_inner, d_model]
  HostTensor conv_weight;    // [d_inner, 1, d_conv]
  HostTensor conv_bias;      // [d_inner]
  HostTensor x_proj;         // [dt_rank + 2*d_state, d_inner]
  HostTensor dt_proj;        // [d_inner, dt_rank]
  HostTensor dt_proj_bias;   // [d_inner]
  HostTensor A_log;          // [d_inner, d_state]
  HostTensor D;              // [d_inner]
  HostTensor out_proj;       // [d_model, d_inner]
  HostTensor in_proj_bias;   // [2*d_inner] only with add_bias_linear
  HostTensor out_proj_bias;  // [d_model] only with add_bias_linear
};

struct MoeWeights {
  HostTensor router;                // [n_experts, d_model]
  HostTensor router_bias;           // [n_experts]
  std::vector<MlpWeights> experts;  // [n_experts]
};

struct LayerWeights {
  LayerKind kind = LayerKind::kMamba;
  HostTensor norm;     // [d_model]
  MambaWeights mamba;  // kind == kMamba
  MoeWeights moe;      // kind == kMoe
  MlpWeights dense;    // kind == kDenseMlp
};

struct ModelWeights {
  ModelConfig config;
  HostTensor embedding;  // [vocab_size, d_model] (also the tied output head)
  std::vector<LayerWeights> layers;
  HostTensor final_norm;       // [d_model]
  HostTensor final_norm_bias;  // [d_model]
};

// The checkpoint key of each tensor the config requires, with its expected shape.
struct ExpectedTensor {
  std::string name;
  std::vector<int64_t> shape;
};
std::vector<ExpectedTensor> ExpectedTensors(const ModelConfig& config);

// Every problem of a tensor map against the config, one line each: missing tensors and wrong
// shapes (name, expected, got). Empty when the map has everything BindWeights needs.
std::vector<std::string> CheckTensors(const ModelConfig& config, const TensorMap& tensors);

// Binds a flat tensor map to roles. Checks presence and shape of every expected tensor and
// reports ALL problems at once (InvalidArgument listing tensor names). Extra tensors are ignored.
absl::StatusOr<ModelWeights> BindWeights(const ModelConfig& config, const TensorMap& tensors);

// The inverse of BindWeights: every tensor under its checkpoint key.
TensorMap FlattenWeights(const ModelWeights& weights);

// Reads a model directory: config.json plus model.safetensors, sharded safetensors
// (model.safetensors.index.json) or pytorch_model.bin. Safetensors are memory-mapped.
absl::StatusOr<ModelWeights> LoadModel(const std::string& model_dir);

// Reads only the checkpoint tensors of a model directory (no config.json, no binding): what
// LoadModel binds. `format` (optional) receives "safetensors", "safetensors (sharded)" or "torch".
absl::StatusOr<TensorMap> ReadCheckpointTensors(const std::string& model_dir,
                                                std::string* format = nullptr);

// One tensor of MakeRandomWeights (fp32), deterministic in (seed, spec.name) and independent of
// the other tensors, so that writers can stream a large model tensor by tensor.
HostTensor MakeRandomTensor(const ModelConfig& config, const ExpectedTensor& spec, uint64_t seed);

// Random weights of the given config (deterministic in seed), scaled so greedy output varies:
// what `make-model` writes and what `serve --demo` runs.
ModelWeights MakeRandomWeights(const ModelConfig& config, uint64_t seed);

}  // namespace bms
