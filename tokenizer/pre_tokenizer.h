// The GPT-2 pre-tokenizer split pattern, hand-coded (no regex engine):
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// It cuts text into the words that BPE then encodes independently. Thread-safe (stateless).
#pragma once

#include <cstddef>
#include <string_view>

namespace bms {

// The end (exclusive byte offset) of the pre-token that starts at `pos` in valid UTF-8 `text`;
// requires pos < text.size(). Successive calls from 0 cover the text exactly, as the regex's
// successive leftmost matches do.
size_t NextGpt2PreToken(std::string_view text, size_t pos);

}  // namespace bms
