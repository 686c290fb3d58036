// bmserve-loadgen: drives a bmserve (OpenAI-compatible) HTTP server with streaming
// /v1/completions requests, closed loop (--concurrency) or open loop with Poisson arrivals
// (--rate), and reports throughput, TTFT, inter-token latency (gap between streamed chunks),
// time per output token and end-to-end latency, as text and optionally --json.
// Exit status: 0 when every request completed, 1 when any failed, 2 on bad flags.
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "tools/loadgen/load_driver.h"
#include "tools/loadgen/report.h"

namespace {

using bms::loadgen::LoadOptions;

struct Flag {
  std::string help;
  bool is_bool = false;
  std::function<bool(const std::string&)> set;
};

struct Cli {
  LoadOptions o;
  std::string json_path;
  std::string label;
  bool quiet = false;
  std::map<std::string, Flag> flags;

  void Add(const std::string& name, std::string* v, const std::string& help) {
    flags[name] = {help, false, [v](const std::string& s) {
                     *v = s;
                     return true;
                   }};
  }
  template <typename T>
  void AddNumber(const std::string& name, T* v, const std::string& help) {
    flags[name] = {help, false, [v](const std::string& s) {
                     if constexpr (std::is_floating_point_v<T>) {
                       return absl::SimpleAtod(s, v);
                     } else {
                       return absl::SimpleAtoi(s, v);
                     }
                   }};
  }
  void AddBool(const std::string& name, bool* v, const std::string& help) {
    flags[name] = {help, true, [v](const std::string& s) {
                     if (s.empty() || s == "true" || s == "1") {
                       *v = true;
                     } else if (s == "false" || s == "0") {
                       *v = false;
                     } else {
                       return false;
                     }
                     return true;
                   }};
  }

  Cli() {
    Add("host", &o.host, "server address");
    AddNumber("port", &o.port, "server HTTP port");
    Add("api-key", &o.api_key, "sent as 'Authorization: Bearer KEY' (env BMSERVE_API_KEY)");
    Add("model", &o.model, "the request's model field (default: omitted = the served model)");
    AddNumber("concurrency", &o.concurrency, "closed loop: number of clients");
    AddNumber("rate", &o.rate, "open loop: Poisson arrivals, requests per second");
    AddNumber("duration", &o.duration_s,
              "seconds to keep issuing requests (in-flight ones finish)");
    AddNumber("requests", &o.requests, "number of requests to issue");
    AddNumber("prompt-len", &o.prompt_len, "prompt length in tokens (or words for text)");
    Add("prompt-kind", &o.prompt_kind, "tokens (random ids, token-id prompt) or text");
    AddNumber("vocab-size", &o.vocab_size, "random prompt ids are drawn from [0, vocab-size)");
    AddNumber("max-tokens", &o.max_tokens, "max_tokens of every request");
    AddBool("ignore-eos", &o.ignore_eos, "generate exactly max-tokens (default true)");
    AddBool("logprobs", &o.logprobs, "request logprobs=0 so chunks carry exact token counts");
    AddNumber("temperature", &o.temperature, "sampling temperature (0 = greedy)");
    AddNumber("timeout", &o.timeout_s, "seconds allowed for connect and for each read/write");
    AddNumber("warmup", &o.warmup_s, "the steady-throughput window starts this many s in");
    AddNumber("seed", &o.seed, "prompt seed");
    AddNumber("max-inflight", &o.max_inflight, "open loop: most requests in flight at once");
    Add("json", &json_path, "write the options and the summary as JSON to this file");
    Add("label", &label, "a name for this run, copied into the JSON");
    AddBool("quiet", &quiet, "print only the summary");
  }

  std::string Usage() const {
    std::string u =
        "usage: bmserve-loadgen (--concurrency=C | --rate=R) (--duration=S | --requests=N) "
        "[options]\n\noptions:\n";
    for (const auto& [name, f] : flags)
      absl::StrAppend(&u, absl::StrFormat("  --%-14s %s\n", name, f.help));
    return u;
  }

  // Returns false (after printing why) on a bad flag; sets *help for --help.
  bool Parse(int argc, char** argv, bool* help) {
    if (const char* key = std::getenv("BMSERVE_API_KEY")) o.api_key = key;
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      if (a == "--help" || a == "-h") {
        *help = true;
        return true;
      }
      if (a.rfind("--", 0) != 0) {
        std::fprintf(stderr, "bmserve-loadgen: unexpected argument '%s'\n", a.c_str());
        return false;
      }
      const size_t eq = a.find('=');
      const std::string name = a.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
      auto it = flags.find(name);
      if (it == flags.end()) {
        std::fprintf(stderr, "bmserve-loadgen: unknown flag --%s (see --help)\n", name.c_str());
        return false;
      }
      std::string value;
      if (eq != std::string::npos) {
        value = a.substr(eq + 1);
      } else if (!it->second.is_bool) {
        if (i + 1 >= argc) {
          std::fprintf(stderr, "bmserve-loadgen: flag --%s needs a value\n", name.c_str());
          return false;
        }
        value = argv[++i];
      }
      if (!it->second.set(value)) {
        std::fprintf(stderr, "bmserve-loadgen: bad value '%s' for flag --%s\n", value.c_str(),
                     name.c_str());
        return false;
      }
    }
    return true;
  }
};

}  // namespace

int main(int argc, char** argv) {
  Cli cli;
  bool help = false;
  if (!cli.Parse(argc, argv, &help)) return 2;
  if (help) {
    std::printf("%s", cli.Usage().c_str());
    return 0;
  }
  const LoadOptions& o = cli.o;
  if (auto s = bms::loadgen::ValidateOptions(o); !s.ok()) {
    std::fprintf(stderr, "bmserve-loadgen: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  if (!cli.quiet) {
    std::printf("bmserve-loadgen: %s %s, %s; prompt %d %s, max_tokens %d -> http://%s:%d\n",
                o.concurrency > 0 ? "concurrency" : "rate",
                o.concurrency > 0 ? std::to_string(o.concurrency).c_str()
                                  : absl::StrFormat("%.2f/s", o.rate).c_str(),
                o.duration_s > 0 ? absl::StrFormat("%.1f s", o.duration_s).c_str()
                                 : absl::StrCat(o.requests, " requests").c_str(),
                o.prompt_len, o.prompt_kind.c_str(), o.max_tokens, o.host.c_str(), o.port);
    std::fflush(stdout);
  }
  bms::loadgen::LoadResult result = bms::loadgen::RunLoad(o);
  bms::loadgen::Summary s = bms::loadgen::Summarize(result.records, o.warmup_s, result.issue_end_s);
  std::printf("%s", bms::loadgen::SummaryText(s).c_str());
  if (!cli.json_path.empty()) {
    nlohmann::json j = bms::loadgen::SummaryJson(s);
    j["label"] = cli.label;
    j["options"] = {{"host", o.host},
                    {"port", o.port},
                    {"mode", o.concurrency > 0 ? "closed" : "open"},
                    {"concurrency", o.concurrency},
                    {"rate", o.rate},
                    {"duration_s", o.duration_s},
                    {"requests", o.requests},
                    {"prompt_len", o.prompt_len},
                    {"prompt_kind", o.prompt_kind},
                    {"max_tokens", o.max_tokens},
                    {"ignore_eos", o.ignore_eos},
                    {"logprobs", o.logprobs},
                    {"temperature", o.temperature},
                    {"warmup_s", o.warmup_s}};
    std::ofstream f(cli.json_path);
    f << j.dump(2) << "\n";
    if (!f.good()) {
      std::fprintf(stderr, "bmserve-loadgen: cannot write --json=%s\n", cli.json_path.c_str());
      return 1;
    }
  }
  return s.failed == 0 && s.completed > 0 ? 0 : 1;
}
