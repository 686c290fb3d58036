// HTTP exchange types shared by the connection code (http_session), the route table
// (http_router) and the handlers: a parsed request, a complete response, the responder a
// handler answers through, and AsyncWork for answers that take time (generation, SSE).
// A handler and its AsyncWork run on the connection's strand; nothing here is thread-safe
// except HttpResponder::Waker()'s returned function.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace bms {

struct HttpRequest {
  std::string method;  // "GET", "POST", ... (HEAD is routed as GET; see `head`)
  std::string target;  // as sent, e.g. "/v1/models?x=1"
  std::string path;    // target without the query
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
  std::string request_id;  // X-Request-Id as sent (when valid) or generated
  bool head = false;

  std::string Header(const std::string& lower_name) const {
    auto it = headers.find(lower_name);
    return it == headers.end() ? std::string() : it->second;
  }
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;  // extra headers
  std::string body;
  bool close = false;  // close the connection after this response
};

// Long-running work behind one request, owned by the connection while it lasts.
class AsyncWork {
 public:
  virtual ~AsyncWork() = default;
  // On the strand: make progress (called after each Waker() call and after output drained).
  virtual void Pump() = 0;
  // The client disconnected or stopped reading: release everything (cancel engine requests).
  virtual void Abort() = 0;
};

// How a handler answers. Exactly one of Respond() or BeginStream()...EndStream() per request.
class HttpResponder {
 public:
  virtual ~HttpResponder() = default;
  virtual void Respond(HttpResponse response) = 0;
  // Starts a chunked response (SSE: text/event-stream). Then StreamWrite, then EndStream.
  virtual void BeginStream(int status, const std::string& content_type) = 0;
  virtual void StreamWrite(std::string data) = 0;
  virtual void EndStream() = 0;
  // Bytes queued on this connection and not yet written to the socket.
  virtual size_t BufferedBytes() const = 0;
  // Whether output may be produced now (buffered output under the per-connection cap).
  virtual bool CanWrite() const = 0;
  // Hands long-running work to the connection (Pump runs on wake-ups; Abort on disconnect).
  virtual void SetWork(std::unique_ptr<AsyncWork> work) = 0;
  // A thread-safe function that schedules Pump() on the connection's strand (coalesced).
  virtual std::function<void()> Waker() = 0;
  // Adds "key=value" to the request's log line.
  virtual void AddLogField(const std::string& key, const std::string& value) = 0;
};

}  // namespace bms
