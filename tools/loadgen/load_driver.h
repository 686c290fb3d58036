// The load generator's driver: sends streaming /v1/completions requests to a bmserve (or any
// OpenAI-compatible) HTTP server, either closed loop (a fixed number of clients, each sending
// its next request when the previous one ends) or open loop (Poisson arrivals at a fixed rate,
// each request on its own worker so a slow server does not slow the arrivals), and records per
// request when every output chunk arrived. Failures (refused connections, non-200 answers,
// stream errors, timeouts) are recorded, never thrown.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "tools/loadgen/report.h"

namespace bms::loadgen {

struct LoadOptions {
  std::string host = "127.0.0.1";
  int port = 8000;
  std::string api_key;    // sent as "Authorization: Bearer KEY" when not empty
  std::string model;      // the request's "model" field; empty = omitted (the served model)
  int concurrency = 0;    // closed loop: this many clients (exactly one of concurrency / rate)
  double rate = 0;        // open loop: Poisson arrivals, requests per second
  double duration_s = 0;  // stop issuing after this long (0 = no limit; needs requests)
  int64_t requests = 0;   // stop after issuing this many (0 = no limit; needs duration)
  int prompt_len = 32;    // prompt tokens (token-id prompt) or words (text prompt)
  std::string prompt_kind = "tokens";  // "tokens": random ids in [0, vocab_size); "text"
  int vocab_size = 256;
  int max_tokens = 64;
  bool ignore_eos = true;  // every request generates exactly max_tokens
  bool logprobs = false;   // ask for logprobs=0: each chunk then says how many tokens it holds
  double temperature = 0;
  double timeout_s = 120;   // connect and every read/write of one request
  double warmup_s = 0;      // the steady-throughput window starts here
  uint64_t seed = 1;        // prompts are a function of (seed, request index)
  int max_inflight = 2048;  // open loop: most requests in flight at once (more wait, timed)
};

// InvalidArgument naming the flag for inconsistent or out-of-range options.
absl::Status ValidateOptions(const LoadOptions& o);

// The JSON body of request `index` (stream on, usage included).
std::string BuildRequestBody(const LoadOptions& o, uint64_t index);

// The whole HTTP/1.1 request for a body.
std::string BuildHttpRequest(const LoadOptions& o, const std::string& body);

struct LoadResult {
  std::vector<RequestRecord> records;  // in completion order
  double issue_end_s = 0;              // duration mode: the duration (steady window end); else 0
};

// Runs the load to the end (every issued request finished or failed). Options must be valid.
// Blocks the calling thread; uses concurrency (closed) or up to max_inflight (open) threads.
LoadResult RunLoad(const LoadOptions& o);

}  // namespace bms::loadgen
