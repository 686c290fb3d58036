// HttpSession: one client connection of the HTTP frontend (Boost.Beast parser over an Asio
// socket bound to its own strand). Reads requests one at a time (HTTP/1.1 keep-alive;
// pipelined requests wait in the read buffer), hands each to the router, and writes the answer:
// a whole response or a chunked stream. While a request's AsyncWork runs, a background read
// notices a client that disconnects (the work is aborted at once). Output is buffered up to
// ServerLimits::max_buffered_output per connection; beyond it the work is not pumped until the
// socket drains, and a write that makes no progress for write_timeout closes the connection.
// All members run on the strand except Waker()'s function.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>  // before Asio: Boost 1.74 awaitable.hpp needs std::exchange

#include "boost/asio.hpp"
#include "boost/beast/core.hpp"
#include "boost/beast/http.hpp"
#include "server/http_router.h"
#include "server/http_types.h"
#include "server/server_context.h"

namespace bms {

// Counters shared by every session of one server (for logs and tests).
struct HttpCounters {
  std::atomic<int64_t> open_connections{0};
  std::atomic<int64_t> active_requests{0};
  std::atomic<int64_t> requests_total{0};
  // Called once per exchange when it ends (response complete, or the connection gone), on the
  // connection's strand; set before the server starts (metrics).
  std::function<void(const HttpRequest&, int status)> on_exchange_done;
};

class HttpSession : public std::enable_shared_from_this<HttpSession>, public HttpResponder {
 public:
  HttpSession(boost::asio::ip::tcp::socket socket, const HttpRouter& router,
              const ServerLimits& limits, HttpCounters* counters);
  ~HttpSession() override;

  void Start();

  // HttpResponder.
  void Respond(HttpResponse response) override;
  void BeginStream(int status, const std::string& content_type) override;
  void StreamWrite(std::string data) override;
  void EndStream() override;
  size_t BufferedBytes() const override { return out_pending_.size() + out_writing_.size(); }
  bool CanWrite() const override { return BufferedBytes() < limits_.max_buffered_output; }
  void SetWork(std::unique_ptr<AsyncWork> work) override { work_ = std::move(work); }
  std::function<void()> Waker() override;
  void AddLogField(const std::string& key, const std::string& value) override;

 private:
  void DoRead();
  void OnRead(boost::beast::error_code ec);
  void HandleRequest();
  void Queue(std::string bytes);
  void StartWrite();
  void OnWrite(boost::beast::error_code ec);
  void OnWake();
  void Pump();
  void FinishExchange();
  void StartWatch();
  void OnWatch(boost::beast::error_code ec, size_t n);
  void Arm(std::chrono::milliseconds timeout);
  void Disarm();
  void LingerAndClose();
  void Close();
  std::string HeaderBlock(int status, const std::string& content_type) const;
  // Answers 500 (or ends a started stream with an error frame) after an unexpected exception.
  void InternalError(const std::string& what);

  boost::asio::ip::tcp::socket socket_;
  boost::asio::steady_timer timer_;
  uint64_t timer_generation_ = 0;
  const HttpRouter& router_;
  const ServerLimits& limits_;
  HttpCounters* counters_;
  boost::beast::flat_buffer buffer_;
  std::optional<boost::beast::http::request_parser<boost::beast::http::string_body>> parser_;

  HttpRequest request_;
  bool in_exchange_ = false;
  bool response_done_ = false;
  bool keep_alive_ = true;
  int status_ = 0;
  std::chrono::steady_clock::time_point started_;
  std::string log_fields_;

  std::string out_pending_;  // queued, not yet handed to the socket
  std::string out_writing_;  // being written
  bool writing_ = false;
  bool watching_ = false;
  bool closing_ = false;
  bool closed_ = false;
  std::array<char, 4096> watch_scratch_{};

  std::unique_ptr<AsyncWork> work_;
  std::atomic<bool> wake_scheduled_{false};
};

}  // namespace bms
