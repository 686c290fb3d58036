// CpuBackend: the exact fp32 reference implementation of Backend, composed from the reference
// ops in kernels/ref/ (OpenBLAS GEMMs, a small thread pool for everything else). It is the oracle
// the CUDA backend is tested against, and a usable (slow) backend on machines without a GPU.
//
// Weights are converted once to fp32 at creation (MoE experts stacked per layer). State: one
// pool per Mamba layer, conv [num_slots + 1, d_inner, d_conv - 1] and ssm
// [num_slots + 1, d_inner, d_state] (layout documented in kernels/ref/ops.h), stored in fp32 or
// bf16 per BackendOptions::state_dtype; the extra slot is the padding slot.
//
// Forward: chunks are reordered internally so prefill chunks (first chunks and multi-token
// continuations) run through the varlen conv/scan and single-token continuations through the
// decode updates; results are independent of that split and of the thread count. A slot may
// appear at most once per Forward (the padding slot included).
//
// Not thread-safe (see Backend): one thread calls it at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend.h"
#include "engine/model_weights.h"
#include "kernels/ref/ops.h"
#include "kernels/ref/thread_pool.h"

namespace bms {

// Bytes of state one slot holds: every Mamba layer's conv window and SSM state.
size_t StateBytesPerSlot(const ModelConfig& config, StateDType dtype);

class CpuBackend : public Backend {
 public:
  // Converts `weights` to fp32 and allocates the state pool (zeros). InvalidArgument when a
  // tensor's size does not match the config (naming it) or options are out of range
  // (num_slots < 1, num_threads < 0).
  static absl::StatusOr<std::unique_ptr<CpuBackend>> Create(const ModelWeights& weights,
                                                            const BackendOptions& options);

  std::string name() const override { return "cpu"; }
  const ModelConfig& config() const override { return config_; }
  int num_slots() const override { return num_slots_; }
  size_t state_bytes_per_slot() const override;

  absl::Status Forward(const StepInput& input, std::vector<float>* logits) override;
  // Both slots in [0, num_slots()] (the padding slot included); src == dst is a no-op.
  absl::Status CopyState(int src_slot, int dst_slot) override;
  // slot in [0, num_slots()].
  absl::StatusOr<std::vector<float>> ReadState(int slot) override;
  // Tokens routed per expert of each MoE layer since creation (warm-up included).
  std::vector<std::vector<int64_t>> ExpertTokenCounts() override;
  // Weights and the state pool (fixed at creation; scratch activations not counted).
  size_t memory_bytes_in_use() const override { return memory_bytes_; }

 private:
  struct MambaLayer {
    std::vector<float> in_proj, in_proj_bias;    // [2*d_inner, d_model], [2*d_inner] or empty
    std::vector<float> conv_weight, conv_bias;   // [d_inner, d_conv], [d_inner]
    std::vector<float> x_proj;                   // [dt_rank + 2*d_state, d_inner]
    std::vector<float> dt_proj, dt_proj_bias;    // [d_inner, dt_rank], [d_inner]
    std::vector<float> A;                        // [d_inner, d_state] = -exp(A_log)
    std::vector<float> D;                        // [d_inner]
    std::vector<float> out_proj, out_proj_bias;  // [d_model, d_inner], [d_model] or empty
    // State pool (one of the two vectors is used, per state dtype).
    std::vector<float> conv_f32, ssm_f32;  // [n_slots, d_inner, d_conv-1] / [.., d_state]
    std::vector<uint16_t> conv_bf16, ssm_bf16;
    void* conv_state() { return conv_f32.empty() ? (void*)conv_bf16.data() : conv_f32.data(); }
    void* ssm_state() { return ssm_f32.empty() ? (void*)ssm_bf16.data() : ssm_f32.data(); }
  };
  struct MlpLayer {  // dense MLP, or a MoE layer's experts stacked along a leading [n_experts]
    std::vector<float> fc1, fc1_bias, fc2, fc2_bias;
    std::vector<float> router, router_bias;  // MoE only: [n_experts, d_model], [n_experts]
    std::vector<int64_t> routed_tokens;      // MoE only: [n_experts] tokens routed (metrics)
  };
  struct Layer {
    LayerKind kind = LayerKind::kMamba;
    std::vector<float> norm;  // [d_model]
    MambaLayer mamba;
    MlpLayer mlp;
  };

  CpuBackend(const ModelConfig& config, const BackendOptions& options);
  absl::Status LoadWeights(const ModelWeights& weights);
  absl::Status ValidateInput(const StepInput& input) const;
  absl::Status MambaForward(MambaLayer& layer, const float* x, float* out);
  absl::Status MoeForward(MlpLayer& layer, const float* x, float* out);
  ref::StateStorage state_storage() const;
  size_t WeightAndStateBytes() const;

  ModelConfig config_;
  int num_slots_ = 0;
  size_t memory_bytes_ = 0;  // weights + state pool, set by Create
  StateDType state_dtype_ = StateDType::kF32;
  std::unique_ptr<ref::ThreadPool> pool_;
  ref::MlpShape mlp_shape_;

  std::vector<float> embedding_;  // [vocab_size, d_model]
  std::vector<Layer> layers_;
  std::vector<float> final_norm_, final_norm_bias_;  // [d_model]

  // The current step's batch, in internal row order (prefill chunks first, then decodes).
  struct Batch {
    int n_tokens = 0;                 // total rows
    int n_prefill_tokens = 0;         // rows [0, n_prefill_tokens) belong to prefill chunks
    std::vector<int32_t> cu_seqlens;  // [n_prefill + 1]
    std::vector<int32_t> prefill_slots;
    std::vector<uint8_t> prefill_has_state;
    std::vector<int32_t> decode_slots;  // one row each, after the prefill rows
  } batch_;
  // Activations of the current step (reused between steps).
  std::vector<float> xz_, xc_, dbc_, delta_, y_;  // Mamba scratch
  std::vector<int32_t> expert_, offsets_, perm_;
  std::vector<float> scale_;
};

}  // namespace bms
