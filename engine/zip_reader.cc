#include "engine/zip_reader.h"

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace bms {
namespace {

constexpr uint32_t kLocalHeaderSig = 0x04034b50;
constexpr uint32_t kCentralSig = 0x02014b50;
constexpr uint32_t kEocdSig = 0x06054b50;
constexpr uint32_t kZip64LocatorSig = 0x07064b50;
constexpr uint32_t kZip64EocdSig = 0x06064b50;

// Little-endian reads with an explicit bounds check against the file size.
class Cursor {
 public:
  Cursor(const uint8_t* base, uint64_t size) : base_(base), size_(size) {}
  bool Has(uint64_t off, uint64_t n) const { return off <= size_ && n <= size_ - off; }
  uint64_t Read(uint64_t off, int n) const {  // caller checked Has(off, n)
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; --i) v = (v << 8) | base_[off + i];
    return v;
  }

 private:
  const uint8_t* base_;
  uint64_t size_;
};

}  // namespace

absl::StatusOr<ZipReader> ZipReader::Open(std::shared_ptr<const MappedFile> file) {
  const std::string& path = file->path();
  auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", why));
  };
  const uint64_t size = file->size();
  Cursor c(file->data(), size);
  // The end-of-central-directory record is 22 bytes plus a comment of up to 65535 bytes.
  if (size < 22) return bad("truncated: too small to be a zip archive");
  uint64_t eocd = UINT64_MAX;
  uint64_t lowest = size > 22 + 65535 ? size - 22 - 65535 : 0;
  for (uint64_t off = size - 22;; --off) {
    if (c.Read(off, 4) == kEocdSig && off + 22 + c.Read(off + 20, 2) <= size) {
      eocd = off;
      break;
    }
    if (off == lowest) break;
  }
  if (eocd == UINT64_MAX) {
    return bad("no zip end-of-central-directory record (truncated or not a zip archive)");
  }
  uint64_t count = c.Read(eocd + 10, 2);
  uint64_t cd_size = c.Read(eocd + 12, 4);
  uint64_t cd_offset = c.Read(eocd + 16, 4);
  if (eocd >= 20 && c.Read(eocd - 20, 4) == kZip64LocatorSig) {
    uint64_t z64 = c.Read(eocd - 20 + 8, 8);
    if (!c.Has(z64, 56) || c.Read(z64, 4) != kZip64EocdSig) {
      return bad("corrupt zip64 end-of-central-directory record");
    }
    count = c.Read(z64 + 32, 8);
    cd_size = c.Read(z64 + 40, 8);
    cd_offset = c.Read(z64 + 48, 8);
  }
  if (!c.Has(cd_offset, cd_size)) return bad("central directory lies outside the file (truncated)");

  ZipReader reader;
  reader.file_ = file;
  uint64_t off = cd_offset;
  for (uint64_t i = 0; i < count; ++i) {
    if (!c.Has(off, 46) || c.Read(off, 4) != kCentralSig) {
      return bad(absl::StrCat("corrupt central directory entry ", i));
    }
    Entry e;
    e.method = static_cast<uint16_t>(c.Read(off + 10, 2));
    uint64_t compressed = c.Read(off + 20, 4);
    e.size = c.Read(off + 24, 4);
    uint64_t name_len = c.Read(off + 28, 2), extra_len = c.Read(off + 30, 2),
             comment_len = c.Read(off + 32, 2);
    e.local_header_offset = c.Read(off + 42, 4);
    if (!c.Has(off + 46, name_len + extra_len + comment_len)) {
      return bad(absl::StrCat("central directory entry ", i, " is truncated"));
    }
    std::string name(reinterpret_cast<const char*>(file->data() + off + 46), name_len);
    // Zip64 extended information: 8-byte values for each field saturated at 0xFFFFFFFF.
    uint64_t x = off + 46 + name_len, x_end = x + extra_len;
    while (x + 4 <= x_end) {
      uint64_t id = c.Read(x, 2), len = c.Read(x + 2, 2);
      if (x + 4 + len > x_end)
        return bad(absl::StrCat("corrupt extra field in entry '", name, "'"));
      if (id == 0x0001) {
        uint64_t p = x + 4, p_end = p + len;
        auto take = [&](uint64_t* v) {
          if (*v != 0xFFFFFFFFu) return true;
          if (p + 8 > p_end) return false;
          *v = c.Read(p, 8);
          p += 8;
          return true;
        };
        if (!take(&e.size) || !take(&compressed) || !take(&e.local_header_offset)) {
          return bad(absl::StrCat("corrupt zip64 extra field in entry '", name, "'"));
        }
      }
      x += 4 + len;
    }
    if (e.method == 0 && compressed != e.size) {
      return bad(absl::StrCat("stored entry '", name, "' has differing sizes"));
    }
    reader.entries_[name] = e;
    off += 46 + name_len + extra_len + comment_len;
  }
  return reader;
}

absl::StatusOr<std::string_view> ZipReader::Data(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) {
    return absl::NotFoundError(absl::StrCat(file_->path(), ": no entry '", name, "' in archive"));
  }
  const Entry& e = it->second;
  auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(
        absl::StrCat(file_->path(), ": zip entry '", name, "' ", why));
  };
  if (e.method != 0) {
    return bad(absl::StrCat("is compressed (method ", e.method,
                            "); only stored (uncompressed) entries are supported"));
  }
  Cursor c(file_->data(), file_->size());
  uint64_t h = e.local_header_offset;
  if (!c.Has(h, 30) || c.Read(h, 4) != kLocalHeaderSig) {
    return bad("has a corrupt local header offset (truncated or corrupt archive)");
  }
  uint64_t data_off = h + 30 + c.Read(h + 26, 2) + c.Read(h + 28, 2);
  if (!c.Has(data_off, e.size)) return bad("runs past the end of the file (truncated archive)");
  return std::string_view(reinterpret_cast<const char*>(file_->data() + data_off), e.size);
}

}  // namespace bms
