#include "server/metrics_collector.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "metrics/process_metrics.h"

namespace bms {
namespace {

using metrics::FuncSample;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }
bool IsSet(Clock::time_point t) { return t != Clock::time_point{}; }

std::string Name(const char* suffix) { return absl::StrCat(ServerMetrics::kPrefix, suffix); }

// Bucket bounds (seconds / tokens), close to vLLM's so dashboards transfer, with finer low ends
// for GPU decode steps of a few milliseconds.
const std::vector<double> kTtftBuckets = {0.001, 0.005, 0.01, 0.02,  0.04,  0.06,  0.08, 0.1,
                                          0.25,  0.5,   0.75, 1.0,   2.5,   5.0,   7.5,  10.0,
                                          20.0,  40.0,  80.0, 160.0, 640.0, 2560.0};
const std::vector<double> kItlBuckets = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1,
                                         0.15,  0.2,    0.3,   0.4,  0.5,   0.75, 1.0,   2.5,
                                         5.0,   7.5,    10.0,  20.0, 40.0,  80.0};
const std::vector<double> kRequestBuckets = {0.005, 0.01, 0.025, 0.05,  0.1,   0.25,  0.5,
                                             1.0,   2.5,  5.0,   10.0,  15.0,  20.0,  30.0,
                                             45.0,  60.0, 120.0, 240.0, 480.0, 960.0, 1920.0};
const std::vector<double> kStepBuckets = {0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032,
                                          0.064,  0.128, 0.256, 0.512, 1.024, 2.048, 4.096};
const std::vector<double> kIterationTokenBuckets = {1,   8,    16,   32,   64,   128,  256,
                                                    512, 1024, 2048, 4096, 8192, 16384};

// The finish reasons and failure reasons pre-created (rendered as 0 before any traffic).
constexpr const char* kSuccessReasons[] = {"stop", "length", "abort"};
constexpr const char* kFailureReasons[] = {"invalid_request",      "queue_full",   "unavailable",
                                           "duplicate_request_id", "engine_error", "internal"};

}  // namespace

const char* ServerMetrics::RejectionReason(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kInvalidArgument:
      return "invalid_request";
    case absl::StatusCode::kResourceExhausted:
      return "queue_full";
    case absl::StatusCode::kUnavailable:
      return "unavailable";
    case absl::StatusCode::kAlreadyExists:
      return "duplicate_request_id";
    default:
      return "internal";
  }
}

ServerMetrics::ServerMetrics(const ModelConfig& config, ServerMetricsOptions options)
    : config_(config), options_(options) {
  for (int i = 0; i < static_cast<int>(config_.layers.size()); ++i) {
    if (config_.layers[i] == LayerKind::kMoe) moe_layer_labels_.push_back(std::to_string(i));
  }
}

absl::StatusOr<std::shared_ptr<ServerMetrics>> ServerMetrics::Create(const ModelConfig& config,
                                                                     ServerMetricsOptions options) {
  if (!(options.moe_window_seconds > 0)) {
    return absl::InvalidArgumentError("moe_window_seconds must be > 0");
  }
  std::shared_ptr<ServerMetrics> m(new ServerMetrics(config, options));
  if (absl::Status s = m->Register(); !s.ok()) return s;
  return m;
}

absl::Status ServerMetrics::Register() {
  metrics::Registry& r = registry_;
  // Engine gauges and totals, read from Engine::Stats() at scrape time.
  struct StatDef {
    const char* name;
    const char* help;
    bool counter;
    double (*get)(const EngineStats&);
  };
  static const StatDef kStats[] = {
      {"num_requests_running", "Requests admitted to the engine (holding state slots).", false,
       [](const EngineStats& s) { return static_cast<double>(s.running); }},
      {"num_requests_waiting", "Requests queued for admission.", false,
       [](const EngineStats& s) { return static_cast<double>(s.waiting); }},
      {"state_slots_total", "Usable state slots (one per running sequence).", false,
       [](const EngineStats& s) { return static_cast<double>(s.slots_total); }},
      {"state_slots_used", "State slots held by running sequences.", false,
       [](const EngineStats& s) { return static_cast<double>(s.slots_used); }},
      {"state_cache_entries",
       "State slots holding cached states (state cache: reclaimed for new requests on demand).",
       false, [](const EngineStats& s) { return static_cast<double>(s.state_cache_entries); }},
      {"state_cache_hits_total", "Prompts that resumed a cached state instead of prefilling it.",
       true, [](const EngineStats& s) { return static_cast<double>(s.state_cache_hits_total); }},
      {"state_cache_prompt_tokens_total",
       "Prompt tokens not prefilled because a cached state already held them.", true,
       [](const EngineStats& s) { return static_cast<double>(s.state_cache_tokens_total); }},
      {"state_bytes_per_slot", "Bytes of SSM and conv state one slot holds.", false,
       [](const EngineStats& s) { return static_cast<double>(s.state_bytes_per_slot); }},
      {"backend_memory_in_use_bytes",
       "Memory the backend holds for weights, state pool and scratch (device memory on GPU).",
       false, [](const EngineStats& s) { return static_cast<double>(s.backend_memory_bytes); }},
      {"cuda_graphs", "CUDA graphs the backend holds (decode batch buckets, captured at start-up).",
       false, [](const EngineStats& s) { return static_cast<double>(s.graphs.graphs); }},
      {"cuda_graph_memory_bytes",
       "Device memory taken by the CUDA graph executables (measured when they were captured).",
       false, [](const EngineStats& s) { return static_cast<double>(s.graphs.graph_bytes); }},
      {"activation_workspace_bytes",
       "Device memory of the backend's activation workspace (sized at start-up for the largest "
       "step; the CUDA graphs run in it).",
       false, [](const EngineStats& s) { return static_cast<double>(s.graphs.workspace_bytes); }},
      {"engine_warmup_seconds",
       "Start-up time of the engine: warm-up step plus backend preparation (CUDA graph capture).",
       false, [](const EngineStats& s) { return s.warmup_seconds; }},
      {"engine_ready", "1 when the engine finished warm-up and accepts requests.", false,
       [](const EngineStats& s) { return s.ready ? 1.0 : 0.0; }},
      {"prompt_tokens_total", "Prompt tokens prefilled.", true,
       [](const EngineStats& s) { return static_cast<double>(s.prompt_tokens_total); }},
      {"generation_tokens_total", "Tokens generated.", true,
       [](const EngineStats& s) { return static_cast<double>(s.generation_tokens_total); }},
      {"engine_steps_total", "Engine steps run.", true,
       [](const EngineStats& s) { return static_cast<double>(s.steps_total); }},
  };
  for (const StatDef& d : kStats) {
    metrics::SampleFunc fn = [this, get = d.get]() -> std::vector<FuncSample> {
      const Engine* e = engine_.load();
      if (e == nullptr) return {};
      return {FuncSample{{}, get(e->Stats())}};
    };
    absl::Status s = d.counter ? r.AddCounterFunc(Name(d.name), d.help, {}, std::move(fn))
                               : r.AddGaugeFunc(Name(d.name), d.help, {}, std::move(fn));
    if (!s.ok()) return s;
  }

  auto counter = [&](const char* name, const char* help, std::vector<std::string> labels,
                     metrics::CounterFamily** out) -> absl::Status {
    auto f = r.AddCounter(Name(name), help, std::move(labels));
    if (!f.ok()) return f.status();
    *out = *f;
    return absl::OkStatus();
  };
  auto histogram = [&](const char* name, const char* help, const std::vector<double>& bounds,
                       metrics::Histogram** out) -> absl::Status {
    auto f = r.AddHistogram(Name(name), help, {}, bounds);
    if (!f.ok()) return f.status();
    *out = (*f)->Get();
    return absl::OkStatus();
  };
  absl::Status s;
  if (!(s = counter("request_success_total",
                    "Finished sequences (one per choice) by finish reason.", {"finished_reason"},
                    &success_))
           .ok() ||
      !(s = counter("request_failure_total",
                    "Requests refused at submission, and sequences that ended in an engine error, "
                    "by reason.",
                    {"reason"}, &failure_))
           .ok() ||
      !(s = counter("http_requests_total", "HTTP requests by route pattern and status code.",
                    {"route", "code"}, &http_))
           .ok() ||
      !(s = counter("grpc_requests_total", "gRPC calls by method and status code.",
                    {"method", "code"}, &grpc_))
           .ok() ||
      !(s = counter("expert_tokens_total",
                    "Tokens routed to each expert of each MoE layer (layer = model layer index).",
                    {"layer", "expert"}, &expert_tokens_))
           .ok()) {
    return s;
  }
  for (const char* reason : kSuccessReasons) success_->WithLabels({reason});
  for (const char* reason : kFailureReasons) failure_->WithLabels({reason});
  expert_counters_.resize(moe_layer_labels_.size());
  for (size_t l = 0; l < moe_layer_labels_.size(); ++l) {
    for (int e = 0; e < config_.n_experts; ++e) {
      expert_counters_[l].push_back(
          expert_tokens_->WithLabels({moe_layer_labels_[l], std::to_string(e)}));
    }
  }

  if (!(s = histogram("time_to_first_token_seconds",
                      "Time from arrival to the first generated token.", kTtftBuckets, &ttft_))
           .ok() ||
      !(s = histogram("inter_token_latency_seconds",
                      "Time between consecutive generated tokens of a sequence.", kItlBuckets,
                      &itl_))
           .ok() ||
      !(s = histogram("e2e_request_latency_seconds",
                      "Time from arrival to the final event of the request's first choice.",
                      kRequestBuckets, &e2e_))
           .ok() ||
      !(s = histogram("request_queue_time_seconds",
                      "Time from arrival until the first prefill chunk ran.", kRequestBuckets,
                      &queue_))
           .ok() ||
      !(s = histogram("request_prefill_time_seconds",
                      "Time from the first prefill chunk to the first generated token.",
                      kRequestBuckets, &prefill_))
           .ok() ||
      !(s = histogram("request_decode_time_seconds",
                      "Time from the first generated token to the final one.", kRequestBuckets,
                      &decode_))
           .ok() ||
      !(s = histogram("iteration_tokens_total",
                      "Tokens (decode + prefill) processed per engine step.",
                      kIterationTokenBuckets, &iteration_tokens_))
           .ok()) {
    return s;
  }
  auto steps = r.AddHistogram(Name("engine_step_seconds"),
                              "Engine step duration by kind (decode only, or mixed with prefill).",
                              {"kind"}, kStepBuckets);
  if (!steps.ok()) return steps.status();
  step_decode_ = (*steps)->WithLabels({"decode"});
  step_mixed_ = (*steps)->WithLabels({"mixed"});

  s = r.AddGaugeFunc(Name("moe_imbalance_ratio"),
                     "Max over mean expert load per MoE layer in a sliding window (1 = balanced).",
                     {"layer"}, [this] { return ImbalanceSamples(); });
  if (!s.ok()) return s;
  return metrics::RegisterProcessMetrics(&r);
}

void ServerMetrics::OnStep(const StepObservation& step) {
  iteration_tokens_->Observe(step.num_decode_tokens + step.num_prefill_tokens);
  (step.num_prefill_tokens > 0 ? step_mixed_ : step_decode_)->Observe(step.step_seconds);
  if (!step.expert_token_counts.empty()) ObserveExpertCounts(step.expert_token_counts);
}

void ServerMetrics::ObserveExpertCounts(const std::vector<std::vector<int64_t>>& counts) {
  // Deltas against the previous snapshot; a shape change or a decrease (backend recreated)
  // restarts from the new snapshot.
  bool comparable = last_counts_.size() == counts.size();
  for (size_t l = 0; comparable && l < counts.size(); ++l) {
    comparable = last_counts_[l].size() == counts[l].size();
    for (size_t e = 0; comparable && e < counts[l].size(); ++e) {
      comparable = counts[l][e] >= last_counts_[l][e];
    }
  }
  std::vector<std::vector<int64_t>> delta = counts;
  if (comparable) {
    for (size_t l = 0; l < counts.size(); ++l) {
      for (size_t e = 0; e < counts[l].size(); ++e) delta[l][e] -= last_counts_[l][e];
    }
  }
  last_counts_ = counts;
  for (size_t l = 0; l < delta.size() && l < expert_counters_.size(); ++l) {
    for (size_t e = 0; e < delta[l].size() && e < expert_counters_[l].size(); ++e) {
      expert_counters_[l][e]->Increment(static_cast<double>(delta[l][e]));
    }
  }
  const Clock::time_point now = Clock::now();
  const auto window = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(options_.moe_window_seconds));
  std::lock_guard<std::mutex> lock(window_mu_);
  window_.push_back({now, std::move(delta)});
  while (!window_.empty() && now - window_.front().time > window) window_.pop_front();
}

std::vector<FuncSample> ServerMetrics::ImbalanceSamples() const {
  const Clock::time_point now = Clock::now();
  const auto window = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(options_.moe_window_seconds));
  std::vector<std::vector<int64_t>> load;  // [moe layer][expert]
  {
    std::lock_guard<std::mutex> lock(window_mu_);
    for (const WindowEntry& w : window_) {
      if (now - w.time > window) continue;
      if (load.size() < w.delta.size()) load.resize(w.delta.size());
      for (size_t l = 0; l < w.delta.size(); ++l) {
        if (load[l].size() < w.delta[l].size()) load[l].resize(w.delta[l].size(), 0);
        for (size_t e = 0; e < w.delta[l].size(); ++e) load[l][e] += w.delta[l][e];
      }
    }
  }
  std::vector<FuncSample> out;
  for (size_t l = 0; l < load.size(); ++l) {
    int64_t total = 0, max = 0;
    for (int64_t v : load[l]) {
      total += v;
      max = std::max(max, v);
    }
    if (total == 0 || load[l].empty()) continue;  // no traffic in the window: no sample
    const double mean = static_cast<double>(total) / static_cast<double>(load[l].size());
    const std::string label =
        l < moe_layer_labels_.size() ? moe_layer_labels_[l] : absl::StrCat("moe", l);
    out.push_back({{label}, static_cast<double>(max) / mean});
  }
  return out;
}

void ServerMetrics::OnEvent(const void* request, const GenerationEvent& ev) {
  const auto key = std::make_pair(request, ev.choice);
  if (!ev.token_ids.empty()) {
    auto it = last_token_time_.find(key);
    if (it == last_token_time_.end()) {
      // The choice's first tokens. TTFT once per request (choice 0).
      if (ev.choice == 0 && IsSet(ev.first_token_time) && IsSet(ev.arrival_time)) {
        ttft_->Observe(Seconds(ev.first_token_time - ev.arrival_time));
      }
      last_token_time_.emplace(key, ev.event_time);
    } else {
      // Tokens delivered together share the interval evenly.
      const double per_token =
          Seconds(ev.event_time - it->second) / static_cast<double>(ev.token_ids.size());
      for (size_t i = 0; i < ev.token_ids.size(); ++i) itl_->Observe(per_token);
      it->second = ev.event_time;
    }
  }
  if (ev.finish == FinishReason::kNone) return;
  last_token_time_.erase(key);
  if (ev.finish == FinishReason::kError) {
    failure_->WithLabels({"engine_error"})->Increment();
  } else {
    success_->WithLabels({FinishReasonName(ev.finish)})->Increment();
  }
  if (ev.choice != 0 || !IsSet(ev.arrival_time)) return;
  e2e_->Observe(Seconds(ev.event_time - ev.arrival_time));
  if (IsSet(ev.first_scheduled_time)) {
    queue_->Observe(Seconds(ev.first_scheduled_time - ev.arrival_time));
    if (IsSet(ev.first_token_time)) {
      prefill_->Observe(Seconds(ev.first_token_time - ev.first_scheduled_time));
      decode_->Observe(Seconds(ev.event_time - ev.first_token_time));
    }
  }
}

void ServerMetrics::OnRejected(const absl::Status& status) {
  failure_->WithLabels({RejectionReason(status.code())})->Increment();
}

void ServerMetrics::RecordHttpRequest(std::string_view route, int code) {
  http_->WithLabels({std::string(route), std::to_string(code)})->Increment();
}

void ServerMetrics::RecordGrpcRequest(std::string_view method, std::string_view code) {
  grpc_->WithLabels({std::string(method), std::string(code)})->Increment();
}

}  // namespace bms
