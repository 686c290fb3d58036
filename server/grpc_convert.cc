#include "server/grpc_convert.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace bms {
namespace {

namespace pb = ::bmserve::v1;

// The most alternatives prompt_logprobs may ask for (the engine's bound too).
constexpr int kMaxPromptLogprobs = 20;

grpc::Status Invalid(std::string message) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, std::move(message));
}

}  // namespace

void FillLogprobs(const Tokenizer& tokenizer, const std::vector<TokenLogprob>& in,
                  google::protobuf::RepeatedPtrField<pb::TokenLogprob>* out) {
  for (const TokenLogprob& lp : in) {
    pb::TokenLogprob* p = out->Add();
    p->set_token_id(lp.token);
    p->set_logprob(lp.logprob);
    p->set_rank(lp.rank);  // 0 (not computed) for generated tokens
    for (const auto& [id, logprob] : lp.top) {
      pb::TopLogprob* t = p->add_top();
      t->set_token_id(id);
      t->set_logprob(logprob);
      // Decode() turns bytes that are not valid UTF-8 on their own into U+FFFD (proto strings
      // must be UTF-8).
      t->set_token(tokenizer.Decode({id}));
    }
  }
}

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

pb::FinishReason ToProtoFinishReason(FinishReason r) {
  switch (r) {
    case FinishReason::kStop:
      return pb::FINISH_REASON_STOP;
    case FinishReason::kLength:
      return pb::FINISH_REASON_LENGTH;
    case FinishReason::kAbort:
      return pb::FINISH_REASON_ABORT;
    case FinishReason::kError:
      return pb::FINISH_REASON_ERROR;
    case FinishReason::kNone:
      break;
  }
  return pb::FINISH_REASON_UNSPECIFIED;
}

grpc::Status CheckTokenIds(const google::protobuf::RepeatedField<int32_t>& ids, int vocab_size,
                           const std::string& field) {
  for (int i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab_size) {
      return Invalid(absl::StrCat(field, "[", i, "] = ", ids[i], " is not a token id in [0, ",
                                  vocab_size, ")"));
    }
  }
  return grpc::Status::OK;
}

grpc::Status ToEngineRequest(const pb::GenerateRequest& in, const ServerContext& ctx,
                             GrpcGenerateSpec* out) {
  GenerateRequest& r = out->request;
  // The prompt: exactly one of text / token_ids.
  if (in.has_text() && in.token_ids_size() > 0) {
    return Invalid("set exactly one of 'text' or 'token_ids', not both");
  }
  if (in.has_text()) {
    if (in.text().empty()) return Invalid("'text' must not be empty");
    auto ids = ctx.tokenizer->Encode(in.text());
    if (!ids.ok()) return Invalid(absl::StrCat("'text': ", ids.status().message()));
    if (ids->empty()) return Invalid("'text' encodes to no tokens");
    r.prompt_ids = *std::move(ids);
  } else if (in.token_ids_size() > 0) {
    grpc::Status s = CheckTokenIds(in.token_ids(), ctx.vocab_size, "token_ids");
    if (!s.ok()) return s;
    r.prompt_ids.assign(in.token_ids().begin(), in.token_ids().end());
  } else {
    return Invalid("the prompt is empty: set 'text' or 'token_ids'");
  }

  const pb::SamplingParams& s = in.sampling();
  SamplingParams& sp = r.sampling;
  sp.max_tokens = s.has_max_tokens() ? s.max_tokens() : ctx.limits.max_tokens_default;
  if (s.has_temperature()) sp.temperature = s.temperature();
  if (s.has_top_p()) sp.top_p = s.top_p();
  if (s.has_top_k()) sp.top_k = s.top_k();
  if (s.has_min_p()) sp.min_p = s.min_p();
  if (s.has_presence_penalty()) sp.presence_penalty = s.presence_penalty();
  if (s.has_frequency_penalty()) sp.frequency_penalty = s.frequency_penalty();
  if (s.has_repetition_penalty()) sp.repetition_penalty = s.repetition_penalty();
  const ServerLimits& lim = ctx.limits;
  if (s.logit_bias_size() > lim.max_logit_bias) {
    return Invalid(absl::StrCat("'sampling.logit_bias' may hold at most ", lim.max_logit_bias,
                                " entries (--max-logit-bias)"));
  }
  if (s.stop_token_ids_size() > lim.max_stop_token_ids) {
    return Invalid(absl::StrCat("'sampling.stop_token_ids' may hold at most ",
                                lim.max_stop_token_ids, " ids"));
  }
  for (const auto& [id, bias] : s.logit_bias()) sp.logit_bias.emplace_back(id, bias);
  std::sort(sp.logit_bias.begin(), sp.logit_bias.end());  // map order is unspecified
  if (s.has_seed()) sp.seed = s.seed();
  sp.stop_token_ids.assign(s.stop_token_ids().begin(), s.stop_token_ids().end());
  if (s.has_min_tokens()) sp.min_tokens = s.min_tokens();
  if (s.has_ignore_eos()) sp.ignore_eos = s.ignore_eos();
  sp.logprobs = s.has_logprobs() ? s.logprobs() : -1;
  if (s.has_logprobs() && s.logprobs() < 0) {
    return Invalid("'sampling.logprobs' must be in [0, 20] (leave it unset for none)");
  }

  if (s.stop_size() > lim.max_stop_strings) {
    return Invalid(absl::StrCat("'sampling.stop' may hold at most ", lim.max_stop_strings,
                                " strings (--max-stop-strings)"));
  }
  ChoiceStreamOptions& co = out->choice_options;
  co.stop.clear();
  for (const std::string& stop : s.stop()) {
    if (static_cast<int64_t>(stop.size()) > lim.max_stop_string_bytes) {
      return Invalid(absl::StrCat("'sampling.stop' strings may be at most ",
                                  lim.max_stop_string_bytes,
                                  " bytes long (--max-stop-string-bytes)"));
    }
    if (!stop.empty()) co.stop.push_back(stop);
  }
  co.include_stop_str_in_output = s.include_stop_str_in_output();
  co.skip_special_tokens = s.has_skip_special_tokens() ? s.skip_special_tokens() : true;
  co.logprobs = sp.logprobs >= 0;

  // Checked here in full (the engine's message would offer -1, which is "unset" in this API).
  r.prompt_logprobs = in.has_prompt_logprobs() ? in.prompt_logprobs() : -1;
  if (in.has_prompt_logprobs() &&
      (in.prompt_logprobs() < 0 || in.prompt_logprobs() > kMaxPromptLogprobs)) {
    return Invalid(absl::StrCat("'prompt_logprobs' must be in [0, ", kMaxPromptLogprobs,
                                "] (leave it unset for none), got ", in.prompt_logprobs()));
  }

  r.n = in.has_n() ? in.n() : 1;
  r.priority = in.priority();
  r.request_id = in.request_id();
  out->stream = in.stream();
  return grpc::Status::OK;
}

void FillChunk(const Tokenizer& tokenizer, const ChoiceDelta& delta, pb::Chunk* out) {
  out->set_index(delta.index);
  out->mutable_token_ids()->Add(delta.token_ids.begin(), delta.token_ids.end());
  out->set_text(delta.text);
  FillLogprobs(tokenizer, delta.logprobs, out->mutable_logprobs());
}

void FillComplete(const Tokenizer& tokenizer, const ChoiceDelta& delta, pb::Complete* out) {
  out->set_index(delta.index);
  out->set_finish_reason(ToProtoFinishReason(delta.finish));
  out->mutable_token_ids()->Add(delta.token_ids.begin(), delta.token_ids.end());
  out->set_text(delta.text);
  FillLogprobs(tokenizer, delta.logprobs, out->mutable_logprobs());
  pb::Usage* usage = out->mutable_usage();
  usage->set_prompt_tokens(delta.prompt_tokens);
  usage->set_completion_tokens(delta.completion_tokens);
  usage->set_total_tokens(delta.prompt_tokens + delta.completion_tokens);
  out->set_stop_string(delta.stop_string);
  out->set_stop_token_id(delta.stop_token);
}

void FillPromptLogprobs(const Tokenizer& tokenizer, const std::vector<TokenLogprob>& scores,
                        pb::GenerateResponse* out) {
  if (out->has_chunk()) {
    FillLogprobs(tokenizer, scores, out->mutable_chunk()->mutable_prompt_logprobs());
  } else if (out->has_complete()) {
    FillLogprobs(tokenizer, scores, out->mutable_complete()->mutable_prompt_logprobs());
  }
}

}  // namespace bms
