// GrpcServer: the bmserve.v1 Inference service (server/grpc_generate.h for Generate), the
// standard grpc.health.v1.Health service (SERVING only while the engine is ready and the server
// is not draining) and server reflection, on one listening port. Started by `serve` next to the
// HTTP frontend; both share one ServerContext (engine, tokenizer, limits, draining flag).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "server/server_context.h"

namespace grpc {
class Server;
}

namespace bms {

class GrpcWorkQueue;
class InferenceServiceImpl;

struct GrpcServerOptions {
  std::string host = "127.0.0.1";       // same bind rules as HTTP: 0.0.0.0 / :: are opt-in
  int port = 50051;                     // 0: pick a free port (see GrpcServer::port())
  int64_t max_message_bytes = 4 << 20;  // larger request messages get RESOURCE_EXHAUSTED
  int worker_threads = 2;               // threads that drain engine events into responses
  bool reflection = true;               // grpc.reflection.v1alpha.ServerReflection
  // Called when each call ends with its full method name and status code name (metrics);
  // thread-safe; may be empty.
  std::function<void(const std::string& method, const std::string& code)> on_call_done;
};

class GrpcServer {
 public:
  ~GrpcServer();  // Shutdown(0) if not done yet

  int port() const { return port_; }
  // Generate calls in progress (drain waits for these to reach 0). Thread-safe.
  int64_t active_calls() const;
  // Re-reads ServerContext::Ready() into the health service now (it is also polled every
  // 50 ms); call it right after setting ServerContext::draining.
  void UpdateHealth();
  // Health NOT_SERVING, no new calls; calls still running get `grace` to finish, then are
  // cancelled. Blocks until every call is done. Idempotent. Thread-safe.
  void Shutdown(std::chrono::milliseconds grace);

 private:
  friend absl::StatusOr<std::unique_ptr<GrpcServer>> StartGrpcServer(ServerContext&,
                                                                     const GrpcServerOptions&);
  explicit GrpcServer(ServerContext& ctx);
  void HealthLoop();

  ServerContext& ctx_;
  std::unique_ptr<GrpcWorkQueue> queue_;
  std::unique_ptr<InferenceServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;

  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  bool shut_down_ = false;
  int serving_ = -1;  // last status given to the health service (-1: none yet)
  std::thread health_thread_;
};

// Builds and starts the server on options.host:options.port. InvalidArgument for bad options
// (naming the flag), Unavailable when the address cannot be bound. `ctx` must outlive it.
absl::StatusOr<std::unique_ptr<GrpcServer>> StartGrpcServer(ServerContext& ctx,
                                                            const GrpcServerOptions& options);

}  // namespace bms
