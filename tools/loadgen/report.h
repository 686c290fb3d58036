// Load-generator results: what was recorded per request, and the summary built from the
// records (counts, throughput over the whole run and over a steady window, TTFT / inter-token
// latency / time per output token / end-to-end latency percentiles) as text and JSON.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"

namespace bms::loadgen {

// One request. Times are seconds since the start of the run.
struct RequestRecord {
  double start_s = 0;  // when it was due (open loop: its scheduled arrival; closed: sent)
  double end_s = 0;
  bool ok = false;
  std::string error;                     // why it failed (empty when ok)
  int http_status = 0;                   // 0 when no response head arrived
  std::vector<double> chunk_s;           // arrival time of each chunk that carried output
  std::vector<int64_t> chunk_tokens;     // tokens per such chunk, -1 when the chunk does not say
  int64_t usage_completion_tokens = -1;  // from the final usage chunk, -1 when absent
  int64_t usage_prompt_tokens = -1;
  int64_t streamed_tokens = 0;  // tokens counted in the stream (chunks, or logprobs entries)
};

struct Percentiles {
  int64_t count = 0;
  double mean = 0, p50 = 0, p90 = 0, p99 = 0, max = 0;
};

// Linear interpolation between closest ranks; an empty sample gives all zeros.
Percentiles ComputePercentiles(std::vector<double> samples);

struct Summary {
  int64_t issued = 0, completed = 0, failed = 0;
  std::map<std::string, int64_t> errors;  // error text -> count
  double wall_s = 0;                      // start to the last request's end
  int64_t output_tokens = 0;              // usage completion tokens (streamed count if absent)
  int64_t streamed_tokens = 0;
  int64_t prompt_tokens = 0;
  double requests_per_s = 0;
  double output_tokens_per_s = 0;  // output_tokens / wall_s
  // Tokens that arrived inside [window_start_s, window_end_s] over the window's length: the
  // rate while the offered load was steady (excludes the final drain of the last requests).
  double window_start_s = 0, window_end_s = 0;
  double steady_output_tokens_per_s = 0;
  Percentiles ttft_ms, itl_ms, tpot_ms, e2e_ms;
};

// window: [window_start_s, window_end_s]; window_end_s <= 0 means "to the end of the run".
Summary Summarize(const std::vector<RequestRecord>& records, double window_start_s,
                  double window_end_s);

nlohmann::json SummaryJson(const Summary& s);
// A few human-readable lines.
std::string SummaryText(const Summary& s);

}  // namespace bms::loadgen
