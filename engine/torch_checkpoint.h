// Reading a `pytorch_model.bin` written by torch.save (the zip format: <archive>/data.pkl,
// <archive>/data/<key> raw little-endian storages, <archive>/version, optional byteorder) natively,
// without Python: the zip is memory-mapped and tensors alias their storages where aligned.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "engine/model_weights.h"

namespace bms {

// Reads every tensor of the checkpoint's state dict ({"model": state_dict} or a bare state dict).
// Only contiguous F32/BF16/F16 tensors are supported; the pickle is parsed by the restricted
// unpickler (engine/pickle_reader.h). Every problem is an error naming the file (and tensor).
absl::StatusOr<TensorMap> ReadTorchCheckpoint(const std::string& path);

}  // namespace bms
