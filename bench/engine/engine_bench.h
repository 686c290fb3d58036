// Engine-level GPU benchmark (issue 8, "bmserve bench"): the measurements behind both the
// gRPC-free `bms_bench` binary (run on the device) and the `bmserve bench` command. For each
// preset with random bf16 weights it measures its own ceilings (device copy bandwidth, cuBLASLt
// bf16 GEMM rate), then decode ms/step and tokens/s per batch (CUDA-graph path; eager optional;
// fp32 and bf16 state), prefill tokens/s per prompt length (prompts longer than the engine's
// prefill chunk run as consecutive chunks), TTFT (prefill + first greedy token), the host time
// per decode step and its share, and capacity (state slots sized from the memory budget and
// allocated, device memory in use after a short and a long context in one slot). Every row
// carries its floor (bytes over bandwidth or FLOPs over the GEMM rate) and measured / floor.
// This interface is CUDA-free and gRPC-free; in a build without CUDA RunEngineBench returns
// FailedPrecondition.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace bms {

struct EngineBenchOptions {
  std::vector<std::string> presets = {"blackmamba-2.8b", "blackmamba-1.5b"};
  std::vector<int> batches = {1, 8, 32, 64, 128, 256, 1024};  // decode, fp32 state
  std::vector<int> bf16_state_batches = {1024};               // decode, bf16 state
  std::vector<int> prompts = {512, 2048, 8192};               // prefill, one prompt
  std::vector<int> ttft_prompts = {128, 2048};                // prefill + first token
  int prefill_chunk = 0;  // tokens per prefill chunk; 0 = the engine's token budget (2048)
  int steps = 20;         // timed decode steps per batch (half, at least 5, for batch >= 512)
  bool eager = false;     // also decode rows without CUDA graphs
  bool capacity = true;   // the capacity measurement (allocates most of the GPU)
  std::vector<int> capacity_contexts = {1024, 65536};  // context lengths run in one slot
  double gpu_memory_fraction = 0.9;                    // capacity backend's budget
  uint64_t seed = 1234;                                // MakeRandomWeights seed
  bool profile_steps = false;    // ProfilerStart/Stop around one step per configuration (ncu)
  std::string json_path;         // write the report here ("" = no file)
  std::string save_weights_dir;  // write each preset's weights to DIR/<preset> (safetensors bf16)
  bool host_sampling = false;    // decode through Forward + host logits (not ForwardSampled)
};

// Parses `--key=value` / `--key value` flags (dashes or underscores in keys). *help is set for
// --help. Errors name the flag.
absl::Status ParseEngineBenchArgs(const std::vector<std::string>& args, EngineBenchOptions* o,
                                  bool* help);
std::string EngineBenchUsage(const std::string& program);

// One measured row. kind: "decode", "prefill", "ttft", "capacity".
struct EngineBenchRow {
  std::string preset, kind, mode, state;
  int size = 0;   // batch, prompt tokens, or slots (capacity)
  double ms = 0;  // median time (decode: per step)
  double tokens_per_s = 0;
  double host_us = 0;   // host time per step before the GPU wait (decode)
  double floor_ms = 0;  // physical floor for the same work
  double ratio = 0;     // ms / floor_ms (capacity: slots / ideal slots)
};

struct CapacityResult {
  std::string preset;
  int slots = 0;           // slots the backend sized and allocated
  double ideal_slots = 0;  // (fraction * total - weights) / bytes per slot
  size_t state_bytes_per_slot = 0;
  size_t state_pool_bytes = 0;
  size_t weight_bytes = 0;
  std::vector<int> contexts;              // tokens prefilled in one slot (then 4 decode steps)
  std::vector<size_t> used_bytes;         // device bytes in use after each context (cudaMemGetInfo)
  size_t used_before = 0;                 // after the backend's warm-up chunk, before the contexts
  std::vector<double> context_prefill_s;  // wall time of each context's chunked prefill
};

struct EngineBenchReport {
  std::string device;
  double copy_bytes_per_s = 0;
  double gemm_flop_per_s = 0;
  std::vector<EngineBenchRow> rows;
  std::vector<CapacityResult> capacity;
  std::vector<std::string> errors;  // measurements that failed (the others still ran)
  nlohmann::json ToJson() const;
  std::string Table() const;  // the human-readable summary
};

// Runs everything `o` asks for, logging progress lines to `log`. FailedPrecondition without a
// GPU (or in a build without CUDA); a measurement that fails later is recorded in `errors` and
// the rest still run.
absl::StatusOr<EngineBenchReport> RunEngineBench(const EngineBenchOptions& o, std::FILE* log);

// Parse + run + print the table + write --json: the body of both `bms_bench` and `bmserve bench`.
// Returns the process exit code (2 for bad flags).
int EngineBenchMain(const std::string& program, const std::vector<std::string>& args);

}  // namespace bms
