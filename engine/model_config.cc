#include "engine/model_config.h"

#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace bms {
namespace {

using json = nlohmann::json;

absl::Status Invalid(const std::string& key, const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat("config.json: key '", key, "' ", why));
}

absl::Status ReadInt(const json& j, const char* key, bool required, int* out) {
  auto it = j.find(key);
  if (it == j.end()) return required ? Invalid(key, "is missing") : absl::OkStatus();
  if (!it->is_number_integer()) return Invalid(key, "must be an integer");
  long long v = it->get<long long>();
  if (v <= 0 || v > (1LL << 30)) return Invalid(key, absl::StrCat("must be positive, got ", v));
  *out = static_cast<int>(v);
  return absl::OkStatus();
}

absl::Status ReadBool(const json& j, const char* key, bool* out) {
  auto it = j.find(key);
  if (it == j.end()) return absl::OkStatus();
  if (!it->is_boolean()) return Invalid(key, "must be true or false");
  *out = it->get<bool>();
  return absl::OkStatus();
}

}  // namespace

int ModelConfig::num_mamba_layers() const {
  int n = 0;
  for (LayerKind k : layers) n += (k == LayerKind::kMamba);
  return n;
}

int ModelConfig::num_moe_layers() const {
  int n = 0;
  for (LayerKind k : layers) n += (k == LayerKind::kMoe);
  return n;
}

absl::StatusOr<ModelConfig> ModelConfig::FromJsonText(const std::string& text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError("config.json: not valid JSON");
  return FromJson(j);
}

absl::StatusOr<ModelConfig> ModelConfig::FromFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  auto cfg = FromJsonText(ss.str());
  if (!cfg.ok()) {
    return absl::Status(cfg.status().code(), absl::StrCat(path, ": ", cfg.status().message()));
  }
  return cfg;
}

absl::StatusOr<ModelConfig> ModelConfig::FromJson(const json& j) {
  if (!j.is_object()) return absl::InvalidArgumentError("config.json: top level must be an object");
  ModelConfig c;
  absl::Status s;
  if (!(s = ReadInt(j, "num_layers", true, &c.num_layers)).ok()) return s;
  if (!(s = ReadInt(j, "hidden_size", true, &c.d_model)).ok()) return s;
  if (!(s = ReadInt(j, "state_size", true, &c.d_state)).ok()) return s;
  if (!(s = ReadInt(j, "conv_dimension", true, &c.d_conv)).ok()) return s;
  if (!(s = ReadInt(j, "vocab_size", true, &c.vocab_size)).ok()) return s;
  if (!(s = ReadInt(j, "expansion_factor", true, &c.expansion_factor)).ok()) return s;
  if (!(s = ReadInt(j, "ffn_hidden_size", true, &c.ffn_hidden_size)).ok()) return s;
  if (!(s = ReadInt(j, "max_sequence_length", false, &c.max_sequence_length)).ok()) return s;
  if (!(s = ReadInt(j, "num_moe_experts", false, &c.n_experts)).ok()) return s;
  if (!(s = ReadBool(j, "add_bias_linear", &c.add_bias_linear)).ok()) return s;
  if (!(s = ReadBool(j, "swiglu", &c.swiglu)).ok()) return s;
  if (auto it = j.find("layernorm_epsilon"); it != j.end()) {
    if (!it->is_number() || it->get<double>() <= 0 || it->get<double>() > 1) {
      return Invalid("layernorm_epsilon", "must be a number in (0, 1]");
    }
    c.layernorm_epsilon = it->get<float>();
  }
  if (auto it = j.find("mlp_activation"); it != j.end()) {
    if (!it->is_string()) return Invalid("mlp_activation", "must be \"gelu\" or \"silu\"");
    std::string a = it->get<std::string>();
    if (a == "gelu") {
      c.mlp_activation = MlpActivation::kGelu;
    } else if (a == "silu") {
      c.mlp_activation = MlpActivation::kSilu;
    } else {
      return Invalid("mlp_activation",
                     absl::StrCat("must be \"gelu\" or \"silu\", got \"", a, "\""));
    }
  }
  auto layers = j.find("mamba_moe_layers");
  if (layers == j.end()) return Invalid("mamba_moe_layers", "is missing");
  if (!layers->is_array()) return Invalid("mamba_moe_layers", "must be a list of layer codes");
  int moe_experts = -1;
  for (size_t i = 0; i < layers->size(); ++i) {
    const json& code = (*layers)[i];
    std::string s_code;
    if (code.is_string()) {
      s_code = code.get<std::string>();
    } else if (code.is_number_integer()) {
      s_code = std::to_string(code.get<long long>());
    } else {
      return Invalid("mamba_moe_layers", absl::StrCat("entry ", i, " must be a string code"));
    }
    if (s_code == "r") {
      c.layers.push_back(LayerKind::kMamba);
    } else if (s_code == "1") {
      c.layers.push_back(LayerKind::kDenseMlp);
    } else {
      int e = 0;
      bool digits = !s_code.empty() && s_code.size() < 6;
      for (char ch : s_code) digits = digits && ch >= '0' && ch <= '9';
      if (digits) e = std::stoi(s_code);
      if (!digits || e < 2) {
        return Invalid("mamba_moe_layers",
                       absl::StrCat("entry ", i, " has unknown layer code \"", s_code,
                                    "\" (expected \"r\", \"1\" or an expert count)"));
      }
      if (moe_experts != -1 && moe_experts != e) {
        return Invalid("mamba_moe_layers", "all MoE layers must have the same expert count");
      }
      moe_experts = e;
      c.layers.push_back(LayerKind::kMoe);
    }
  }
  if (static_cast<int>(c.layers.size()) != c.num_layers) {
    return Invalid("mamba_moe_layers", absl::StrCat("has ", c.layers.size(),
                                                    " entries but num_layers is ", c.num_layers));
  }
  if (moe_experts != -1) {
    if (j.contains("num_moe_experts") && c.n_experts != moe_experts) {
      return Invalid("num_moe_experts", "disagrees with the expert count in mamba_moe_layers");
    }
    c.n_experts = moe_experts;
  }
  return c;
}

json ModelConfig::ToJson() const {
  json layer_codes = json::array();
  for (LayerKind k : layers) {
    layer_codes.push_back(k == LayerKind::kMamba ? std::string("r")
                          : k == LayerKind::kMoe ? std::to_string(n_experts)
                                                 : std::string("1"));
  }
  json j = {{"num_layers", num_layers},
            {"hidden_size", d_model},
            {"state_size", d_state},
            {"conv_dimension", d_conv},
            {"vocab_size", vocab_size},
            {"expansion_factor", expansion_factor},
            {"mamba_moe_layers", layer_codes},
            {"ffn_hidden_size", ffn_hidden_size},
            {"add_bias_linear", add_bias_linear},
            {"swiglu", swiglu},
            {"max_sequence_length", max_sequence_length},
            {"layernorm_epsilon", layernorm_epsilon},
            {"num_moe_experts", n_experts}};
  if (mlp_activation == MlpActivation::kSilu) j["mlp_activation"] = "silu";
  return j;
}

absl::StatusOr<ModelConfig> ModelConfig::Preset(const std::string& name) {
  auto make = [](int layers, int d, int f, int vocab) {
    ModelConfig c;
    c.num_layers = layers;
    c.d_model = d;
    c.ffn_hidden_size = f;
    c.vocab_size = vocab;
    for (int i = 0; i < layers; ++i)
      c.layers.push_back(i % 2 ? LayerKind::kMoe : LayerKind::kMamba);
    return c;
  };
  if (name == "tiny") {
    // Small enough for CI; the byte-level fallback tokenizer uses ids 0..256.
    ModelConfig c = make(4, 64, 128, 512);
    c.max_sequence_length = 4096;
    return c;
  }
  if (name == "blackmamba-1.5b") return make(30, 1152, 3072, 50304);
  if (name == "blackmamba-2.8b") return make(36, 1472, 3872, 50304);
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown preset '", name, "' (expected tiny, blackmamba-1.5b or blackmamba-2.8b)"));
}

long long ModelConfig::TotalParams() const {
  long long d = d_model, di = d_inner(), n = d_state, r = dt_rank();
  long long mamba =
      2 * di * d + di * d_conv + di + (r + 2 * n) * di + di * r + di + di * n + di + d * di + d;
  long long mlp = static_cast<long long>(fc1_rows()) * d + d * ffn_hidden_size;
  long long total = static_cast<long long>(vocab_size) * d + 2 * d;
  for (LayerKind k : layers) {
    if (k == LayerKind::kMamba) total += mamba;
    if (k == LayerKind::kMoe) total += n_experts * mlp + n_experts * d + n_experts + d;
    if (k == LayerKind::kDenseMlp) total += mlp + d;
  }
  return total;
}

long long ModelConfig::ActiveParams() const {
  long long d = d_model;
  long long mlp = static_cast<long long>(fc1_rows()) * d + d * ffn_hidden_size;
  return TotalParams() - static_cast<long long>(num_moe_layers()) * (n_experts - 1) * mlp;
}

}  // namespace bms
