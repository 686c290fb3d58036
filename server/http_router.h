// HttpRouter: the route table of the HTTP frontend. Exact paths and path prefixes
// ("/v1/models/" + id) map a method to a handler; a path known under another method gives 405
// with Allow, an unknown path 404, OPTIONS on a known path 204 with Allow, HEAD runs the GET
// handler without the body. Filters run before every handler (for auth, added later) and may
// answer instead. Routes are added before serving starts; Dispatch is then thread-safe.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "server/http_types.h"

namespace bms {

using HttpHandler = std::function<void(const HttpRequest&, HttpResponder&)>;
// Returns a response to send instead of running the handler, or nullopt to continue.
using HttpFilter = std::function<std::optional<HttpResponse>(const HttpRequest&)>;

class HttpRouter {
 public:
  void Add(const std::string& method, const std::string& path, HttpHandler handler);
  // Matches every path starting with `prefix` (e.g. "/v1/models/").
  void AddPrefix(const std::string& method, const std::string& prefix, HttpHandler handler);
  void AddFilter(HttpFilter filter);

  void Dispatch(const HttpRequest& request, HttpResponder& responder) const;
  // The route pattern `path` matches, for metrics labels: the exact path, a prefix route as
  // "<prefix>{id}", or "unmatched" (bounded cardinality whatever clients send).
  std::string RouteLabel(const std::string& path) const;

 private:
  struct Route {
    std::string method;
    std::string path;
    bool prefix = false;
    HttpHandler handler;
  };
  bool Matches(const Route& r, const std::string& path) const;
  std::vector<Route> routes_;
  std::vector<HttpFilter> filters_;
};

// A JSON error response in the OpenAI shape.
HttpResponse JsonError(int status, const std::string& message, const std::string& type,
                       const std::string& param = "", const std::string& code = "");

}  // namespace bms
