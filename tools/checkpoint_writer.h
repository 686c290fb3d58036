// Checkpoint writers: safetensors (single file or sharded with model.safetensors.index.json) and
// torch.save-compatible pytorch_model.bin (a zip of stored entries with CRC32 and a protocol-2
// pickle of {"model": OrderedDict(...)}, readable by Python's torch.load). The *Stream variants
// pull one tensor at a time from a source, so a multi-billion-parameter model is written without
// holding it in memory. Tensors are converted to the requested dtype on the way out.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/model_weights.h"

namespace bms {

// Produces the tensor for one spec (any dtype; its shape must equal spec.shape).
using TensorSource = std::function<absl::StatusOr<HostTensor>(const ExpectedTensor& spec)>;

// Writes one safetensors file holding `specs` in order.
absl::Status WriteSafetensorsStream(const std::string& path,
                                    const std::vector<ExpectedTensor>& specs, DType dtype,
                                    const TensorSource& source);
absl::Status WriteSafetensors(const std::string& path, const TensorMap& tensors, DType dtype);

// Writes model-0000i-of-0000n.safetensors shards of at most max_shard_bytes each (a single tensor
// larger than that gets a shard of its own) plus model.safetensors.index.json into `dir`.
absl::Status WriteShardedSafetensorsStream(const std::string& dir,
                                           const std::vector<ExpectedTensor>& specs, DType dtype,
                                           uint64_t max_shard_bytes, const TensorSource& source);
absl::Status WriteShardedSafetensors(const std::string& dir, const TensorMap& tensors, DType dtype,
                                     uint64_t max_shard_bytes);

// Writes a torch.save zip checkpoint of {"model": OrderedDict(specs in order)}.
absl::Status WriteTorchCheckpointStream(const std::string& path,
                                        const std::vector<ExpectedTensor>& specs, DType dtype,
                                        const TensorSource& source);
absl::Status WriteTorchCheckpoint(const std::string& path, const TensorMap& tensors, DType dtype);

// Writes a zip archive of stored (uncompressed) entries, in order, as the torch writer does;
// for tests and tools that need a hand-made archive.
absl::Status WriteStoredZip(const std::string& path,
                            const std::vector<std::pair<std::string, std::string>>& entries);

// Helpers shared by the writers.
// The specs of a tensor map (map order) and a source serving its tensors.
std::vector<ExpectedTensor> SpecsOf(const TensorMap& tensors);
TensorSource SourceOf(const TensorMap& tensors);
// Pulls spec's tensor from source, checks its shape and converts it to dtype.
absl::StatusOr<HostTensor> PullTensor(const ExpectedTensor& spec, DType dtype,
                                      const TensorSource& source);

}  // namespace bms
