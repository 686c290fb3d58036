// ServerContext: what every network frontend of one `serve` process shares (HTTP now, gRPC
// later): the engine, the tokenizer, the served model name, the chat template, request limits
// and the readiness/draining flag. Built once by cmd_serve.cc and outlives every frontend.
// Thread-safe to read from any thread; only `draining` changes after start-up.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "engine/engine.h"
#include "server/auth.h"
#include "server/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace bms {

struct ServerLimits {
  int64_t max_body_bytes = 16 << 20;  // larger request bodies get 413
  int max_prompt_tokens = 131072;     // longer prompts get 400 (field "prompt"/"messages")
  int max_tokens_default = 16;        // completions default when max_tokens is absent
  int max_tokens_limit = 131072;      // larger max_tokens get 400
  int max_n = 16;                     // larger n get 400
  std::chrono::milliseconds write_timeout{30000};  // a client that reads nothing this long is cut
  std::chrono::milliseconds idle_timeout{60000};   // keep-alive / request-read timeout
  size_t max_buffered_output = 1 << 20;  // per-connection output buffered before pausing drains
  int64_t max_header_bytes = 64 << 10;   // larger request headers get 431
  int max_connections = 4096;            // more concurrent HTTP connections get 429 and close
  int max_stop_strings = 16;             // more 'stop' strings get 400
  int max_stop_string_bytes = 256;       // a longer stop string gets 400
  int max_logit_bias = 1024;             // more 'logit_bias' entries get 400
  int max_messages = 1024;               // more chat 'messages' get 400
  int max_stop_token_ids = 1024;         // more 'stop_token_ids' get 400
};

struct ServerContext {
  Engine* engine = nullptr;              // not owned; started before any frontend accepts
  const Tokenizer* tokenizer = nullptr;  // not owned
  std::string served_model_name;         // the "model" id clients must send
  int vocab_size = 0;                    // the model's vocabulary (token ids must be below it)
  int max_sequence_length = 2048;        // chat default max_tokens = this minus the prompt length
  ChatTemplate chat_template;
  ServerLimits limits;
  ApiKeys api_keys;                   // none: no authentication (server/auth.h)
  int64_t created_unix = 0;           // reported as the model's "created"
  std::atomic<bool> draining{false};  // set on shutdown: /ready turns 503, new work is refused

  // True when the engine reports ready and the server is not draining.
  bool Ready() const { return engine != nullptr && engine->Stats().ready && !draining.load(); }
};

}  // namespace bms
