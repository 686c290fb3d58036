// Unit tests for the server's metrics collector (server/metrics_collector.h): engine events and
// steps become the documented bmserve: metrics with values computed here from the inputs.
#include "server/metrics_collector.h"

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/ops/metrics_text_parser.h"

namespace bms {
namespace {

using testing_ops::ParseMetricsText;

class FakeEngine : public Engine {
 public:
  absl::Status Start() override { return absl::OkStatus(); }
  void Stop() override {}
  absl::StatusOr<std::shared_ptr<EventChannel>> Submit(GenerateRequest) override {
    return absl::UnavailableError("fake");
  }
  absl::Status Cancel(const std::string&) override { return absl::OkStatus(); }
  absl::Status CancelChoice(const std::string&, int) override { return absl::OkStatus(); }
  EngineStats Stats() const override { return stats; }
  const ModelConfig& config() const override { return cfg; }
  const EngineOptions& options() const override { return opts; }
  EngineStats stats;
  ModelConfig cfg;
  EngineOptions opts;
};

ModelConfig TestConfig() {
  ModelConfig c;
  c.num_layers = 4;
  c.n_experts = 4;
  c.layers = {LayerKind::kMamba, LayerKind::kMoe, LayerKind::kMamba, LayerKind::kMoe};
  return c;
}

std::shared_ptr<ServerMetrics> NewMetrics() {
  auto m = ServerMetrics::Create(TestConfig());
  EXPECT_TRUE(m.ok()) << m.status();
  return *m;
}

Clock::time_point At(Clock::time_point t0, double s) {
  return t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

TEST(ServerMetricsTest, EngineGaugesComeFromStats) {
  auto m = NewMetrics();
  auto before = ParseMetricsText(m->Render());
  EXPECT_FALSE(before.Has("bmserve:num_requests_running"));
  EXPECT_EQ(before.types["bmserve:num_requests_running"], "gauge");
  FakeEngine e;
  e.stats.running = 3;
  e.stats.waiting = 7;
  e.stats.slots_total = 16;
  e.stats.slots_used = 5;
  e.stats.state_cache_entries = 4;
  e.stats.state_cache_hits_total = 9;
  e.stats.state_cache_tokens_total = 321;
  e.stats.state_bytes_per_slot = 4096;
  e.stats.backend_memory_bytes = 123456789;
  e.stats.prompt_tokens_total = 1000;
  e.stats.generation_tokens_total = 250;
  e.stats.ready = true;
  m->AttachEngine(&e);
  auto p = ParseMetricsText(m->Render());
  EXPECT_EQ(p.Get("bmserve:num_requests_running"), 3);
  EXPECT_EQ(p.Get("bmserve:num_requests_waiting"), 7);
  EXPECT_EQ(p.Get("bmserve:state_slots_total"), 16);
  EXPECT_EQ(p.Get("bmserve:state_slots_used"), 5);
  EXPECT_EQ(p.Get("bmserve:state_cache_entries"), 4);
  EXPECT_EQ(p.Get("bmserve:state_cache_hits_total"), 9);
  EXPECT_EQ(p.Get("bmserve:state_cache_prompt_tokens_total"), 321);
  EXPECT_EQ(p.types["bmserve:state_cache_hits_total"], "counter");
  EXPECT_EQ(p.Get("bmserve:state_bytes_per_slot"), 4096);
  EXPECT_EQ(p.Get("bmserve:backend_memory_in_use_bytes"), 123456789);
  EXPECT_EQ(p.Get("bmserve:prompt_tokens_total"), 1000);
  EXPECT_EQ(p.Get("bmserve:generation_tokens_total"), 250);
  EXPECT_EQ(p.types["bmserve:generation_tokens_total"], "counter");
  EXPECT_EQ(p.Get("bmserve:engine_ready"), 1);
  EXPECT_TRUE(p.Has("process_resident_memory_bytes"));
  EXPECT_TRUE(p.Has("process_open_fds"));
  EXPECT_TRUE(p.Has("process_start_time_seconds"));
  m->AttachEngine(nullptr);
}

TEST(ServerMetricsTest, RequestLatenciesFromEventTimestamps) {
  auto m = NewMetrics();
  const Clock::time_point t0 = Clock::now();
  int request_key = 0;  // any stable address identifies the request
  GenerationEvent ev;
  ev.arrival_time = t0;
  ev.first_scheduled_time = At(t0, 0.1);
  ev.first_token_time = At(t0, 0.3);
  ev.prompt_tokens = 5;
  // choice 0: first token at 0.3, one at 0.35, two at 0.45, finish (length) at 0.5 without tokens.
  ev.choice = 0;
  ev.token_ids = {11};
  ev.event_time = At(t0, 0.3);
  m->OnEvent(&request_key, ev);
  ev.token_ids = {12};
  ev.event_time = At(t0, 0.35);
  m->OnEvent(&request_key, ev);
  ev.token_ids = {13, 14};
  ev.event_time = At(t0, 0.45);
  m->OnEvent(&request_key, ev);
  ev.token_ids = {};
  ev.finish = FinishReason::kLength;
  ev.event_time = At(t0, 0.5);
  m->OnEvent(&request_key, ev);
  // choice 1 of the same request: first token at 0.3, stop at 0.6 with one more token.
  ev.choice = 1;
  ev.finish = FinishReason::kNone;
  ev.token_ids = {21};
  ev.event_time = At(t0, 0.3);
  m->OnEvent(&request_key, ev);
  ev.token_ids = {0};
  ev.finish = FinishReason::kStop;
  ev.event_time = At(t0, 0.6);
  m->OnEvent(&request_key, ev);

  auto p = ParseMetricsText(m->Render());
  const double eps = 1e-6;
  EXPECT_EQ(p.Get("bmserve:time_to_first_token_seconds_count"), 1);  // once per request
  EXPECT_NEAR(p.Get("bmserve:time_to_first_token_seconds_sum"), 0.3, eps);
  EXPECT_EQ(p.Get("bmserve:time_to_first_token_seconds_bucket{le=\"0.25\"}"), 0);
  EXPECT_EQ(p.Get("bmserve:time_to_first_token_seconds_bucket{le=\"0.5\"}"), 1);
  // ITL: choice 0 gives 0.05, then 0.05 twice (two tokens over 0.1 s); choice 1 gives 0.3.
  EXPECT_EQ(p.Get("bmserve:inter_token_latency_seconds_count"), 4);
  EXPECT_NEAR(p.Get("bmserve:inter_token_latency_seconds_sum"), 0.45, eps);
  EXPECT_EQ(p.Get("bmserve:inter_token_latency_seconds_bucket{le=\"0.075\"}"), 3);
  EXPECT_EQ(p.Get("bmserve:e2e_request_latency_seconds_count"), 1);
  EXPECT_NEAR(p.Get("bmserve:e2e_request_latency_seconds_sum"), 0.5, eps);
  EXPECT_NEAR(p.Get("bmserve:request_queue_time_seconds_sum"), 0.1, eps);
  EXPECT_NEAR(p.Get("bmserve:request_prefill_time_seconds_sum"), 0.2, eps);
  EXPECT_NEAR(p.Get("bmserve:request_decode_time_seconds_sum"), 0.2, eps);
  EXPECT_EQ(p.Get("bmserve:request_success_total{finished_reason=\"length\"}"), 1);
  EXPECT_EQ(p.Get("bmserve:request_success_total{finished_reason=\"stop\"}"), 1);
  EXPECT_EQ(p.Get("bmserve:request_success_total{finished_reason=\"abort\"}"), 0);
}

TEST(ServerMetricsTest, FailuresByReason) {
  auto m = NewMetrics();
  m->OnRejected(absl::ResourceExhaustedError("full"));
  m->OnRejected(absl::ResourceExhaustedError("full"));
  m->OnRejected(absl::InvalidArgumentError("temperature"));
  m->OnRejected(absl::UnavailableError("draining"));
  int key = 0;
  GenerationEvent ev;
  ev.finish = FinishReason::kError;
  ev.error = absl::InternalError("step failed");
  m->OnEvent(&key, ev);
  ev.finish = FinishReason::kAbort;
  m->OnEvent(&key, ev);
  auto p = ParseMetricsText(m->Render());
  EXPECT_EQ(p.Get("bmserve:request_failure_total{reason=\"queue_full\"}"), 2);
  EXPECT_EQ(p.Get("bmserve:request_failure_total{reason=\"invalid_request\"}"), 1);
  EXPECT_EQ(p.Get("bmserve:request_failure_total{reason=\"unavailable\"}"), 1);
  EXPECT_EQ(p.Get("bmserve:request_failure_total{reason=\"engine_error\"}"), 1);
  EXPECT_EQ(p.Get("bmserve:request_success_total{finished_reason=\"abort\"}"), 1);
}

TEST(ServerMetricsTest, StepsAndExpertLoad) {
  auto m = NewMetrics();
  StepObservation s;
  s.num_decode_tokens = 3;
  s.num_prefill_tokens = 100;
  s.step_seconds = 0.003;
  s.expert_token_counts = {{10, 0, 0, 0}, {1, 1, 1, 1}};
  m->OnStep(s);
  s.num_prefill_tokens = 0;
  s.step_seconds = 0.0015;
  s.expert_token_counts = {};  // not refreshed this step
  m->OnStep(s);
  s.expert_token_counts = {{20, 0, 0, 0}, {2, 2, 2, 2}};
  m->OnStep(s);
  auto p = ParseMetricsText(m->Render());
  EXPECT_EQ(p.Get("bmserve:iteration_tokens_total_count"), 3);
  EXPECT_EQ(p.Get("bmserve:iteration_tokens_total_sum"), 103 + 3 + 3);
  EXPECT_EQ(p.Get("bmserve:iteration_tokens_total_bucket{le=\"8\"}"), 2);
  EXPECT_EQ(p.Get("bmserve:engine_step_seconds_count{kind=\"mixed\"}"), 1);
  EXPECT_EQ(p.Get("bmserve:engine_step_seconds_count{kind=\"decode\"}"), 2);
  EXPECT_NEAR(p.Get("bmserve:engine_step_seconds_sum{kind=\"decode\"}"), 0.003, 1e-9);
  // Layer labels are model layer indices (MoE layers are 1 and 3).
  EXPECT_EQ(p.Get("bmserve:expert_tokens_total{layer=\"1\",expert=\"0\"}"), 20);
  EXPECT_EQ(p.Get("bmserve:expert_tokens_total{layer=\"1\",expert=\"1\"}"), 0);
  EXPECT_EQ(p.Get("bmserve:expert_tokens_total{layer=\"3\",expert=\"2\"}"), 2);
  // Window load: layer 1 = {20,0,0,0}: max 20 / mean 5 = 4; layer 3 balanced = 1.
  EXPECT_DOUBLE_EQ(p.Get("bmserve:moe_imbalance_ratio{layer=\"1\"}"), 4.0);
  EXPECT_DOUBLE_EQ(p.Get("bmserve:moe_imbalance_ratio{layer=\"3\"}"), 1.0);
}

TEST(ServerMetricsTest, FrontendRequestCounters) {
  auto m = NewMetrics();
  m->RecordHttpRequest("/v1/completions", 200);
  m->RecordHttpRequest("/v1/completions", 200);
  m->RecordHttpRequest("/v1/completions", 429);
  m->RecordGrpcRequest("/bmserve.v1.Inference/Generate", "OK");
  auto p = ParseMetricsText(m->Render());
  EXPECT_EQ(p.Get("bmserve:http_requests_total{route=\"/v1/completions\",code=\"200\"}"), 2);
  EXPECT_EQ(p.Get("bmserve:http_requests_total{route=\"/v1/completions\",code=\"429\"}"), 1);
  EXPECT_EQ(p.Get("bmserve:grpc_requests_total{method=\"/bmserve.v1.Inference/Generate\","
                  "code=\"OK\"}"),
            1);
}

// The engine thread (steps, events), frontend threads (HTTP/gRPC counts, rejections) and a
// scraper run at once; run under BMS_TSAN this is the data-race check. Totals are exact.
TEST(ServerMetricsTest, ConcurrentUpdatesAndScrapes) {
  auto m = NewMetrics();
  FakeEngine e;
  m->AttachEngine(&e);
  constexpr int kRequests = 300;
  std::atomic<bool> done{false};
  std::thread engine_thread([&] {
    const Clock::time_point t0 = Clock::now();
    std::vector<int> keys(kRequests);
    for (int i = 0; i < kRequests; ++i) {
      GenerationEvent ev;
      ev.arrival_time = t0;
      ev.first_scheduled_time = t0;
      ev.first_token_time = At(t0, 0.01);
      ev.token_ids = {1};
      ev.event_time = At(t0, 0.01);
      m->OnEvent(&keys[i], ev);
      ev.event_time = At(t0, 0.02);
      ev.finish = FinishReason::kLength;
      m->OnEvent(&keys[i], ev);
      StepObservation s;
      s.num_decode_tokens = 1;
      s.expert_token_counts = {{i + 1, 0, 0, 0}, {0, i + 1, 0, 0}};
      m->OnStep(s);
    }
  });
  std::vector<std::thread> frontends;
  for (int t = 0; t < 3; ++t) {
    frontends.emplace_back([&] {
      for (int i = 0; i < kRequests; ++i) {
        m->RecordHttpRequest("/v1/completions", 200);
        m->RecordGrpcRequest("/bmserve.v1.Inference/Generate", "OK");
        m->OnRejected(absl::ResourceExhaustedError("full"));
      }
    });
  }
  std::thread scraper([&] {
    while (!done.load()) (void)m->Render();
  });
  engine_thread.join();
  for (auto& t : frontends) t.join();
  done.store(true);
  scraper.join();
  auto p = ParseMetricsText(m->Render());
  EXPECT_EQ(p.Get("bmserve:request_success_total{finished_reason=\"length\"}"), kRequests);
  EXPECT_EQ(p.Get("bmserve:time_to_first_token_seconds_count"), kRequests);
  EXPECT_EQ(p.Get("bmserve:inter_token_latency_seconds_count"), kRequests);
  EXPECT_EQ(p.Get("bmserve:iteration_tokens_total_count"), kRequests);
  EXPECT_EQ(p.Get("bmserve:http_requests_total{route=\"/v1/completions\",code=\"200\"}"),
            3 * kRequests);
  EXPECT_EQ(p.Get("bmserve:request_failure_total{reason=\"queue_full\"}"), 3 * kRequests);
  EXPECT_EQ(p.Get("bmserve:expert_tokens_total{layer=\"1\",expert=\"0\"}"), kRequests);
  EXPECT_EQ(p.Get("bmserve:expert_tokens_total{layer=\"3\",expert=\"1\"}"), kRequests);
  m->AttachEngine(nullptr);
}

// The live output parses with promtool; the only lint findings are the ones the metric naming
// mandates (vLLM-style "bmserve:" prefix; the names state_slots_total and
// iteration_tokens_total for a gauge and a histogram).
TEST(ServerMetricsTest, PromtoolAcceptsTheOutput) {
  if (access("/usr/bin/promtool", X_OK) != 0) GTEST_SKIP() << "promtool not installed";
  auto m = NewMetrics();
  FakeEngine e;
  m->AttachEngine(&e);
  m->RecordHttpRequest("/v1/completions", 200);
  StepObservation s;
  s.num_decode_tokens = 1;
  s.expert_token_counts = {{1, 0, 0, 0}, {0, 0, 0, 1}};
  m->OnStep(s);
  const std::string path = ::testing::TempDir() + "/bms_collector_promtool.txt";
  {
    std::ofstream f(path);
    f << m->Render();
  }
  FILE* p = popen(("/usr/bin/promtool check metrics < " + path + " 2>&1").c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[512];
  while (size_t n = fread(buf, 1, sizeof(buf), p)) out.append(buf, n);
  const int rc = WEXITSTATUS(pclose(p));
  EXPECT_NE(rc, 1) << "promtool could not parse the output:\n" << out;
  std::istringstream lines(out);
  std::string line;
  const std::set<std::string> total_suffix_ok = {"bmserve:state_slots_total",
                                                 "bmserve:iteration_tokens_total"};
  while (std::getline(lines, line)) {
    const std::string name = line.substr(0, line.find(' '));
    const std::string problem = line.substr(line.find(' ') + 1);
    if (problem == "metric names should not contain ':'") continue;
    if (problem == "non-counter metrics should not have \"_total\" suffix" &&
        total_suffix_ok.count(name)) {
      continue;
    }
    ADD_FAILURE() << "unexpected promtool finding: " << line;
  }
  m->AttachEngine(nullptr);
}

}  // namespace
}  // namespace bms
