// libFuzzer target: tokenizer encode/decode. Encodes the input as text (plain and with special
// tokens), checks every id is in the vocabulary, decodes it back, and decodes the input read as
// raw ids through both Decode and IncrementalDecoder, whose results must agree (its contract).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const bms::Tokenizer& tok = bms::fuzz::FuzzTokenizer();
  std::string_view text(reinterpret_cast<const char*>(data), size);
  for (bool special : {false, true}) {
    auto ids = tok.Encode(text, special);
    if (!ids.ok()) continue;
    for (int32_t id : *ids) {
      if (id < 0 || id >= tok.vocab_size()) __builtin_trap();
    }
    std::string back = tok.Decode(*ids);
    (void)back;
  }
  // The bytes as little-endian 16-bit ids (mod vocab).
  std::vector<int32_t> ids;
  for (size_t i = 0; i + 1 < size; i += 2) {
    uint16_t v;
    std::memcpy(&v, data + i, 2);
    ids.push_back(static_cast<int32_t>(v % tok.vocab_size()));
  }
  for (bool skip : {false, true}) {
    bms::IncrementalDecoder dec(tok, skip);
    std::string streamed;
    for (int32_t id : ids) streamed += dec.Add(id);
    streamed += dec.Flush();
    if (streamed != tok.Decode(ids, skip)) __builtin_trap();
  }
  return 0;
}
