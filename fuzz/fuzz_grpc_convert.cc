// libFuzzer target: bmserve.v1 GenerateRequest (wire bytes) -> ToEngineRequest. Any message
// must give an engine request within the limits or INVALID_ARGUMENT naming a field.
#include <cstddef>
#include <cstdint>

#include "fuzz/fuzz_common.h"
#include "server/grpc_convert.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  bmserve::v1::GenerateRequest in;
  if (!in.ParseFromArray(data, static_cast<int>(size))) return 0;
  const bms::ServerContext& ctx = bms::fuzz::FuzzContext();
  bms::GrpcGenerateSpec spec;
  grpc::Status s = bms::ToEngineRequest(in, ctx, &spec);
  if (!s.ok()) {
    if (s.error_code() != grpc::StatusCode::INVALID_ARGUMENT || s.error_message().empty()) {
      __builtin_trap();
    }
    return 0;
  }
  if (spec.request.prompt_ids.empty()) __builtin_trap();
  for (int32_t id : spec.request.prompt_ids) {
    if (id < 0 || id >= ctx.vocab_size) __builtin_trap();
  }
  if (static_cast<int>(spec.choice_options.stop.size()) > ctx.limits.max_stop_strings) {
    __builtin_trap();
  }
  if (static_cast<int>(spec.request.sampling.logit_bias.size()) > ctx.limits.max_logit_bias) {
    __builtin_trap();
  }
  return 0;
}
