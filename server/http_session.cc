#include "server/http_session.h"

#include <cstdio>
#include <exception>
#include <random>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/http_log.h"

namespace bms {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

namespace {

constexpr size_t kMaxWatchBuffer = 64 * 1024;  // pipelined bytes read while a request runs
constexpr auto kLingerTime = std::chrono::milliseconds(2000);

bool ValidRequestId(const std::string& id) {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.' &&
        c != ':') {
      return false;
    }
  }
  return true;
}

std::string NewRequestId() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return absl::StrFormat("%016x", rng());
}

}  // namespace

HttpSession::HttpSession(net::ip::tcp::socket socket, const HttpRouter& router,
                         const ServerLimits& limits, HttpCounters* counters)
    : socket_(std::move(socket)),
      timer_(socket_.get_executor()),
      router_(router),
      limits_(limits),
      counters_(counters) {
  counters_->open_connections.fetch_add(1);
}

HttpSession::~HttpSession() {
  if (work_) work_->Abort();
  if (in_exchange_) {
    counters_->active_requests.fetch_sub(1);
    // Gone mid-exchange (client disconnect): 499 ("client closed request") if nothing was sent.
    if (counters_->on_exchange_done) counters_->on_exchange_done(request_, status_ ? status_ : 499);
  }
  counters_->open_connections.fetch_sub(1);
}

void HttpSession::Start() {
  net::dispatch(socket_.get_executor(), [self = shared_from_this()] { self->DoRead(); });
}

// ---- timers and closing ---------------------------------------------------------------------

void HttpSession::Arm(std::chrono::milliseconds timeout) {
  uint64_t gen = ++timer_generation_;
  timer_.expires_after(timeout);
  timer_.async_wait([self = shared_from_this(), gen](beast::error_code ec) {
    if (ec || gen != self->timer_generation_) return;
    self->AddLogField("timeout", "1");
    self->Close();
  });
}

void HttpSession::Disarm() {
  ++timer_generation_;
  timer_.cancel();
}

void HttpSession::Close() {
  if (closed_) return;
  closed_ = true;
  if (work_) work_->Abort();
  if (in_exchange_) {
    if (!response_done_ || status_ == 0) status_ = 499;  // nginx's "client closed request"
    AddLogField("client_gone", "1");
    FinishExchange();
  }
  beast::error_code ignored;
  socket_.shutdown(net::ip::tcp::socket::shutdown_both, ignored);
  socket_.close(ignored);
  timer_.cancel();
}

// Half-closes and discards whatever the client still sends (e.g. the rest of an over-long
// body) for a short while, so the client reads our error response instead of a reset.
void HttpSession::LingerAndClose() {
  if (closed_ || closing_) return;
  closing_ = true;
  beast::error_code ignored;
  if (watching_) socket_.cancel(ignored);  // no write is pending here: this ends the watch read
  socket_.shutdown(net::ip::tcp::socket::shutdown_send, ignored);
  Arm(kLingerTime);
  auto self = shared_from_this();
  auto loop = std::make_shared<std::function<void()>>();
  *loop = [self, loop] {
    self->socket_.async_read_some(net::buffer(self->watch_scratch_),
                                  [self, loop](beast::error_code ec, size_t) {
                                    if (ec || self->closed_) {
                                      self->Close();
                                      *loop = nullptr;  // break the cycle
                                      return;
                                    }
                                    (*loop)();
                                  });
  };
  (*loop)();
}

// ---- reading requests -----------------------------------------------------------------------

void HttpSession::DoRead() {
  if (closed_ || closing_) return;
  parser_.emplace();
  parser_->body_limit(static_cast<uint64_t>(limits_.max_body_bytes));
  parser_->header_limit(static_cast<uint32_t>(limits_.max_header_bytes));
  Arm(limits_.idle_timeout);
  http::async_read(socket_, buffer_, *parser_,
                   [self = shared_from_this()](beast::error_code ec, size_t) { self->OnRead(ec); });
}

void HttpSession::OnRead(beast::error_code ec) {
  Disarm();
  if (closed_) return;
  if (ec == http::error::end_of_stream || ec == net::error::eof ||
      ec == net::error::connection_reset || ec == net::error::operation_aborted) {
    Close();
    return;
  }
  in_exchange_ = true;
  response_done_ = false;
  status_ = 0;
  log_fields_.clear();
  started_ = std::chrono::steady_clock::now();
  counters_->active_requests.fetch_add(1);
  counters_->requests_total.fetch_add(1);
  request_ = HttpRequest();
  request_.request_id = NewRequestId();
  if (ec) {
    keep_alive_ = false;
    request_.method = "?";
    if (ec == http::error::body_limit) {
      Respond(JsonError(
          413, absl::StrCat("request body exceeds the limit of ", limits_.max_body_bytes, " bytes"),
          "invalid_request_error", "", "body_too_large"));
    } else if (ec == http::error::header_limit) {
      Respond(JsonError(431,
                        absl::StrCat("request headers exceed the limit of ",
                                     limits_.max_header_bytes, " bytes (--max-header-bytes)"),
                        "invalid_request_error", "", "headers_too_large"));
    } else {
      Respond(JsonError(400, absl::StrCat("malformed HTTP request: ", ec.message()),
                        "invalid_request_error"));
    }
    return;
  }
  HandleRequest();
}

void HttpSession::HandleRequest() {
  const auto& msg = parser_->get();
  keep_alive_ = msg.keep_alive();
  request_.method = std::string(msg.method_string());
  request_.target = std::string(msg.target());
  request_.path = request_.target.substr(0, request_.target.find('?'));
  for (const auto& field : msg) {
    request_.headers[absl::AsciiStrToLower(std::string(field.name_string()))] =
        std::string(field.value());
  }
  if (std::string id = request_.Header("x-request-id"); ValidRequestId(id)) {
    request_.request_id = id;
  }
  if (request_.method == "HEAD") {
    request_.method = "GET";
    request_.head = true;
  }
  request_.body = msg.body();
  if (request_.method == "POST" && !parser_->content_length() && !parser_->chunked()) {
    Respond(JsonError(411, "POST requests need a Content-Length header (or chunked encoding)",
                      "invalid_request_error", "", "length_required"));
    return;
  }
  // The HTTP edge's one catch-all: nothing below should throw, but if it does the client gets a
  // 500 naming the request id (which the log line carries too), never a crash.
  try {
    router_.Dispatch(request_, *this);
  } catch (const std::exception& e) {
    InternalError(e.what());
    return;
  }
  if (!response_done_ && work_ == nullptr) {
    // A handler that neither answered nor left work behind is a programmer error.
    Respond(JsonError(500, "internal error: the handler produced no response", "server_error"));
  }
  if (!response_done_ && work_ != nullptr) StartWatch();
}

// A read while a request runs: data is the next pipelined request (kept in buffer_), an error
// means the client is gone.
void HttpSession::StartWatch() {
  if (watching_ || closed_ || closing_ || buffer_.size() >= kMaxWatchBuffer) return;
  watching_ = true;
  socket_.async_read_some(
      buffer_.prepare(4096),
      [self = shared_from_this()](beast::error_code ec, size_t n) { self->OnWatch(ec, n); });
}

void HttpSession::OnWatch(beast::error_code ec, size_t n) {
  watching_ = false;
  if (closed_ || closing_) return;
  if (ec && ec != net::error::operation_aborted) {
    Close();
    return;
  }
  if (!ec) buffer_.commit(n);
  if (in_exchange_) {
    StartWatch();
  } else {
    DoRead();  // the exchange ended (and cancelled this read): parse the next request
  }
}

// ---- writing --------------------------------------------------------------------------------

std::string HttpSession::HeaderBlock(int status, const std::string& content_type) const {
  std::string h =
      absl::StrCat("HTTP/1.1 ", status, " ",
                   std::string(http::obsolete_reason(static_cast<http::status>(status))),
                   "\r\nServer: bmserve\r\nX-Request-Id: ", request_.request_id, "\r\n");
  if (!content_type.empty()) absl::StrAppend(&h, "Content-Type: ", content_type, "\r\n");
  absl::StrAppend(&h, "Connection: ", keep_alive_ ? "keep-alive" : "close", "\r\n");
  return h;
}

void HttpSession::Respond(HttpResponse r) {
  if (response_done_) return;
  if (r.close) keep_alive_ = false;
  status_ = r.status;
  std::string out = HeaderBlock(r.status, r.content_type);
  for (const auto& [k, v] : r.headers) absl::StrAppend(&out, k, ": ", v, "\r\n");
  if (r.status != 204 && r.status != 304) {
    absl::StrAppend(&out, "Content-Length: ", r.body.size(), "\r\n");
  }
  out += "\r\n";
  if (!request_.head && r.status != 204) out += r.body;
  response_done_ = true;
  Queue(std::move(out));
}

void HttpSession::BeginStream(int status, const std::string& content_type) {
  status_ = status;
  Queue(absl::StrCat(HeaderBlock(status, content_type),
                     "Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"));
}

void HttpSession::StreamWrite(std::string data) {
  if (data.empty() || response_done_) return;
  Queue(absl::StrCat(absl::Hex(data.size()), "\r\n", data, "\r\n"));
}

void HttpSession::EndStream() {
  if (response_done_) return;
  response_done_ = true;
  Queue("0\r\n\r\n");
}

void HttpSession::Queue(std::string bytes) {
  if (closed_) return;
  out_pending_ += bytes;
  if (!writing_) StartWrite();
}

void HttpSession::StartWrite() {
  if (closed_ || out_pending_.empty()) return;
  out_writing_.swap(out_pending_);
  out_pending_.clear();
  writing_ = true;
  Arm(limits_.write_timeout);
  net::async_write(
      socket_, net::buffer(out_writing_),
      [self = shared_from_this()](beast::error_code ec, size_t) { self->OnWrite(ec); });
}

void HttpSession::OnWrite(beast::error_code ec) {
  writing_ = false;
  Disarm();
  if (closed_) return;
  if (ec) {
    Close();
    return;
  }
  out_writing_.clear();
  if (!out_pending_.empty()) {
    StartWrite();
  } else if (response_done_ && in_exchange_) {
    FinishExchange();
    if (closed_) return;
    if (!keep_alive_) {
      LingerAndClose();
    } else if (watching_) {
      // Only the watch read is pending (all output is written): cancel it; OnWatch then reads
      // the next request (possibly already in buffer_).
      beast::error_code ignored;
      socket_.cancel(ignored);
    } else {
      DoRead();
    }
    return;
  }
  if (work_ != nullptr && !response_done_ && CanWrite()) Pump();  // output drained: resume
}

// ---- asynchronous work ----------------------------------------------------------------------

std::function<void()> HttpSession::Waker() {
  return [weak = weak_from_this()] {
    auto self = weak.lock();
    if (!self || self->wake_scheduled_.exchange(true)) return;
    // The posted handler holds a reference, so `self` is never the last one here (the session
    // is never destroyed on the engine thread).
    net::post(self->socket_.get_executor(), [self] { self->OnWake(); });
  };
}

void HttpSession::OnWake() {
  wake_scheduled_.store(false);
  Pump();
}

void HttpSession::Pump() {
  if (closed_ || work_ == nullptr || response_done_ || !CanWrite()) return;
  try {
    work_->Pump();
  } catch (const std::exception& e) {
    InternalError(e.what());
  }
}

void HttpSession::InternalError(const std::string& what) {
  AddLogField("internal_error", absl::StrCat("\"", what, "\""));
  if (work_ != nullptr) work_->Abort();
  std::string message =
      absl::StrCat("internal server error (request id ", request_.request_id, ")");
  if (status_ != 0 && !response_done_) {  // mid-stream: an error frame, then [DONE]
    StreamWrite(absl::StrCat("data: {\"error\":{\"message\":\"", message,
                             "\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n",
                             "data: [DONE]\n\n"));
    EndStream();
  } else if (!response_done_) {
    Respond(JsonError(500, message, "server_error"));
  }
}

void HttpSession::AddLogField(const std::string& key, const std::string& value) {
  absl::StrAppend(&log_fields_, " ", key, "=", value);
}

void HttpSession::FinishExchange() {
  if (!in_exchange_) return;
  in_exchange_ = false;
  counters_->active_requests.fetch_sub(1);
  if (counters_->on_exchange_done) counters_->on_exchange_done(request_, status_);
  double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started_)
                  .count();
  LogLine(absl::StrFormat("request id=%s method=%s path=%s status=%d ms=%.1f%s",
                          request_.request_id, request_.head ? "HEAD" : request_.method,
                          request_.path.empty() ? "-" : request_.path, status_, ms, log_fields_));
  if (work_ != nullptr) {
    // Destroyed later on the strand, never from inside its own Pump().
    net::post(socket_.get_executor(), [w = std::shared_ptr<AsyncWork>(std::move(work_))] {});
  }
}

}  // namespace bms
