#include "server/offline_engine.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/backend_registry.h"
#include "engine/cpu_backend.h"
#include "engine/model_weights.h"
#include "engine/slot_pool.h"
#include "server/log.h"

namespace bms {

void RegisterEngineFlags(FlagSet* f, EngineFlagValues* v) {
  f->String("model", &v->model, "model directory (config.json + safetensors or pytorch_model.bin)");
  f->String("preset", &v->preset,
            "instead of --model: a preset with random weights (tiny, blackmamba-1.5b, "
            "blackmamba-2.8b)");
  f->Int64("weights-seed", &v->weights_seed, "seed of the preset's random weights");
  f->String("tokenizer", &v->tokenizer,
            "tokenizer.json (default: <model>/tokenizer.json, else the byte-level fallback)");
  f->String("backend", &v->backend, "cpu | cuda");
  f->String("state-dtype", &v->state_dtype, "state slot storage: fp32 | bf16");
  f->Int("max-num-seqs", &v->max_num_seqs,
         "state slots (max running sequences); 0 = as many as fit in --state-memory-budget");
  f->Int64("state-memory-budget", &v->state_memory_budget,
           "bytes of state memory when --max-num-seqs is 0");
  f->Int("max-num-batched-tokens", &v->max_num_batched_tokens,
         "token budget per engine step (decode tokens + prefill chunks)");
  f->Int("threads", &v->threads, "CPU backend threads (0 = all cores)");
  f->Bool("fp32-compute", &v->fp32_compute, "CUDA backend: fp32 weights and activations");
  f->Int("cuda-graph-max-batch", &v->cuda_graph_max_batch,
         "CUDA backend: largest decode batch captured as a CUDA graph at start-up (larger decode "
         "steps run eagerly); 0 = every batch up to min(slots, --max-num-batched-tokens)");
}

absl::StatusOr<OfflineEngine> StartOfflineEngine(const EngineFlagValues& v, int min_slots,
                                                 int default_slots, EngineOptions options) {
  auto bad = [](auto... parts) { return absl::InvalidArgumentError(absl::StrCat(parts...)); };
  if (v.model.empty() == v.preset.empty()) return bad("give exactly one of --model or --preset");
  if (v.backend != "cpu" && v.backend != "cuda") {
    return bad("flag --backend must be cpu or cuda, got '", v.backend, "'");
  }
  if (v.state_dtype != "fp32" && v.state_dtype != "bf16") {
    return bad("flag --state-dtype must be fp32 or bf16, got '", v.state_dtype, "'");
  }
  if (v.max_num_seqs < 0) return bad("flag --max-num-seqs must be >= 0");
  if (v.state_memory_budget < 1) return bad("flag --state-memory-budget must be >= 1");
  if (v.max_num_batched_tokens < 1) return bad("flag --max-num-batched-tokens must be >= 1");
  if (v.threads < 0) return bad("flag --threads must be >= 0");
  if (v.cuda_graph_max_batch < 0) return bad("flag --cuda-graph-max-batch must be >= 0");

  ModelWeights weights;
  if (!v.model.empty()) {
    absl::StatusOr<ModelWeights> w = LoadModel(v.model);
    if (!w.ok()) return w.status();
    weights = std::move(*w);
  } else {
    absl::StatusOr<ModelConfig> c = ModelConfig::Preset(v.preset);
    if (!c.ok()) return bad("flag --preset: ", c.status().message());
    weights = MakeRandomWeights(*c, static_cast<uint64_t>(v.weights_seed));
  }
  const ModelConfig config = weights.config;

  OfflineEngine out;
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = LoadTokenizerForModel(v.model, v.tokenizer);
  if (!tok.ok()) return tok.status();
  out.tokenizer = std::move(*tok);

  BackendOptions bo;
  bo.state_dtype = v.state_dtype == "bf16" ? StateDType::kBF16 : StateDType::kF32;
  bo.num_threads = v.threads;
  bo.fp32_compute = v.fp32_compute;
  bo.cuda_graph_max_batch = v.cuda_graph_max_batch;
  const size_t slot_bytes = StateBytesPerSlot(config, bo.state_dtype);
  const int wanted = v.max_num_seqs == 0 && default_slots > 0
                         ? default_slots
                         : ChooseNumSlots(v.max_num_seqs, v.state_memory_budget, slot_bytes);
  bo.num_slots = std::max(wanted, min_slots);
  absl::StatusOr<std::unique_ptr<Backend>> backend = CreateBackend(v.backend, weights, bo);
  if (!backend.ok()) return backend.status();
  weights = ModelWeights();  // the backend converted what it needs
  Log(LogLevel::kInfo, "state slots",
      {{"backend", (*backend)->name()},
       {"slots", (*backend)->num_slots()},
       {"state_bytes_per_slot", (*backend)->state_bytes_per_slot()},
       {"state_bytes_total",
        (*backend)->state_bytes_per_slot() * static_cast<size_t>((*backend)->num_slots() + 1)},
       {"state_dtype", v.state_dtype}});
  out.num_slots = (*backend)->num_slots();

  options.max_num_batched_tokens = v.max_num_batched_tokens;
  const int32_t eos = out.tokenizer->eos_token_id();
  options.eos_token_id = eos >= 0 && eos < config.vocab_size ? eos : -1;
  absl::StatusOr<std::unique_ptr<Engine>> engine =
      Engine::Create(std::move(*backend), std::move(options));
  if (!engine.ok()) return engine.status();
  if (absl::Status s = (*engine)->Start(); !s.ok()) return s;
  out.engine = std::move(*engine);
  return out;
}

}  // namespace bms
