#include "engine/state_cache.h"

#include <algorithm>

namespace bms {

StateCache::StateCache(int capacity, int min_tokens)
    : capacity_(std::max(capacity, 0)), min_tokens_(std::max(min_tokens, 1)) {}

uint64_t StateCache::HeadHash(std::span<const int32_t> tokens, int n) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a over the token ids' bytes
  for (int i = 0; i < n; ++i) {
    uint32_t t = static_cast<uint32_t>(tokens[i]);
    for (int b = 0; b < 4; ++b) {
      h ^= (t >> (8 * b)) & 0xffu;
      h *= 1099511628211ull;
    }
  }
  return h;
}

const StateCache::Entry* StateCache::Lookup(std::span<const int32_t> prompt) {
  if (!enabled() || static_cast<int>(prompt.size()) <= min_tokens_) return nullptr;
  auto [begin, end] = by_head_.equal_range(HeadHash(prompt, min_tokens_));
  Lru::iterator best = lru_.end();
  for (auto it = begin; it != end; ++it) {
    const std::vector<int32_t>& key = it->second->tokens;
    if (key.size() >= prompt.size()) continue;
    if (best != lru_.end() && key.size() <= best->tokens.size()) continue;
    if (std::equal(key.begin(), key.end(), prompt.begin())) best = it->second;
  }
  if (best == lru_.end()) return nullptr;
  lru_.splice(lru_.begin(), lru_, best);  // iterators stay valid
  best->pinned_step = step_;
  return &*best;
}

bool StateCache::Contains(std::span<const int32_t> tokens) const {
  if (!enabled() || static_cast<int>(tokens.size()) < min_tokens_) return false;
  auto [begin, end] = by_head_.equal_range(HeadHash(tokens, min_tokens_));
  for (auto it = begin; it != end; ++it) {
    const std::vector<int32_t>& key = it->second->tokens;
    if (key.size() == tokens.size() && std::equal(key.begin(), key.end(), tokens.begin()))
      return true;
  }
  return false;
}

void StateCache::Unindex(Lru::iterator entry) {
  auto [begin, end] = by_head_.equal_range(HeadHash(entry->tokens, min_tokens_));
  for (auto it = begin; it != end; ++it) {
    if (it->second == entry) {
      by_head_.erase(it);
      return;
    }
  }
}

std::vector<int> StateCache::Insert(std::vector<int32_t> tokens, int slot) {
  std::vector<int> released;
  if (!enabled() || static_cast<int>(tokens.size()) < min_tokens_) {
    released.push_back(slot);
    return released;
  }
  const uint64_t head = HeadHash(tokens, min_tokens_);
  auto [begin, end] = by_head_.equal_range(head);
  for (auto it = begin; it != end; ++it) {
    if (it->second->tokens == tokens) {  // same key: the newer state replaces it
      Lru::iterator old = it->second;
      released.push_back(old->slot);
      by_head_.erase(it);
      lru_.erase(old);
      break;
    }
  }
  if (static_cast<int>(lru_.size()) >= capacity_) {
    Lru::iterator last = std::prev(lru_.end());
    released.push_back(last->slot);
    Unindex(last);
    lru_.erase(last);
  }
  lru_.push_front(Entry{.tokens = std::move(tokens), .slot = slot, .pinned_step = 0});
  by_head_.emplace(head, lru_.begin());
  return released;
}

int StateCache::EvictOne() {
  for (auto it = lru_.rbegin(); it != lru_.rend(); ++it) {
    if (it->pinned_step == step_) continue;
    Lru::iterator victim = std::next(it).base();
    const int slot = victim->slot;
    Unindex(victim);
    lru_.erase(victim);
    return slot;
  }
  return -1;
}

}  // namespace bms
