// End-to-end tests of the bmserve.v1 gRPC API against a real `bmserve serve --demo` process:
// streaming and unary Generate, n = 2, seed determinism (gRPC == HTTP for the same request),
// cancellation and deadlines freeing the slot, Abort by id, bad input with named fields, the
// message size limit, prompt_logprobs in each choice's first message, and health on drain
// (SIGTERM). BMSERVE_BIN names the binary.
#include <signal.h>

#include <chrono>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "bmserve/v1/inference.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/grpc/serve_process.h"

namespace bms {
namespace {

namespace pb = ::bmserve::v1;
using ::grpc::health::v1::HealthCheckRequest;
using ::grpc::health::v1::HealthCheckResponse;

std::string Bin() {
  const char* bin = std::getenv("BMSERVE_BIN");
  return bin ? bin : "";
}

// What one choice produced, reassembled from Chunk and Complete messages.
struct ChoiceOut {
  std::vector<int32_t> tokens;
  std::string text;
  pb::FinishReason finish = pb::FINISH_REASON_UNSPECIFIED;
  int completes = 0;
  int chunks = 0;
  pb::Usage usage;
};

struct CallOut {
  grpc::Status status;
  std::map<int, ChoiceOut> choices;
  std::string request_id;
  int messages = 0;
};

void Absorb(const pb::GenerateResponse& r, CallOut* out) {
  ++out->messages;
  out->request_id = r.request_id();
  if (r.has_chunk()) {
    ChoiceOut& c = out->choices[r.chunk().index()];
    ++c.chunks;
    c.tokens.insert(c.tokens.end(), r.chunk().token_ids().begin(), r.chunk().token_ids().end());
    c.text += r.chunk().text();
  } else if (r.has_complete()) {
    ChoiceOut& c = out->choices[r.complete().index()];
    ++c.completes;
    c.tokens.insert(c.tokens.end(), r.complete().token_ids().begin(),
                    r.complete().token_ids().end());
    c.text += r.complete().text();
    c.finish = r.complete().finish_reason();
    c.usage = r.complete().usage();
  }
}

class GrpcE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = new testing::ServeProcess(Bin(), {});
    ASSERT_TRUE(server_->ok()) << server_->log();
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override {
    ASSERT_TRUE(server_ != nullptr && server_->ok());
    channel_ = grpc::CreateChannel(server_->grpc_target(), grpc::InsecureChannelCredentials());
    stub_ = pb::Inference::NewStub(channel_);
  }

  CallOut Generate(const pb::GenerateRequest& req) {
    CallOut out;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    auto reader = stub_->Generate(&ctx, req);
    pb::GenerateResponse r;
    while (reader->Read(&r)) Absorb(r, &out);
    out.status = reader->Finish();
    return out;
  }

  pb::Load GetLoad() {
    grpc::ClientContext ctx;
    pb::Load load;
    EXPECT_TRUE(stub_->GetLoad(&ctx, pb::GetLoadRequest(), &load).ok());
    return load;
  }

  // Waits (bounded: 10 s, for loaded CI machines) until no request runs and every slot is free.
  bool WaitIdle() {
    for (int i = 0; i < 1000; ++i) {
      pb::Load load = GetLoad();
      if (load.running() == 0 && load.slots_used() == 0 && load.waiting() == 0) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }

  static testing::ServeProcess* server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<pb::Inference::Stub> stub_;
};

testing::ServeProcess* GrpcE2eTest::server_ = nullptr;

pb::GenerateRequest BasicRequest(bool stream, int n, int max_tokens, uint64_t seed) {
  pb::GenerateRequest req;
  req.set_text("The quick brown fox");
  req.set_stream(stream);
  req.set_n(n);
  req.mutable_sampling()->set_max_tokens(max_tokens);
  req.mutable_sampling()->set_seed(seed);
  req.mutable_sampling()->set_ignore_eos(true);
  return req;
}

TEST_F(GrpcE2eTest, StreamAndUnaryAgreeForTwoChoices) {
  CallOut streamed = Generate(BasicRequest(true, 2, 24, 7));
  CallOut unary = Generate(BasicRequest(false, 2, 24, 7));
  ASSERT_TRUE(streamed.status.ok()) << streamed.status.error_message();
  ASSERT_TRUE(unary.status.ok()) << unary.status.error_message();

  // The prompt length, independently: the Tokenize RPC.
  grpc::ClientContext tctx;
  pb::TokenizeRequest treq;
  treq.set_text("The quick brown fox");
  pb::TokenizeResponse tresp;
  ASSERT_TRUE(stub_->Tokenize(&tctx, treq, &tresp).ok());

  ASSERT_EQ(streamed.choices.size(), 2u);
  ASSERT_EQ(unary.choices.size(), 2u);
  for (int i = 0; i < 2; ++i) {
    const ChoiceOut& s = streamed.choices[i];
    const ChoiceOut& u = unary.choices[i];
    EXPECT_EQ(s.completes, 1);
    EXPECT_EQ(u.completes, 1);
    EXPECT_EQ(u.chunks, 0) << "stream=false sends one Complete per choice only";
    EXPECT_GE(s.chunks, 1);
    EXPECT_EQ(s.tokens.size(), 24u);
    EXPECT_EQ(s.tokens, u.tokens);
    EXPECT_EQ(s.text, u.text);
    EXPECT_EQ(s.finish, pb::FINISH_REASON_LENGTH);
    EXPECT_EQ(u.finish, pb::FINISH_REASON_LENGTH);
    EXPECT_EQ(s.usage.completion_tokens(), 24);
    EXPECT_EQ(s.usage.prompt_tokens(), tresp.count());
    EXPECT_EQ(s.usage.total_tokens(), tresp.count() + 24);
    // The streamed text is the detokenized token list.
    grpc::ClientContext dctx;
    pb::DetokenizeRequest dreq;
    dreq.mutable_token_ids()->Add(s.tokens.begin(), s.tokens.end());
    dreq.set_skip_special_tokens(true);
    pb::DetokenizeResponse dresp;
    ASSERT_TRUE(stub_->Detokenize(&dctx, dreq, &dresp).ok());
    EXPECT_EQ(s.text, dresp.text());
  }
  // Two choices with one seed are different samples.
  EXPECT_NE(streamed.choices[0].tokens, streamed.choices[1].tokens);
}

TEST_F(GrpcE2eTest, SameSeedSameOutputAsHttp) {
  CallOut a = Generate(BasicRequest(true, 2, 16, 1234));
  CallOut b = Generate(BasicRequest(false, 2, 16, 1234));
  ASSERT_TRUE(a.status.ok());
  ASSERT_TRUE(b.status.ok());
  nlohmann::json body = {{"model", "bmserve-demo"},
                         {"prompt", "The quick brown fox"},
                         {"max_tokens", 16},
                         {"seed", 1234},
                         {"n", 2},
                         {"ignore_eos", true}};
  int status = 0;
  std::string resp =
      testing::HttpPostJson(server_->http_port(), "/v1/completions", body.dump(), &status);
  ASSERT_EQ(status, 200) << resp;
  nlohmann::json j = nlohmann::json::parse(resp);
  ASSERT_EQ(j["choices"].size(), 2u);
  for (const auto& c : j["choices"]) {
    int index = c["index"].get<int>();
    EXPECT_EQ(c["text"].get<std::string>(), a.choices[index].text) << "choice " << index;
    EXPECT_EQ(a.choices[index].tokens, b.choices[index].tokens);
  }
}

TEST_F(GrpcE2eTest, StopStringEndsChoiceWithoutLeakingIt) {
  // Learn the greedy continuation first, then stop on a piece of it.
  pb::GenerateRequest req;
  req.add_token_ids(65);
  req.add_token_ids(66);
  req.mutable_sampling()->set_temperature(0);
  req.mutable_sampling()->set_max_tokens(40);
  req.mutable_sampling()->set_ignore_eos(true);
  CallOut full = Generate(req);
  ASSERT_TRUE(full.status.ok());
  const std::string text = full.choices[0].text;
  // A stop string of 2 bytes from the middle of valid ASCII text, if the random model made any.
  std::string stop;
  for (size_t i = 4; i + 2 <= text.size(); ++i) {
    if (static_cast<unsigned char>(text[i]) < 0x80 &&
        static_cast<unsigned char>(text[i + 1]) < 0x80) {
      stop = text.substr(i, 2);
      break;
    }
  }
  if (stop.empty()) GTEST_SKIP() << "the demo model produced no ASCII pair to stop on";
  req.mutable_sampling()->add_stop(stop);
  req.set_stream(true);
  CallOut stopped = Generate(req);
  ASSERT_TRUE(stopped.status.ok());
  const ChoiceOut& c = stopped.choices[0];
  EXPECT_EQ(c.finish, pb::FINISH_REASON_STOP);
  EXPECT_EQ(c.text, text.substr(0, text.find(stop)));
  EXPECT_TRUE(WaitIdle());
}

TEST_F(GrpcE2eTest, ChoiceStoppedByStopStringFreesItsSlotWhileTheOtherRuns) {
  // Seeded sampling is reproducible: learn both choices' first 60 tokens, then stop choice 0 on
  // a piece of its early text that choice 1's text does not contain.
  std::string t0, stop;
  uint64_t seed = 0;
  for (uint64_t sd = 1; sd < 40 && stop.empty(); ++sd) {
    CallOut free_run = Generate(BasicRequest(false, 2, 60, sd));
    ASSERT_TRUE(free_run.status.ok());
    t0 = free_run.choices[0].text;
    const std::string& t1 = free_run.choices[1].text;
    for (size_t i = 0; i + 3 <= t0.size() / 3 && stop.empty(); ++i) {
      const std::string s = t0.substr(i, 3);
      bool ascii = true;
      for (unsigned char ch : s) ascii = ascii && ch > 0x20 && ch < 0x7f;
      if (ascii && t1.find(s) == std::string::npos) {
        stop = s;
        seed = sd;
      }
    }
  }
  if (stop.empty()) GTEST_SKIP() << "no usable stop string in the demo model's text";
  pb::GenerateRequest req = BasicRequest(true, 2, 100000, seed);  // choice 1 runs until cancelled
  req.mutable_sampling()->add_stop(stop);
  grpc::ClientContext ctx;
  auto reader = stub_->Generate(&ctx, req);
  CallOut out;
  pb::GenerateResponse r;
  while (out.choices[0].completes == 0 && reader->Read(&r)) Absorb(r, &out);
  ASSERT_EQ(out.choices[0].completes, 1);
  EXPECT_EQ(out.choices[0].finish, pb::FINISH_REASON_STOP);
  EXPECT_EQ(out.choices[0].text, t0.substr(0, t0.find(stop)));
  // Choice 0's engine slot is freed while choice 1 still decodes (bounded wait: 10 s).
  int slots = 2;
  for (int i = 0; i < 1000 && slots > 1; ++i) {
    slots = GetLoad().slots_used();
    if (slots > 1) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_LE(slots, 1);
  EXPECT_EQ(out.choices[1].completes, 0);
  ctx.TryCancel();
  while (reader->Read(&r)) {
  }
  (void)reader->Finish();
  EXPECT_TRUE(WaitIdle());
}

TEST_F(GrpcE2eTest, ClientCancelFreesTheSlot) {
  grpc::ClientContext ctx;
  auto reader = stub_->Generate(&ctx, BasicRequest(true, 1, 100000, 5));
  pb::GenerateResponse r;
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(reader->Read(&r));
  pb::Load busy = GetLoad();
  EXPECT_EQ(busy.running(), 1);
  EXPECT_EQ(busy.slots_used(), 1);
  ctx.TryCancel();
  while (reader->Read(&r)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(WaitIdle());
}

TEST_F(GrpcE2eTest, DeadlineExceededCancelsTheRequest) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(1000));
  auto reader = stub_->Generate(&ctx, BasicRequest(true, 1, 100000, 5));
  pb::GenerateResponse r;
  int messages = 0;
  while (reader->Read(&r)) ++messages;
  EXPECT_GT(messages, 0);
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_TRUE(WaitIdle());
}

TEST_F(GrpcE2eTest, AbortById) {
  pb::GenerateRequest req = BasicRequest(true, 2, 100000, 9);
  req.set_request_id("abort-me-1");
  grpc::ClientContext ctx;
  auto reader = stub_->Generate(&ctx, req);
  pb::GenerateResponse r;
  ASSERT_TRUE(reader->Read(&r));
  EXPECT_EQ(r.request_id(), "abort-me-1");
  {
    grpc::ClientContext actx;
    pb::AbortRequest areq;
    areq.set_request_id("abort-me-1");
    pb::AbortResponse aresp;
    grpc::Status s = stub_->Abort(&actx, areq, &aresp);
    EXPECT_TRUE(s.ok()) << s.error_message();
  }
  CallOut out;
  Absorb(r, &out);
  while (reader->Read(&r)) Absorb(r, &out);
  EXPECT_TRUE(reader->Finish().ok());
  ASSERT_EQ(out.choices.size(), 2u);
  for (auto& [i, c] : out.choices) {
    EXPECT_EQ(c.finish, pb::FINISH_REASON_ABORT) << "choice " << i;
    EXPECT_LT(c.tokens.size(), 100000u);
  }
  EXPECT_TRUE(WaitIdle());

  grpc::ClientContext nctx;
  pb::AbortRequest nreq;
  nreq.set_request_id("no-such-request");
  pb::AbortResponse nresp;
  EXPECT_EQ(stub_->Abort(&nctx, nreq, &nresp).error_code(), grpc::StatusCode::NOT_FOUND);
}

// Each bad request fails with INVALID_ARGUMENT and a message naming the field.
TEST_F(GrpcE2eTest, BadInputNamesTheField) {
  struct Case {
    const char* what;
    std::function<void(pb::GenerateRequest*)> edit;
    const char* field;
  };
  std::vector<Case> cases = {
      {"empty input", [](pb::GenerateRequest* r) { r->clear_text(); }, "token_ids"},
      {"empty text", [](pb::GenerateRequest* r) { r->set_text(""); }, "text"},
      {"both", [](pb::GenerateRequest* r) { r->add_token_ids(1); }, "both"},
      {"token out of range",
       [](pb::GenerateRequest* r) {
         r->clear_text();
         r->add_token_ids(1);
         r->add_token_ids(1 << 20);
       },
       "token_ids[1]"},
      {"temperature", [](pb::GenerateRequest* r) { r->mutable_sampling()->set_temperature(7); },
       "temperature"},
      {"top_p", [](pb::GenerateRequest* r) { r->mutable_sampling()->set_top_p(0); }, "top_p"},
      {"max_tokens", [](pb::GenerateRequest* r) { r->mutable_sampling()->set_max_tokens(0); },
       "max_tokens"},
      {"n", [](pb::GenerateRequest* r) { r->set_n(1000); }, "n "},
      {"logprobs", [](pb::GenerateRequest* r) { r->mutable_sampling()->set_logprobs(99); },
       "logprobs"},
      {"min_p", [](pb::GenerateRequest* r) { r->mutable_sampling()->set_min_p(3); }, "min_p"},
      {"prompt_logprobs", [](pb::GenerateRequest* r) { r->set_prompt_logprobs(21); },
       "prompt_logprobs"},
  };
  for (const Case& c : cases) {
    pb::GenerateRequest req = BasicRequest(true, 1, 4, 1);
    c.edit(&req);
    CallOut out = Generate(req);
    EXPECT_EQ(out.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.what;
    EXPECT_NE(out.status.error_message().find(c.field), std::string::npos)
        << c.what << ": " << out.status.error_message();
    EXPECT_EQ(out.messages, 0) << c.what;
  }
  // Larger than --grpc-max-message-bytes (default 4 MiB).
  pb::GenerateRequest huge = BasicRequest(true, 1, 4, 1);
  huge.set_text(std::string(5 << 20, 'a'));
  EXPECT_EQ(Generate(huge).status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_TRUE(WaitIdle());
}

// prompt_logprobs = 2, n = 2, greedy: each choice's first message scores prompt tokens 1.. (ids
// from the Tokenize RPC) with 2 alternatives; later messages carry none; stream = true and
// stream = false agree. (The values themselves are checked against the backend in
// tests/engine/cpu_engine_test.cc.)
TEST_F(GrpcE2eTest, PromptLogprobsInEachChoicesFirstMessage) {
  const std::string prompt = "The quick brown fox";
  grpc::ClientContext tctx;
  pb::TokenizeRequest treq;
  treq.set_text(prompt);
  pb::TokenizeResponse tresp;
  ASSERT_TRUE(stub_->Tokenize(&tctx, treq, &tresp).ok());
  ASSERT_GE(tresp.token_ids_size(), 2);

  // Per mode, per choice: the prompt scores of its first message, and its generated tokens.
  std::map<int, pb::Complete> scores[2];
  std::map<int, std::vector<int32_t>> tokens[2];
  for (int stream = 0; stream < 2; ++stream) {
    pb::GenerateRequest req = BasicRequest(stream == 1, 2, 32, 11);
    req.set_text(prompt);
    req.mutable_sampling()->set_temperature(0);
    req.set_prompt_logprobs(2);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    auto reader = stub_->Generate(&ctx, req);
    pb::GenerateResponse r;
    std::map<int, int> messages;
    CallOut out;
    while (reader->Read(&r)) {
      Absorb(r, &out);
      ASSERT_TRUE(r.has_chunk() || r.has_complete());
      const int index = r.has_chunk() ? r.chunk().index() : r.complete().index();
      const auto& got =
          r.has_chunk() ? r.chunk().prompt_logprobs() : r.complete().prompt_logprobs();
      if (messages[index]++ == 0) {
        *scores[stream][index].mutable_prompt_logprobs() = got;
      } else {
        EXPECT_EQ(got.size(), 0) << "stream " << stream << " choice " << index;
      }
    }
    ASSERT_TRUE(reader->Finish().ok());
    ASSERT_EQ(out.choices.size(), 2u);
    for (auto& [i, c] : out.choices) tokens[stream][i] = c.tokens;
    // (Streamed choices usually send several messages; all of a choice's events may coalesce
    // into one Complete on a slow machine, so that is not asserted: grpc_frontend_test is.)
    if (stream == 0) {
      for (auto& [i, m] : messages) EXPECT_EQ(m, 1) << "choice " << i;
    }
  }

  for (int stream = 0; stream < 2; ++stream) {
    ASSERT_EQ(scores[stream].size(), 2u);
    for (auto& [choice, m] : scores[stream]) {
      const auto& lps = m.prompt_logprobs();
      ASSERT_EQ(lps.size(), tresp.token_ids_size() - 1) << "stream " << stream;
      for (int i = 0; i < lps.size(); ++i) {
        const pb::TokenLogprob& lp = lps[i];
        SCOPED_TRACE(::testing::Message()
                     << "stream " << stream << " choice " << choice << " i " << i);
        EXPECT_EQ(lp.token_id(), tresp.token_ids(i + 1));
        EXPECT_LE(lp.logprob(), 0.f);
        ASSERT_EQ(lp.top_size(), 2);
        EXPECT_GE(lp.top(0).logprob(), lp.top(1).logprob());
        EXPECT_GE(lp.top(0).logprob(), lp.logprob() - 1e-5);
        EXPECT_LE(lp.top(0).logprob(), 0.f);
        // rank = 1 + tokens strictly more likely: the prompt token at top position k has
        // rank <= k + 1, and rank 1 means nothing beats it.
        EXPECT_GE(lp.rank(), 1);
        for (int k = 0; k < 2; ++k) {
          if (lp.top(k).token_id() == lp.token_id()) {
            EXPECT_NEAR(lp.top(k).logprob(), lp.logprob(), 1e-5);
            EXPECT_LE(lp.rank(), k + 1);
          }
        }
        if (lp.rank() == 1) EXPECT_NEAR(lp.top(0).logprob(), lp.logprob(), 1e-5);
      }
    }
  }
  // The alternatives' text is the token's text.
  const pb::TopLogprob& top = scores[1][0].prompt_logprobs(0).top(0);
  grpc::ClientContext dctx;
  pb::DetokenizeRequest dreq;
  dreq.add_token_ids(top.token_id());
  pb::DetokenizeResponse dresp;
  ASSERT_TRUE(stub_->Detokenize(&dctx, dreq, &dresp).ok());
  EXPECT_EQ(top.token(), dresp.text());

  // Greedy: both choices and both modes alike.
  EXPECT_EQ(tokens[0], tokens[1]);
  EXPECT_EQ(tokens[1][0], tokens[1][1]);
  for (int choice = 0; choice < 2; ++choice) {
    const auto& a = scores[0][choice].prompt_logprobs();
    const auto& b = scores[1][choice].prompt_logprobs();
    ASSERT_EQ(a.size(), b.size());
    for (int i = 0; i < a.size(); ++i) {
      EXPECT_EQ(a[i].token_id(), b[i].token_id());
      EXPECT_NEAR(a[i].logprob(), b[i].logprob(), 1e-5) << i;
      EXPECT_EQ(a[i].rank(), b[i].rank()) << i;
      for (int k = 0; k < 2; ++k) {
        EXPECT_EQ(a[i].top(k).token_id(), b[i].top(k).token_id()) << i << "," << k;
        EXPECT_NEAR(a[i].top(k).logprob(), b[i].top(k).logprob(), 1e-5) << i << "," << k;
      }
    }
  }
}

TEST_F(GrpcE2eTest, ModelInfoAndHealth) {
  grpc::ClientContext ctx;
  pb::ModelInfo info;
  ASSERT_TRUE(stub_->GetModelInfo(&ctx, pb::GetModelInfoRequest(), &info).ok());
  EXPECT_EQ(info.served_model_name(), "bmserve-demo");
  EXPECT_EQ(info.config().d_inner(), 2 * info.config().d_model());
  EXPECT_EQ(static_cast<int>(info.config().layers().size()), info.config().num_layers());
  EXPECT_EQ(info.tokenizer().name(), "byte-fallback");
  EXPECT_EQ(info.limits().max_message_bytes(), 4 << 20);
  EXPECT_GT(info.state_slots_total(), 0);

  auto health = grpc::health::v1::Health::NewStub(channel_);
  grpc::ClientContext hctx;
  HealthCheckResponse resp;
  ASSERT_TRUE(health->Check(&hctx, HealthCheckRequest(), &resp).ok());
  EXPECT_EQ(resp.status(), HealthCheckResponse::SERVING);
}

// SIGTERM: health turns NOT_SERVING (seen by Watch), new calls get UNAVAILABLE, the stream in
// flight still completes, and the process exits 0.
TEST(GrpcDrainTest, HealthFollowsDrain) {
  // The stream must still run when SIGTERM arrives (3000 tokens) and finish within the drain
  // timeout even on a loaded 2-core machine (8000 tokens against 30 s was aborted there).
  testing::ServeProcess server(Bin(), {"--drain-timeout", "180"});
  ASSERT_TRUE(server.ok()) << server.log();
  auto channel = grpc::CreateChannel(server.grpc_target(), grpc::InsecureChannelCredentials());
  auto stub = pb::Inference::NewStub(channel);
  auto health = grpc::health::v1::Health::NewStub(channel);

  grpc::ClientContext wctx;
  auto watch = health->Watch(&wctx, HealthCheckRequest());
  HealthCheckResponse h;
  ASSERT_TRUE(watch->Read(&h));
  EXPECT_EQ(h.status(), HealthCheckResponse::SERVING);

  grpc::ClientContext gctx;
  auto stream = stub->Generate(&gctx, BasicRequest(true, 1, 3000, 3));
  pb::GenerateResponse r;
  ASSERT_TRUE(stream->Read(&r));

  server.Signal(SIGTERM);
  ASSERT_TRUE(watch->Read(&h));
  EXPECT_EQ(h.status(), HealthCheckResponse::NOT_SERVING);

  grpc::ClientContext nctx;
  auto refused = stub->Generate(&nctx, BasicRequest(true, 1, 4, 3));
  while (refused->Read(&r)) {
  }
  grpc::Status rs = refused->Finish();
  EXPECT_EQ(rs.error_code(), grpc::StatusCode::UNAVAILABLE) << rs.error_message();

  CallOut out;
  while (stream->Read(&r)) Absorb(r, &out);
  EXPECT_TRUE(stream->Finish().ok());
  ASSERT_EQ(out.choices.size(), 1u);
  EXPECT_EQ(out.choices[0].finish, pb::FINISH_REASON_LENGTH);
  wctx.TryCancel();
  EXPECT_EQ(server.Wait(30000), 0) << server.log();
}

}  // namespace
}  // namespace bms
