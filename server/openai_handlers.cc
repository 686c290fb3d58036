#include "server/openai_handlers.h"

#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "nlohmann/json.hpp"
#include "server/openai_generation.h"
#include "server/openai_request.h"
#include "server/openai_response.h"

namespace bms {
namespace {

using nlohmann::json;

HttpResponse JsonResponse(int status, const json& body) {
  HttpResponse r;
  r.status = status;
  r.body = body.dump(-1, ' ', false, json::error_handler_t::replace);
  return r;
}

HttpResponse ErrorResponse(const ApiError& e) {
  HttpResponse r = JsonResponse(e.http_status, ErrorJson(e));
  if (e.http_status == 429) r.headers.emplace_back("Retry-After", "1");
  return r;
}

ApiError NotReady(const ServerContext& ctx) {
  ApiError e;
  e.http_status = 503;
  e.type = "service_unavailable";
  e.message = ctx.draining.load() ? "the server is shutting down" : "the engine is not ready";
  return e;
}

// Drives one OpenAiGeneration on the connection's strand: drains engine events on each
// wake-up and writes SSE frames, or the whole response at the end.
class GenerationWork : public AsyncWork {
 public:
  GenerationWork(HttpResponder& responder, std::unique_ptr<OpenAiGeneration> generation)
      : responder_(responder), generation_(std::move(generation)) {}

  void Pump() override {
    if (done_) return;
    bool stream = generation_->spec().stream;
    std::string sse;
    bool finished = generation_->Drain(stream ? &sse : nullptr);
    if (stream) responder_.StreamWrite(std::move(sse));
    if (!finished) return;
    done_ = true;
    responder_.AddLogField("prompt_tokens", absl::StrCat(generation_->prompt_tokens()));
    responder_.AddLogField("completion_tokens", absl::StrCat(generation_->completion_tokens()));
    responder_.AddLogField("ttft_ms", absl::StrFormat("%.1f", generation_->ttft_seconds() * 1e3));
    if (generation_->error()) {
      responder_.AddLogField("error", absl::StrCat("\"", generation_->error()->message, "\""));
    }
    if (stream) {
      responder_.EndStream();
    } else if (generation_->error()) {
      responder_.Respond(ErrorResponse(*generation_->error()));
    } else {
      responder_.Respond(JsonResponse(200, generation_->FinalResponse()));
    }
  }

  void Abort() override { generation_->Abort(); }

 private:
  HttpResponder& responder_;
  std::unique_ptr<OpenAiGeneration> generation_;
  bool done_ = false;
};

void HandleGeneration(ServerContext& ctx, ApiKind kind, const HttpRequest& req,
                      HttpResponder& out) {
  if (!ctx.Ready()) {
    out.Respond(ErrorResponse(NotReady(ctx)));
    return;
  }
  json body;
  GenerationSpec spec;
  std::optional<ApiError> err = ParseJsonBody(req.body, &body);
  if (!err) {
    err = kind == ApiKind::kChat ? ParseChatRequest(body, ctx, &spec)
                                 : ParseCompletionRequest(body, ctx, &spec);
  }
  if (err) {
    out.AddLogField("error", absl::StrCat("\"", err->message, "\""));
    out.Respond(ErrorResponse(*err));
    return;
  }
  std::string id = absl::StrCat(kind == ApiKind::kChat ? "chatcmpl-" : "cmpl-", req.request_id);
  auto generation = std::make_unique<OpenAiGeneration>(ctx, std::move(spec), id, req.request_id,
                                                       absl::ToUnixSeconds(absl::Now()));
  if (auto e = generation->Submit(out.Waker())) {
    out.AddLogField("error", absl::StrCat("\"", e->message, "\""));
    out.Respond(ErrorResponse(*e));
    return;
  }
  if (generation->spec().stream) out.BeginStream(200, "text/event-stream");
  out.SetWork(std::make_unique<GenerationWork>(out, std::move(generation)));
  out.Waker()();  // events may have arrived before the notifier was installed
}

json ModelJson(const ServerContext& ctx) {
  return json{{"id", ctx.served_model_name},
              {"object", "model"},
              {"created", ctx.created_unix},
              {"owned_by", "bmserve"},
              {"max_model_len", ctx.max_sequence_length}};
}

void HandleTokenize(const ServerContext& ctx, const HttpRequest& req, HttpResponder& out) {
  json body;
  if (auto e = ParseJsonBody(req.body, &body)) return out.Respond(ErrorResponse(*e));
  auto it = body.find("prompt");
  if (it == body.end() || !it->is_string()) {
    return out.Respond(ErrorResponse(BadRequest("'prompt' must be a string", "prompt")));
  }
  auto ids = ctx.tokenizer->Encode(it->get<std::string>());
  if (!ids.ok()) {
    return out.Respond(
        ErrorResponse(BadRequest(absl::StrCat("'prompt': ", ids.status().message()), "prompt")));
  }
  out.Respond(JsonResponse(200, json{{"tokens", *ids}, {"count", ids->size()}}));
}

void HandleDetokenize(const ServerContext& ctx, const HttpRequest& req, HttpResponder& out) {
  json body;
  if (auto e = ParseJsonBody(req.body, &body)) return out.Respond(ErrorResponse(*e));
  auto it = body.find("tokens");
  if (it == body.end() || !it->is_array()) {
    return out.Respond(
        ErrorResponse(BadRequest("'tokens' must be an array of token ids", "tokens")));
  }
  std::vector<int32_t> ids;
  for (const json& t : *it) {
    if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() >= ctx.vocab_size ||
        (t.is_number_unsigned() && t.get<uint64_t>() >= static_cast<uint64_t>(ctx.vocab_size))) {
      return out.Respond(ErrorResponse(BadRequest(
          absl::StrCat("'tokens' must hold token ids in [0, ", ctx.vocab_size, ")"), "tokens")));
    }
    ids.push_back(t.get<int32_t>());
  }
  out.Respond(JsonResponse(200, json{{"prompt", ctx.tokenizer->Decode(ids)}}));
}

json StatusBody(const ServerContext& ctx, const HttpCounters* counters) {
  EngineStats s = ctx.engine->Stats();
  json j{{"ready", ctx.Ready()},
         {"draining", ctx.draining.load()},
         {"model", ctx.served_model_name},
         {"engine",
          {{"ready", s.ready},
           {"running", s.running},
           {"waiting", s.waiting},
           {"slots_total", s.slots_total},
           {"slots_used", s.slots_used},
           {"prompt_tokens_total", s.prompt_tokens_total},
           {"generation_tokens_total", s.generation_tokens_total},
           {"steps_total", s.steps_total}}}};
  if (counters != nullptr) {
    j["http"] = {{"open_connections", counters->open_connections.load()},
                 {"active_requests", counters->active_requests.load()},
                 {"requests_total", counters->requests_total.load()}};
  }
  return j;
}

}  // namespace

void AddOpenAiRoutes(ServerContext& ctx, const HttpCounters* counters, HttpRouter* router) {
  ServerContext* c = &ctx;
  router->Add("POST", "/v1/completions", [c](const HttpRequest& req, HttpResponder& out) {
    HandleGeneration(*c, ApiKind::kCompletion, req, out);
  });
  router->Add("POST", "/v1/chat/completions", [c](const HttpRequest& req, HttpResponder& out) {
    HandleGeneration(*c, ApiKind::kChat, req, out);
  });
  router->Add("GET", "/v1/models", [c](const HttpRequest&, HttpResponder& out) {
    out.Respond(
        JsonResponse(200, json{{"object", "list"}, {"data", json::array({ModelJson(*c)})}}));
  });
  router->AddPrefix("GET", "/v1/models/", [c](const HttpRequest& req, HttpResponder& out) {
    std::string id = req.path.substr(std::string("/v1/models/").size());
    if (id != c->served_model_name) {
      ApiError e;
      e.http_status = 404;
      e.type = "not_found_error";
      e.code = "model_not_found";
      e.message = absl::StrCat("The model '", id, "' does not exist");
      return out.Respond(ErrorResponse(e));
    }
    out.Respond(JsonResponse(200, ModelJson(*c)));
  });
  router->Add("POST", "/tokenize",
              [c](const HttpRequest& req, HttpResponder& out) { HandleTokenize(*c, req, out); });
  router->Add("POST", "/detokenize",
              [c](const HttpRequest& req, HttpResponder& out) { HandleDetokenize(*c, req, out); });
  router->Add("GET", "/health", [](const HttpRequest&, HttpResponder& out) {
    out.Respond(JsonResponse(200, json{{"status", "ok"}}));
  });
  router->Add("GET", "/ready", [c, counters](const HttpRequest&, HttpResponder& out) {
    out.Respond(JsonResponse(c->Ready() ? 200 : 503, StatusBody(*c, counters)));
  });
}

}  // namespace bms
