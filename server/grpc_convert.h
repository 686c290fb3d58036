// gRPC <-> engine translation for the bmserve.v1 API: validates a GenerateRequest's frontend
// fields (input, stop strings, the prompt_logprobs range) and builds the engine request (sampling
// parameters themselves are validated by Engine::Submit), maps absl::Status to grpc::Status, and
// fills response messages from ChoiceDeltas (and a choice's prompt scores). Pure functions;
// thread-safe.
#pragma once

#include <string>

#include "bmserve/v1/inference.pb.h"
#include "engine/request.h"
#include "grpcpp/support/status.h"
#include "server/choice_stream.h"
#include "server/server_context.h"

namespace bms {

// The engine request plus the frontend-only options of one Generate call.
struct GrpcGenerateSpec {
  GenerateRequest request;
  ChoiceStreamOptions choice_options;
  bool stream = false;
};

// Validates `in` and fills `out`. Errors are INVALID_ARGUMENT naming the field ("text",
// "token_ids[3]", "sampling.stop", ...). request_id is left as given (may be empty).
grpc::Status ToEngineRequest(const bmserve::v1::GenerateRequest& in, const ServerContext& ctx,
                             GrpcGenerateSpec* out);

// The same canonical code and message (absl and gRPC share the code numbering).
grpc::Status ToGrpcStatus(const absl::Status& status);

bmserve::v1::FinishReason ToProtoFinishReason(FinishReason r);

// Appends `in` to `out`, each alternative with its token text (lossily decoded to UTF-8).
void FillLogprobs(const Tokenizer& tokenizer, const std::vector<TokenLogprob>& in,
                  google::protobuf::RepeatedPtrField<bmserve::v1::TokenLogprob>* out);

// Fills `out` (a chunk: tokens, text, logprobs) from `delta`.
void FillChunk(const Tokenizer& tokenizer, const ChoiceDelta& delta, bmserve::v1::Chunk* out);
// Fills `out` from a finished `delta` (its remaining output, finish reason and usage).
void FillComplete(const Tokenizer& tokenizer, const ChoiceDelta& delta, bmserve::v1::Complete* out);
// Sets the prompt_logprobs of the Chunk or Complete in `out` (a choice's first message) from
// `scores` (GenerationEvent::prompt_logprobs). No-op for an Error message.
void FillPromptLogprobs(const Tokenizer& tokenizer, const std::vector<TokenLogprob>& scores,
                        bmserve::v1::GenerateResponse* out);

// Checks every id is in [0, vocab_size); the error names `field`[i].
grpc::Status CheckTokenIds(const google::protobuf::RepeatedField<int32_t>& ids, int vocab_size,
                           const std::string& field);

}  // namespace bms
