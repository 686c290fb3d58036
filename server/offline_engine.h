// Offline engine set-up shared by `bmserve generate` and `bmserve bench-engine`: the model /
// backend / slot flags, loading the weights (a model directory or a named preset with random
// weights), the tokenizer, and a started Engine. Both commands run through this one path.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/engine.h"
#include "server/flags.h"
#include "tokenizer/tokenizer.h"

namespace bms {

struct EngineFlagValues {
  std::string model;            // model directory (config.json + weights)
  std::string preset;           // or a preset name with random weights (tiny, blackmamba-2.8b...)
  int64_t weights_seed = 0;     // seed of the preset's random weights
  std::string tokenizer;        // tokenizer.json path; default <model>/tokenizer.json or bytes
  std::string backend = "cpu";  // cpu | cuda
  std::string state_dtype = "fp32";
  int max_num_seqs = 0;  // state slots; 0 = as many as fit in state_memory_budget
  int64_t state_memory_budget = int64_t{4} << 30;
  int max_num_batched_tokens = 2048;
  int threads = 0;               // CPU backend threads (0 = all cores)
  bool fp32_compute = false;     // CUDA backend: fp32 weights and activations
  int cuda_graph_max_batch = 0;  // CUDA backend: largest decode batch with a graph; 0 = all
};

// Registers --model, --preset, --weights-seed, --tokenizer, --backend, --state-dtype,
// --max-num-seqs, --state-memory-budget, --max-num-batched-tokens, --threads, --fp32-compute,
// --cuda-graph-max-batch.
void RegisterEngineFlags(FlagSet* flags, EngineFlagValues* values);

struct OfflineEngine {
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<Engine> engine;  // started and ready
  int num_slots = 0;
};

// Validates the flags (InvalidArgument naming the flag), loads weights and tokenizer, creates
// the backend and a started engine. Slots: --max-num-seqs when set, else `default_slots` when
// > 0, else as many as fit in --state-memory-budget; never fewer than `min_slots`. `options`
// supplies the engine options other than the token budget and EOS (from the flags / tokenizer).
absl::StatusOr<OfflineEngine> StartOfflineEngine(const EngineFlagValues& values, int min_slots,
                                                 int default_slots, EngineOptions options);

}  // namespace bms
