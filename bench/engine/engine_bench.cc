// EngineBench, the build-independent part (bench/engine/engine_bench.h): flags, the JSON report,
// the summary table and the shared main. The measurements are in engine_bench_cuda.cc (CUDA
// builds) or engine_bench_nocuda.cc (a clear error).
#include "bench/engine/engine_bench.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"

namespace bms {
namespace {

absl::Status ParseInts(const std::string& key, const std::string& s, std::vector<int>* out) {
  out->clear();
  for (absl::string_view p : absl::StrSplit(s, ',', absl::SkipEmpty())) {
    int v = 0;
    if (!absl::SimpleAtoi(p, &v) || v <= 0)
      return absl::InvalidArgumentError(
          absl::StrCat("flag --", key, ": '", p, "' is not a positive integer"));
    out->push_back(v);
  }
  return absl::OkStatus();
}

absl::Status ParseBool(const std::string& key, const std::string& s, bool* out) {
  if (s.empty() || s == "1" || s == "true") {
    *out = true;
  } else if (s == "0" || s == "false") {
    *out = false;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("flag --", key, ": '", s, "' is not true/false/1/0"));
  }
  return absl::OkStatus();
}

bool IsBoolFlag(const std::string& key) {
  return key == "eager" || key == "capacity" || key == "profile_steps" || key == "host_sampling";
}

bool IsKnownFlag(const std::string& key) {
  for (const char* k : {"preset", "presets", "batches", "bf16_state_batches", "prompts",
                        "ttft_prompts", "capacity_contexts", "prefill_chunk", "steps",
                        "gpu_memory_fraction", "seed", "json", "save_weights"})
    if (key == k) return true;
  return IsBoolFlag(key);
}

}  // namespace

std::string EngineBenchUsage(const std::string& program) {
  return absl::StrCat(
      "usage: ", program,
      " [flags]\n"
      "Engine-level GPU benchmark (CUDA backend, random bf16 weights, no HTTP): ceilings, decode,\n"
      "prefill, TTFT, host time per step, capacity; each row with its floor and measured/floor.\n"
      "  --presets=LIST             presets to run (blackmamba-2.8b,blackmamba-1.5b); --preset "
      "too\n"
      "  --batches=LIST             decode batches, fp32 state (1,8,32,64,128,256,1024)\n"
      "  --bf16_state_batches=LIST  decode batches, bf16 state (1024; empty = none)\n"
      "  --prompts=LIST             prefill prompt lengths (512,2048,8192; empty = none)\n"
      "  --ttft_prompts=LIST        TTFT prompt lengths (128,2048; empty = none)\n"
      "  --prefill_chunk=N          tokens per prefill chunk (0 = engine token budget, 2048)\n"
      "  --steps=N                  timed decode steps per batch (20)\n"
      "  --eager                    also decode without CUDA graphs\n"
      "  --capacity=BOOL            capacity measurement (true)\n"
      "  --capacity_contexts=LIST   contexts run in one slot of the capacity backend (1024,65536)\n"
      "  --gpu_memory_fraction=F    capacity backend budget (0.9)\n"
      "  --seed=N                   random weights seed (1234)\n"
      "  --json=PATH                write the full report as JSON\n"
      "  --save_weights=DIR         also write each preset's weights to DIR/<preset> (bf16)\n"
      "  --host_sampling            decode via Forward + host logits copy (not ForwardSampled)\n"
      "  --profile_steps            cudaProfilerStart/Stop around one step per configuration\n");
}

absl::Status ParseEngineBenchArgs(const std::vector<std::string>& args, EngineBenchOptions* o,
                                  bool* help) {
  *help = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      *help = true;
      continue;
    }
    if (a.rfind("--", 0) != 0)
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", a, "'"));
    const size_t eq = a.find('=');
    std::string key =
        absl::StrReplaceAll(a.substr(2, eq == std::string::npos ? a.npos : eq - 2), {{"-", "_"}});
    if (!IsKnownFlag(key)) return absl::InvalidArgumentError(absl::StrCat("unknown flag --", key));
    std::string val;
    if (eq != std::string::npos) {
      val = a.substr(eq + 1);
    } else if (!IsBoolFlag(key)) {
      if (i + 1 >= args.size())
        return absl::InvalidArgumentError(absl::StrCat("flag --", key, " needs a value"));
      val = args[++i];
    }
    absl::Status s;
    if (key == "preset" || key == "presets") {
      o->presets = absl::StrSplit(val, ',', absl::SkipEmpty());
      if (o->presets.empty()) s = absl::InvalidArgumentError("flag --presets is empty");
    } else if (key == "batches") {
      s = ParseInts(key, val, &o->batches);
    } else if (key == "bf16_state_batches") {
      s = ParseInts(key, val, &o->bf16_state_batches);
    } else if (key == "prompts") {
      s = ParseInts(key, val, &o->prompts);
    } else if (key == "ttft_prompts") {
      s = ParseInts(key, val, &o->ttft_prompts);
    } else if (key == "capacity_contexts") {
      s = ParseInts(key, val, &o->capacity_contexts);
    } else if (key == "prefill_chunk") {
      if (!absl::SimpleAtoi(val, &o->prefill_chunk) || o->prefill_chunk < 0)
        s = absl::InvalidArgumentError("flag --prefill_chunk must be an integer >= 0");
    } else if (key == "steps") {
      if (!absl::SimpleAtoi(val, &o->steps) || o->steps < 1)
        s = absl::InvalidArgumentError("flag --steps must be an integer >= 1");
    } else if (key == "gpu_memory_fraction") {
      if (!absl::SimpleAtod(val, &o->gpu_memory_fraction) ||
          !(o->gpu_memory_fraction > 0 && o->gpu_memory_fraction <= 1))
        s = absl::InvalidArgumentError("flag --gpu_memory_fraction must be in (0, 1]");
    } else if (key == "seed") {
      if (!absl::SimpleAtoi(val, &o->seed))
        s = absl::InvalidArgumentError("flag --seed must be a non-negative integer");
    } else if (key == "json") {
      o->json_path = val;
    } else if (key == "save_weights") {
      o->save_weights_dir = val;
    } else if (key == "eager") {
      s = ParseBool(key, val, &o->eager);
    } else if (key == "capacity") {
      s = ParseBool(key, val, &o->capacity);
    } else if (key == "profile_steps") {
      s = ParseBool(key, val, &o->profile_steps);
    } else if (key == "host_sampling") {
      s = ParseBool(key, val, &o->host_sampling);
    } else {
      s = absl::InvalidArgumentError(absl::StrCat("unknown flag --", key));
    }
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

nlohmann::json EngineBenchReport::ToJson() const {
  nlohmann::json j = {{"device", device},
                      {"copy_bytes_per_s", copy_bytes_per_s},
                      {"gemm_bf16_flop_per_s", gemm_flop_per_s},
                      {"rows", nlohmann::json::array()},
                      {"capacity", nlohmann::json::array()},
                      {"errors", errors}};
  for (const EngineBenchRow& r : rows) {
    j["rows"].push_back({{"preset", r.preset},
                         {"kind", r.kind},
                         {"mode", r.mode},
                         {"state", r.state},
                         {"size", r.size},
                         {"ms", r.ms},
                         {"tokens_per_s", r.tokens_per_s},
                         {"host_us", r.host_us},
                         {"host_share", r.ms > 0 ? r.host_us / (r.ms * 1e3) : 0.0},
                         {"floor_ms", r.floor_ms},
                         {"ratio", r.ratio}});
  }
  for (const CapacityResult& c : capacity) {
    j["capacity"].push_back({{"preset", c.preset},
                             {"slots", c.slots},
                             {"ideal_slots", c.ideal_slots},
                             {"state_bytes_per_slot", c.state_bytes_per_slot},
                             {"state_pool_bytes", c.state_pool_bytes},
                             {"weight_bytes", c.weight_bytes},
                             {"used_bytes_before", c.used_before},
                             {"contexts", c.contexts},
                             {"used_bytes", c.used_bytes},
                             {"context_prefill_s", c.context_prefill_s}});
  }
  return j;
}

std::string EngineBenchReport::Table() const {
  std::string t =
      absl::StrFormat("device %s: copy %.0f GB/s (read+write), bf16 GEMM %.0f TFLOP/s\n", device,
                      copy_bytes_per_s / 1e9, gemm_flop_per_s / 1e12);
  absl::StrAppendFormat(&t, "%-16s %-8s %-6s %-5s %6s %10s %12s %9s %6s %9s %7s\n", "preset",
                        "kind", "mode", "state", "size", "ms", "tok/s", "host_us", "host%",
                        "floor_ms", "x_flr");
  for (const EngineBenchRow& r : rows) {
    if (r.kind == "capacity") continue;
    const std::string host =
        r.kind == "decode" ? absl::StrFormat("%6.1f", 100.0 * r.host_us / (r.ms * 1e3)) : "     -";
    absl::StrAppendFormat(&t, "%-16s %-8s %-6s %-5s %6d %10.3f %12.0f %9.1f %s %9.3f %7.2f\n",
                          r.preset, r.kind, r.mode, r.state, r.size, r.ms, r.tokens_per_s,
                          r.host_us, host, r.floor_ms, r.ratio);
  }
  for (const CapacityResult& c : capacity) {
    absl::StrAppendFormat(&t,
                          "%-16s capacity: %d fp32-state slots allocated (ideal %.0f, ratio "
                          "%.3f; %.2f GiB state, %.2f GiB weights)\n",
                          c.preset, c.slots, c.ideal_slots,
                          c.ideal_slots > 0 ? c.slots / c.ideal_slots : 0.0,
                          c.state_pool_bytes / 1073741824.0, c.weight_bytes / 1073741824.0);
    absl::StrAppendFormat(&t, "%-16s   device memory in use: %.3f GiB before", c.preset,
                          c.used_before / 1073741824.0);
    for (size_t i = 0; i < c.contexts.size() && i < c.used_bytes.size(); ++i)
      absl::StrAppendFormat(&t, ", %.3f GiB after a %d-token context",
                            c.used_bytes[i] / 1073741824.0, c.contexts[i]);
    if (c.used_bytes.size() >= 2) {
      const double delta =
          static_cast<double>(c.used_bytes.back()) - static_cast<double>(c.used_bytes.front());
      absl::StrAppendFormat(&t, " (delta %.1f MiB: %s)", delta / 1048576.0,
                            delta == 0 ? "flat" : "NOT flat");
    }
    t += "\n";
  }
  for (const std::string& e : errors) absl::StrAppendFormat(&t, "ERROR: %s\n", e);
  return t;
}

int EngineBenchMain(const std::string& program, const std::vector<std::string>& args) {
  EngineBenchOptions o;
  bool help = false;
  if (absl::Status s = ParseEngineBenchArgs(args, &o, &help); !s.ok()) {
    std::fprintf(stderr, "%s: %s\n%s", program.c_str(), std::string(s.message()).c_str(),
                 EngineBenchUsage(program).c_str());
    return 2;
  }
  if (help) {
    std::printf("%s", EngineBenchUsage(program).c_str());
    return 0;
  }
  absl::StatusOr<EngineBenchReport> r = RunEngineBench(o, stdout);
  if (!r.ok()) {
    std::fprintf(stderr, "%s: %s\n", program.c_str(), r.status().ToString().c_str());
    return 1;
  }
  std::printf("\n%s", r->Table().c_str());
  if (!o.json_path.empty()) {
    std::ofstream out(o.json_path);
    out << r->ToJson().dump(2) << "\n";
    if (!out) {
      std::fprintf(stderr, "%s: cannot write --json=%s\n", program.c_str(), o.json_path.c_str());
      return 1;
    }
  }
  return r->errors.empty() ? 0 : 1;
}

}  // namespace bms
