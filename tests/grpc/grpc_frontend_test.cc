// In-process tests of the gRPC frontend (server/grpc_*) against a scripted fake Engine:
// health follows readiness and draining (Check and Watch), events that pile up before a write
// are coalesced into one message, a stop string ends its choice and abandons the engine
// request, engine errors and Submit statuses map to gRPC codes, prompt_logprobs is range-checked
// and the engine's prompt scores reach each choice's first message only.
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "bmserve/v1/inference.grpc.pb.h"
#include "engine/engine.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/grpc_convert.h"
#include "server/grpc_server.h"
#include "server/server_context.h"
#include "tokenizer/tokenizer.h"

namespace bms {
namespace {

namespace pb = ::bmserve::v1;
using ::grpc::health::v1::HealthCheckRequest;
using ::grpc::health::v1::HealthCheckResponse;

class FakeEngine final : public Engine {
 public:
  using SubmitFn = std::function<absl::StatusOr<std::shared_ptr<EventChannel>>(GenerateRequest)>;
  FakeEngine() { config_ = *ModelConfig::Preset("tiny"); }

  absl::Status Start() override { return absl::OkStatus(); }
  void Stop() override {}
  absl::StatusOr<std::shared_ptr<EventChannel>> Submit(GenerateRequest request) override {
    return submit(std::move(request));
  }
  absl::Status CancelChoice(const std::string&, int) override { return absl::OkStatus(); }
  absl::Status Cancel(const std::string& id) override {
    return absl::NotFoundError("no live request with id '" + id + "'");
  }
  EngineStats Stats() const override {
    EngineStats s;
    s.ready = ready.load();
    s.slots_total = 4;
    return s;
  }
  const ModelConfig& config() const override { return config_; }
  const EngineOptions& options() const override { return options_; }

  std::atomic<bool> ready{false};
  SubmitFn submit;

 private:
  ModelConfig config_;
  EngineOptions options_;
};

// One token event per byte of `text` for `choice`.
void PushText(EventChannel& ch, int choice, const std::string& text) {
  for (unsigned char c : text) {
    GenerationEvent ev;
    ev.choice = choice;
    ev.token_ids = {static_cast<int32_t>(c)};
    ev.prompt_tokens = 1;
    ch.Push(ev);
  }
}

void PushFinish(EventChannel& ch, int choice, FinishReason reason, absl::Status error = {}) {
  GenerationEvent ev;
  ev.choice = choice;
  ev.finish = reason;
  ev.error = std::move(error);
  ev.prompt_tokens = 1;
  ch.Push(ev);
}

class GrpcFrontendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tokenizer_ = Tokenizer::ByteFallback();
    ctx_.engine = &engine_;
    ctx_.tokenizer = tokenizer_.get();
    ctx_.served_model_name = "fake";
    ctx_.vocab_size = engine_.config().vocab_size;
    GrpcServerOptions options;
    options.port = 0;
    auto server = StartGrpcServer(ctx_, options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(server_->port()),
                                   grpc::InsecureChannelCredentials());
    stub_ = pb::Inference::NewStub(channel_);
    health_ = grpc::health::v1::Health::NewStub(channel_);
  }
  void TearDown() override { server_->Shutdown(std::chrono::milliseconds(0)); }

  // Check of the server ("") and of the named service must agree.
  HealthCheckResponse::ServingStatus Check() {
    HealthCheckResponse::ServingStatus status[2];
    for (int i = 0; i < 2; ++i) {
      grpc::ClientContext ctx;
      HealthCheckRequest req;
      if (i == 1) req.set_service("bmserve.v1.Inference");
      HealthCheckResponse resp;
      EXPECT_TRUE(health_->Check(&ctx, req, &resp).ok()) << "service '" << req.service() << "'";
      status[i] = resp.status();
    }
    EXPECT_EQ(status[0], status[1]);
    return status[0];
  }

  grpc::Status Generate(const pb::GenerateRequest& req, std::vector<pb::GenerateResponse>* out) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    auto reader = stub_->Generate(&ctx, req);
    pb::GenerateResponse r;
    while (reader->Read(&r)) out->push_back(r);
    return reader->Finish();
  }

  FakeEngine engine_;
  std::unique_ptr<Tokenizer> tokenizer_;
  ServerContext ctx_;
  std::unique_ptr<GrpcServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<pb::Inference::Stub> stub_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
};

pb::GenerateRequest TextRequest(bool stream) {
  pb::GenerateRequest req;
  req.set_text("x");
  req.set_stream(stream);
  return req;
}

TEST_F(GrpcFrontendTest, HealthFollowsReadinessAndDraining) {
  EXPECT_EQ(Check(), HealthCheckResponse::NOT_SERVING);
  std::vector<pb::GenerateResponse> out;
  grpc::Status s = Generate(TextRequest(true), &out);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_NE(s.error_message().find("not ready"), std::string::npos) << s.error_message();

  grpc::ClientContext wctx;
  auto watch = health_->Watch(&wctx, HealthCheckRequest());
  HealthCheckResponse h;
  ASSERT_TRUE(watch->Read(&h));
  EXPECT_EQ(h.status(), HealthCheckResponse::NOT_SERVING);

  engine_.ready = true;
  server_->UpdateHealth();
  ASSERT_TRUE(watch->Read(&h));
  EXPECT_EQ(h.status(), HealthCheckResponse::SERVING);
  EXPECT_EQ(Check(), HealthCheckResponse::SERVING);

  ctx_.draining = true;
  server_->UpdateHealth();
  ASSERT_TRUE(watch->Read(&h));
  EXPECT_EQ(h.status(), HealthCheckResponse::NOT_SERVING);
  out.clear();
  s = Generate(TextRequest(true), &out);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_NE(s.error_message().find("draining"), std::string::npos) << s.error_message();
  wctx.TryCancel();
}

// 1000 events queued before the reactor's first write become one Complete.
TEST_F(GrpcFrontendTest, PendingEventsAreCoalesced) {
  engine_.ready = true;
  std::string text(1000, 'a');
  engine_.submit = [&](GenerateRequest r) -> absl::StatusOr<std::shared_ptr<EventChannel>> {
    EXPECT_EQ(r.prompt_ids, std::vector<int32_t>{'x'});
    auto ch = std::make_shared<EventChannel>();
    PushText(*ch, 0, text);
    PushFinish(*ch, 0, FinishReason::kLength);
    return ch;
  };
  std::vector<pb::GenerateResponse> out;
  ASSERT_TRUE(Generate(TextRequest(true), &out).ok());
  ASSERT_EQ(out.size(), 1u);
  ASSERT_TRUE(out[0].has_complete());
  EXPECT_EQ(out[0].complete().text(), text);
  EXPECT_EQ(out[0].complete().token_ids_size(), 1000);
  EXPECT_EQ(out[0].complete().usage().completion_tokens(), 1000);
  EXPECT_EQ(out[0].complete().finish_reason(), pb::FINISH_REASON_LENGTH);
}

TEST_F(GrpcFrontendTest, StopStringEndsChoiceAndAbandonsEngineRequest) {
  engine_.ready = true;
  std::shared_ptr<EventChannel> channel;
  engine_.submit = [&](GenerateRequest r) -> absl::StatusOr<std::shared_ptr<EventChannel>> {
    EXPECT_EQ(r.n, 2);
    channel = std::make_shared<EventChannel>();
    PushText(*channel, 0, "hello world and more");  // the engine would go on
    PushText(*channel, 1, "abc");
    PushFinish(*channel, 1, FinishReason::kLength);
    return channel;
  };
  pb::GenerateRequest req = TextRequest(false);
  req.set_n(2);
  req.mutable_sampling()->add_stop("wor");
  std::vector<pb::GenerateResponse> out;
  ASSERT_TRUE(Generate(req, &out).ok());
  ASSERT_EQ(out.size(), 2u);
  std::map<int, pb::Complete> by_choice;
  for (const auto& r : out) {
    ASSERT_TRUE(r.has_complete());
    by_choice[r.complete().index()] = r.complete();
  }
  EXPECT_EQ(by_choice[0].text(), "hello ");
  EXPECT_EQ(by_choice[0].finish_reason(), pb::FINISH_REASON_STOP);
  EXPECT_EQ(by_choice[0].stop_string(), "wor");
  EXPECT_EQ(by_choice[0].usage().completion_tokens(), 9);  // through the 'r' of "wor"
  EXPECT_EQ(by_choice[1].text(), "abc");
  EXPECT_EQ(by_choice[1].finish_reason(), pb::FINISH_REASON_LENGTH);
  ASSERT_NE(channel, nullptr);
  EXPECT_TRUE(channel->abandoned());
}

TEST_F(GrpcFrontendTest, EngineErrorsMapToStatusCodes) {
  engine_.ready = true;
  engine_.submit = [](GenerateRequest) -> absl::StatusOr<std::shared_ptr<EventChannel>> {
    return absl::ResourceExhaustedError("the waiting queue is full");
  };
  std::vector<pb::GenerateResponse> out;
  EXPECT_EQ(Generate(TextRequest(true), &out).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);

  engine_.submit = [](GenerateRequest) -> absl::StatusOr<std::shared_ptr<EventChannel>> {
    auto ch = std::make_shared<EventChannel>();
    PushText(*ch, 0, "ab");
    PushFinish(*ch, 0, FinishReason::kError, absl::InternalError("backend step failed"));
    return ch;
  };
  out.clear();
  grpc::Status s = Generate(TextRequest(true), &out);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INTERNAL);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].chunk().text(), "ab");
  ASSERT_TRUE(out[1].has_error());
  EXPECT_EQ(out[1].error().code(), static_cast<int>(grpc::StatusCode::INTERNAL));
  EXPECT_EQ(out[1].error().message(), "backend step failed");

  grpc::ClientContext actx;
  pb::AbortRequest areq;
  areq.set_request_id("unknown");
  pb::AbortResponse aresp;
  EXPECT_EQ(stub_->Abort(&actx, areq, &aresp).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(GrpcFrontendTest, PromptLogprobsRangeIsChecked) {
  pb::GenerateRequest req = TextRequest(false);
  GrpcGenerateSpec unset;
  ASSERT_TRUE(ToEngineRequest(req, ctx_, &unset).ok());
  EXPECT_EQ(unset.request.prompt_logprobs, -1);
  for (int n = 0; n <= 20; ++n) {
    req.set_prompt_logprobs(n);
    GrpcGenerateSpec spec;
    grpc::Status s = ToEngineRequest(req, ctx_, &spec);
    ASSERT_TRUE(s.ok()) << n << ": " << s.error_message();
    EXPECT_EQ(spec.request.prompt_logprobs, n);
  }
  for (int bad : {21, -1, -2, 1000}) {
    req.set_prompt_logprobs(bad);
    GrpcGenerateSpec spec;
    grpc::Status s = ToEngineRequest(req, ctx_, &spec);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << bad;
    EXPECT_NE(s.error_message().find("'prompt_logprobs'"), std::string::npos)
        << bad << ": " << s.error_message();
  }
}

// The scores the engine would send for the prompt "xyz" (byte-fallback ids = bytes): entries
// for 'y' and 'z', each with its rank and 2 alternatives.
std::vector<TokenLogprob> PromptScores() {
  return {{'y', -1.5f, {{'q', -0.5f}, {'y', -1.5f}}, 2},
          {'z', -0.25f, {{'z', -0.25f}, {'w', -3.f}}, 1}};
}

void PushFirstToken(EventChannel& ch, int choice, char c) {
  GenerationEvent ev;
  ev.choice = choice;
  ev.token_ids = {c};
  ev.prompt_tokens = 3;
  ev.prompt_logprobs = PromptScores();
  ch.Push(ev);
}

// Checks `got` holds PromptScores(), alternatives' text included.
void ExpectPromptScores(const google::protobuf::RepeatedPtrField<pb::TokenLogprob>& got) {
  ASSERT_EQ(got.size(), 2);
  EXPECT_EQ(got[0].token_id(), 'y');
  EXPECT_EQ(got[0].logprob(), -1.5f);
  EXPECT_EQ(got[0].rank(), 2);
  ASSERT_EQ(got[0].top_size(), 2);
  EXPECT_EQ(got[0].top(0).token_id(), 'q');
  EXPECT_EQ(got[0].top(0).logprob(), -0.5f);
  EXPECT_EQ(got[0].top(0).token(), "q");
  EXPECT_EQ(got[0].top(1).token_id(), 'y');
  EXPECT_EQ(got[0].top(1).token(), "y");
  EXPECT_EQ(got[1].token_id(), 'z');
  EXPECT_EQ(got[1].logprob(), -0.25f);
  EXPECT_EQ(got[1].rank(), 1);
  ASSERT_EQ(got[1].top_size(), 2);
  EXPECT_EQ(got[1].top(0).token(), "z");
  EXPECT_EQ(got[1].top(1).token_id(), 'w');
  EXPECT_EQ(got[1].top(1).logprob(), -3.f);
  EXPECT_EQ(got[1].top(1).token(), "w");
}

TEST_F(GrpcFrontendTest, PromptLogprobsOnlyInEachChoicesFirstMessage) {
  engine_.ready = true;
  std::shared_ptr<EventChannel> channel;
  engine_.submit = [&](GenerateRequest r) -> absl::StatusOr<std::shared_ptr<EventChannel>> {
    EXPECT_EQ(r.prompt_logprobs, 2);
    channel = std::make_shared<EventChannel>();
    PushFirstToken(*channel, 0, 'a');
    PushFirstToken(*channel, 1, 'b');
    return channel;
  };
  pb::GenerateRequest req = TextRequest(true);
  req.set_text("xyz");
  req.set_n(2);
  req.set_prompt_logprobs(2);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  auto reader = stub_->Generate(&ctx, req);
  // The first message of each choice: a Chunk with its first token and the prompt scores.
  std::map<int, pb::Chunk> first;
  pb::GenerateResponse r;
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(reader->Read(&r));
    ASSERT_TRUE(r.has_chunk());
    first[r.chunk().index()] = r.chunk();
  }
  ASSERT_EQ(first.size(), 2u);
  EXPECT_EQ(first[0].text(), "a");
  EXPECT_EQ(first[1].text(), "b");
  for (auto& [i, chunk] : first) ExpectPromptScores(chunk.prompt_logprobs());
  // Later messages carry none.
  PushText(*channel, 0, "cd");
  PushText(*channel, 1, "ef");
  PushFinish(*channel, 0, FinishReason::kLength);
  PushFinish(*channel, 1, FinishReason::kLength);
  std::map<int, std::string> rest;
  int completes = 0;
  while (reader->Read(&r)) {
    if (r.has_chunk()) {
      EXPECT_EQ(r.chunk().prompt_logprobs_size(), 0);
      rest[r.chunk().index()] += r.chunk().text();
    } else {
      ASSERT_TRUE(r.has_complete());
      EXPECT_EQ(r.complete().prompt_logprobs_size(), 0);
      rest[r.complete().index()] += r.complete().text();
      ++completes;
    }
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(completes, 2);
  EXPECT_EQ(rest[0], "cd");
  EXPECT_EQ(rest[1], "ef");

  // stream = false: each choice's one Complete carries them.
  engine_.submit = [&](GenerateRequest r) -> absl::StatusOr<std::shared_ptr<EventChannel>> {
    EXPECT_EQ(r.prompt_logprobs, 2);
    auto ch = std::make_shared<EventChannel>();
    for (int c = 0; c < 2; ++c) {
      PushFirstToken(*ch, c, 'a');
      PushText(*ch, c, "bc");
      PushFinish(*ch, c, FinishReason::kLength);
    }
    return ch;
  };
  req.set_stream(false);
  std::vector<pb::GenerateResponse> out;
  ASSERT_TRUE(Generate(req, &out).ok());
  ASSERT_EQ(out.size(), 2u);
  for (const pb::GenerateResponse& m : out) {
    ASSERT_TRUE(m.has_complete());
    EXPECT_EQ(m.complete().text(), "abc");
    ExpectPromptScores(m.complete().prompt_logprobs());
  }
}

}  // namespace
}  // namespace bms
