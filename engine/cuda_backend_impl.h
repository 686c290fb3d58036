// CudaBackendImpl: the class behind CreateCudaBackend (engine/cuda_backend.h), shared by
// engine/cuda_backend.cc (start-up: weight upload, state pool, state access) and
// engine/cuda_forward.cc (Forward). Internal to the CUDA backend; CUDA-free (device memory is
// reached through kernels/cuda/device_memory.h). Not thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/cuda_backend.h"
#include "engine/cuda_sampling.h"
#include "kernels/cuda/device_memory.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/sampling.h"

namespace bms {

inline constexpr size_t kGemmWorkspaceBytes = 32 << 20;  // cuBLASLt workspace
// Sampling block reserved by PrepareForServing: sparse entries per state slot, and a bound.
inline constexpr size_t kSamplingEntriesPerRow = 64;
inline constexpr size_t kMaxReservedSamplingEntries = size_t{1} << 22;

class CudaBackendImpl : public CudaBackend {
 public:
  static absl::StatusOr<std::unique_ptr<CudaBackendImpl>> Create(const ModelWeights& weights,
                                                                 const BackendOptions& options);
  ~CudaBackendImpl() override;

  std::string name() const override { return "cuda"; }
  const ModelConfig& config() const override { return config_; }
  int num_slots() const override { return num_slots_; }
  size_t state_bytes_per_slot() const override;
  absl::Status Forward(const StepInput& input, std::vector<float>* logits) override;
  // Device sampling (engine/cuda_sampling.cc): the sampling kernel runs right after the head
  // GEMM (inside the decode graph for all-decode steps); only ids and logprobs are copied back.
  bool SamplesOnDevice() const override { return device_sampling_; }
  absl::Status ForwardSampled(const StepInput& input, std::span<const SampleContext> rows,
                              std::vector<SampledToken>* out) override;
  // Sizes the workspace for the engine's largest step, then per decode bucket (up to
  // min(max_decode_batch, cuda_graph_max_batch)) one eager tuning step and the capture of its
  // graph(s) (engine/cuda_graph.cc); logs the count, time and memory.
  absl::Status PrepareForServing(int max_decode_batch, int max_tokens_per_step) override;
  GraphMemoryStats graph_memory() const override;
  absl::Status CopyState(int src_slot, int dst_slot) override;
  absl::StatusOr<std::vector<float>> ReadState(int slot) override;
  absl::StatusOr<std::vector<int64_t>> ReadRoutingCounts() override;
  // ReadRoutingCounts as [num_moe_layers][n_experts]; empty if the device read fails.
  std::vector<std::vector<int64_t>> ExpertTokenCounts() override;
  // Weights + state pool + activations + GEMM workspace + step metadata (any thread).
  size_t memory_bytes_in_use() const override { return bytes_in_use_.load(); }
  size_t weight_bytes() const override { return weights_.size(); }
  size_t state_pool_bytes() const override { return state_.size(); }
  double last_step_host_us() const override { return last_step_host_us_; }
  int graphs_captured() const override;
  int64_t graph_replays() const override;
  int64_t graph_captures() const override;

 private:
  // Device pointers into weights_ (compute dtype `W`, fp32 `F`); null = absent bias.
  struct MambaLayer {
    const void* in_proj = nullptr;         // W [2*d_inner, d_model]
    const float* in_proj_bias = nullptr;   // F [2*d_inner]
    const float* conv_weight = nullptr;    // F [d_inner, d_conv]
    const float* conv_bias = nullptr;      // F [d_inner]
    const void* x_proj = nullptr;          // W [dt_rank + 2*d_state, d_inner]
    const void* dt_proj = nullptr;         // W [d_inner, dt_rank]
    const float* dt_bias = nullptr;        // F [d_inner]
    const float* A = nullptr;              // F [d_inner, d_state] = -exp(A_log)
    const float* D = nullptr;              // F [d_inner]
    const void* out_proj = nullptr;        // W [d_model, d_inner]
    const float* out_proj_bias = nullptr;  // F [d_model]
    void* conv_state = nullptr;            // [num_slots + 1, d_inner, d_conv - 1]
    void* ssm_state = nullptr;             // [num_slots + 1, d_inner, d_state]
  };
  struct MlpLayer {
    int n_experts = 1;                   // 1 for a dense layer
    int moe_index = -1;                  // index among MoE layers (routing counters)
    const float* router = nullptr;       // F [n_experts, d_model] (routing decided in fp32)
    const float* router_bias = nullptr;  // F [n_experts]
    const void* fc1 = nullptr;           // W [n_experts, fc1_rows, d_model]
    const float* fc1_bias = nullptr;     // F [n_experts, fc1_rows]
    const void* fc2 = nullptr;           // W [n_experts, d_model, f]
    const float* fc2_bias = nullptr;     // F [n_experts, d_model]
  };
  struct Layer {
    LayerKind kind = LayerKind::kMamba;
    const float* norm = nullptr;  // F [d_model]
    MambaLayer mamba;
    MlpLayer mlp;
  };
  // Per-step activation buffers, sized for `tokens` rows and `logit_rows` logits rows.
  struct Workspace {
    int tokens = 0;
    int logit_rows = 0;
    cuda::DeviceBuffer buffer;
    void* h = nullptr;                // [T, d_model]
    float* residual = nullptr;        // [T, d_model]
    void* x = nullptr;                // [T, d_model]
    float* x_f32 = nullptr;           // [T, d_model] fp32 copy of x: the router input
    void* xz = nullptr;               // [T, 2*d_inner]
    void* xc = nullptr;               // [T, d_inner]
    void* dbc = nullptr;              // [T, dt_rank + 2*d_state]
    void* dt = nullptr;               // [T, d_inner]
    float* mamba_partials = nullptr;  // decode x_proj partial sums (MambaDecodeConvXProj)
    void* y = nullptr;                // [T, d_inner]
    float* router_logits = nullptr;   // [T, n_experts]
    int32_t* expert = nullptr;        // [T]
    float* scale = nullptr;           // [T]
    int32_t* offsets = nullptr;       // [n_experts + 1]
    int32_t* permutation = nullptr;   // [T]
    unsigned int* ticket = nullptr;   // [1] last-block ticket of AddRmsNormRoute (kept zero)
    void* act = nullptr;              // [T, f]
    void* head_in = nullptr;          // [R, d_model]
    float* logits = nullptr;          // [R, vocab_size]
  };

  CudaBackendImpl(const ModelConfig& config, const BackendOptions& options);
  absl::Status Init(const ModelWeights& weights);
  absl::Status UploadWeights(const ModelWeights& weights, bool dry_run, size_t* bytes);
  // BackendOptions::num_slots == 0: sets num_slots_ to as many slots as fit in `cap` bytes next
  // to the weights and an activation reserve (engine/cuda_backend.cc); logs the count and bytes.
  absl::Status SizeSlotsFromBudget(double cap, size_t weight_bytes);
  absl::Status ValidateInput(const StepInput& input) const;
  absl::Status EnsureWorkspace(int tokens, int logit_rows);
  absl::Status EnsureMeta(size_t bytes);
  // Enqueues embedding .. head GEMM for T tokens in S chunks with R logits rows, reading the
  // step metadata through the d_* pointers; no copies, no sync (graph-capturable).
  absl::Status EnqueueStep(int T, int S, int R);
  // CUDA graphs for all-decode steps (engine/cuda_graph.cc). Returns false when the step is not
  // eligible or graphs are unavailable (then Forward runs eagerly).
  absl::StatusOr<bool> ForwardDecodeGraph(const StepInput& input, std::vector<float>* logits);
  // The replay part of ForwardDecodeGraph without the copy back or sync. With sample_rows (one
  // context per chunk), packs them (PackSampling, padded to the bucket) and replays the graph
  // that also runs the sampling kernel.
  absl::StatusOr<bool> LaunchDecodeGraph(const StepInput& input,
                                         const std::span<const SampleContext>* sample_rows);
  // Makes sure bucket B's graph (with the sampling kernel when `sampled`; the sampling block must
  // exist then) is captured: one eager all-padding run of the step first (kernel loading, tuner
  // timing), then capture, instantiate, upload. False when graphs are off, B is above the graph
  // cap, or capture failed (graphs are then turned off, with a warning).
  absl::StatusOr<bool> EnsureDecodeGraph(int B, bool sampled);
  // Writes the graph metadata block for bucket B (rows >= input's chunk count, or every row
  // when input is null, are padding) and enqueues its H2D copy.
  absl::Status FillDecodeGraphMetadata(const StepInput* input, int B);
  // Largest batch with a graph: PrepareForServing's cap, else BackendOptions::
  // cuda_graph_max_batch (0: num_slots) capped at num_slots. GraphBuckets: the buckets up to it.
  int GraphBatchCap() const;
  std::vector<int> GraphBuckets() const;
  void UpdateGraphStats();
  // Validates nothing; packs the step's metadata (one H2D copy) and enqueues EnqueueStep.
  // *n_logits_rows = the number of logits rows the step writes to ws_.logits.
  absl::Status EnqueueEager(const StepInput& input, int* n_logits_rows);
  // Device sampling (engine/cuda_sampling.cc). PackSampling writes the per-row params of `rows`
  // (rows [rows.size(), padded_rows) inactive) and the sparse entries to the pinned block and
  // enqueues its one H2D copy; growing the entry capacity drops the sampled decode graphs.
  absl::Status PackSampling(std::span<const SampleContext> rows, int padded_rows);
  absl::Status EnqueueSampling(int n_rows);
  // Copies back ids (and logprobs when a row asked), syncs, and fills *out for rows.size() rows.
  absl::Status FinishSampling(std::span<const SampleContext> rows, std::vector<SampledToken>* out);
  void FreeSampling();
  absl::Status MambaForward(const MambaLayer& l, int T, int S);
  // routed: AddRmsNormRoute already wrote ws_.expert/scale/offsets/permutation for this layer.
  absl::Status MlpForward(const MlpLayer& l, int T, bool routed);
  cuda::StateStorage state_storage() const;
  void UpdateBytesInUse();

  ModelConfig config_;
  int num_slots_ = 0;
  StateDType state_dtype_ = StateDType::kF32;
  cuda::DType dtype_ = cuda::DType::kBF16;
  double memory_fraction_ = 0.9;
  cuda::Stream stream_ = nullptr;
  std::unique_ptr<cuda::GemmRunner> gemm_;
  // Grouped expert GEMM variant per shape class, timed on first use (BMS_GROUPED_GEMM_TUNE=0:
  // the fixed heuristic); one tuner shared by every backend of the process.
  static cuda::GroupedGemmTuner* GroupedTuner();

  cuda::DeviceBuffer weights_;
  const void* embedding_ = nullptr;    // W [vocab_size, d_model] (tied head)
  const float* final_norm_ = nullptr;  // F [d_model]
  const float* final_bias_ = nullptr;  // F [d_model]
  std::vector<Layer> layers_;
  cuda::DeviceBuffer state_;           // every Mamba layer's conv + ssm pools
  cuda::DeviceBuffer routing_counts_;  // u64 [num_moe_layers, n_experts]

  Workspace ws_;
  // Step metadata: one pinned host buffer mirrored by one device buffer (one H2D copy a step).
  void* meta_host_ = nullptr;
  cuda::DeviceBuffer meta_dev_;
  size_t meta_capacity_ = 0;
  // Device pointers into meta_dev_ for the current step.
  const int32_t* d_tokens_ = nullptr;         // [T]
  const int32_t* d_cu_seqlens_ = nullptr;     // [S + 1]
  const int32_t* d_slots_ = nullptr;          // [S]
  const int32_t* d_rows_ = nullptr;           // [R]
  const int32_t* d_dense_offsets_ = nullptr;  // [2] = {0, T}
  const uint8_t* d_has_state_ = nullptr;      // [S]
  const int32_t* d_n_counted_ = nullptr;      // [1] rows < this count in routing (null: all)
  std::atomic<size_t> bytes_in_use_{0};       // memory_bytes_in_use(), read from any thread

  // Decode CUDA graphs (engine/cuda_graph.cc): per-bucket executable graphs and their own fixed
  // metadata block. The destructor drops them first.
  struct DecodeGraphs;
  struct DecodeGraphsDeleter {
    void operator()(DecodeGraphs* g) const;
  };
  bool use_graphs_ = true;
  int cuda_graph_max_batch_ = 0;  // BackendOptions::cuda_graph_max_batch
  int graph_cap_ = 0;             // PrepareForServing's largest bucket (0: not prepared)
  // graph_memory(), readable from any thread.
  std::atomic<int> graph_count_{0};
  std::atomic<int> graph_max_b_{0};
  std::atomic<int64_t> graph_captures_total_{0};
  std::atomic<size_t> graph_bytes_{0};
  std::atomic<size_t> workspace_bytes_{0};
  std::atomic<double> prepare_seconds_{0};
  // BackendOptions::device_sampling
  bool device_sampling_ = true;
  std::chrono::steady_clock::time_point step_start_;  // entry of the current Forward
  double last_step_host_us_ = 0;
  void MarkEnqueued() {
    last_step_host_us_ =
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - step_start_)
            .count();
  }
  std::unique_ptr<DecodeGraphs, DecodeGraphsDeleter> graphs_;

  // Device sampling buffers (engine/cuda_sampling.cc). Input block, pinned and mirrored on the
  // device: cuda::SampleRowParams [num_slots + 1] then cuda::SampleEntry [entry_capacity].
  // Output block: int32 tokens [num_slots + 1] then cuda::SampleRowLogprobs [num_slots + 1].
  struct SamplingBuffers {
    int max_rows = 0;
    size_t entry_capacity = 0;
    size_t min_entries = 4096;  // entries of the first allocation (PrepareForServing raises it)
    void* in_host = nullptr;
    cuda::DeviceBuffer in_dev;
    void* out_host = nullptr;
    cuda::DeviceBuffer out_dev;
    size_t in_bytes = 0;        // bytes of the current step's input block
    bool any_logprobs = false;  // some row of the current step asked for logprobs
    PackedSampling packed;      // scratch (engine/cuda_sampling.h)
    size_t out_block_bytes() const {
      return max_rows * (sizeof(int32_t) + sizeof(cuda::SampleRowLogprobs));
    }
  };
  SamplingBuffers sampling_;
};

}  // namespace bms
