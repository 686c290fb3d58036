// BpeModel: the byte-level BPE vocabulary and merge table, and the merge algorithm that turns one
// pre-tokenized word (raw bytes) into token ids. Tokens are stored as raw bytes (the GPT-2
// byte-to-unicode mapping is undone at load), so no per-word remapping is needed.
// Immutable after construction; EncodeWord is thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace bms {

class BpeModel {
 public:
  // `vocab`: token bytes -> id. `merges`: pairs of token bytes in rank order (rank = index).
  // InvalidArgument when a merge names a token missing from the vocab, or a byte has no token.
  static absl::StatusOr<BpeModel> Create(
      absl::flat_hash_map<std::string, int32_t> vocab,
      const std::vector<std::pair<std::string, std::string>>& merges, bool ignore_merges);

  // Appends the ids of `word` (non-empty raw bytes) to *ids. Short words merge with a small
  // array scan; longer ones with a priority queue over a linked list (O(n log n)).
  void EncodeWord(std::string_view word, std::vector<int32_t>* ids) const;
  // The same, always through the priority queue (exposed for tests).
  void EncodeWordWithHeap(std::string_view word, std::vector<int32_t>* ids) const;

  // id -> bytes; "" when the id has no token. Ids run 0 .. max_id().
  const std::vector<std::string>& id_to_bytes() const { return id_to_bytes_; }
  const absl::flat_hash_map<std::string, int32_t>& vocab() const { return vocab_; }

 private:
  struct Merge {
    int32_t rank;
    int32_t new_id;
  };
  static uint64_t PairKey(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  const Merge* FindMerge(int32_t a, int32_t b) const {
    auto it = merges_.find(PairKey(a, b));
    return it == merges_.end() ? nullptr : &it->second;
  }
  void EncodeWordSmall(std::string_view word, std::vector<int32_t>* ids) const;

  absl::flat_hash_map<std::string, int32_t> vocab_;
  absl::flat_hash_map<uint64_t, Merge> merges_;
  std::vector<std::string> id_to_bytes_;
  int32_t byte_ids_[256];
  bool ignore_merges_ = false;
};

}  // namespace bms
