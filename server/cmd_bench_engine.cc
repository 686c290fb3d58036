// `bmserve bench-engine`: a closed-loop benchmark of the engine alone (no HTTP): keeps
// --concurrency requests of --prompt-len random prompt tokens and --gen-len generated tokens in
// flight until --requests finished, then prints throughput, TTFT and inter-token latency
// percentiles (from the engine's own event timestamps) and the engine's per-step CPU overhead
// (step time minus backend time). A measurement tool, not a test.
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "server/commands.h"
#include "server/flags.h"
#include "server/offline_engine.h"

namespace bms {
namespace {

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// Nearest-rank percentile of an unsorted sample (0 for an empty one).
double Percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t rank = static_cast<size_t>(std::ceil(q / 100.0 * v.size()));
  return v[std::clamp<size_t>(rank, 1, v.size()) - 1];
}

struct InFlight {
  std::shared_ptr<EventChannel> channel;
  Clock::time_point last_event{};
  bool got_first = false;
};

int Fail(const absl::Status& s, int code = 1) {
  std::fprintf(stderr, "bmserve bench-engine: %s\n", std::string(s.message()).c_str());
  return code;
}

}  // namespace

int BenchEngineCommand(const Args& args) {
  EngineFlagValues ev;
  int requests = 64, concurrency = 8, prompt_len = 128, gen_len = 128;
  double temperature = 0.0;
  int64_t seed = 1;
  FlagSet f("bench-engine");
  RegisterEngineFlags(&f, &ev);
  f.Int("requests", &requests, "requests to complete");
  f.Int("concurrency", &concurrency, "requests kept in flight");
  f.Int("prompt-len", &prompt_len, "prompt tokens per request (random ids)");
  f.Int("gen-len", &gen_len, "generated tokens per request (EOS ignored)");
  f.Double("temperature", &temperature, "sampling temperature (0 = greedy)");
  f.Int64("seed", &seed, "seed for the random prompts");
  if (absl::Status s = f.Parse(args); !s.ok()) return Fail(s, 2);
  if (f.help_requested()) {
    std::printf("%s", f.Usage().c_str());
    return 0;
  }
  if (requests < 1) return Fail(absl::InvalidArgumentError("flag --requests must be >= 1"), 2);
  if (concurrency < 1) {
    return Fail(absl::InvalidArgumentError("flag --concurrency must be >= 1"), 2);
  }
  if (prompt_len < 1) return Fail(absl::InvalidArgumentError("flag --prompt-len must be >= 1"), 2);
  if (gen_len < 1) return Fail(absl::InvalidArgumentError("flag --gen-len must be >= 1"), 2);
  concurrency = std::min(concurrency, requests);

  EngineOptions options;
  options.max_queued_requests = std::max(options.max_queued_requests, concurrency);
  options.max_prompt_tokens = std::max(options.max_prompt_tokens, prompt_len);
  options.max_tokens_limit = std::max(options.max_tokens_limit, gen_len);
  absl::StatusOr<OfflineEngine> oe =
      StartOfflineEngine(ev, concurrency, /*default_slots=*/0, options);
  if (!oe.ok()) return Fail(oe.status());
  Engine& engine = *oe->engine;
  const int vocab = engine.config().vocab_size;

  std::mt19937_64 rng(static_cast<uint64_t>(seed));
  auto make_request = [&] {
    GenerateRequest r;
    r.prompt_ids.resize(prompt_len);
    for (int32_t& t : r.prompt_ids) t = static_cast<int32_t>(rng() % vocab);
    r.sampling.temperature = static_cast<float>(temperature);
    r.sampling.max_tokens = gen_len;
    r.sampling.ignore_eos = true;
    r.sampling.seed = rng();
    return r;
  };

  std::mutex mu;
  std::condition_variable cv;
  bool signalled = false;
  auto notify = [&] {
    {
      std::lock_guard<std::mutex> lock(mu);
      signalled = true;
    }
    cv.notify_one();
  };

  const EngineStats before = engine.Stats();
  const Clock::time_point start = Clock::now();
  std::vector<InFlight> active;
  std::vector<double> ttft_ms, itl_ms, e2e_ms;
  int submitted = 0, finished = 0, errors = 0;
  int64_t generated = 0;
  while (finished < requests) {
    while (static_cast<int>(active.size()) < concurrency && submitted < requests) {
      absl::StatusOr<std::shared_ptr<EventChannel>> ch = engine.Submit(make_request());
      if (!ch.ok()) return Fail(ch.status());
      (*ch)->SetNotifier(notify);
      active.push_back({*ch});
      ++submitted;
    }
    {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait_for(lock, std::chrono::milliseconds(100), [&] { return signalled; });
      signalled = false;
    }
    for (size_t i = 0; i < active.size();) {
      InFlight& a = active[i];
      bool done = false;
      for (GenerationEvent& e : a.channel->DrainAll()) {
        generated += static_cast<int64_t>(e.token_ids.size());
        if (!e.token_ids.empty()) {
          if (!a.got_first) {
            ttft_ms.push_back(Ms(e.first_token_time - e.arrival_time));
            a.got_first = true;
          } else {
            itl_ms.push_back(Ms(e.event_time - a.last_event));
          }
          a.last_event = e.event_time;
        }
        if (e.finish != FinishReason::kNone) {
          done = true;
          if (e.finish == FinishReason::kError) {
            ++errors;
            std::fprintf(stderr, "request failed: %s\n", std::string(e.error.message()).c_str());
          }
          e2e_ms.push_back(Ms(e.event_time - e.arrival_time));
        }
      }
      if (done) {
        ++finished;
        active[i] = std::move(active.back());
        active.pop_back();
      } else {
        ++i;
      }
    }
  }
  const double wall = std::chrono::duration<double>(Clock::now() - start).count();
  const EngineStats after = engine.Stats();
  engine.Stop();

  const int64_t steps = after.steps_total - before.steps_total;
  const double step_s = after.step_seconds_total - before.step_seconds_total;
  const double backend_s = after.backend_seconds_total - before.backend_seconds_total;
  const int64_t prompt_tokens = after.prompt_tokens_total - before.prompt_tokens_total;
  std::printf(
      "bench-engine: backend=%s slots=%d requests=%d concurrency=%d prompt_len=%d "
      "gen_len=%d budget=%d\n",
      ev.backend.c_str(), oe->num_slots, requests, concurrency, prompt_len, gen_len,
      ev.max_num_batched_tokens);
  std::printf("%-34s %14s\n", "metric", "value");
  auto row = [](const char* name, const std::string& v) {
    std::printf("%-34s %14s\n", name, v.c_str());
  };
  row("wall time (s)", absl::StrFormat("%.3f", wall));
  row("requests failed", absl::StrFormat("%d", errors));
  row("generated tokens", absl::StrFormat("%d", generated));
  row("output throughput (tok/s)", absl::StrFormat("%.1f", generated / wall));
  row("total throughput (tok/s)", absl::StrFormat("%.1f", (generated + prompt_tokens) / wall));
  row("request throughput (req/s)", absl::StrFormat("%.2f", requests / wall));
  for (double q : {50.0, 90.0, 99.0}) {
    row(absl::StrFormat("TTFT p%.0f (ms)", q).c_str(),
        absl::StrFormat("%.2f", Percentile(ttft_ms, q)));
  }
  for (double q : {50.0, 90.0, 99.0}) {
    row(absl::StrFormat("inter-token latency p%.0f (ms)", q).c_str(),
        absl::StrFormat("%.2f", Percentile(itl_ms, q)));
  }
  row("end-to-end latency p50 (ms)", absl::StrFormat("%.1f", Percentile(e2e_ms, 50)));
  row("end-to-end latency p99 (ms)", absl::StrFormat("%.1f", Percentile(e2e_ms, 99)));
  row("engine steps", absl::StrFormat("%d", steps));
  if (steps > 0) {
    row("step time mean (ms)", absl::StrFormat("%.3f", 1e3 * step_s / steps));
    row("backend time mean (ms)", absl::StrFormat("%.3f", 1e3 * backend_s / steps));
    row("engine overhead/step mean (ms)",
        absl::StrFormat("%.3f", 1e3 * (step_s - backend_s) / steps));
    // DESIGN.md §3: report achieved rates next to the floors. FLOPs: 2 x active params per
    // token processed; weight bytes: at least the active params once per step.
    const double active = static_cast<double>(engine.config().ActiveParams());
    const double weight_bytes =
        (ev.backend == "cpu" || ev.fp32_compute) ? 4.0 : 2.0;  // compute dtype of the weights
    if (backend_s > 0) {
      row("achieved GFLOP/s (2 x active/tok)",
          absl::StrFormat("%.1f", 2.0 * active * (generated + prompt_tokens) / backend_s / 1e9));
      row("weight GB/s (>= active per step)",
          absl::StrFormat("%.1f", active * weight_bytes * steps / backend_s / 1e9));
    }
    row("engine overhead share (%)",
        absl::StrFormat("%.2f", step_s > 0 ? 100.0 * (step_s - backend_s) / step_s : 0.0));
  }
  return errors == 0 ? 0 : 1;
}

}  // namespace bms
