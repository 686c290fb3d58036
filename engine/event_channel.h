// EventChannel: the one-way, thread-safe pipe from the engine thread to the frontend that owns
// one request. The engine pushes; the frontend pops (blocking or not) or registers a notifier
// that the engine calls after each push (so asynchronous frontends can post a drain task to
// their own executor instead of parking a thread). Closing the consumer side (Abandon) tells
// the engine nobody is listening, and the engine cancels the request.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>

#include "engine/request.h"

namespace bms {

class EventChannel {
 public:
  // Engine side. Never blocks on the consumer.
  void Push(GenerationEvent ev);

  // Consumer side. Pop waits up to `timeout` for an event; nullopt on timeout.
  std::optional<GenerationEvent> Pop(std::chrono::milliseconds timeout);
  std::optional<GenerationEvent> TryPop();
  std::deque<GenerationEvent> DrainAll();
  // Called (on the engine thread or its event-delivery thread, without the channel's lock)
  // after each Push. Must be cheap, thread-safe, and must not call back into the engine
  // synchronously. If events are already pending when it is set, it is also called once right
  // away, on the calling thread.
  void SetNotifier(std::function<void()> notify);
  // The consumer is gone: the engine cancels the request at its next step. Pending and later
  // events are dropped.
  void Abandon();
  bool abandoned() const;
  size_t pending() const;

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<GenerationEvent> events_;
  // Shared so that Push takes a reference instead of copying the function (a copy allocates
  // when the callable is larger than std::function's inline buffer, once per event).
  std::shared_ptr<const std::function<void()>> notify_;
  bool abandoned_ = false;
};

}  // namespace bms
