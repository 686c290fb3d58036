// Host side of device sampling (engine/cuda_sampling.cc): packs the SampleContexts of a step's
// logits rows into the kernel's per-row params and sparse entry list (kernels/cuda/sampling.h).
// Used by the CUDA backend and the GPU sampling test. CUDA-free; pure function.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "engine/sampler.h"
#include "kernels/cuda/sampling.h"

namespace bms {

// One step's packed sampling input. Layout on the device, in units of sizeof(SampleEntry):
// rows [padded_rows] then entries; the entry ranges in rows count from the block's start (the
// first entry is at unit padded_rows * kSampleRowUnits), so one contiguous copy carries both.
struct PackedSampling {
  std::vector<cuda::SampleRowParams> rows;  // [padded_rows]; rows past the contexts inactive
  std::vector<cuda::SampleEntry> entries;   // logit_bias (stably sorted by token), masked ids,
                                            // (token, count) of generated tokens
  bool any_logprobs = false;                // some row asked for logprobs
};

inline constexpr size_t kSampleRowUnits = sizeof(cuda::SampleRowParams) / sizeof(cuda::SampleEntry);
static_assert(sizeof(cuda::SampleRowParams) % sizeof(cuda::SampleEntry) == 0);

// Packs `rows` (each with non-null params), padded with inactive rows to padded_rows
// (>= rows.size()). The uniform of a T > 0 row is CounterUniform(seed, choice, num_generated);
// masked ids are set only while num_generated < min_tokens; counts only when a penalty is on.
void PackSampleRows(std::span<const SampleContext> rows, int padded_rows, int vocab_size,
                    PackedSampling* out);

}  // namespace bms
