#include "engine/event_channel.h"

#include <utility>

namespace bms {

void EventChannel::Push(GenerationEvent ev) {
  std::shared_ptr<const std::function<void()>> notify;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (abandoned_) return;  // nobody is listening
    events_.push_back(std::move(ev));
    notify = notify_;
  }
  cv_.notify_all();
  if (notify && *notify) (*notify)();
}

std::optional<GenerationEvent> EventChannel::Pop(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!cv_.wait_for(lock, timeout, [this] { return !events_.empty(); })) return std::nullopt;
  GenerationEvent ev = std::move(events_.front());
  events_.pop_front();
  return ev;
}

std::optional<GenerationEvent> EventChannel::TryPop() {
  std::lock_guard<std::mutex> lock(mu_);
  if (events_.empty()) return std::nullopt;
  GenerationEvent ev = std::move(events_.front());
  events_.pop_front();
  return ev;
}

std::deque<GenerationEvent> EventChannel::DrainAll() {
  std::lock_guard<std::mutex> lock(mu_);
  std::deque<GenerationEvent> out;
  out.swap(events_);
  return out;
}

void EventChannel::SetNotifier(std::function<void()> notify) {
  bool pending;
  std::shared_ptr<const std::function<void()>> call;
  {
    std::lock_guard<std::mutex> lock(mu_);
    notify_ = notify ? std::make_shared<const std::function<void()>>(std::move(notify)) : nullptr;
    pending = !events_.empty();
    call = notify_;
  }
  // Events pushed before the notifier existed would otherwise never be announced.
  if (pending && call) (*call)();
}

void EventChannel::Abandon() {
  std::lock_guard<std::mutex> lock(mu_);
  abandoned_ = true;
  events_.clear();
}

bool EventChannel::abandoned() const {
  std::lock_guard<std::mutex> lock(mu_);
  return abandoned_;
}

size_t EventChannel::pending() const {
  std::lock_guard<std::mutex> lock(mu_);
  return events_.size();
}

}  // namespace bms
