#include "tools/make_model.h"

#include <filesystem>
#include <system_error>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "engine/model_weights.h"
#include "tools/binary_file.h"
#include "tools/checkpoint_writer.h"

namespace bms {

absl::StatusOr<CheckpointFormat> ParseCheckpointFormat(const std::string& name) {
  std::string n = absl::AsciiStrToLower(name);
  if (n == "safetensors") return CheckpointFormat::kSafetensors;
  if (n == "torch" || n == "pytorch" || n == "bin") return CheckpointFormat::kTorch;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown checkpoint format '", name, "' (expected safetensors or torch)"));
}

absl::StatusOr<DType> ParseDType(const std::string& name) {
  std::string n = absl::AsciiStrToLower(name);
  if (n == "fp32" || n == "f32" || n == "float32") return DType::kF32;
  if (n == "bf16" || n == "bfloat16") return DType::kBF16;
  if (n == "fp16" || n == "f16" || n == "float16" || n == "half") return DType::kF16;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown dtype '", name, "' (expected fp32, bf16 or fp16)"));
}

absl::Status MakeModel(const ModelConfig& config, const MakeModelOptions& options,
                       const std::string& out_dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec)
    return absl::PermissionDeniedError(absl::StrCat("cannot create ", out_dir, ": ", ec.message()));

  const bool sharded = options.format == CheckpointFormat::kSafetensors && options.shard_bytes > 0;
  const char* mine = options.format == CheckpointFormat::kTorch ? "pytorch_model.bin"
                     : sharded                                  ? "model.safetensors.index.json"
                                                                : "model.safetensors";
  for (const char* other :
       {"model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"}) {
    if (std::string(other) != mine && fs::exists(fs::path(out_dir) / other)) {
      return absl::FailedPreconditionError(
          absl::StrCat(out_dir, " already holds ", other,
                       "; remove it or choose another --out (two weight layouts would conflict)"));
    }
  }

  BinaryFile cfg(out_dir + "/config.json");
  cfg.Write(config.ToJson().dump(2) + "\n");
  if (absl::Status s = cfg.Close(); !s.ok()) return s;

  const std::vector<ExpectedTensor> specs = ExpectedTensors(config);
  TensorSource source = [&](const ExpectedTensor& spec) -> absl::StatusOr<HostTensor> {
    return MakeRandomTensor(config, spec, options.seed);
  };
  if (options.format == CheckpointFormat::kTorch) {
    return WriteTorchCheckpointStream(out_dir + "/pytorch_model.bin", specs, options.dtype, source);
  }
  if (sharded) {
    return WriteShardedSafetensorsStream(out_dir, specs, options.dtype, options.shard_bytes,
                                         source);
  }
  return WriteSafetensorsStream(out_dir + "/model.safetensors", specs, options.dtype, source);
}

}  // namespace bms
