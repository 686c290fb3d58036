#include "engine/safetensors.h"

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/mapped_file.h"
#include "nlohmann/json.hpp"

namespace bms {
namespace {

using json = nlohmann::json;

// Header JSON larger than this is rejected (the format's reference reader uses 100 MB).
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

absl::Status Bad(const std::string& path, const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", why));
}

bool ParseDType(const std::string& s, DType* out) {
  if (s == "F32")
    *out = DType::kF32;
  else if (s == "BF16")
    *out = DType::kBF16;
  else if (s == "F16")
    *out = DType::kF16;
  else
    return false;
  return true;
}

// Reads one header entry into `t` (data not yet set) and its [begin, end) offsets.
absl::Status ParseEntry(const std::string& path, const std::string& name, const json& e,
                        HostTensor* t, uint64_t* begin, uint64_t* end) {
  auto where = [&](const std::string& why) {
    return Bad(path, absl::StrCat("tensor '", name, "': ", why));
  };
  if (!e.is_object()) return where("header entry must be an object");
  auto dt = e.find("dtype");
  if (dt == e.end() || !dt->is_string()) return where("missing string field 'dtype'");
  if (!ParseDType(dt->get<std::string>(), &t->dtype)) {
    return where(absl::StrCat("unsupported dtype '", dt->get<std::string>(),
                              "' (supported: F32, BF16, F16)"));
  }
  auto sh = e.find("shape");
  if (sh == e.end() || !sh->is_array()) return where("missing array field 'shape'");
  if (sh->size() > 8) return where("shape has more than 8 dimensions");
  uint64_t numel = 1;
  for (const json& d : *sh) {
    if (!d.is_number_unsigned()) return where("shape entries must be non-negative integers");
    uint64_t v = d.get<uint64_t>();
    if (v > (1ull << 40) || (v != 0 && numel > (1ull << 40) / v)) return where("shape too large");
    numel *= v;
    t->shape.push_back(static_cast<int64_t>(v));
  }
  auto off = e.find("data_offsets");
  if (off == e.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
      !(*off)[1].is_number_unsigned()) {
    return where("'data_offsets' must be [begin, end] non-negative integers");
  }
  *begin = (*off)[0].get<uint64_t>();
  *end = (*off)[1].get<uint64_t>();
  if (*end < *begin) return where(absl::StrCat("data_offsets [", *begin, ", ", *end, "] reversed"));
  if (*end - *begin != numel * DTypeSize(t->dtype)) {
    return where(absl::StrCat("data_offsets span ", *end - *begin, " bytes but shape ",
                              t->ShapeString(), " of ", DTypeName(t->dtype), " needs ",
                              numel * DTypeSize(t->dtype)));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadSmallFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

absl::StatusOr<TensorMap> ReadSafetensors(const std::string& path) {
  auto file_or = MappedFile::Open(path);
  if (!file_or.ok()) return file_or.status();
  std::shared_ptr<const MappedFile> file = *std::move(file_or);
  const uint8_t* base = file->data();
  const uint64_t size = file->size();
  if (size < 8) return Bad(path, absl::StrCat("truncated: ", size, " bytes, no header length"));
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | base[i];
  if (header_len > kMaxHeaderBytes || header_len > size - 8) {
    return Bad(path, absl::StrCat("header length ", header_len, " exceeds the file size ", size,
                                  " (truncated or not a safetensors file)"));
  }
  std::string header(reinterpret_cast<const char*>(base + 8), header_len);
  json j = json::parse(header, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Bad(path, "header is not valid JSON");
  if (!j.is_object()) return Bad(path, "header JSON must be an object");
  const uint8_t* data_area = base + 8 + header_len;
  const uint64_t data_size = size - 8 - header_len;

  TensorMap out;
  std::vector<std::pair<std::pair<uint64_t, uint64_t>, std::string>> spans;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    HostTensor t;
    uint64_t begin = 0, end = 0;
    if (absl::Status s = ParseEntry(path, it.key(), it.value(), &t, &begin, &end); !s.ok()) {
      return s;
    }
    if (end > data_size) {
      return Bad(path, absl::StrCat("tensor '", it.key(), "': data_offsets [", begin, ", ", end,
                                    "] run past the data area of ", data_size,
                                    " bytes (truncated file or corrupt offsets)"));
    }
    spans.push_back({{begin, end}, it.key()});
    t.owner = AliasOrCopy(file, data_area + begin, end - begin, DTypeSize(t.dtype), &t.data);
    out.emplace(it.key(), std::move(t));
  }
  std::sort(spans.begin(), spans.end());
  uint64_t covered_end = 0;  // the furthest end of any earlier non-empty tensor
  std::string covered_by;
  for (const auto& [span, name] : spans) {
    if (span.first == span.second) continue;
    if (span.first < covered_end) {
      return Bad(path, absl::StrCat("tensors '", covered_by, "' and '", name,
                                    "' overlap (corrupt data_offsets)"));
    }
    covered_end = span.second;
    covered_by = name;
  }
  return out;
}

absl::StatusOr<TensorMap> ReadShardedSafetensors(const std::string& index_path) {
  auto text = ReadSmallFile(index_path);
  if (!text.ok()) return text.status();
  json j = json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Bad(index_path, "not valid JSON");
  if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object()) {
    return Bad(index_path, "missing object 'weight_map'");
  }
  std::string dir = ".";
  if (size_t slash = index_path.rfind('/'); slash != std::string::npos) {
    dir = index_path.substr(0, slash);
  }
  std::map<std::string, std::vector<std::string>> by_file;  // shard -> tensor names
  for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
    if (!it.value().is_string()) {
      return Bad(index_path, absl::StrCat("weight_map['", it.key(), "'] must be a file name"));
    }
    std::string shard = it.value().get<std::string>();
    if (shard.empty() || shard.find('/') != std::string::npos || shard == "." || shard == "..") {
      return Bad(index_path, absl::StrCat("weight_map['", it.key(), "']: shard name '", shard,
                                          "' must be a plain file name in the same folder"));
    }
    by_file[shard].push_back(it.key());
  }
  TensorMap out;
  for (const auto& [shard, names] : by_file) {
    auto tensors = ReadSafetensors(dir + "/" + shard);
    if (!tensors.ok()) return tensors.status();
    std::vector<std::string> missing;
    for (const std::string& name : names) {
      auto it = tensors->find(name);
      if (it == tensors->end()) {
        missing.push_back(name);
      } else {
        out[name] = it->second;
      }
    }
    if (!missing.empty()) {
      return Bad(index_path, absl::StrCat("shard ", shard, " lacks tensors listed in weight_map: ",
                                          absl::StrJoin(missing, ", ")));
    }
  }
  return out;
}

}  // namespace bms
