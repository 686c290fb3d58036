#include "server/http_router.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/openai_response.h"

namespace bms {

HttpResponse JsonError(int status, const std::string& message, const std::string& type,
                       const std::string& param, const std::string& code) {
  ApiError e;
  e.http_status = status;
  e.message = message;
  e.type = type;
  e.param = param;
  e.code = code;
  HttpResponse r;
  r.status = status;
  r.body = ErrorJson(e).dump();
  return r;
}

void HttpRouter::Add(const std::string& method, const std::string& path, HttpHandler handler) {
  routes_.push_back({method, path, false, std::move(handler)});
}

void HttpRouter::AddPrefix(const std::string& method, const std::string& prefix,
                           HttpHandler handler) {
  routes_.push_back({method, prefix, true, std::move(handler)});
}

void HttpRouter::AddFilter(HttpFilter filter) { filters_.push_back(std::move(filter)); }

bool HttpRouter::Matches(const Route& r, const std::string& path) const {
  return r.prefix ? (path.size() > r.path.size() && path.compare(0, r.path.size(), r.path) == 0)
                  : path == r.path;
}

std::string HttpRouter::RouteLabel(const std::string& path) const {
  const Route* prefix_hit = nullptr;
  for (const Route& r : routes_) {
    if (!Matches(r, path)) continue;
    if (!r.prefix) return r.path;
    if (prefix_hit == nullptr) prefix_hit = &r;
  }
  return prefix_hit != nullptr ? absl::StrCat(prefix_hit->path, "{id}") : "unmatched";
}

void HttpRouter::Dispatch(const HttpRequest& request, HttpResponder& responder) const {
  std::vector<std::string> allowed;
  const Route* hit = nullptr;
  for (const Route& r : routes_) {
    if (!Matches(r, request.path)) continue;
    allowed.push_back(r.method);
    if (r.method == "GET") allowed.push_back("HEAD");
    if (r.method == request.method && hit == nullptr) hit = &r;
  }
  if (allowed.empty()) {
    responder.Respond(JsonError(404, absl::StrCat("no route for ", request.path), "not_found_error",
                                "", "route_not_found"));
    return;
  }
  allowed.push_back("OPTIONS");
  std::string allow = absl::StrJoin(allowed, ", ");
  if (request.method == "OPTIONS") {
    HttpResponse r;
    r.status = 204;
    r.content_type.clear();
    r.headers.emplace_back("Allow", allow);
    responder.Respond(std::move(r));
    return;
  }
  if (hit == nullptr) {
    HttpResponse r = JsonError(405,
                               absl::StrCat("method ", request.method, " is not allowed on ",
                                            request.path, " (allowed: ", allow, ")"),
                               "invalid_request_error", "", "method_not_allowed");
    r.headers.emplace_back("Allow", allow);
    responder.Respond(std::move(r));
    return;
  }
  for (const HttpFilter& f : filters_) {
    if (auto r = f(request)) {
      responder.Respond(std::move(*r));
      return;
    }
  }
  hit->handler(request, responder);
}

}  // namespace bms
