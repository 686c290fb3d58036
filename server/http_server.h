// HttpServer: the HTTP/1.1 listener of the OpenAI frontend. A fixed pool of I/O threads runs
// one Asio io_context; every accepted connection becomes an HttpSession on its own strand, so
// thousands of concurrent streams need no extra threads. Start() binds and returns; Stop()
// closes the listener and every connection and joins the threads.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>  // before Asio: Boost 1.74 awaitable.hpp needs std::exchange
#include <vector>

#include "absl/status/status.h"
#include "boost/asio.hpp"
#include "server/http_router.h"
#include "server/http_session.h"
#include "server/server_context.h"

namespace bms {

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;  // 0 = any free port (see HttpServer::port())
  int threads = 2;
  // Called when each HTTP exchange ends, with its status (metrics); may be empty.
  std::function<void(const HttpRequest&, int status)> on_exchange_done;
};

class HttpServer {
 public:
  HttpServer(const HttpRouter& router, const ServerLimits& limits, HttpServerOptions options);
  ~HttpServer();

  // Binds, listens and starts the I/O threads. InvalidArgument for a bad host, Unavailable when
  // the port cannot be bound.
  absl::Status Start();
  int port() const { return port_; }
  // Stops accepting new connections (existing ones continue).
  void StopAccepting();
  // Stops everything and joins the I/O threads. Idempotent.
  void Stop();
  const HttpCounters& counters() const { return counters_; }

 private:
  void Accept();

  const HttpRouter& router_;
  const ServerLimits& limits_;
  HttpServerOptions options_;
  boost::asio::io_context ioc_;
  boost::asio::ip::tcp::acceptor acceptor_;
  boost::asio::steady_timer retry_timer_;  // re-accept after an accept error
  std::vector<std::thread> threads_;
  HttpCounters counters_;
  int port_ = 0;
  bool stopped_ = false;
};

}  // namespace bms
