// Shared set-up of the libFuzzer targets: a ServerContext for request parsing (byte-fallback
// tokenizer by default, or the tokenizer.json named by BMS_FUZZ_TOKENIZER), built once.
#pragma once

#include <cstdlib>
#include <memory>

#include "server/server_context.h"
#include "tokenizer/tokenizer.h"

namespace bms::fuzz {

inline const Tokenizer& FuzzTokenizer() {
  static const std::unique_ptr<Tokenizer> tokenizer = [] {
    if (const char* path = std::getenv("BMS_FUZZ_TOKENIZER"); path != nullptr && *path) {
      if (auto t = Tokenizer::FromFile(path); t.ok()) return std::move(*t);
    }
    return Tokenizer::ByteFallback();
  }();
  return *tokenizer;
}

// Small limits so the fuzzer reaches them (the production defaults are far larger).
inline ServerContext& FuzzContext() {
  static ServerContext* ctx = [] {
    auto* c = new ServerContext();
    c->tokenizer = &FuzzTokenizer();
    c->served_model_name = "fuzz-model";
    c->vocab_size = FuzzTokenizer().vocab_size();
    c->max_sequence_length = 256;
    c->limits.max_prompt_tokens = 200;
    c->limits.max_tokens_limit = 64;
    c->limits.max_n = 4;
    c->limits.max_stop_strings = 4;
    c->limits.max_stop_string_bytes = 16;
    c->limits.max_logit_bias = 8;
    c->limits.max_messages = 8;
    c->limits.max_stop_token_ids = 8;
    return c;
  }();
  return *ctx;
}

}  // namespace bms::fuzz
