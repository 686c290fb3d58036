// ModelConfig: the BlackMamba architecture as read from a published `config.json`
// (DESIGN.md §1), with the derived sizes every other unit uses.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace bms {

enum class LayerKind { kMamba, kMoe, kDenseMlp };
enum class MlpActivation { kGelu, kSilu };

struct ModelConfig {
  int num_layers = 0;
  int d_model = 0;   // hidden_size
  int d_state = 16;  // state_size
  int d_conv = 4;    // conv_dimension
  int vocab_size = 0;
  int expansion_factor = 2;
  int ffn_hidden_size = 0;  // f
  int n_experts = 8;        // experts per MoE layer (all MoE layers share it)
  int max_sequence_length = 2048;
  bool add_bias_linear = false;
  bool swiglu = true;  // gated MLP layout: fc1 emits [2f], out = act(a0) * a1
  MlpActivation mlp_activation = MlpActivation::kGelu;
  float layernorm_epsilon = 1e-5f;
  std::vector<LayerKind> layers;  // [num_layers]

  // Derived.
  int d_inner() const { return expansion_factor * d_model; }
  int dt_rank() const { return (d_model + 15) / 16; }
  int fc1_rows() const { return swiglu ? 2 * ffn_hidden_size : ffn_hidden_size; }
  int num_mamba_layers() const;
  int num_moe_layers() const;

  // Parses config.json text. Missing required keys, wrong types, non-positive sizes, unknown
  // layer codes or a layer list whose length differs from num_layers give InvalidArgument
  // naming the key.
  static absl::StatusOr<ModelConfig> FromJsonText(const std::string& text);
  static absl::StatusOr<ModelConfig> FromJson(const nlohmann::json& j);
  static absl::StatusOr<ModelConfig> FromFile(const std::string& path);
  // The published key layout; FromJson(ToJson()) round-trips.
  nlohmann::json ToJson() const;

  // Named presets: "tiny", "blackmamba-1.5b", "blackmamba-2.8b".
  static absl::StatusOr<ModelConfig> Preset(const std::string& name);

  // Parameter counts (embedding counted once: the head is tied).
  long long TotalParams() const;
  long long ActiveParams() const;  // per token: one expert per MoE layer
};

}  // namespace bms
