// `bmserve make-model`: writes a random-weight BlackMamba model directory (config.json plus
// safetensors or torch weights) for a preset or a config file.
#include <chrono>
#include <cstdio>

#include "absl/strings/str_format.h"
#include "engine/model_config.h"
#include "server/commands.h"
#include "server/flags.h"
#include "tools/make_model.h"

namespace bms {

int MakeModelCommand(const Args& args) {
  std::string preset, config_path, out_dir, dtype_name = "bf16", format_name = "safetensors";
  int64_t seed = 0, shard_bytes = 0;
  FlagSet flags("make-model");
  flags.String("preset", &preset, "model shape: tiny, blackmamba-1.5b or blackmamba-2.8b");
  flags.String("config", &config_path,
               "a config.json to take the shape from (instead of --preset)");
  flags.String("out", &out_dir, "output directory (created if missing)");
  flags.Int64("seed", &seed, "random seed (same seed, same weights)");
  flags.String("dtype", &dtype_name, "weight dtype: fp32, bf16 or fp16");
  flags.String("format", &format_name, "checkpoint format: safetensors or torch");
  flags.Int64("shard-bytes", &shard_bytes,
              "safetensors only: split into shards of at most this many bytes (0 = one file)");
  absl::Status s = flags.Parse(args);
  if (!s.ok()) {
    std::fprintf(stderr, "make-model: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  if (flags.help_requested()) {
    std::printf("%s", flags.Usage().c_str());
    return 0;
  }
  auto usage_error = [](const std::string& msg) {
    std::fprintf(stderr, "make-model: %s\n", msg.c_str());
    return 2;
  };
  if (preset.empty() == config_path.empty()) {
    return usage_error("give exactly one of --preset or --config");
  }
  if (out_dir.empty()) return usage_error("--out is required");
  if (shard_bytes < 0) return usage_error("--shard-bytes must be >= 0");
  auto dtype = ParseDType(dtype_name);
  if (!dtype.ok()) return usage_error(absl::StrCat("--dtype: ", dtype.status().message()));
  auto format = ParseCheckpointFormat(format_name);
  if (!format.ok()) return usage_error(absl::StrCat("--format: ", format.status().message()));
  if (shard_bytes > 0 && *format != CheckpointFormat::kSafetensors) {
    return usage_error("--shard-bytes applies to --format safetensors only");
  }
  auto config = preset.empty() ? ModelConfig::FromFile(config_path) : ModelConfig::Preset(preset);
  if (!config.ok()) {
    return usage_error(std::string(preset.empty() ? "--config: " : "--preset: ") +
                       std::string(config.status().message()));
  }

  MakeModelOptions options;
  options.seed = static_cast<uint64_t>(seed);
  options.dtype = *dtype;
  options.format = *format;
  options.shard_bytes = static_cast<uint64_t>(shard_bytes);
  const long long params = config->TotalParams();
  std::printf("writing %s: %.1fM params (%.1fM active), %s, %s%s\n", out_dir.c_str(), params / 1e6,
              config->ActiveParams() / 1e6, DTypeName(*dtype), format_name.c_str(),
              shard_bytes > 0 ? " (sharded)" : "");
  std::fflush(stdout);
  auto start = std::chrono::steady_clock::now();
  s = MakeModel(*config, options, out_dir);
  if (!s.ok()) {
    std::fprintf(stderr, "make-model: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("done: %.3f GB of weights in %.1f s\n",
              static_cast<double>(params) * DTypeSize(*dtype) / 1e9, secs);
  return 0;
}

}  // namespace bms
