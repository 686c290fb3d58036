#include "engine/state_cache.h"

#include <algorithm>

namespace bms {

StateCache::StateCache(int capacity, int min_tokens)
    : capacity_(std::max(capacity, 0)), min_tokens_(std::max(min_tokens, 1)) {}

uint64_t StateCache::KeyHash(std::span<const int32_t> tokens) {
  uint64_t h = kHashSeed;
  for (int32_t t : tokens) h = Extend(h, t);
  return h;
}

StateCache::Lru::iterator StateCache::Find(std::span<const int32_t> tokens, uint64_t hash) {
  auto [begin, end] = by_hash_.equal_range(hash);
  for (auto it = begin; it != end; ++it) {
    const std::vector<int32_t>& key = it->second->tokens;
    if (key.size() == tokens.size() && std::equal(key.begin(), key.end(), tokens.begin()))
      return it->second;
  }
  return lru_.end();
}

const StateCache::Entry* StateCache::Lookup(std::span<const int32_t> prompt) {
  if (!enabled() || lengths_.empty()) return nullptr;
  // Prefix hashes up to the longest key shorter than the prompt.
  auto longest = lengths_.upper_bound(static_cast<int>(prompt.size()));  // first length < size
  if (longest == lengths_.end() || longest->first < min_tokens_) return nullptr;
  prefix_hashes_.resize(longest->first + 1);
  prefix_hashes_[0] = kHashSeed;
  for (int i = 0; i < longest->first; ++i)
    prefix_hashes_[i + 1] = Extend(prefix_hashes_[i], prompt[i]);
  for (auto it = longest; it != lengths_.end(); ++it) {
    const int len = it->first;
    Lru::iterator hit = Find(prompt.first(len), prefix_hashes_[len]);
    if (hit == lru_.end()) continue;
    lru_.splice(lru_.begin(), lru_, hit);  // iterators stay valid
    hit->pinned_step = step_;
    return &*hit;
  }
  return nullptr;
}

bool StateCache::Contains(std::span<const int32_t> tokens) const {
  if (!enabled()) return false;
  auto [begin, end] = by_hash_.equal_range(KeyHash(tokens));
  for (auto it = begin; it != end; ++it) {
    const std::vector<int32_t>& key = it->second->tokens;
    if (key.size() == tokens.size() && std::equal(key.begin(), key.end(), tokens.begin()))
      return true;
  }
  return false;
}

void StateCache::Remove(Lru::iterator entry) {
  auto [begin, end] = by_hash_.equal_range(entry->hash);
  for (auto it = begin; it != end; ++it) {
    if (it->second == entry) {
      by_hash_.erase(it);
      break;
    }
  }
  auto len = lengths_.find(static_cast<int>(entry->tokens.size()));
  if (len != lengths_.end() && --len->second == 0) lengths_.erase(len);
  lru_.erase(entry);
}

std::vector<int> StateCache::Insert(std::vector<int32_t> tokens, int slot) {
  std::vector<int> released;
  if (!enabled() || static_cast<int>(tokens.size()) < min_tokens_) {
    released.push_back(slot);
    return released;
  }
  const uint64_t hash = KeyHash(tokens);
  if (Lru::iterator same = Find(tokens, hash); same != lru_.end()) {
    released.push_back(same->slot);  // the newer state replaces it
    Remove(same);
  }
  if (static_cast<int>(lru_.size()) >= capacity_) {
    released.push_back(lru_.back().slot);
    Remove(std::prev(lru_.end()));
  }
  const int len = static_cast<int>(tokens.size());
  lru_.push_front(Entry{.tokens = std::move(tokens), .hash = hash, .slot = slot, .pinned_step = 0});
  by_hash_.emplace(hash, lru_.begin());
  ++lengths_[len];
  return released;
}

int StateCache::EvictOne() {
  for (auto it = lru_.rbegin(); it != lru_.rend(); ++it) {
    if (it->pinned_step == step_) continue;
    const int slot = it->slot;
    Remove(std::next(it).base());
    return slot;
  }
  return -1;
}

}  // namespace bms
