// Backend's default ForwardSampled (engine/backend.h): Forward, then the host sampler per row.
#include "engine/backend.h"

#include <span>
#include <vector>

#include "absl/strings/str_cat.h"

namespace bms {

absl::Status CheckSampledInput(const StepInput& input, size_t n_rows) {
  size_t logits_rows = 0;
  for (size_t i = 0; i < input.seqs.size(); ++i) {
    const LogitsMode m = input.seqs[i].logits;
    if (m == LogitsMode::kAll)
      return absl::InvalidArgumentError(
          absl::StrCat("seqs[", i, "].logits = kAll: ForwardSampled takes kNone/kLast chunks"));
    if (m == LogitsMode::kLast) ++logits_rows;
  }
  if (logits_rows != n_rows)
    return absl::InvalidArgumentError(
        absl::StrCat("rows has ", n_rows, " sampling contexts for ", logits_rows, " logits rows"));
  return absl::OkStatus();
}

absl::Status Backend::ForwardSampled(const StepInput& input, std::span<const SampleContext> rows,
                                     std::vector<SampledToken>* out) {
  if (out == nullptr) return absl::InvalidArgumentError("ForwardSampled: out is null");
  if (absl::Status s = CheckSampledInput(input, rows.size()); !s.ok()) return s;
  std::vector<float> logits;
  if (absl::Status s = Forward(input, &logits); !s.ok()) return s;
  const size_t vocab = static_cast<size_t>(config().vocab_size);
  if (logits.size() < rows.size() * vocab)
    return absl::InternalError("backend returned fewer logits rows than asked");
  out->resize(rows.size());
  std::vector<float> scratch;
  for (size_t r = 0; r < rows.size(); ++r) {
    (*out)[r] =
        SampleToken(std::span<const float>(logits.data() + r * vocab, vocab), rows[r], &scratch);
  }
  return absl::OkStatus();
}

}  // namespace bms
