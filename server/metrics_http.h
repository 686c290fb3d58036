// The HTTP side of the metrics: the GET /metrics route (Prometheus text format) and the hook
// that counts every finished HTTP exchange in bmserve:http_requests_total{route,code}, labelled
// by the matched route pattern (never the raw path, which would explode label cardinality).
#pragma once

#include <functional>
#include <memory>

#include "server/http_router.h"
#include "server/http_types.h"
#include "server/metrics_collector.h"

namespace bms {

// Adds GET /metrics to `router` (served while draining too, so a drain can be watched).
void AddMetricsRoute(std::shared_ptr<ServerMetrics> metrics, HttpRouter* router);

// A callback for the HTTP server's end-of-exchange hook. `router` must outlive the callback.
std::function<void(const HttpRequest&, int status)> HttpMetricsHook(
    std::shared_ptr<ServerMetrics> metrics, const HttpRouter* router);

}  // namespace bms
