// StateCache: SSM states kept after their request no longer needs them, keyed by the exact token
// sequence they have consumed, so a later prompt that starts with that sequence (the next turn of
// a chat, a shared system prompt) resumes from the state instead of prefilling those tokens again.
//
// This is the state-space model's prefix cache: a transformer caches a KV block per token; a Mamba
// layer's whole history is its fixed-size state, so one cached entry is one state slot, and only a
// key that is an exact prefix of the new prompt can be used (there is no partial reuse).
// Entries live in ordinary state slots taken from the SlotPool; the scheduler evicts the least
// recently used entry whenever a request needs the slot. Entries found for this step's admissions
// are pinned until the next step so their slots are not evicted before the engine copies them.
// Not thread-safe: the engine thread (scheduler) owns it.
#pragma once

#include <cstdint>
#include <list>
#include <map>
#include <span>
#include <unordered_map>
#include <vector>

namespace bms {

class StateCache {
 public:
  struct Entry {
    std::vector<int32_t> tokens;  // every token the state has consumed, in order
    uint64_t hash = 0;            // KeyHash(tokens)
    int slot = -1;
    uint64_t pinned_step = 0;  // pinned while equal to the cache's current step
  };

  // capacity: most entries held (0: disabled). min_tokens: shortest key worth an entry (>= 1).
  StateCache(int capacity, int min_tokens);

  bool enabled() const { return capacity_ > 0; }
  int size() const { return static_cast<int>(lru_.size()); }
  int capacity() const { return capacity_; }
  int min_tokens() const { return min_tokens_; }

  // Starts a new scheduler step: earlier pins lapse.
  void NewStep() { ++step_; }

  // The entry with the longest key that is a strict prefix of `prompt` (at least one prompt
  // token is left to run, so the step has logits), or null. A hit becomes most recently used and
  // is pinned for this step. Cost: one pass hashing the prompt up to the longest key, then one
  // hash probe per distinct key length (not per entry: many conversations sharing a long system
  // prompt stay cheap).
  const Entry* Lookup(std::span<const int32_t> prompt);

  // Takes ownership of `slot`, holding the state after `tokens` (called after the step's forward,
  // so pins no longer matter). Returns the slots the caller must release to the pool: `slot`
  // itself when the key is too short or the cache is disabled, the entry with the same key
  // (replaced), and the least recently used entry when full.
  std::vector<int> Insert(std::vector<int32_t> tokens, int slot);

  // Removes the least recently used unpinned entry and returns its slot, or -1 when none.
  int EvictOne();

  // Whether `tokens` is a key now (tests, and to skip redundant snapshots).
  bool Contains(std::span<const int32_t> tokens) const;

 private:
  using Lru = std::list<Entry>;  // most recently used first
  // Chained per-token hash: KeyHash of a prefix extends to the next token in O(1).
  static constexpr uint64_t kHashSeed = 1469598103934665603ull;
  static uint64_t Extend(uint64_t h, int32_t token) {
    return (h ^ static_cast<uint32_t>(token)) * 1099511628211ull;
  }
  static uint64_t KeyHash(std::span<const int32_t> tokens);
  Lru::iterator Find(std::span<const int32_t> tokens, uint64_t hash);
  void Remove(Lru::iterator it);  // unindexes and erases

  int capacity_;
  int min_tokens_;
  uint64_t step_ = 1;
  Lru lru_;
  std::unordered_multimap<uint64_t, Lru::iterator> by_hash_;  // KeyHash(key) -> entries
  std::map<int, int, std::greater<int>> lengths_;  // key length -> entries, longest first
  std::vector<uint64_t> prefix_hashes_;            // Lookup scratch
};

}  // namespace bms
