// AddedVocab: the `added_tokens` of a HF tokenizer (special and non-special), matched in text
// before BPE with leftmost-longest priority and the per-token lstrip/rstrip/single_word flags.
// One AddedVocab holds the tokens matched at one stage (raw text, or normalized text).
// Immutable after construction; thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace bms {

struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool special = false;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
};

class AddedVocab {
 public:
  AddedVocab() { first_.fill(-1); }
  // Tokens with empty content are ignored.
  void Add(const AddedToken& token);
  bool empty() const { return tokens_.empty(); }

  struct Match {
    size_t start;  // byte offsets in the text, after lstrip/rstrip
    size_t end;
    int32_t id;
  };
  // Finds the next accepted match in text[from, ...), never extending left of `floor` (the end of
  // the previous match). Special tokens match only when `parse_special`; a rejected match is
  // skipped as a whole (as HF's non-overlapping search does). False when there is none.
  bool FindNext(std::string_view text, size_t from, size_t floor, bool parse_special,
                Match* match) const;

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int32_t>> children;
    int32_t token = -1;  // index into tokens_ of the token ending here
  };
  // Index of the longest token starting at text[i] (-1: none) and its length.
  int32_t LongestAt(std::string_view text, size_t i, size_t* len) const;

  std::vector<AddedToken> tokens_;
  std::vector<Node> nodes_{Node{}};  // nodes_[0] is the root
  std::array<int32_t, 256> first_;   // root child per first byte
};

}  // namespace bms
