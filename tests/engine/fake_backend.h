// FakeBackend: a deterministic stand-in for the model, for fast engine tests. A slot's "state"
// is a 64-bit hash chained over every token it has seen; the logits after a token are a fixed
// pseudo-random function of that hash. So outputs depend only on the tokens a slot has seen
// (never on batch composition or chunking), exactly the property a real backend must have.
// Not thread-safe, like every Backend.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/backend.h"
#include "engine/rng.h"

namespace bms::testing {

class FakeBackend : public Backend {
 public:
  FakeBackend(int num_slots, int vocab_size) : num_slots_(num_slots) {
    config_.num_layers = 1;
    config_.d_model = 16;
    config_.vocab_size = vocab_size;
    config_.layers = {LayerKind::kMamba};
    state_.assign(num_slots + 1, 0);
  }

  std::string name() const override { return "fake"; }
  const ModelConfig& config() const override { return config_; }
  int num_slots() const override { return num_slots_; }
  size_t state_bytes_per_slot() const override { return sizeof(uint64_t); }

  // Logit of `token` for a slot whose state hash is `h` (what the engine should see).
  static float Logit(uint64_t h, int token) {
    return static_cast<float>(SplitMix64(h ^ (0x1234567ULL * (token + 1))) >> 40) * 0x1.0p-21f;
  }
  static uint64_t Advance(uint64_t h, int32_t token) {
    return SplitMix64(h * 31 + static_cast<uint64_t>(token) + 1);
  }

  absl::Status Forward(const StepInput& input, std::vector<float>* logits) override {
    ++forward_calls;
    for (const SeqChunk& c : input.seqs) {
      if (c.slot < 0 || c.slot > num_slots_) return absl::InvalidArgumentError("bad slot");
      if (c.n_tokens < 1 || c.token_offset < 0 ||
          c.token_offset + c.n_tokens > static_cast<int>(input.tokens.size())) {
        return absl::InvalidArgumentError("bad token span");
      }
      for (int i = 0; i < c.n_tokens; ++i) {
        int32_t t = input.tokens[c.token_offset + i];
        if (t < 0 || t >= config_.vocab_size) return absl::InvalidArgumentError("bad token");
      }
    }
    logits->clear();
    const int vocab = config_.vocab_size;
    for (const SeqChunk& c : input.seqs) {
      uint64_t h = c.first_chunk ? 0 : state_[c.slot];
      for (int i = 0; i < c.n_tokens; ++i) {
        h = Advance(h, input.tokens[c.token_offset + i]);
        bool emit =
            c.logits == LogitsMode::kAll || (c.logits == LogitsMode::kLast && i == c.n_tokens - 1);
        if (emit) {
          for (int v = 0; v < vocab; ++v) logits->push_back(Logit(h, v) + bias_for(v));
        }
      }
      state_[c.slot] = h;
      max_batch_tokens = std::max<int64_t>(max_batch_tokens, input.tokens.size());
    }
    return absl::OkStatus();
  }

  absl::Status CopyState(int src, int dst) override {
    if (src < 0 || src > num_slots_ || dst < 0 || dst > num_slots_) {
      return absl::InvalidArgumentError(absl::StrCat("bad slot ", src, " -> ", dst));
    }
    state_[dst] = state_[src];
    ++copies;
    return absl::OkStatus();
  }

  // Records the engine's limits (start-up work of a real backend: CUDA graph capture).
  absl::Status PrepareForServing(int max_decode_batch, int max_tokens_per_step) override {
    ++prepare_calls;
    prepare_forward_calls = forward_calls;
    prepared_decode_batch = max_decode_batch;
    prepared_tokens = max_tokens_per_step;
    return prepare_status;
  }

  absl::StatusOr<std::vector<float>> ReadState(int slot) override {
    if (slot < 0 || slot > num_slots_) return absl::InvalidArgumentError("bad slot");
    return std::vector<float>{static_cast<float>(state_[slot] >> 40)};
  }

  // A constant added to one token's logit (e.g. to make EOS likely); -1 = none.
  int biased_token = -1;
  float bias = 0;
  int64_t forward_calls = 0;
  int64_t copies = 0;
  int64_t max_batch_tokens = 0;
  int prepare_calls = 0;
  int64_t prepare_forward_calls = -1;  // forward_calls when PrepareForServing ran
  int prepared_decode_batch = 0;
  int prepared_tokens = 0;
  absl::Status prepare_status;  // what PrepareForServing returns

 private:
  float bias_for(int v) const { return v == biased_token ? bias : 0.f; }
  int num_slots_;
  ModelConfig config_;
  std::vector<uint64_t> state_;  // [num_slots + 1]
};

// The tokens a request alone would produce with greedy decoding on the fake model.
inline std::vector<int32_t> FakeGreedy(const std::vector<int32_t>& prompt, int max_tokens,
                                       int vocab, int eos = -1) {
  uint64_t h = 0;
  for (int32_t t : prompt) h = FakeBackend::Advance(h, t);
  std::vector<int32_t> out;
  while (static_cast<int>(out.size()) < max_tokens) {
    int best = 0;
    for (int v = 1; v < vocab; ++v) {
      if (FakeBackend::Logit(h, v) > FakeBackend::Logit(h, best)) best = v;
    }
    out.push_back(best);
    if (best == eos) break;
    h = FakeBackend::Advance(h, best);
  }
  return out;
}

}  // namespace bms::testing
