// Unit tests for the metrics module (metrics/): text exposition format, label escaping,
// histogram buckets/sum/count, name validation, func families, process metrics and concurrent
// updates (run under BMS_TSAN for the race check).
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "metrics/process_metrics.h"
#include "metrics/registry.h"
#include "metrics/text_format.h"

namespace bms::metrics {
namespace {

using ::testing::HasSubstr;

TEST(TextFormatTest, FormatsValues) {
  EXPECT_EQ(FormatValue(3), "3");
  EXPECT_EQ(FormatValue(0), "0");
  EXPECT_EQ(FormatValue(0.25), "0.25");
  EXPECT_EQ(FormatValue(-1.5), "-1.5");
  EXPECT_EQ(FormatValue(1e-6), "1e-06");
  EXPECT_EQ(FormatValue(1.0 / 0.0), "+Inf");
  EXPECT_EQ(FormatValue(-1.0 / 0.0), "-Inf");
  EXPECT_EQ(FormatValue(std::nan("")), "NaN");
  EXPECT_EQ(FormatValue(123456789.0), "123456789");
}

TEST(TextFormatTest, EscapesLabelValues) {
  EXPECT_EQ(EscapeLabelValue("plain"), "plain");
  EXPECT_EQ(EscapeLabelValue("a\\b"), "a\\\\b");
  EXPECT_EQ(EscapeLabelValue("say \"hi\""), "say \\\"hi\\\"");
  EXPECT_EQ(EscapeLabelValue("two\nlines"), "two\\nlines");
  EXPECT_EQ(EscapeLabelValue("caf\xC3\xA9"), "caf\xC3\xA9");            // valid UTF-8 kept
  EXPECT_EQ(EscapeLabelValue("bad\xFFz"), "bad\xEF\xBF\xBDz");          // invalid byte -> U+FFFD
  EXPECT_EQ(EscapeLabelValue("\xC3"), "\xEF\xBF\xBD");                  // truncated sequence
  EXPECT_EQ(EscapeLabelValue("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");  // overlong form
  // HELP text escapes backslash and newline but keeps quotes.
  EXPECT_EQ(EscapeHelp("a \"q\" \\ b\nc"), "a \"q\" \\\\ b\\nc");
}

TEST(TextFormatTest, ValidatesNames) {
  EXPECT_TRUE(IsValidMetricName("bmserve:num_requests_running"));
  EXPECT_TRUE(IsValidMetricName("_x9"));
  EXPECT_FALSE(IsValidMetricName(""));
  EXPECT_FALSE(IsValidMetricName("9x"));
  EXPECT_FALSE(IsValidMetricName("a-b"));
  EXPECT_TRUE(IsValidLabelName("finished_reason"));
  EXPECT_FALSE(IsValidLabelName("__name__"));
  EXPECT_FALSE(IsValidLabelName("a:b"));
  EXPECT_FALSE(IsValidLabelName("1a"));
}

TEST(RegistryTest, RendersCountersAndGaugesInExpositionFormat) {
  Registry r;
  auto req =
      r.AddCounter("bmserve:request_success_total", "Finished requests.", {"finished_reason"});
  ASSERT_TRUE(req.ok()) << req.status();
  auto run = r.AddGauge("bmserve:num_requests_running", "Running requests.");
  ASSERT_TRUE(run.ok());
  (*req)->WithLabels({"stop"})->Increment(2);
  (*req)->WithLabels({"length"})->Increment();
  (*req)->WithLabels({"stop"})->Increment();
  (*run)->Get()->Set(5);
  (*run)->Get()->Decrement(2);
  EXPECT_EQ(r.Render(),
            "# HELP bmserve:request_success_total Finished requests.\n"
            "# TYPE bmserve:request_success_total counter\n"
            "bmserve:request_success_total{finished_reason=\"length\"} 1\n"
            "bmserve:request_success_total{finished_reason=\"stop\"} 3\n"
            "# HELP bmserve:num_requests_running Running requests.\n"
            "# TYPE bmserve:num_requests_running gauge\n"
            "bmserve:num_requests_running 3\n");
}

TEST(RegistryTest, EscapesLabelValuesAndHelpInOutput) {
  Registry r;
  auto c = r.AddCounter("x_total", "help with \\ and\nnewline", {"route", "code"});
  ASSERT_TRUE(c.ok());
  (*c)->WithLabels({"/a\"b\\c\nd", "200"})->Increment();
  EXPECT_EQ(r.Render(),
            "# HELP x_total help with \\\\ and\\nnewline\n"
            "# TYPE x_total counter\n"
            "x_total{route=\"/a\\\"b\\\\c\\nd\",code=\"200\"} 1\n");
}

TEST(RegistryTest, CountersNeverDecrease) {
  Registry r;
  Counter* c = (*r.AddCounter("c_total", "c"))->Get();
  c->Increment(3);
  c->Increment(-1);
  c->Increment(std::nan(""));
  EXPECT_EQ(c->Value(), 3);
}

TEST(RegistryTest, HistogramBucketsSumAndCount) {
  Registry r;
  auto h = r.AddHistogram("lat_seconds", "Latency.", {"kind"}, {0.1, 0.5, 1});
  ASSERT_TRUE(h.ok()) << h.status();
  Histogram* d = (*h)->WithLabels({"decode"});
  // 0.05 -> le 0.1; 0.1 is inclusive -> le 0.1; 0.3 -> le 0.5; 1 -> le 1; 7 -> +Inf only.
  for (double v : {0.05, 0.1, 0.3, 1.0, 7.0}) d->Observe(v);
  d->Observe(std::nan(""));  // ignored
  const Histogram::Snapshot s = d->Read();
  EXPECT_EQ(s.count, 5u);
  EXPECT_DOUBLE_EQ(s.sum, 0.05 + 0.1 + 0.3 + 1.0 + 7.0);
  EXPECT_EQ(s.cumulative_counts, (std::vector<uint64_t>{2, 3, 4, 5}));
  EXPECT_EQ(r.Render(),
            "# HELP lat_seconds Latency.\n"
            "# TYPE lat_seconds histogram\n"
            "lat_seconds_bucket{kind=\"decode\",le=\"0.1\"} 2\n"
            "lat_seconds_bucket{kind=\"decode\",le=\"0.5\"} 3\n"
            "lat_seconds_bucket{kind=\"decode\",le=\"1\"} 4\n"
            "lat_seconds_bucket{kind=\"decode\",le=\"+Inf\"} 5\n"
            "lat_seconds_sum{kind=\"decode\"} 8.45\n"
            "lat_seconds_count{kind=\"decode\"} 5\n");
}

TEST(RegistryTest, EmptyFamilyRendersOnlyMetadata) {
  Registry r;
  ASSERT_TRUE(r.AddHistogram("h_seconds", "H.", {}, {1}).ok());
  EXPECT_EQ(r.Render(), "# HELP h_seconds H.\n# TYPE h_seconds histogram\n");
}

TEST(RegistryTest, RejectsBadRegistrations) {
  Registry r;
  EXPECT_EQ(r.AddCounter("bad-name_total", "x").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.AddCounter("no_suffix", "x").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.AddGauge("g", "x", {"__reserved"}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.AddGauge("g", "x", {"a", "a"}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.AddHistogram("h", "x", {"le"}, {1}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.AddHistogram("h", "x", {}, {}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.AddHistogram("h", "x", {}, {1, 1}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.AddHistogram("h", "x", {}, {1, 1.0 / 0.0}).status().code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(r.AddGauge("g", "x").ok());
  EXPECT_EQ(r.AddGauge("g", "again").status().code(), absl::StatusCode::kAlreadyExists);
  ASSERT_TRUE(r.AddHistogram("h", "x", {}, {1}).ok());
  EXPECT_EQ(r.AddGauge("h_count", "clash").status().code(), absl::StatusCode::kAlreadyExists);
}

TEST(RegistryTest, WrongLabelCountGoesToADetachedChild) {
  Registry r;
  CounterFamily* f = *r.AddCounter("f_total", "f", {"a"});
  Counter* bad = f->WithLabels({"x", "y"});
  ASSERT_NE(bad, nullptr);
  bad->Increment();
  EXPECT_EQ(r.Render(), "# HELP f_total f\n# TYPE f_total counter\n");
}

TEST(RegistryTest, FuncFamiliesAreEvaluatedAtRender) {
  Registry r;
  double v = 1;
  ASSERT_TRUE(r.AddGaugeFunc("slots", "s", {"layer"}, [&v] {
                 return std::vector<FuncSample>{{{"3"}, v}, {{"1"}, 2 * v}, {{"x", "y"}, 9}};
               }).ok());
  v = 4;
  // Sorted by label value; the sample with the wrong label count is dropped.
  EXPECT_EQ(r.Render(),
            "# HELP slots s\n# TYPE slots gauge\nslots{layer=\"1\"} 8\nslots{layer=\"3\"} 4\n");
}

TEST(BucketsTest, ExponentialAndLinear) {
  EXPECT_EQ(ExponentialBuckets(1, 2, 4), (std::vector<double>{1, 2, 4, 8}));
  EXPECT_EQ(LinearBuckets(0.5, 0.5, 3), (std::vector<double>{0.5, 1.0, 1.5}));
  EXPECT_TRUE(ExponentialBuckets(0, 2, 3).empty());
}

TEST(ConcurrencyTest, ConcurrentUpdatesAreExact) {
  Registry r;
  CounterFamily* cf = *r.AddCounter("n_total", "n", {"t"});
  HistogramFamily* hf = *r.AddHistogram("h", "h", {}, {0.5, 1.5});
  Gauge* g = (*r.AddGauge("g", "g"))->Get();
  constexpr int kThreads = 8;
  constexpr int kIters = 20000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Counter* shared = cf->WithLabels({"shared"});
      Counter* own = cf->WithLabels({std::to_string(t)});
      for (int i = 0; i < kIters; ++i) {
        shared->Increment();
        own->Increment(2);
        hf->Get()->Observe(i % 3);  // 0 -> le 0.5, 1 -> le 1.5, 2 -> +Inf
        g->Increment();
        g->Decrement();
        if (i % 1000 == 0) (void)r.Render();  // scrapes race with updates
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(cf->WithLabels({"shared"})->Value(), kThreads * kIters);
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(cf->WithLabels({std::to_string(t)})->Value(), 2.0 * kIters);
  }
  EXPECT_EQ(g->Value(), 0);
  const Histogram::Snapshot s = hf->Get()->Read();
  int per_value[3] = {0, 0, 0};
  for (int i = 0; i < kIters; ++i) ++per_value[i % 3];
  EXPECT_EQ(s.count, static_cast<uint64_t>(kThreads * kIters));
  EXPECT_EQ(s.cumulative_counts[0], static_cast<uint64_t>(kThreads * per_value[0]));
  EXPECT_EQ(s.cumulative_counts[1],
            static_cast<uint64_t>(kThreads * (per_value[0] + per_value[1])));
  EXPECT_DOUBLE_EQ(s.sum, kThreads * (per_value[1] * 1.0 + per_value[2] * 2.0));
}

TEST(ProcessMetricsTest, ReadsThisProcess) {
  auto s = ReadProcessStats();
  ASSERT_TRUE(s.ok()) << s.status();
  // Independent sources: /proc/self/status VmRSS and the clock.
  std::ifstream status("/proc/self/status");
  std::string line;
  double vm_rss_kb = -1;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) vm_rss_kb = std::stod(line.substr(6));
  }
  ASSERT_GT(vm_rss_kb, 0);
  EXPECT_NEAR(s->resident_memory_bytes, vm_rss_kb * 1024, 0.5 * vm_rss_kb * 1024);
  EXPECT_GE(s->open_fds, 3);  // stdin, stdout, stderr
  const double now = static_cast<double>(std::time(nullptr));
  EXPECT_LE(s->start_time_seconds, now + 1);
  EXPECT_GT(s->start_time_seconds, now - 3600);
  EXPECT_GE(s->threads, 1);
  EXPECT_GT(s->max_fds, 0);
  Registry r;
  ASSERT_TRUE(RegisterProcessMetrics(&r).ok());
  const std::string out = r.Render();
  EXPECT_THAT(out, HasSubstr("# TYPE process_resident_memory_bytes gauge\n"
                             "process_resident_memory_bytes "));
  EXPECT_THAT(out, HasSubstr("# TYPE process_cpu_seconds_total counter\n"));
  EXPECT_THAT(out, HasSubstr("\nprocess_open_fds "));
}

// promtool (Debian package "prometheus") parses and lints the whole output.
TEST(PromtoolTest, OutputPassesPromtoolCheckMetrics) {
  if (access("/usr/bin/promtool", X_OK) != 0) GTEST_SKIP() << "promtool not installed";
  Registry r;
  ASSERT_TRUE(RegisterProcessMetrics(&r).ok());
  (*r.AddCounter("demo_requests_total", "Requests.", {"route", "code"}))
      ->WithLabels({"/v1/\"x\"\\\n", "200"})
      ->Increment(3);
  (*r.AddHistogram("demo_latency_seconds", "Latency.", {}, ExponentialBuckets(0.001, 4, 6)))
      ->Get()
      ->Observe(0.02);
  (*r.AddGauge("demo_queue_depth", "Queue.", {}))->Get()->Set(-2.5);
  const std::string path = ::testing::TempDir() + "/bms_metrics_promtool.txt";
  {
    std::ofstream f(path);
    f << r.Render();
  }
  const std::string cmd = "/usr/bin/promtool check metrics < " + path + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[512];
  while (size_t n = fread(buf, 1, sizeof(buf), p)) out.append(buf, n);
  const int rc = pclose(p);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_EQ(out, "");
}

}  // namespace
}  // namespace bms::metrics
