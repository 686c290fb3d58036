// GPT-2's byte-to-unicode mapping, as used by HF's ByteLevel pre-tokenizer and decoder: each byte
// is shown as one printable code point in vocab files ("Ġ" is the space byte). Thread-safe.
#pragma once

#include <string>
#include <string_view>

namespace bms {

// Converts a vocab-file token (UTF-8 of mapped code points) to its raw bytes. When some code point
// is not a mapped byte, the token's own UTF-8 bytes are returned unchanged (what HF's ByteLevel
// decoder does, e.g. for added tokens made of plain spaces).
std::string ByteLevelTokenToBytes(std::string_view token);

}  // namespace bms
