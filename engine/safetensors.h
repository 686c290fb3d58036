// Safetensors reading: a single `*.safetensors` file (8-byte little-endian header length, JSON
// header of {name: {dtype, shape, data_offsets}} plus optional __metadata__, then the data area)
// and a sharded set described by `model.safetensors.index.json` ("weight_map": name -> file).
// Files are memory-mapped; the returned HostTensors alias the mapping and keep it alive.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "engine/model_weights.h"

namespace bms {

// Reads every tensor of one safetensors file. Validates the header length, the JSON, each entry's
// dtype (F32, BF16, F16 only; others are InvalidArgument naming tensor and dtype), shape,
// data_offsets (inside the data area, size == numel * dtype size, no two tensors overlapping).
// Errors name the file.
absl::StatusOr<TensorMap> ReadSafetensors(const std::string& path);

// Reads a sharded checkpoint from its index file; shard names are resolved relative to the
// index's folder and may not leave it. Every weight_map entry must exist in the named shard.
absl::StatusOr<TensorMap> ReadShardedSafetensors(const std::string& index_path);

}  // namespace bms
