// MakeModel: writes a random-weight model directory in the published layout (config.json plus
// model.safetensors, sharded safetensors or pytorch_model.bin), streaming tensor by tensor so
// the 2.8B preset needs memory for one tensor at a time, not for the model.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/host_tensor.h"
#include "engine/model_config.h"

namespace bms {

enum class CheckpointFormat { kSafetensors, kTorch };

// "safetensors" | "torch" and "fp32" | "bf16" | "fp16" (also "f32", "float32", "bfloat16", ...).
absl::StatusOr<CheckpointFormat> ParseCheckpointFormat(const std::string& name);
absl::StatusOr<DType> ParseDType(const std::string& name);

struct MakeModelOptions {
  uint64_t seed = 0;
  DType dtype = DType::kF32;
  CheckpointFormat format = CheckpointFormat::kSafetensors;
  uint64_t shard_bytes = 0;  // safetensors only: > 0 writes shards of at most this many bytes
};

// Creates out_dir (and parents) if needed and writes the model. The weights equal
// MakeRandomWeights(config, seed) rounded to the dtype. Fails (FailedPrecondition) rather than
// leave two weight layouts side by side when out_dir already holds weights of another layout.
absl::Status MakeModel(const ModelConfig& config, const MakeModelOptions& options,
                       const std::string& out_dir);

}  // namespace bms
