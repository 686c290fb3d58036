#include "server/metrics_http.h"

#include <utility>

namespace bms {

void AddMetricsRoute(std::shared_ptr<ServerMetrics> metrics, HttpRouter* router) {
  router->Add("GET", "/metrics",
              [metrics = std::move(metrics)](const HttpRequest&, HttpResponder& out) {
                HttpResponse r;
                r.content_type = ServerMetrics::kContentType;
                r.body = metrics->Render();
                out.Respond(std::move(r));
              });
}

std::function<void(const HttpRequest&, int status)> HttpMetricsHook(
    std::shared_ptr<ServerMetrics> metrics, const HttpRouter* router) {
  return [metrics = std::move(metrics), router](const HttpRequest& request, int status) {
    metrics->RecordHttpRequest(router->RouteLabel(request.path), status);
  };
}

}  // namespace bms
