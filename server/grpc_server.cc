#include "server/grpc_server.h"

#include <cstdio>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bmserve/v1/inference.grpc.pb.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "server/grpc_auth.h"
#include "server/grpc_convert.h"
#include "server/grpc_generate.h"
#include "server/metrics_grpc.h"

namespace bms {
namespace pb = ::bmserve::v1;

namespace {

const char* LayerCode(LayerKind kind) {
  switch (kind) {
    case LayerKind::kMamba:
      return "r";
    case LayerKind::kMoe:
      return "8";
    case LayerKind::kDenseMlp:
      return "1";
  }
  return "?";
}

}  // namespace

// The unary methods; Generate hands off to its reactor.
class InferenceServiceImpl final : public pb::Inference::CallbackService {
 public:
  InferenceServiceImpl(ServerContext& ctx, GrpcWorkQueue& queue, int64_t max_message_bytes)
      : ctx_(ctx), queue_(queue), max_message_bytes_(max_message_bytes) {}

  int64_t active_calls() const { return active_calls_.load(); }

  grpc::ServerWriteReactor<pb::GenerateResponse>* Generate(
      grpc::CallbackServerContext* call, const pb::GenerateRequest* request) override {
    return NewGenerateReactor(ctx_, queue_, active_calls_, call, *request);
  }

  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* call,
                                     const pb::TokenizeRequest* request,
                                     pb::TokenizeResponse* response) override {
    auto* reactor = call->DefaultReactor();
    if (grpc::Status auth = CheckGrpcAuth(ctx_.api_keys, *call); !auth.ok()) {
      reactor->Finish(auth);
      return reactor;
    }
    auto ids = ctx_.tokenizer->Encode(request->text(), request->parse_special());
    if (!ids.ok()) {
      reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                   absl::StrCat("'text': ", ids.status().message())));
      return reactor;
    }
    response->mutable_token_ids()->Add(ids->begin(), ids->end());
    response->set_count(static_cast<int32_t>(ids->size()));
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  grpc::ServerUnaryReactor* Detokenize(grpc::CallbackServerContext* call,
                                       const pb::DetokenizeRequest* request,
                                       pb::DetokenizeResponse* response) override {
    auto* reactor = call->DefaultReactor();
    if (grpc::Status auth = CheckGrpcAuth(ctx_.api_keys, *call); !auth.ok()) {
      reactor->Finish(auth);
      return reactor;
    }
    grpc::Status s = CheckTokenIds(request->token_ids(), ctx_.vocab_size, "token_ids");
    if (s.ok()) {
      std::vector<int32_t> ids(request->token_ids().begin(), request->token_ids().end());
      response->set_text(ctx_.tokenizer->Decode(ids, request->skip_special_tokens()));
    }
    reactor->Finish(s);
    return reactor;
  }

  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* call,
                                         const pb::GetModelInfoRequest* /*request*/,
                                         pb::ModelInfo* info) override {
    auto* reactor = call->DefaultReactor();
    if (grpc::Status auth = CheckGrpcAuth(ctx_.api_keys, *call); !auth.ok()) {
      reactor->Finish(auth);
      return reactor;
    }
    const ModelConfig& c = ctx_.engine->config();
    const EngineOptions& o = ctx_.engine->options();
    const EngineStats stats = ctx_.engine->Stats();
    info->set_served_model_name(ctx_.served_model_name);
    pb::ModelConfigSummary* s = info->mutable_config();
    s->set_num_layers(c.num_layers);
    s->set_d_model(c.d_model);
    s->set_d_inner(c.d_inner());
    s->set_d_state(c.d_state);
    s->set_d_conv(c.d_conv);
    s->set_dt_rank(c.dt_rank());
    s->set_n_experts(c.n_experts);
    s->set_ffn_hidden_size(c.ffn_hidden_size);
    s->set_vocab_size(c.vocab_size);
    s->set_max_sequence_length(c.max_sequence_length);
    std::string layers;
    for (LayerKind k : c.layers) layers += LayerCode(k);
    s->set_layers(layers);
    s->set_total_params(c.TotalParams());
    s->set_active_params(c.ActiveParams());
    pb::TokenizerInfo* t = info->mutable_tokenizer();
    t->set_name(ctx_.tokenizer->name());
    t->set_vocab_size(ctx_.tokenizer->vocab_size());
    t->set_eos_token_id(ctx_.tokenizer->eos_token_id());
    pb::Limits* l = info->mutable_limits();
    l->set_max_prompt_tokens(o.max_prompt_tokens);
    l->set_max_tokens(o.max_tokens_limit);
    l->set_max_n(o.max_n);
    l->set_max_queued_requests(o.max_queued_requests);
    l->set_max_num_batched_tokens(o.max_num_batched_tokens);
    l->set_max_message_bytes(max_message_bytes_);
    info->set_state_slots_total(stats.slots_total);
    info->set_state_bytes_per_slot(static_cast<int64_t>(stats.state_bytes_per_slot));
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  grpc::ServerUnaryReactor* GetLoad(grpc::CallbackServerContext* call,
                                    const pb::GetLoadRequest* /*request*/,
                                    pb::Load* load) override {
    auto* reactor = call->DefaultReactor();
    if (grpc::Status auth = CheckGrpcAuth(ctx_.api_keys, *call); !auth.ok()) {
      reactor->Finish(auth);
      return reactor;
    }
    const EngineStats s = ctx_.engine->Stats();
    load->set_running(s.running);
    load->set_waiting(s.waiting);
    load->set_slots_used(s.slots_used);
    load->set_slots_free(s.slots_total - s.slots_used);
    load->set_slots_total(s.slots_total);
    load->set_queue_limit(ctx_.engine->options().max_queued_requests);
    load->set_ready(ctx_.Ready());
    load->set_draining(ctx_.draining.load());
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  grpc::ServerUnaryReactor* Abort(grpc::CallbackServerContext* call,
                                  const pb::AbortRequest* request,
                                  pb::AbortResponse* /*response*/) override {
    auto* reactor = call->DefaultReactor();
    if (grpc::Status auth = CheckGrpcAuth(ctx_.api_keys, *call); !auth.ok()) {
      reactor->Finish(auth);
      return reactor;
    }
    if (request->request_id().empty()) {
      reactor->Finish(
          grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "'request_id' must not be empty"));
      return reactor;
    }
    reactor->Finish(ToGrpcStatus(ctx_.engine->Cancel(request->request_id())));
    return reactor;
  }

 private:
  ServerContext& ctx_;
  GrpcWorkQueue& queue_;
  int64_t max_message_bytes_;
  std::atomic<int64_t> active_calls_{0};  // Generate calls not yet done
};

GrpcServer::GrpcServer(ServerContext& ctx) : ctx_(ctx) {}

int64_t GrpcServer::active_calls() const {
  return service_ != nullptr ? service_->active_calls() : 0;
}

GrpcServer::~GrpcServer() { Shutdown(std::chrono::milliseconds(0)); }

void GrpcServer::UpdateHealth() {
  std::lock_guard<std::mutex> lock(mu_);
  if (shut_down_ || server_ == nullptr) return;
  const int serving = (!stopping_ && ctx_.Ready()) ? 1 : 0;
  if (serving == serving_) return;
  serving_ = serving;
  if (auto* health = server_->GetHealthCheckService()) health->SetServingStatus(serving == 1);
}

void GrpcServer::HealthLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    lock.unlock();
    UpdateHealth();
    lock.lock();
    cv_.wait_for(lock, std::chrono::milliseconds(50), [this] { return stopping_; });
  }
}

void GrpcServer::Shutdown(std::chrono::milliseconds grace) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shut_down_) return;
    stopping_ = true;
  }
  cv_.notify_all();
  if (health_thread_.joinable()) health_thread_.join();
  {
    std::lock_guard<std::mutex> lock(mu_);
    shut_down_ = true;
  }
  if (server_ != nullptr) {
    if (auto* health = server_->GetHealthCheckService()) health->Shutdown();
    server_->Shutdown(std::chrono::system_clock::now() + grace);
    server_->Wait();
  }
  queue_.reset();  // runs what is left (reactor clean-up), then joins
}

absl::StatusOr<std::unique_ptr<GrpcServer>> StartGrpcServer(ServerContext& ctx,
                                                            const GrpcServerOptions& options) {
  if (ctx.engine == nullptr || ctx.tokenizer == nullptr) {
    return absl::InvalidArgumentError("gRPC server needs an engine and a tokenizer");
  }
  if (options.port < 0 || options.port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("--grpc-port must be in [0, 65535], got ", options.port));
  }
  if (options.max_message_bytes < 1024 || options.max_message_bytes > (int64_t{1} << 31) - 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--grpc-max-message-bytes must be in [1024, 2147483647], got ", options.max_message_bytes));
  }
  if (options.host.empty()) return absl::InvalidArgumentError("--host must not be empty");

  std::unique_ptr<GrpcServer> server(new GrpcServer(ctx));
  server->queue_ = std::make_unique<GrpcWorkQueue>(options.worker_threads);
  server->service_ =
      std::make_unique<InferenceServiceImpl>(ctx, *server->queue_, options.max_message_bytes);

  grpc::EnableDefaultHealthCheckService(true);
  if (options.reflection) grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  const bool ipv6 = options.host.find(':') != std::string::npos && options.host[0] != '[';
  const std::string address = ipv6 ? absl::StrCat("[", options.host, "]:", options.port)
                                   : absl::StrCat(options.host, ":", options.port);
  grpc::ServerBuilder builder;
  int selected_port = 0;
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &selected_port);
  builder.SetMaxReceiveMessageSize(static_cast<int>(options.max_message_bytes));
  builder.RegisterService(server->service_.get());
  if (options.on_call_done) {
    std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> creators;
    creators.push_back(NewGrpcCallObserverFactory(options.on_call_done));
    builder.experimental().SetInterceptorCreators(std::move(creators));
  }
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || selected_port == 0) {
    if (server->server_ != nullptr) server->server_->Shutdown();
    server->server_.reset();
    return absl::UnavailableError(
        absl::StrCat("gRPC: cannot listen on ", address, " (address in use or not available?)"));
  }
  server->port_ = selected_port;
  // The default health service starts SERVING: correct it before anyone can ask. The named
  // service is registered too, so Check("bmserve.v1.Inference") answers like Check("").
  if (auto* health = server->server_->GetHealthCheckService()) {
    health->SetServingStatus(pb::Inference::service_full_name(), false);
    health->SetServingStatus(false);
  }
  server->serving_ = 0;
  server->UpdateHealth();
  server->health_thread_ = std::thread([s = server.get()] { s->HealthLoop(); });
  return server;
}

}  // namespace bms
