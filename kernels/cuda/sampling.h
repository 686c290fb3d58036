// Device-side sampling: the pipeline of engine/sampler.h (logit_bias, min_tokens masking,
// repetition / frequency / presence penalties, logprobs + top-N, greedy or temperature with
// min_p -> top_k -> top_p filters and a counter-based draw) on a batch of fp32 logits rows, one
// thread block per row. Only ids and requested logprobs need to leave the device.
//
// Exactness: greedy equals the host's argmax (first index on ties) bit for bit; logprobs use the
// host's double log-sum-exp; draws use the same uniform (computed on the host with
// CounterUniform and passed in) and the same orders and tie rules, with probability masses summed
// in 2^-44 fixed point, so a draw differs from the host only when the uniform falls within
// rounding of a CDF boundary. No full-vocabulary sort: top-k / top-p / the draw find their
// element by a radix search over the logits' order keys with per-bin counts or masses.
// Deterministic: integer atomics and fixed-order reductions only, so a row's result never
// depends on the other rows of the batch.
//
// This header is CUDA-free (streams are the opaque CUstream_st*). Not thread-safe per stream.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/cuda/ops.h"

namespace bms::cuda {

inline constexpr int kMaxTopLogprobs = 20;  // the API's maximum `logprobs`

// One sparse (token, value) entry: a logit bias, a masked id (value unused) or a generated
// token's count (value = count as float).
struct SampleEntry {
  int32_t token = 0;
  float value = 0.f;
};

// Per-row sampling parameters (plain data; the host packs an array of these per step).
struct SampleRowParams {
  float temperature = 0.f;  // 0 = greedy
  float top_p = 1.f;
  int32_t top_k = 0;  // <= 0 disables
  float min_p = 0.f;
  float repetition_penalty = 1.f;
  float frequency_penalty = 0.f;
  float presence_penalty = 0.f;
  int32_t logprobs = -1;  // -1: none; 0..kMaxTopLogprobs
  double uniform = 0.0;   // CounterUniform(seed, choice, position) for T > 0
  // Ranges into SampleParams::entries, applied in this order:
  int32_t bias_begin = 0, bias_end = 0;    // logit_bias, stably sorted by token (x += value)
  int32_t mask_begin = 0, mask_end = 0;    // ids set to -inf (min_tokens not reached yet)
  int32_t count_begin = 0, count_end = 0;  // (token, count), one entry per distinct token
  int32_t active = 1;                      // 0: padding row, nothing is read or written
  int32_t reserved = 0;
};

// Result of a row that asked for logprobs.
struct SampleRowLogprobs {
  int32_t token = 0;
  float logprob = 0.f;  // log_softmax(processed)[token]
  int32_t n_top = 0;    // = min(logprobs, vocab_size)
  int32_t reserved = 0;
  int32_t top_ids[kMaxTopLogprobs] = {};  // most likely first, lower id first on ties
  float top_logprobs[kMaxTopLogprobs] = {};
};

struct SampleParams {
  int n_rows = 0;
  int vocab_size = 0;
  float* logits = nullptr;                // [n_rows, vocab_size]; processed IN PLACE
  const SampleRowParams* rows = nullptr;  // [n_rows]
  const SampleEntry* entries = nullptr;   // [*] (may be null when no row has entries)
  int32_t* tokens = nullptr;              // [n_rows] out: the sampled id of each active row
  SampleRowLogprobs* logprobs = nullptr;  // [n_rows] out for rows with logprobs >= 0 (may be
                                          // null when no row asks)
};

// Enqueues one block per row. InvalidArgument for bad sizes or missing pointers. Entries with a
// token outside [0, vocab_size) are ignored (as the host does).
absl::Status SampleRows(const SampleParams& p, Stream stream);

}  // namespace bms::cuda
