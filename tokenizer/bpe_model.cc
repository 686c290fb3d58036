// Byte-level BPE merge table and word encoder (see bpe_model.h).
#include "tokenizer/bpe_model.h"

#include <algorithm>
#include <queue>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace bms {
namespace {

constexpr int32_t kNoRank = INT32_MAX;
constexpr size_t kSmallWord = 48;  // bytes; longer words take the heap path

}  // namespace

absl::StatusOr<BpeModel> BpeModel::Create(
    absl::flat_hash_map<std::string, int32_t> vocab,
    const std::vector<std::pair<std::string, std::string>>& merges, bool ignore_merges) {
  BpeModel m;
  m.ignore_merges_ = ignore_merges;
  int32_t max_id = -1;
  for (const auto& [bytes, id] : vocab) {
    if (id < 0) return absl::InvalidArgumentError(absl::StrCat("model.vocab: negative id ", id));
    max_id = std::max(max_id, id);
  }
  m.id_to_bytes_.assign(static_cast<size_t>(max_id + 1), std::string());
  for (const auto& [bytes, id] : vocab) m.id_to_bytes_[id] = bytes;
  for (int b = 0; b < 256; ++b) {
    auto it = vocab.find(std::string(1, static_cast<char>(b)));
    m.byte_ids_[b] = it == vocab.end() ? -1 : it->second;
    // Bytes that never occur in valid UTF-8 (encode input is validated) may lack a token.
    const bool in_utf8 = b < 0xC0 || (b >= 0xC2 && b <= 0xF4);
    if (it == vocab.end() && in_utf8) {
      return absl::InvalidArgumentError(
          absl::StrCat("model.vocab: no token for byte ", b, " (not a byte-level BPE vocab)"));
    }
  }
  m.merges_.reserve(merges.size());
  for (size_t r = 0; r < merges.size(); ++r) {
    const auto& [a, b] = merges[r];
    auto ia = vocab.find(a), ib = vocab.find(b), inew = vocab.find(a + b);
    if (ia == vocab.end() || ib == vocab.end() || inew == vocab.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("model.merges[", r, "]: a token of the merge is not in the vocab"));
    }
    // The first (lowest-rank) occurrence of a pair wins, as in HF tokenizers.
    m.merges_.try_emplace(PairKey(ia->second, ib->second),
                          Merge{static_cast<int32_t>(r), inew->second});
  }
  m.vocab_ = std::move(vocab);
  return m;
}

void BpeModel::EncodeWord(std::string_view word, std::vector<int32_t>* ids) const {
  if (ignore_merges_) {
    auto it = vocab_.find(absl::string_view(word.data(), word.size()));
    if (it != vocab_.end()) {
      ids->push_back(it->second);
      return;
    }
  }
  if (word.size() == 1) {
    ids->push_back(byte_ids_[static_cast<unsigned char>(word[0])]);
    return;
  }
  if (word.size() <= kSmallWord) {
    EncodeWordSmall(word, ids);
  } else {
    EncodeWordWithHeap(word, ids);
  }
}

// Merges the lowest-rank adjacent pair (leftmost on ties) until none is left. sym[k] is a symbol
// id and rank[k] the rank of the pair (sym[k], sym[k+1]); a merge updates two ranks and shifts the
// tail, so the cost is O(n^2) in the (bounded, small) word length with few hash lookups.
void BpeModel::EncodeWordSmall(std::string_view word, std::vector<int32_t>* ids) const {
  int32_t sym[kSmallWord];
  int32_t rank[kSmallWord];
  int32_t new_id[kSmallWord];
  size_t n = word.size();
  for (size_t k = 0; k < n; ++k) sym[k] = byte_ids_[static_cast<unsigned char>(word[k])];
  auto set_rank = [&](size_t k) {
    const Merge* m = FindMerge(sym[k], sym[k + 1]);
    rank[k] = m ? m->rank : kNoRank;
    new_id[k] = m ? m->new_id : -1;
  };
  for (size_t k = 0; k + 1 < n; ++k) set_rank(k);
  while (n > 1) {
    size_t best = 0;
    for (size_t k = 1; k + 1 < n; ++k) {
      if (rank[k] < rank[best]) best = k;
    }
    if (rank[best] == kNoRank) break;
    sym[best] = new_id[best];
    for (size_t k = best + 1; k + 1 < n; ++k) {
      sym[k] = sym[k + 1];
      rank[k] = rank[k + 1];
      new_id[k] = new_id[k + 1];
    }
    --n;
    if (best + 1 < n) set_rank(best);
    if (best > 0) set_rank(best - 1);
  }
  ids->insert(ids->end(), sym, sym + n);
}

// HF tokenizers' algorithm: symbols in a doubly linked list, candidate merges in a min-heap by
// (rank, position); a popped candidate is skipped when its symbols changed since it was pushed.
void BpeModel::EncodeWordWithHeap(std::string_view word, std::vector<int32_t>* ids) const {
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
    bool alive;
  };
  struct Candidate {
    int32_t rank;
    int32_t pos;
    int32_t new_id;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  const int32_t n = static_cast<int32_t>(word.size());
  std::vector<Symbol> syms(static_cast<size_t>(n));
  for (int32_t k = 0; k < n; ++k) {
    syms[k] =
        Symbol{byte_ids_[static_cast<unsigned char>(word[k])], k - 1, k + 1 < n ? k + 1 : -1, true};
  }
  std::vector<Candidate> storage;
  storage.reserve(static_cast<size_t>(n));
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap(std::greater<>(),
                                                                              std::move(storage));
  auto push = [&](int32_t pos) {
    if (pos < 0 || syms[pos].next < 0) return;
    if (const Merge* m = FindMerge(syms[pos].id, syms[syms[pos].next].id)) {
      heap.push(Candidate{m->rank, pos, m->new_id});
    }
  };
  for (int32_t k = 0; k + 1 < n; ++k) push(k);
  while (!heap.empty()) {
    const Candidate top = heap.top();
    heap.pop();
    Symbol& left = syms[top.pos];
    if (!left.alive || left.next < 0) continue;
    Symbol& right = syms[left.next];
    const Merge* m = FindMerge(left.id, right.id);
    if (m == nullptr || m->new_id != top.new_id) continue;
    left.id = top.new_id;
    right.alive = false;
    left.next = right.next;
    if (left.next >= 0) syms[left.next].prev = top.pos;
    push(left.prev);
    push(top.pos);
  }
  for (int32_t k = 0; k >= 0; k = syms[k].next) ids->push_back(syms[k].id);
}

}  // namespace bms
