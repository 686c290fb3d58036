// The bmserve.v1 Generate RPC as a gRPC callback-API write reactor, plus the small worker pool
// that drains engine events for reactors (so the engine thread only posts a task and never
// detokenizes or writes). Flow control: at most one write in flight per call; events arriving
// meanwhile are coalesced per choice into the next message. Client cancellation, deadlines and
// failed writes abandon the engine request (cancelled within one engine step).
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "bmserve/v1/inference.pb.h"
#include "grpcpp/grpcpp.h"
#include "server/choice_stream.h"
#include "server/server_context.h"

namespace bms {

// A fixed set of threads running posted tasks in FIFO order. Thread-safe.
class GrpcWorkQueue {
 public:
  explicit GrpcWorkQueue(int threads);
  ~GrpcWorkQueue();  // runs the tasks already posted, then joins
  void Post(std::function<void()> task);

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

// Creates the reactor for one Generate call (gRPC owns it; it deletes itself when done).
// `active_calls` counts calls from creation to OnDone (for draining); it must outlive them.
grpc::ServerWriteReactor<bmserve::v1::GenerateResponse>* NewGenerateReactor(
    ServerContext& ctx, GrpcWorkQueue& queue, std::atomic<int64_t>& active_calls,
    grpc::CallbackServerContext* call, const bmserve::v1::GenerateRequest& request);

}  // namespace bms
