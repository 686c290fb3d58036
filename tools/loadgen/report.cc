#include "tools/loadgen/report.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_format.h"

namespace bms::loadgen {

Percentiles ComputePercentiles(std::vector<double> v) {
  Percentiles p;
  if (v.empty()) return p;
  std::sort(v.begin(), v.end());
  auto at = [&v](double q) {
    const double pos = q * static_cast<double>(v.size() - 1);
    const size_t lo = static_cast<size_t>(std::floor(pos));
    const size_t hi = std::min(lo + 1, v.size() - 1);
    return v[lo] + (v[hi] - v[lo]) * (pos - static_cast<double>(lo));
  };
  p.count = static_cast<int64_t>(v.size());
  p.mean = std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
  p.p50 = at(0.50);
  p.p90 = at(0.90);
  p.p99 = at(0.99);
  p.max = v.back();
  return p;
}

Summary Summarize(const std::vector<RequestRecord>& records, double window_start_s,
                  double window_end_s) {
  Summary s;
  std::vector<double> ttft, itl, tpot, e2e;
  struct Arrival {
    double t;
    double tokens;
  };
  std::vector<Arrival> arrivals;
  for (const RequestRecord& r : records) {
    ++s.issued;
    s.wall_s = std::max(s.wall_s, r.end_s);
    s.streamed_tokens += r.streamed_tokens;
    const int64_t n =
        r.usage_completion_tokens >= 0 ? r.usage_completion_tokens : r.streamed_tokens;
    // Tokens per chunk: what the chunk says, else the request's tokens spread over its chunks.
    const double spread = r.chunk_s.empty() ? 0.0 : static_cast<double>(n) / r.chunk_s.size();
    for (size_t i = 0; i < r.chunk_s.size(); ++i) {
      const bool known = i < r.chunk_tokens.size() && r.chunk_tokens[i] >= 0;
      arrivals.push_back({r.chunk_s[i], known ? static_cast<double>(r.chunk_tokens[i]) : spread});
    }
    if (!r.ok) {
      ++s.failed;
      ++s.errors[r.error.empty() ? "unknown error" : r.error];
      continue;
    }
    ++s.completed;
    s.output_tokens += n;
    if (r.usage_prompt_tokens > 0) s.prompt_tokens += r.usage_prompt_tokens;
    e2e.push_back((r.end_s - r.start_s) * 1e3);
    if (r.chunk_s.empty()) continue;
    ttft.push_back((r.chunk_s.front() - r.start_s) * 1e3);
    for (size_t i = 1; i < r.chunk_s.size(); ++i) {
      itl.push_back((r.chunk_s[i] - r.chunk_s[i - 1]) * 1e3);
    }
    if (n >= 2) tpot.push_back((r.chunk_s.back() - r.chunk_s.front()) * 1e3 / (n - 1));
  }
  if (s.wall_s > 0) {
    s.requests_per_s = s.completed / s.wall_s;
    s.output_tokens_per_s = s.output_tokens / s.wall_s;
  }
  s.window_start_s = std::max(0.0, window_start_s);
  s.window_end_s = window_end_s > 0 ? std::min(window_end_s, s.wall_s) : s.wall_s;
  if (s.window_end_s > s.window_start_s) {
    double in_window = 0;
    for (const Arrival& a : arrivals) {
      if (a.t >= s.window_start_s && a.t <= s.window_end_s) in_window += a.tokens;
    }
    s.steady_output_tokens_per_s = in_window / (s.window_end_s - s.window_start_s);
  }
  s.ttft_ms = ComputePercentiles(std::move(ttft));
  s.itl_ms = ComputePercentiles(std::move(itl));
  s.tpot_ms = ComputePercentiles(std::move(tpot));
  s.e2e_ms = ComputePercentiles(std::move(e2e));
  return s;
}

namespace {

nlohmann::json PercentilesJson(const Percentiles& p) {
  return {{"count", p.count}, {"mean", p.mean}, {"p50", p.p50},
          {"p90", p.p90},     {"p99", p.p99},   {"max", p.max}};
}

std::string PercentilesLine(const char* name, const Percentiles& p) {
  return absl::StrFormat("  %-5s ms  p50 %9.2f  p90 %9.2f  p99 %9.2f  mean %9.2f  (n=%d)\n", name,
                         p.p50, p.p90, p.p99, p.mean, p.count);
}

}  // namespace

nlohmann::json SummaryJson(const Summary& s) {
  nlohmann::json errors = nlohmann::json::object();
  for (const auto& [text, count] : s.errors) errors[text] = count;
  return {{"requests_issued", s.issued},
          {"requests_completed", s.completed},
          {"requests_failed", s.failed},
          {"errors", std::move(errors)},
          {"wall_s", s.wall_s},
          {"output_tokens", s.output_tokens},
          {"streamed_tokens", s.streamed_tokens},
          {"prompt_tokens", s.prompt_tokens},
          {"requests_per_s", s.requests_per_s},
          {"output_tokens_per_s", s.output_tokens_per_s},
          {"window_start_s", s.window_start_s},
          {"window_end_s", s.window_end_s},
          {"steady_output_tokens_per_s", s.steady_output_tokens_per_s},
          {"ttft_ms", PercentilesJson(s.ttft_ms)},
          {"itl_ms", PercentilesJson(s.itl_ms)},
          {"tpot_ms", PercentilesJson(s.tpot_ms)},
          {"e2e_ms", PercentilesJson(s.e2e_ms)}};
}

std::string SummaryText(const Summary& s) {
  std::string out = absl::StrFormat(
      "requests: %d issued, %d completed, %d failed in %.2f s (%.2f req/s)\n"
      "tokens:   %d output (%d streamed), %d prompt; %.1f output tok/s overall, %.1f tok/s in "
      "[%.1f, %.1f] s\n",
      s.issued, s.completed, s.failed, s.wall_s, s.requests_per_s, s.output_tokens,
      s.streamed_tokens, s.prompt_tokens, s.output_tokens_per_s, s.steady_output_tokens_per_s,
      s.window_start_s, s.window_end_s);
  out += PercentilesLine("ttft", s.ttft_ms);
  out += PercentilesLine("itl", s.itl_ms);
  out += PercentilesLine("tpot", s.tpot_ms);
  out += PercentilesLine("e2e", s.e2e_ms);
  int shown = 0;
  for (const auto& [text, count] : s.errors) {
    if (shown++ == 5) {
      out += absl::StrFormat("  ... %d more kinds of error\n", s.errors.size() - 5);
      break;
    }
    out += absl::StrFormat("  error x%d: %s\n", count, text);
  }
  return out;
}

}  // namespace bms::loadgen
