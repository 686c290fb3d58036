#include "tools/loadgen/load_driver.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "tools/loadgen/http_client.h"
#include "tools/loadgen/sse.h"

namespace bms::loadgen {
namespace {

using Clock = std::chrono::steady_clock;

constexpr const char* kWords[] = {"the",   "river", "of",    "time",   "runs",  "past",   "a",
                                  "quiet", "town",  "where", "every",  "house", "keeps",  "its",
                                  "own",   "clock", "and",   "nobody", "asks",  "why",    "bells",
                                  "ring",  "at",    "noon",  "while",  "cats",  "sleep",  "on",
                                  "warm",  "stone", "walls", "beside", "old",   "gardens"};

uint64_t Mix(uint64_t x) {  // splitmix64 finalizer
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

class Runner {
 public:
  explicit Runner(const LoadOptions& o) : o_(o), t0_(Clock::now()) {}

  double Now() const { return std::chrono::duration<double>(Clock::now() - t0_).count(); }

  // Sends request `index` on `conn` and fills `r` (start_s must be set by the caller).
  void RunOne(HttpConnection& conn, uint64_t index, RequestRecord* r) {
    const std::string request = BuildHttpRequest(o_, BuildRequestBody(o_, index));
    std::string error_body, stream_error;
    bool saw_done = false;
    SseParser parser([&](const std::string& data) {
      StreamChunk c = ParseStreamChunk(data);
      if (!c.error.empty()) {
        if (stream_error.empty()) stream_error = "stream error: " + c.error.substr(0, 160);
        return;
      }
      if (c.done) {
        saw_done = true;
        return;
      }
      if (c.usage_completion_tokens >= 0) r->usage_completion_tokens = c.usage_completion_tokens;
      if (c.usage_prompt_tokens >= 0) r->usage_prompt_tokens = c.usage_prompt_tokens;
      if (c.content) {
        r->chunk_s.push_back(Now());
        r->chunk_tokens.push_back(c.tokens);
        r->streamed_tokens += c.tokens >= 0 ? c.tokens : 1;
      }
    });
    absl::Status s = conn.Exchange(
        request, [&](const HttpResponseHead& head) { r->http_status = head.status; },
        [&](std::string_view body) {
          if (r->http_status == 200) {
            parser.Feed(body);
          } else if (error_body.size() < 4096) {
            error_body.append(body.substr(0, 4096 - error_body.size()));
          }
        });
    r->end_s = Now();
    if (!s.ok()) {
      r->error = std::string(s.message());
    } else if (r->http_status != 200) {
      std::string message = error_body.substr(0, 160);
      nlohmann::json j = nlohmann::json::parse(error_body, nullptr, false);
      if (j.is_object() && j.contains("error") && j["error"].is_object() &&
          j["error"].contains("message") && j["error"]["message"].is_string()) {
        message = j["error"]["message"].get<std::string>().substr(0, 160);
      }
      r->error = absl::StrCat("HTTP ", r->http_status, ": ", message);
    } else if (!stream_error.empty()) {
      r->error = stream_error;
    } else if (!saw_done) {
      r->error = "stream ended without data: [DONE]";
    } else {
      r->ok = true;
    }
  }

  void Record(RequestRecord r) {
    std::lock_guard<std::mutex> lock(mu_);
    result_.records.push_back(std::move(r));
  }

  int TimeoutMs() const { return static_cast<int>(std::clamp(o_.timeout_s * 1000, 1.0, 2e9)); }

  LoadResult Closed() {
    std::atomic<int64_t> next{0};
    std::vector<std::thread> clients;
    for (int c = 0; c < o_.concurrency; ++c) {
      clients.emplace_back([this, &next] {
        HttpConnection conn(o_.host, o_.port, TimeoutMs());
        while (true) {
          if (o_.duration_s > 0 && Now() >= o_.duration_s) break;
          const int64_t index = next.fetch_add(1);
          if (o_.requests > 0 && index >= o_.requests) break;
          RequestRecord r;
          r.start_s = Now();
          RunOne(conn, static_cast<uint64_t>(index), &r);
          const bool no_answer = !r.ok && r.http_status == 0;
          Record(std::move(r));
          // A server that refuses connections is not hammered in a tight loop.
          if (no_answer) std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
      });
    }
    for (std::thread& t : clients) t.join();
    result_.issue_end_s = o_.duration_s > 0 ? o_.duration_s : 0;
    return std::move(result_);
  }

  LoadResult Open() {
    struct Job {
      uint64_t index;
      double due_s;
    };
    std::mutex mu;
    std::condition_variable cv;
    std::deque<Job> queue;
    bool closed = false;
    int idle = 0;
    std::vector<std::thread> workers;
    auto worker = [&, this] {
      HttpConnection conn(o_.host, o_.port, TimeoutMs());
      while (true) {
        Job job;
        {
          std::unique_lock<std::mutex> lock(mu);
          ++idle;
          cv.wait(lock, [&] { return closed || !queue.empty(); });
          --idle;
          if (queue.empty()) return;
          job = queue.front();
          queue.pop_front();
        }
        RequestRecord r;
        r.start_s = job.due_s;  // waiting for a free worker counts as latency
        RunOne(conn, job.index, &r);
        Record(std::move(r));
      }
    };
    std::mt19937_64 rng(Mix(o_.seed ^ 0x5eedULL));
    std::exponential_distribution<double> gap(o_.rate);
    double due = 0;
    for (uint64_t index = 0;; ++index) {
      due += gap(rng);
      if (o_.duration_s > 0 && due >= o_.duration_s) break;
      if (o_.requests > 0 && index >= static_cast<uint64_t>(o_.requests)) break;
      std::this_thread::sleep_until(
          t0_ + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(due)));
      std::lock_guard<std::mutex> lock(mu);
      queue.push_back({index, due});
      if (idle < static_cast<int>(queue.size()) &&
          static_cast<int>(workers.size()) < o_.max_inflight) {
        workers.emplace_back(worker);
      }
      cv.notify_one();
    }
    result_.issue_end_s = o_.duration_s > 0 ? o_.duration_s : 0;
    {
      std::lock_guard<std::mutex> lock(mu);
      closed = true;
    }
    cv.notify_all();
    for (std::thread& t : workers) t.join();
    return std::move(result_);
  }

 private:
  const LoadOptions& o_;
  const Clock::time_point t0_;
  std::mutex mu_;
  LoadResult result_;
};

}  // namespace

absl::Status ValidateOptions(const LoadOptions& o) {
  auto bad = [](const std::string& m) { return absl::InvalidArgumentError(m); };
  if ((o.concurrency > 0) == (o.rate > 0)) {
    return bad("give exactly one of --concurrency (closed loop) or --rate (open loop)");
  }
  if (o.concurrency < 0) return bad("flag --concurrency must be > 0");
  if (o.concurrency > 100000) return bad("flag --concurrency must be at most 100000");
  if (o.rate < 0 || !(o.rate < 1e6)) return bad("flag --rate must be in (0, 1e6)");
  if (o.duration_s < 0 || o.duration_s > 1e6) return bad("flag --duration must be in [0, 1e6]");
  if (o.requests < 0) return bad("flag --requests must be >= 0");
  if (o.duration_s == 0 && o.requests == 0) return bad("give --duration or --requests (or both)");
  if (o.port <= 0 || o.port > 65535) return bad("flag --port must be in [1, 65535]");
  if (o.host.empty()) return bad("flag --host must not be empty");
  if (o.prompt_len <= 0) return bad("flag --prompt-len must be > 0");
  if (o.prompt_kind != "tokens" && o.prompt_kind != "text") {
    return bad("flag --prompt-kind must be tokens or text");
  }
  if (o.vocab_size <= 0) return bad("flag --vocab-size must be > 0");
  if (o.max_tokens <= 0) return bad("flag --max-tokens must be > 0");
  if (o.temperature < 0 || o.temperature > 2) return bad("flag --temperature must be in [0, 2]");
  if (!(o.timeout_s > 0)) return bad("flag --timeout must be > 0");
  if (o.warmup_s < 0) return bad("flag --warmup must be >= 0");
  if (o.max_inflight <= 0 || o.max_inflight > 100000) {
    return bad("flag --max-inflight must be in [1, 100000]");
  }
  for (char c : o.api_key + o.host + o.model) {
    if (c == '\r' || c == '\n') return bad("flags must not contain line breaks");
  }
  return absl::OkStatus();
}

std::string BuildRequestBody(const LoadOptions& o, uint64_t index) {
  nlohmann::json body;
  if (!o.model.empty()) body["model"] = o.model;
  std::mt19937_64 rng(Mix(Mix(o.seed) + index));
  if (o.prompt_kind == "text") {
    std::string text;
    std::uniform_int_distribution<size_t> word(0, std::size(kWords) - 1);
    for (int i = 0; i < o.prompt_len; ++i) absl::StrAppend(&text, i ? " " : "", kWords[word(rng)]);
    body["prompt"] = text;
  } else {
    std::uniform_int_distribution<int> id(0, o.vocab_size - 1);
    std::vector<int> ids(o.prompt_len);
    for (int& t : ids) t = id(rng);
    body["prompt"] = ids;
  }
  body["max_tokens"] = o.max_tokens;
  body["temperature"] = o.temperature;
  body["seed"] = static_cast<int64_t>(Mix(o.seed + index) >> 2);
  if (o.ignore_eos) body["ignore_eos"] = true;
  if (o.logprobs) body["logprobs"] = 0;
  body["stream"] = true;
  body["stream_options"] = {{"include_usage", true}};
  return body.dump();
}

std::string BuildHttpRequest(const LoadOptions& o, const std::string& body) {
  std::string r = absl::StrCat("POST /v1/completions HTTP/1.1\r\nHost: ", o.host, ":", o.port,
                               "\r\nContent-Type: application/json\r\nAccept: text/event-stream"
                               "\r\nContent-Length: ",
                               body.size(), "\r\n");
  if (!o.api_key.empty()) absl::StrAppend(&r, "Authorization: Bearer ", o.api_key, "\r\n");
  absl::StrAppend(&r, "\r\n", body);
  return r;
}

LoadResult RunLoad(const LoadOptions& o) {
  Runner runner(o);
  return o.concurrency > 0 ? runner.Closed() : runner.Open();
}

}  // namespace bms::loadgen
