// WriteTorchCheckpoint*: a pytorch_model.bin exactly as torch.save({"model": state_dict}) lays it
// out: a zip of STORED entries (data 64-byte aligned, CRC32, zip64 records when offsets pass
// 4 GiB) holding archive/data.pkl (pickle protocol 2), archive/byteorder, archive/data/<i> (one
// raw little-endian storage per tensor) and archive/version.
#include <array>

#include "absl/strings/str_cat.h"
#include "tools/binary_file.h"
#include "tools/checkpoint_writer.h"

namespace bms {
namespace {

constexpr uint64_t k32Max = 0xFFFFFFFFu;
constexpr const char* kArchive = "archive/";

uint32_t Crc32(const void* data, size_t n, uint32_t crc = 0) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  const uint8_t* p = static_cast<const uint8_t*>(data);
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) crc = table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

// Writes stored zip entries one after another, then the central directory.
class ZipWriter {
 public:
  explicit ZipWriter(const std::string& path) : out_(path) {}

  void Add(const std::string& name, const void* data, uint64_t size) {
    Entry e{name, out_.offset(), size, Crc32(data, size)};
    const bool big = size >= k32Max;
    // Local header; the extra field pads so that the data starts 64-byte aligned (as torch does).
    uint64_t header_end = e.offset + 30 + name.size() + (big ? 20 : 0) + 4;
    uint64_t pad = (64 - header_end % 64) % 64;
    out_.WriteLE(0x04034b50, 4);
    out_.WriteLE(big ? 45 : 20, 2);  // version needed
    out_.WriteLE(0, 2);              // flags
    out_.WriteLE(0, 2);              // method: stored
    out_.WriteLE(0, 4);              // mod time, date
    out_.WriteLE(e.crc, 4);
    out_.WriteLE(big ? k32Max : size, 4);
    out_.WriteLE(big ? k32Max : size, 4);
    out_.WriteLE(name.size(), 2);
    out_.WriteLE((big ? 20 : 0) + 4 + pad, 2);
    out_.Write(name);
    if (big) {
      out_.WriteLE(0x0001, 2);
      out_.WriteLE(16, 2);
      out_.WriteLE(size, 8);
      out_.WriteLE(size, 8);
    }
    out_.WriteLE(0x4246, 2);  // "FB" padding field
    out_.WriteLE(pad, 2);
    out_.Write(std::string(pad, 'Z'));
    out_.Write(data, size);
    entries_.push_back(e);
  }

  absl::Status Finish() {
    const uint64_t cd_offset = out_.offset();
    for (const Entry& e : entries_) {
      std::string z64;  // zip64 extra: the saturated fields, in order size, csize, offset
      auto put64 = [&](uint64_t v) {
        for (int i = 0; i < 8; ++i) z64.push_back(static_cast<char>(v >> (8 * i)));
      };
      if (e.size >= k32Max) {
        put64(e.size);
        put64(e.size);
      }
      if (e.offset >= k32Max) put64(e.offset);
      const bool big = !z64.empty();
      out_.WriteLE(0x02014b50, 4);
      out_.WriteLE(big ? 45 : 20, 2);  // version made by
      out_.WriteLE(big ? 45 : 20, 2);  // version needed
      out_.WriteLE(0, 2);
      out_.WriteLE(0, 2);
      out_.WriteLE(0, 4);
      out_.WriteLE(e.crc, 4);
      out_.WriteLE(std::min(e.size, k32Max), 4);
      out_.WriteLE(std::min(e.size, k32Max), 4);
      out_.WriteLE(e.name.size(), 2);
      out_.WriteLE(big ? 4 + z64.size() : 0, 2);
      out_.WriteLE(0, 2);  // comment
      out_.WriteLE(0, 2);  // disk
      out_.WriteLE(0, 2);  // internal attributes
      out_.WriteLE(0, 4);  // external attributes
      out_.WriteLE(std::min(e.offset, k32Max), 4);
      out_.Write(e.name);
      if (big) {
        out_.WriteLE(0x0001, 2);
        out_.WriteLE(z64.size(), 2);
        out_.Write(z64);
      }
    }
    const uint64_t cd_size = out_.offset() - cd_offset;
    const uint64_t count = entries_.size();
    if (cd_offset >= k32Max || cd_size >= k32Max || count >= 0xFFFF) {
      const uint64_t z64_eocd = out_.offset();
      out_.WriteLE(0x06064b50, 4);
      out_.WriteLE(44, 8);  // size of the rest of this record
      out_.WriteLE(45, 2);
      out_.WriteLE(45, 2);
      out_.WriteLE(0, 4);
      out_.WriteLE(0, 4);
      out_.WriteLE(count, 8);
      out_.WriteLE(count, 8);
      out_.WriteLE(cd_size, 8);
      out_.WriteLE(cd_offset, 8);
      out_.WriteLE(0x07064b50, 4);  // locator
      out_.WriteLE(0, 4);
      out_.WriteLE(z64_eocd, 8);
      out_.WriteLE(1, 4);
    }
    out_.WriteLE(0x06054b50, 4);
    out_.WriteLE(0, 2);
    out_.WriteLE(0, 2);
    out_.WriteLE(std::min<uint64_t>(count, 0xFFFF), 2);
    out_.WriteLE(std::min<uint64_t>(count, 0xFFFF), 2);
    out_.WriteLE(std::min(cd_size, k32Max), 4);
    out_.WriteLE(std::min(cd_offset, k32Max), 4);
    out_.WriteLE(0, 2);
    return out_.Close();
  }

 private:
  struct Entry {
    std::string name;
    uint64_t offset;
    uint64_t size;
    uint32_t crc;
  };
  BinaryFile out_;
  std::vector<Entry> entries_;
};

// Protocol-2 pickle opcodes, as torch.save emits them for a state dict.
class PickleWriter {
 public:
  std::string& bytes() { return s_; }
  void Op(char op) { s_.push_back(op); }
  void Int(int64_t v) {
    if (v >= 0 && v < 256) {
      Op('K');
      Raw(v, 1);
    } else if (v >= 0 && v < 65536) {
      Op('M');
      Raw(v, 2);
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
      Op('J');
      Raw(static_cast<uint32_t>(v), 4);
    } else {
      Op('\x8a');  // LONG1, 8 bytes two's complement
      Raw(8, 1);
      Raw(static_cast<uint64_t>(v), 8);
    }
  }
  void Str(const std::string& v) {
    Op('X');
    Raw(v.size(), 4);
    s_ += v;
  }
  void Global(const char* module, const char* name) {
    s_ += absl::StrCat("c", module, "\n", name, "\n");
  }
  void IntTuple(const std::vector<int64_t>& v) {
    Op('(');
    for (int64_t x : v) Int(x);
    Op('t');
  }

 private:
  void Raw(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) s_.push_back(static_cast<char>(v >> (8 * i)));
  }
  std::string s_;
};

const char* StorageName(DType t) {
  switch (t) {
    case DType::kF32:
      return "FloatStorage";
    case DType::kBF16:
      return "BFloat16Storage";
    case DType::kF16:
      return "HalfStorage";
  }
  return "FloatStorage";
}

std::string StateDictPickle(const std::vector<ExpectedTensor>& specs, DType dtype) {
  PickleWriter p;
  p.Op('\x80');
  p.Op('\x02');
  p.Op('}');
  p.Str("model");
  p.Global("collections", "OrderedDict");
  p.Op(')');
  p.Op('R');
  p.Op('(');
  for (size_t i = 0; i < specs.size(); ++i) {
    const std::vector<int64_t>& shape = specs[i].shape;
    int64_t numel = 1;
    for (int64_t s : shape) numel *= s;
    std::vector<int64_t> stride(shape.size());
    int64_t acc = 1;
    for (size_t k = shape.size(); k-- > 0;) {
      stride[k] = acc;
      acc *= shape[k];
    }
    p.Str(specs[i].name);
    p.Global("torch._utils", "_rebuild_tensor_v2");
    p.Op('(');
    p.Op('(');  // persistent id: ('storage', StorageType, key, location, numel)
    p.Str("storage");
    p.Global("torch", StorageName(dtype));
    p.Str(std::to_string(i));
    p.Str("cpu");
    p.Int(numel);
    p.Op('t');
    p.Op('Q');
    p.Int(0);  // storage offset
    p.IntTuple(shape);
    p.IntTuple(stride);
    p.Op('\x89');                            // requires_grad = False
    p.Global("collections", "OrderedDict");  // backward hooks
    p.Op(')');
    p.Op('R');
    p.Op('t');
    p.Op('R');
  }
  p.Op('u');  // SETITEMS into the OrderedDict
  p.Op('s');  // SETITEM "model" into the top-level dict
  p.Op('.');
  return p.bytes();
}

}  // namespace

absl::Status WriteTorchCheckpointStream(const std::string& path,
                                        const std::vector<ExpectedTensor>& specs, DType dtype,
                                        const TensorSource& source) {
  ZipWriter zip(path);
  const std::string archive = kArchive;
  std::string pickle = StateDictPickle(specs, dtype);
  zip.Add(archive + "data.pkl", pickle.data(), pickle.size());
  zip.Add(archive + "byteorder", "little", 6);
  for (size_t i = 0; i < specs.size(); ++i) {
    absl::StatusOr<HostTensor> t = PullTensor(specs[i], dtype, source);
    if (!t.ok()) return t.status();
    zip.Add(absl::StrCat(archive, "data/", i), t->data, t->nbytes());
  }
  zip.Add(archive + "version", "3\n", 2);
  return zip.Finish();
}

absl::Status WriteStoredZip(const std::string& path,
                            const std::vector<std::pair<std::string, std::string>>& entries) {
  ZipWriter zip(path);
  for (const auto& [name, data] : entries) zip.Add(name, data.data(), data.size());
  return zip.Finish();
}

absl::Status WriteTorchCheckpoint(const std::string& path, const TensorMap& tensors, DType dtype) {
  return WriteTorchCheckpointStream(path, SpecsOf(tensors), dtype, SourceOf(tensors));
}

}  // namespace bms
