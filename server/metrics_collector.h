// ServerMetrics: the bmserve Prometheus metrics (names prefixed "bmserve:", as vLLM's "vllm:")
// and the glue that fills them. It is the engine's EngineObserver (per-step and per-event hooks:
// latency histograms, finished/failed requests, iteration sizes, step times, MoE expert load),
// reads Engine::Stats() at scrape time (running/waiting requests, slots, token totals, backend
// memory), takes one call per HTTP or gRPC request from the frontends, and adds the standard
// process_* metrics. Render() is the body of GET /metrics.
//
// Thread-safety: every method is thread-safe. OnStep/OnEvent must only be called by the engine
// thread (EngineObserver contract); they take no lock except a short one per expert-count
// refresh (at most every kExpertCountsRefreshSeconds).
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "engine/engine.h"
#include "engine/engine_observer.h"
#include "engine/model_config.h"
#include "metrics/registry.h"

namespace bms {

struct ServerMetricsOptions {
  // Window over which bmserve:moe_imbalance_ratio compares expert loads.
  double moe_window_seconds = 60;
};

class ServerMetrics final : public EngineObserver {
 public:
  // The metric names, shared with tests and deploy/ checks so they cannot drift.
  static constexpr char kPrefix[] = "bmserve:";
  static constexpr char kContentType[] = "text/plain; version=0.0.4; charset=utf-8";

  // `config` gives the MoE layer indices used as the `layer` label.
  static absl::StatusOr<std::shared_ptr<ServerMetrics>> Create(const ModelConfig& config,
                                                               ServerMetricsOptions options = {});

  // The engine whose Stats() feed the scrape-time gauges; not owned, must outlive this object or
  // be detached with nullptr first. Before attaching, those gauges render no samples.
  void AttachEngine(const Engine* engine) { engine_.store(engine); }

  // EngineObserver.
  void OnStep(const StepObservation& step) override;
  void OnEvent(const void* request, const GenerationEvent& event) override;
  void OnRejected(const absl::Status& status) override;

  // One finished HTTP request: `route` is the matched route pattern (e.g. "/v1/completions"), or
  // a fixed placeholder for unmatched paths (never the raw path: label cardinality); `code` the
  // HTTP status.
  void RecordHttpRequest(std::string_view route, int code);
  // One finished gRPC call: the full method ("/bmserve.v1.Inference/Generate") and the status
  // code name ("OK", "INVALID_ARGUMENT", ...).
  void RecordGrpcRequest(std::string_view method, std::string_view code);

  // The text exposition format 0.0.4 (Content-Type kContentType).
  std::string Render() const { return registry_.Render(); }
  metrics::Registry& registry() { return registry_; }

  // The finish-reason label for a request-failure reason of a refused submission.
  static const char* RejectionReason(absl::StatusCode code);

 private:
  ServerMetrics(const ModelConfig& config, ServerMetricsOptions options);
  absl::Status Register();
  void ObserveExpertCounts(const std::vector<std::vector<int64_t>>& counts);
  std::vector<metrics::FuncSample> ImbalanceSamples() const;

  const ModelConfig config_;
  const ServerMetricsOptions options_;
  std::vector<std::string> moe_layer_labels_;  // model layer index of each MoE layer
  metrics::Registry registry_;
  std::atomic<const Engine*> engine_{nullptr};

  // Families (owned by registry_) and cached children.
  metrics::CounterFamily* success_ = nullptr;
  metrics::CounterFamily* failure_ = nullptr;
  metrics::CounterFamily* http_ = nullptr;
  metrics::CounterFamily* grpc_ = nullptr;
  metrics::CounterFamily* expert_tokens_ = nullptr;
  metrics::Histogram* ttft_ = nullptr;
  metrics::Histogram* itl_ = nullptr;
  metrics::Histogram* e2e_ = nullptr;
  metrics::Histogram* queue_ = nullptr;
  metrics::Histogram* prefill_ = nullptr;
  metrics::Histogram* decode_ = nullptr;
  metrics::Histogram* iteration_tokens_ = nullptr;
  metrics::Histogram* step_decode_ = nullptr;
  metrics::Histogram* step_mixed_ = nullptr;

  // Engine thread only: last token time per (request, choice) for inter-token latency.
  absl::flat_hash_map<std::pair<const void*, int>, Clock::time_point> last_token_time_;

  // Expert load. last_counts_ and expert_counters_ are engine-thread only; the window is shared
  // with the scraping thread under window_mu_.
  std::vector<std::vector<int64_t>> last_counts_;
  std::vector<std::vector<metrics::Counter*>> expert_counters_;  // [moe layer][expert]
  struct WindowEntry {
    Clock::time_point time;
    std::vector<std::vector<int64_t>> delta;  // [moe layer][expert]
  };
  mutable std::mutex window_mu_;
  std::deque<WindowEntry> window_;
};

}  // namespace bms
