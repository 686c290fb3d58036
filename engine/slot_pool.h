// SlotPool: which of the backend's state slots are free. A request acquires its slots when it
// is admitted and releases each one when that choice finishes (stop, length, error or abort).
// The lowest free slot is handed out first, so runs are reproducible. The padding slot
// (Backend::padding_slot()) is never part of the pool. Not thread-safe: the engine thread owns it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <queue>
#include <vector>

#include "engine/backend.h"

namespace bms {

class SlotPool {
 public:
  explicit SlotPool(int num_slots);

  int num_slots() const { return static_cast<int>(in_use_.size()); }
  int num_free() const { return static_cast<int>(free_.size()); }
  int num_used() const { return num_slots() - num_free(); }

  // n slots, lowest first; empty (and nothing taken) when fewer than n are free.
  std::vector<int> Acquire(int n);
  // Returns a slot to the pool. False (and no change) if it was not in use: a programmer error
  // the caller reports.
  bool Release(int slot);
  bool InUse(int slot) const { return slot >= 0 && slot < num_slots() && in_use_[slot]; }

 private:
  std::priority_queue<int, std::vector<int>, std::greater<int>> free_;
  std::vector<bool> in_use_;
};

// How many slots to create (bytes_per_slot: StateBytesPerSlot in engine/cpu_backend.h):
// `max_num_seqs` when > 0, otherwise as many as fit in `state_memory_budget` bytes (at least 1, at
// most kMaxDefaultSlots).
inline constexpr int kMaxDefaultSlots = 1024;
int ChooseNumSlots(int max_num_seqs, int64_t state_memory_budget, size_t bytes_per_slot);

}  // namespace bms
