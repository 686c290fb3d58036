#include "engine/torch_checkpoint.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "engine/mapped_file.h"
#include "engine/pickle_reader.h"
#include "engine/zip_reader.h"

namespace bms {
namespace {

absl::Status Bad(const std::string& path, const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", why));
}

// True when `stride` is the row-major stride of `shape` (dimensions of size 1 may have any).
bool IsContiguous(const std::vector<int64_t>& shape, const std::vector<int64_t>& stride) {
  int64_t expected = 1;
  for (size_t k = shape.size(); k-- > 0;) {
    if (shape[k] != 1 && stride[k] != expected) return false;
    expected *= shape[k];
  }
  return true;
}

}  // namespace

absl::StatusOr<TensorMap> ReadTorchCheckpoint(const std::string& path) {
  auto file = MappedFile::Open(path);
  if (!file.ok()) return file.status();
  if ((*file)->size() >= 2 && (*file)->data()[0] == 0x80) {
    return Bad(path,
               "legacy (pre-1.6, non-zip) torch.save format is not supported; re-save it "
               "with a current torch");
  }
  auto zip = ZipReader::Open(*file);
  if (!zip.ok()) return zip.status();
  std::string prefix;
  bool found = false;
  for (const auto& [name, entry] : zip->entries()) {
    if (name.size() >= 8 && name.compare(name.size() - 8, 8, "data.pkl") == 0 &&
        (name.size() == 8 || name[name.size() - 9] == '/')) {
      prefix = name.substr(0, name.size() - 8);
      found = true;
      break;
    }
  }
  if (!found) return Bad(path, "no data.pkl in the archive (not a torch.save checkpoint)");
  if (zip->Contains(prefix + "byteorder")) {
    auto order = zip->Data(prefix + "byteorder");
    if (!order.ok()) return order.status();
    if (*order != "little") {
      return Bad(path, absl::StrCat("byteorder '", std::string(*order),
                                    "' is not supported (little only)"));
    }
  }
  auto pkl = zip->Data(prefix + "data.pkl");
  if (!pkl.ok()) return pkl.status();
  auto state = ParseTorchStateDict(*pkl);
  if (!state.ok()) return Bad(path, std::string(state.status().message()));

  TensorMap out;
  for (const auto& [name, pt] : *state) {
    auto where = [&](const std::string& why) {
      return Bad(path, absl::StrCat("tensor '", name, "': ", why));
    };
    HostTensor t;
    t.dtype = pt.dtype;
    t.shape = pt.shape;
    const size_t esize = DTypeSize(pt.dtype);
    int64_t numel = 1;
    for (int64_t s : pt.shape) {
      if (s < 0 || (s != 0 && numel > (int64_t{1} << 40) / s)) return where("bad shape");
      numel *= s;
    }
    if (!IsContiguous(pt.shape, pt.stride)) {
      return where(absl::StrCat("is not contiguous (shape ", t.ShapeString(),
                                "); save it with .contiguous()"));
    }
    if (pt.storage_offset < 0 || pt.storage_offset > pt.storage_numel ||
        numel > pt.storage_numel - pt.storage_offset) {
      return where(absl::StrCat("storage offset ", pt.storage_offset, " + ", numel,
                                " elements exceed its storage of ", pt.storage_numel));
    }
    auto bytes = zip->Data(prefix + "data/" + pt.storage_key);
    if (!bytes.ok()) return where(std::string(bytes.status().message()));
    if (static_cast<uint64_t>(pt.storage_numel) > bytes->size() / esize) {
      return where(absl::StrCat("storage data/", pt.storage_key, " holds ", bytes->size(),
                                " bytes, expected ", pt.storage_numel * esize, " (truncated)"));
    }
    const uint8_t* p = reinterpret_cast<const uint8_t*>(bytes->data()) + pt.storage_offset * esize;
    t.owner = AliasOrCopy(*file, p, numel * esize, esize, &t.data);
    out[name] = std::move(t);
  }
  return out;
}

}  // namespace bms
