// Shared helpers of the checkpoint writers and the safetensors writers (single and sharded).
#include "tools/checkpoint_writer.h"

#include <algorithm>
#include <functional>
#include <map>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "tools/binary_file.h"

namespace bms {
namespace {

uint64_t NumBytes(const ExpectedTensor& spec, DType dtype) {
  uint64_t n = DTypeSize(dtype);
  for (int64_t s : spec.shape) n *= static_cast<uint64_t>(s);
  return n;
}

// t converted to dtype (t.dtype != dtype), element ranges in parallel for large tensors.
HostTensor ConvertParallel(const HostTensor& t, DType dtype) {
  const size_t n = static_cast<size_t>(t.numel());
  HostTensor out;
  out.dtype = dtype;
  out.shape = t.shape;
  std::function<void(size_t, size_t)> convert;
  if (dtype == DType::kF32) {
    auto buf = std::make_shared<std::vector<float>>(n);
    convert = [&t, p = buf->data()](size_t b, size_t e) {
      for (size_t i = b; i < e; ++i) p[i] = t.At(static_cast<int64_t>(i));
    };
    out.data = buf->data();
    out.owner = buf;
  } else {
    auto buf = std::make_shared<std::vector<uint16_t>>(n);
    const bool bf16 = dtype == DType::kBF16;
    convert = [&t, bf16, p = buf->data()](size_t b, size_t e) {
      for (size_t i = b; i < e; ++i) {
        float v = t.At(static_cast<int64_t>(i));
        p[i] = bf16 ? F32ToBF16(v) : F32ToF16(v);
      }
    };
    out.data = buf->data();
    out.owner = buf;
  }
  size_t n_threads = std::min<size_t>(std::max(1u, std::thread::hardware_concurrency()), 32);
  n_threads = std::min(n_threads, n / (size_t{1} << 20) + 1);
  std::vector<std::thread> threads;
  for (size_t k = 0; k < n_threads; ++k) {
    threads.emplace_back(convert, n * k / n_threads, n * (k + 1) / n_threads);
  }
  for (std::thread& th : threads) th.join();
  return out;
}

}  // namespace

std::vector<ExpectedTensor> SpecsOf(const TensorMap& tensors) {
  std::vector<ExpectedTensor> specs;
  for (const auto& [name, t] : tensors) specs.push_back({name, t.shape});
  return specs;
}

TensorSource SourceOf(const TensorMap& tensors) {
  return [&tensors](const ExpectedTensor& spec) -> absl::StatusOr<HostTensor> {
    auto it = tensors.find(spec.name);
    if (it == tensors.end()) return absl::NotFoundError(absl::StrCat("no tensor ", spec.name));
    return it->second;
  };
}

absl::StatusOr<HostTensor> PullTensor(const ExpectedTensor& spec, DType dtype,
                                      const TensorSource& source) {
  absl::StatusOr<HostTensor> t = source(spec);
  if (!t.ok()) return t.status();
  if (t->shape != spec.shape) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", spec.name, " has shape ",
                                                   t->ShapeString(), ", expected [",
                                                   absl::StrJoin(spec.shape, ", "), "]"));
  }
  if (t->numel() > 0 && t->data == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", spec.name, " has no data"));
  }
  if (t->dtype == dtype) return t;
  return ConvertParallel(*t, dtype);
}

absl::Status WriteSafetensorsStream(const std::string& path,
                                    const std::vector<ExpectedTensor>& specs, DType dtype,
                                    const TensorSource& source) {
  nlohmann::json header = nlohmann::json::object();
  header["__metadata__"] = {{"format", "pt"}};
  uint64_t offset = 0;
  for (const ExpectedTensor& spec : specs) {
    uint64_t n = NumBytes(spec, dtype);
    header[spec.name] = {
        {"dtype", DTypeName(dtype)}, {"shape", spec.shape}, {"data_offsets", {offset, offset + n}}};
    offset += n;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // the data area starts 8-byte aligned
  BinaryFile out(path);
  out.WriteLE(text.size(), 8);
  out.Write(text);
  for (const ExpectedTensor& spec : specs) {
    absl::StatusOr<HostTensor> t = PullTensor(spec, dtype, source);
    if (!t.ok()) return t.status();
    out.Write(t->data, t->nbytes());
  }
  return out.Close();
}

absl::Status WriteSafetensors(const std::string& path, const TensorMap& tensors, DType dtype) {
  return WriteSafetensorsStream(path, SpecsOf(tensors), dtype, SourceOf(tensors));
}

absl::Status WriteShardedSafetensorsStream(const std::string& dir,
                                           const std::vector<ExpectedTensor>& specs, DType dtype,
                                           uint64_t max_shard_bytes, const TensorSource& source) {
  if (max_shard_bytes == 0) return absl::InvalidArgumentError("max shard bytes must be positive");
  std::vector<std::vector<ExpectedTensor>> shards;
  uint64_t current = 0, total = 0;
  for (const ExpectedTensor& spec : specs) {
    uint64_t n = NumBytes(spec, dtype);
    if (shards.empty() || (current > 0 && current + n > max_shard_bytes)) {
      shards.emplace_back();
      current = 0;
    }
    shards.back().push_back(spec);
    current += n;
    total += n;
  }
  nlohmann::json weight_map = nlohmann::json::object();
  for (size_t i = 0; i < shards.size(); ++i) {
    std::string name = absl::StrFormat("model-%05d-of-%05d.safetensors", i + 1, shards.size());
    if (absl::Status s = WriteSafetensorsStream(dir + "/" + name, shards[i], dtype, source);
        !s.ok()) {
      return s;
    }
    for (const ExpectedTensor& spec : shards[i]) weight_map[spec.name] = name;
  }
  nlohmann::json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  BinaryFile out(dir + "/model.safetensors.index.json");
  out.Write(index.dump(2) + "\n");
  return out.Close();
}

absl::Status WriteShardedSafetensors(const std::string& dir, const TensorMap& tensors, DType dtype,
                                     uint64_t max_shard_bytes) {
  return WriteShardedSafetensorsStream(dir, SpecsOf(tensors), dtype, max_shard_bytes,
                                       SourceOf(tensors));
}

}  // namespace bms
