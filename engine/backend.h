// Backend: the model's forward pass over one packed batch of sequence chunks, each reading and
// writing its own fixed-size state slot. The CPU backend is the exact fp32 reference; the CUDA
// backend implements the same contract. Backends are not thread-safe: only the engine thread
// (or a single test thread) may call them.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/model_config.h"
#include "engine/sampler.h"

namespace bms {

enum class LogitsMode : uint8_t {
  kNone,  // no logits for this chunk (a prefill chunk that does not end the prompt)
  kLast,  // one row: the logits after the chunk's last token
  kAll,   // n_tokens rows: the logits after every token (tests, echo with logprobs)
};

// One sequence's share of a step.
struct SeqChunk {
  int slot = 0;             // state slot read and written (0 .. num_slots()-1, or padding_slot())
  int token_offset = 0;     // index of the chunk's first token in StepInput::tokens
  int n_tokens = 0;         // >= 1
  bool first_chunk = true;  // state starts from zeros; the slot's old contents are ignored
  LogitsMode logits = LogitsMode::kLast;
};

struct StepInput {
  std::span<const int32_t> tokens;  // [total tokens], chunks packed back to back
  std::span<const SeqChunk> seqs;
};

enum class StateDType { kF32, kBF16 };

struct BackendOptions {
  int num_slots = 64;  // usable state slots; one more is reserved for padding
                       // CUDA backend: 0 = as many as fit in the memory budget
  StateDType state_dtype = StateDType::kF32;
  int num_threads = 0;               // CPU backend: 0 = hardware concurrency
  bool fp32_compute = false;         // CUDA backend: fp32 weights/activations (exactness)
  double gpu_memory_fraction = 0.9;  // CUDA backend: cap for weights + state pool
  // CUDA backend: steps made only of 1-token decodes (kLast logits) replay a CUDA graph captured
  // for the smallest batch bucket >= the batch (engine/cuda_graph.cc); false = always eager.
  bool cuda_graphs = true;
  // CUDA backend: ForwardSampled samples on the device (kernels/cuda/sampling.cu; only ids and
  // requested logprobs are copied back); false = Forward + the host sampler.
  bool device_sampling = true;
  // CUDA backend: largest decode batch whose graph PrepareForServing captures (bounds the graph
  // memory); larger all-decode steps run eagerly. 0 = every bucket up to the engine's largest
  // decode batch.
  int cuda_graph_max_batch = 0;
};

// What the backend holds for CUDA graphs (zeros when it has none). Safe to read from any thread.
struct GraphMemoryStats {
  int graphs = 0;              // executable graphs held now
  int64_t captures = 0;        // graph captures since creation (start-up included)
  int max_batch = 0;           // largest batch bucket with a graph (0: none)
  size_t graph_bytes = 0;      // device memory the graph executables took (measured at capture)
  size_t workspace_bytes = 0;  // activation workspace the graphs run in (shared with eager steps)
  double prepare_seconds = 0;  // PrepareForServing wall time (eager tuning steps + captures)
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual std::string name() const = 0;
  virtual const ModelConfig& config() const = 0;
  virtual int num_slots() const = 0;
  int padding_slot() const { return num_slots(); }
  // Bytes of state one slot holds (conv windows + SSM states of every Mamba layer).
  virtual size_t state_bytes_per_slot() const = 0;

  // Runs every chunk of `input` (prefill chunks and single-token decodes mixed). On success
  // writes the requested logits to `logits` as fp32 rows of vocab_size, in chunk order
  // (kLast: 1 row, kAll: n_tokens rows, kNone: none), and leaves each chunk's slot holding the
  // state after its last token. Invalid slots/tokens give InvalidArgument before any state
  // changes. A slot appears in at most one chunk of a step (the padding slot included);
  // a repeated slot is InvalidArgument.
  virtual absl::Status Forward(const StepInput& input, std::vector<float>* logits) = 0;

  // True when ForwardSampled samples on the device (only ids and requested logprobs come back);
  // false when it is Forward plus the host sampler.
  virtual bool SamplesOnDevice() const { return false; }

  // Forward, then samples one token per logits row: rows[r] is the sampling context of logits
  // row r (so rows.size() must equal the number of kLast chunks; kAll chunks are not allowed
  // here). On success *out holds rows.size() tokens, each the same SampledToken (token and,
  // when requested, logprobs) that SampleToken gives on that row, up to rounding of a CDF
  // boundary for T > 0 draws on the device. The default runs Forward and the host sampler.
  virtual absl::Status ForwardSampled(const StepInput& input, std::span<const SampleContext> rows,
                                      std::vector<SampledToken>* out);

  // Called once by the engine after its warm-up step, before it serves: start-up work that needs
  // a warm device, so no request pays for it. max_decode_batch is the largest number of decode
  // rows one step can hold (min(num_slots, token budget)); max_tokens_per_step the engine's token
  // budget (so the largest step's tokens and logits rows). The CUDA backend sizes its activation
  // workspace for the largest step, then per decode-batch bucket runs one eager step (the grouped
  // GEMM tuner times its shapes) and captures the bucket's graph(s); no later step captures
  // unless the sampling block outgrows its start-up size. The default does nothing.
  virtual absl::Status PrepareForServing(int max_decode_batch, int max_tokens_per_step) {
    (void)max_decode_batch;
    (void)max_tokens_per_step;
    return absl::OkStatus();
  }
  virtual GraphMemoryStats graph_memory() const { return {}; }

  // Copies slot src's whole state into slot dst (forking a prompt for n > 1).
  virtual absl::Status CopyState(int src_slot, int dst_slot) = 0;

  // Test hook: the slot's state as fp32, per Mamba layer in order:
  // conv [d_inner, d_conv - 1] (the last d_conv-1 inputs, oldest first) then ssm [d_inner,
  // d_state].
  virtual absl::StatusOr<std::vector<float>> ReadState(int slot) = 0;

  // Tokens routed to each expert since the backend was created (warm-up included), per MoE
  // layer in model order: [num_moe_layers][n_experts]. Empty when the backend does not count.
  // May synchronize with the device: the engine calls it at most every few hundred ms (metrics).
  virtual std::vector<std::vector<int64_t>> ExpertTokenCounts() { return {}; }
  // Bytes the backend holds for weights, the state pool and scratch (device memory for CUDA);
  // 0 when unknown. Unlike the rest of the interface, safe to call from any thread.
  virtual size_t memory_bytes_in_use() const { return 0; }
};

// ForwardSampled's input check: InvalidArgument unless every chunk is kNone or kLast and n_rows
// equals the number of kLast chunks.
absl::Status CheckSampledInput(const StepInput& input, size_t n_rows);

}  // namespace bms
