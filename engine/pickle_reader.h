// A RESTRICTED unpickler for the `data.pkl` of a torch.save checkpoint: it understands only the
// opcodes torch uses to pickle (nested) dicts of tensors, and only these GLOBALs:
// collections.OrderedDict, torch._utils._rebuild_tensor_v2, torch._utils._rebuild_parameter and
// torch.{Float,BFloat16,Half}Storage. Nothing is ever executed; any other GLOBAL or opcode is an
// InvalidArgument error that names it (e.g. "pickle GLOBAL 'os system' is not allowed").
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/host_tensor.h"

namespace bms {

// One tensor as the pickle describes it: a view into a storage that lives in the archive under
// data/<storage_key>. Offsets and strides are in elements.
struct PickledTensor {
  std::string storage_key;
  DType dtype = DType::kF32;
  int64_t storage_numel = 0;
  int64_t storage_offset = 0;
  std::vector<int64_t> shape;
  std::vector<int64_t> stride;
};

// Parses a pickled checkpoint and returns its state dict in file order: the dict under the key
// "model" when the top-level dict has one whose value is a dict, otherwise the top-level dict
// itself. Entries whose value is not a tensor are skipped. Every read is bounds-checked.
absl::StatusOr<std::vector<std::pair<std::string, PickledTensor>>> ParseTorchStateDict(
    std::string_view pickle);

}  // namespace bms
