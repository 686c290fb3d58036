#include "engine/slot_pool.h"

#include <algorithm>

namespace bms {

SlotPool::SlotPool(int num_slots) : in_use_(std::max(num_slots, 0), false) {
  for (int s = 0; s < num_slots; ++s) free_.push(s);
}

std::vector<int> SlotPool::Acquire(int n) {
  std::vector<int> out;
  if (n <= 0 || n > num_free()) return out;
  out.reserve(n);
  for (int i = 0; i < n; ++i) {
    int s = free_.top();
    free_.pop();
    in_use_[s] = true;
    out.push_back(s);
  }
  return out;
}

bool SlotPool::Release(int slot) {
  if (!InUse(slot)) return false;
  in_use_[slot] = false;
  free_.push(slot);
  return true;
}

int ChooseNumSlots(int max_num_seqs, int64_t state_memory_budget, size_t bytes_per_slot) {
  if (max_num_seqs > 0) return max_num_seqs;
  if (bytes_per_slot == 0 || state_memory_budget <= 0) return 1;
  // One extra slot is the backend's padding slot.
  int64_t fit = state_memory_budget / static_cast<int64_t>(bytes_per_slot) - 1;
  return static_cast<int>(std::clamp<int64_t>(fit, 1, kMaxDefaultSlots));
}

}  // namespace bms
