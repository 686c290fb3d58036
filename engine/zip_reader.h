// ZipReader: a minimal, bounds-checked reader of the zip archives torch.save writes (stored,
// uncompressed entries; zip64 records for large archives). It indexes the central directory of a
// memory-mapped file and hands out zero-copy views of entry data. Compressed entries are an error.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "engine/mapped_file.h"

namespace bms {

class ZipReader {
 public:
  struct Entry {
    uint64_t local_header_offset = 0;
    uint64_t size = 0;  // uncompressed == compressed for stored entries
    uint16_t method = 0;
  };

  // Parses the archive's end-of-central-directory record(s) and central directory. Errors
  // (InvalidArgument, naming the file) for anything truncated or inconsistent.
  static absl::StatusOr<ZipReader> Open(std::shared_ptr<const MappedFile> file);

  const std::map<std::string, Entry>& entries() const { return entries_; }
  bool Contains(const std::string& name) const { return entries_.count(name) != 0; }

  // The bytes of a stored entry, inside the mapping. NotFound if absent; InvalidArgument if the
  // entry is compressed or its data runs past the file.
  absl::StatusOr<std::string_view> Data(const std::string& name) const;

  const std::shared_ptr<const MappedFile>& file() const { return file_; }

 private:
  std::shared_ptr<const MappedFile> file_;
  std::map<std::string, Entry> entries_;
};

}  // namespace bms
