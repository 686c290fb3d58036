// libFuzzer target: an HTTP request body -> ParseJsonBody -> ParseCompletionRequest and
// ParseChatRequest (validation, tokenization, chat templating). Any input must give either a
// spec within the limits or an error naming a field; never a crash.
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz/fuzz_common.h"
#include "server/openai_request.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const bms::ServerContext& ctx = bms::fuzz::FuzzContext();
  nlohmann::json body;
  if (bms::ParseJsonBody(std::string(reinterpret_cast<const char*>(data), size), &body)) return 0;
  for (bms::ApiKind kind : {bms::ApiKind::kCompletion, bms::ApiKind::kChat}) {
    bms::GenerationSpec spec;
    auto err = kind == bms::ApiKind::kChat ? bms::ParseChatRequest(body, ctx, &spec)
                                           : bms::ParseCompletionRequest(body, ctx, &spec);
    if (err) {
      if (err->message.empty() || err->http_status < 400) __builtin_trap();
      continue;
    }
    if (spec.n < 1 || spec.n > ctx.limits.max_n) __builtin_trap();
    if (spec.prompts.empty() || spec.sampling.max_tokens > ctx.limits.max_tokens_limit) {
      __builtin_trap();
    }
    if (static_cast<int>(spec.stop.size()) > ctx.limits.max_stop_strings) __builtin_trap();
    for (const auto& p : spec.prompts) {
      if (static_cast<int>(p.size()) > ctx.limits.max_prompt_tokens) __builtin_trap();
      for (int32_t id : p) {
        if (id < 0 || id >= ctx.vocab_size) __builtin_trap();
      }
    }
  }
  return 0;
}
