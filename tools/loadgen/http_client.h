// A minimal blocking HTTP/1.1 client for the load generator: one keep-alive connection per
// worker thread, the response body handed over piece by piece as it arrives (chunked or
// Content-Length framing) so streamed (SSE) responses can be timed per event. Plain POSIX
// sockets; no TLS. Not thread-safe: each HttpConnection belongs to one thread.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace bms::loadgen {

// Decodes a `Transfer-Encoding: chunked` body incrementally. Feed raw bytes as they arrive; the
// decoded payload goes to the sink. Chunk extensions and trailers are skipped.
// Not thread-safe.
class ChunkedDecoder {
 public:
  using Sink = std::function<void(std::string_view)>;

  // Consumes as much of `in` as forms whole framing elements (payload bytes are passed on as
  // soon as they arrive). Returns the number of bytes consumed; bytes not consumed (a partial
  // size line) must be fed again with more data appended. InvalidArgument on malformed framing.
  absl::Status Feed(std::string_view in, size_t* consumed, const Sink& sink);
  // True once the terminating zero-size chunk and its trailer section were read.
  bool done() const { return state_ == State::kDone; }

 private:
  enum class State { kSize, kData, kDataEnd, kTrailer, kDone };
  State state_ = State::kSize;
  uint64_t remaining_ = 0;  // payload bytes left in the current chunk
};

// The status line and the headers that matter for framing.
struct HttpResponseHead {
  int status = 0;
  bool keep_alive = true;
  bool chunked = false;
  int64_t content_length = -1;  // -1: not given
  std::string content_type;
};

class HttpConnection {
 public:
  // timeout_ms bounds connect and every single read/write (an idle stream longer than this
  // fails the exchange). Nothing happens until the first Exchange.
  HttpConnection(std::string host, int port, int timeout_ms);
  ~HttpConnection();
  HttpConnection(const HttpConnection&) = delete;
  HttpConnection& operator=(const HttpConnection&) = delete;

  // Sends one request (a complete HTTP/1.1 message) and reads its response: on_head once when
  // the headers are in, on_body for each piece of decoded body as it arrives. Connects first if
  // needed; a reused keep-alive connection the server had closed is retried once on a fresh
  // one. Errors: Unavailable for connect/read/write failures (message names the call and the
  // errno text), DeadlineExceeded on a timeout, Internal for a malformed response. After an
  // error the connection is closed; the next Exchange reconnects.
  absl::Status Exchange(const std::string& request,
                        const std::function<void(const HttpResponseHead&)>& on_head,
                        const std::function<void(std::string_view)>& on_body);
  void Close();

 private:
  absl::Status Connect();
  absl::Status WriteAll(const std::string& data);
  // Reads more bytes into buf_. Unavailable with "closed" when the peer closed.
  absl::Status ReadSome();
  absl::Status ReadHead(HttpResponseHead* head);
  absl::Status ReadBody(const HttpResponseHead& head,
                        const std::function<void(std::string_view)>& on_body);

  std::string host_;
  int port_;
  int timeout_ms_;
  int fd_ = -1;
  std::string buf_;  // bytes read but not yet consumed
};

}  // namespace bms::loadgen
