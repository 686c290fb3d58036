// `bmserve serve`: loads the model (or builds the in-memory demo model), starts the engine and
// the network frontends that share one ServerContext (HTTP/OpenAI with GET /metrics, gRPC), logs
// the effective configuration, and runs until SIGINT/SIGTERM, then drains: /ready and gRPC health
// turn unready at once, new requests get 503/UNAVAILABLE (the listeners stay open), running ones
// get --drain-timeout seconds to finish, the rest are cancelled (finish reason abort), exit 0.
// A second signal during the drain exits at once (status 128 + signal).
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <new>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "boost/asio.hpp"
#include "engine/backend_registry.h"
#include "engine/cpu_backend.h"
#include "engine/engine.h"
#include "engine/model_weights.h"
#include "server/auth.h"
#include "server/commands.h"
#include "server/flags.h"
#include "server/grpc_server.h"
#include "server/http_log.h"
#include "server/http_server.h"
#include "server/log.h"
#include "server/metrics_collector.h"
#include "server/metrics_http.h"
#include "server/openai_handlers.h"
#include "server/server_context.h"

namespace bms {
namespace {

struct ServeFlags {
  std::string model;
  bool demo = false;
  std::string tokenizer;
  std::string served_model_name;
  std::string backend = "cpu";
  std::string host = "127.0.0.1";
  int http_port = 8000;
  int http_threads = 2;
  int max_num_seqs = 0;
  int64_t state_memory_budget = int64_t{4} << 30;
  std::string state_dtype = "fp32";
  int max_num_batched_tokens = 2048;
  int cuda_graph_max_batch = 0;
  int state_cache_entries = 0;
  int state_cache_min_tokens = 32;
  int max_queued_requests = 1024;
  int max_prompt_tokens = 131072;
  int max_tokens_limit = 131072;
  int max_n = 16;
  std::string chat_template;
  int64_t max_body_bytes = 16 << 20;
  double write_timeout = 30;
  double idle_timeout = 60;
  double drain_timeout = 30;
  int64_t max_buffered_output = 1 << 20;
  int demo_seed = 1;
  int cpu_threads = 0;
  std::string fault_injection;
  int grpc_port = 50051;
  int64_t grpc_max_message_bytes = 4 << 20;
  std::string log_format = "text";
  std::string log_level = "info";
  double moe_metrics_window = 60;
  std::vector<std::string> api_keys;
  int64_t max_header_bytes = 64 << 10;
  int max_connections = 4096;
  int max_stop_strings = 16;
  int max_stop_string_bytes = 256;
  int max_logit_bias = 1024;
  int max_messages = 1024;
  int max_stop_token_ids = 1024;
};

void Register(FlagSet& f, ServeFlags& v) {
  f.String("model", &v.model, "model directory (config.json + weights); none = --demo");
  f.Bool("demo", &v.demo, "serve the built-in tiny random-weight demo model (bmserve-demo)");
  f.String("tokenizer", &v.tokenizer,
           "tokenizer.json (default: <model>/tokenizer.json, else bytes)");
  f.String("served-model-name", &v.served_model_name, "model id clients use (default: dir name)");
  f.String("backend", &v.backend, "cpu or cuda");
  f.String("host", &v.host, "address to listen on (0.0.0.0 to accept remote clients)");
  f.Int("http-port", &v.http_port, "HTTP port (0 = any free port, logged at start-up)");
  f.Int("http-threads", &v.http_threads, "HTTP I/O threads (fixed; connections are async)");
  f.Int("max-num-seqs", &v.max_num_seqs, "state slots = max running sequences (0 = from budget)");
  f.Int64("state-memory-budget", &v.state_memory_budget, "bytes of state when max-num-seqs=0");
  f.String("state-dtype", &v.state_dtype, "fp32 or bf16 state slots");
  f.Int("max-num-batched-tokens", &v.max_num_batched_tokens, "token budget per engine step");
  f.Int("cuda-graph-max-batch", &v.cuda_graph_max_batch,
        "CUDA backend: largest decode batch captured as a CUDA graph at start-up (bounds graph "
        "memory; larger decode steps run eagerly); 0 = every batch up to min(slots, "
        "--max-num-batched-tokens)");
  f.Int("state-cache-entries", &v.state_cache_entries,
        "state cache: finished requests' states (and prompt states) kept in free slots, so a "
        "prompt that extends one (the next chat turn, a shared system prompt) skips prefilling "
        "it; entries give their slots back to new requests on demand. 0 = off");
  f.Int("state-cache-min-tokens", &v.state_cache_min_tokens,
        "state cache: shortest token sequence worth an entry");
  f.Int("max-queued-requests", &v.max_queued_requests, "waiting requests before 429");
  f.Int("max-prompt-tokens", &v.max_prompt_tokens, "longer prompts are rejected (400)");
  f.Int("max-tokens-limit", &v.max_tokens_limit, "largest accepted max_tokens");
  f.Int("max-n", &v.max_n, "largest accepted n");
  f.String("chat-template", &v.chat_template, "chat template JSON file (see chat_template.h)");
  f.Int64("max-body-bytes", &v.max_body_bytes, "larger request bodies get 413");
  f.Double("write-timeout", &v.write_timeout, "seconds a client may stall a write before cut");
  f.Double("idle-timeout", &v.idle_timeout, "seconds an idle keep-alive connection stays open");
  f.Double("drain-timeout", &v.drain_timeout, "seconds running requests get at shutdown");
  f.Int64("max-buffered-output", &v.max_buffered_output, "output bytes buffered per connection");
  f.Int("demo-seed", &v.demo_seed, "seed of the demo model's random weights");
  f.Int("cpu-threads", &v.cpu_threads, "CPU backend threads (0 = all cores)");
  f.String("fault-injection", &v.fault_injection,
           "test only: step-fail:N makes every Nth backend step fail (its requests finish with "
           "an error; the server keeps running)");
  f.StringList("api-key", &v.api_keys,
               "require 'Authorization: Bearer KEY' (gRPC metadata authorization) on /v1/*, "
               "/tokenize, /detokenize and every bmserve.v1 gRPC method; /health, /ready, "
               "/metrics, gRPC health and reflection stay open; repeat the flag or give a comma "
               "list for several keys");
  f.Int64("max-header-bytes", &v.max_header_bytes, "larger HTTP request headers get 431");
  f.Int("max-connections", &v.max_connections,
        "concurrent HTTP connections; more get 429 and are closed");
  f.Int("max-stop-strings", &v.max_stop_strings, "more 'stop' strings per request get 400");
  f.Int("max-stop-string-bytes", &v.max_stop_string_bytes, "longer 'stop' strings get 400");
  f.Int("max-logit-bias", &v.max_logit_bias, "more 'logit_bias' entries get 400");
  f.Int("max-messages", &v.max_messages, "more chat 'messages' get 400");
  f.Int("max-stop-token-ids", &v.max_stop_token_ids, "more 'stop_token_ids' get 400");
  f.String("log-format", &v.log_format, "text, or json (one JSON object per line)");
  f.String("log-level", &v.log_level, "debug, info, warning or error");
  f.Double("moe-metrics-window", &v.moe_metrics_window,
           "seconds of expert load behind bmserve:moe_imbalance_ratio");
  f.Int("grpc-port", &v.grpc_port, "gRPC (bmserve.v1) port on --host (0 = any free port)");
  f.Int64("grpc-max-message-bytes", &v.grpc_max_message_bytes,
          "larger gRPC request messages get RESOURCE_EXHAUSTED");
}

std::chrono::milliseconds Ms(double seconds) {
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
}

absl::Status CheckFlags(const ServeFlags& v) {
  auto positive = [](const char* name, double x) -> absl::Status {
    if (x > 0) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat("flag --", name, " must be > 0"));
  };
  for (auto [name, x] : {std::pair<const char*, double>{"write-timeout", v.write_timeout},
                         {"idle-timeout", v.idle_timeout},
                         {"http-threads", v.http_threads},
                         {"max-body-bytes", static_cast<double>(v.max_body_bytes)},
                         {"max-buffered-output", static_cast<double>(v.max_buffered_output)},
                         {"max-n", v.max_n},
                         {"max-tokens-limit", v.max_tokens_limit},
                         {"max-prompt-tokens", v.max_prompt_tokens},
                         {"max-header-bytes", static_cast<double>(v.max_header_bytes)},
                         {"max-connections", v.max_connections},
                         {"max-stop-strings", v.max_stop_strings},
                         {"max-stop-string-bytes", v.max_stop_string_bytes},
                         {"max-logit-bias", v.max_logit_bias},
                         {"max-messages", v.max_messages},
                         {"max-stop-token-ids", v.max_stop_token_ids}}) {
    if (auto s = positive(name, x); !s.ok()) return s;
  }
  if (v.max_header_bytes > (int64_t{1} << 30)) {
    return absl::InvalidArgumentError("flag --max-header-bytes must be at most 1073741824");
  }
  if (v.drain_timeout < 0) return absl::InvalidArgumentError("flag --drain-timeout must be >= 0");
  if (v.max_num_seqs < 0) return absl::InvalidArgumentError("flag --max-num-seqs must be >= 0");
  if (v.cuda_graph_max_batch < 0) {
    return absl::InvalidArgumentError("flag --cuda-graph-max-batch must be >= 0");
  }
  if (v.state_cache_entries < 0) {
    return absl::InvalidArgumentError("flag --state-cache-entries must be >= 0");
  }
  if (v.state_cache_min_tokens < 1) {
    return absl::InvalidArgumentError("flag --state-cache-min-tokens must be >= 1");
  }
  if (v.state_dtype != "fp32" && v.state_dtype != "bf16") {
    return absl::InvalidArgumentError("flag --state-dtype must be fp32 or bf16");
  }
  if (!v.model.empty() && v.demo) {
    return absl::InvalidArgumentError("give either --model DIR or --demo, not both");
  }
  return absl::OkStatus();
}

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "bmserve serve: %s\n", std::string(s.message()).c_str());
  return 1;
}

}  // namespace

int ServeCommand(const Args& args) {
  FlagSet flags("serve");
  ServeFlags v;
  Register(flags, v);
  if (auto s = flags.Parse(args); !s.ok()) return Fail(s);
  if (flags.help_requested()) {
    std::printf("%s", flags.Usage().c_str());
    return 0;
  }
  if (auto s = CheckFlags(v); !s.ok()) return Fail(s);
  if (auto s = ConfigureLog(v.log_format, v.log_level); !s.ok()) return Fail(s);
  const bool demo = v.model.empty();

  // Model and tokenizer.
  ModelWeights weights;
  std::unique_ptr<Tokenizer> tokenizer;
  if (demo) {
    auto config = ModelConfig::Preset("tiny");
    if (!config.ok()) return Fail(config.status());
    weights = MakeRandomWeights(*config, static_cast<uint64_t>(v.demo_seed));
    if (v.tokenizer.empty()) {
      tokenizer = Tokenizer::ByteFallback();
    } else if (auto t = Tokenizer::FromFile(v.tokenizer); t.ok()) {
      tokenizer = std::move(*t);
    } else {
      return Fail(t.status());
    }
    if (v.served_model_name.empty()) v.served_model_name = "bmserve-demo";
  } else {
    auto loaded = LoadModel(v.model);
    if (!loaded.ok()) return Fail(loaded.status());
    weights = std::move(*loaded);
    auto t = LoadTokenizerForModel(v.model, v.tokenizer);
    if (!t.ok()) return Fail(t.status());
    tokenizer = std::move(*t);
    if (v.served_model_name.empty()) {
      v.served_model_name = std::filesystem::path(v.model).lexically_normal().filename().string();
      if (v.served_model_name.empty()) {
        v.served_model_name =
            std::filesystem::path(v.model).lexically_normal().parent_path().filename().string();
      }
    }
  }
  const ModelConfig config = weights.config;

  ServerContext ctx;
  if (auto keys = ApiKeys::Create(v.api_keys); keys.ok()) {
    ctx.api_keys = *std::move(keys);
  } else {
    return Fail(keys.status());
  }
  if (!v.chat_template.empty()) {
    auto t = ChatTemplate::FromFile(v.chat_template);
    if (!t.ok()) return Fail(t.status());
    ctx.chat_template = *t;
  }

  // Backend and engine.
  BackendOptions bo;
  bo.state_dtype = v.state_dtype == "bf16" ? StateDType::kBF16 : StateDType::kF32;
  bo.num_threads = v.cpu_threads;
  bo.cuda_graph_max_batch = v.cuda_graph_max_batch;
  size_t slot_bytes = StateBytesPerSlot(config, bo.state_dtype);
  bo.num_slots = v.max_num_seqs;
  if (bo.num_slots == 0) {
    bo.num_slots = static_cast<int>(
        std::clamp<int64_t>(v.state_memory_budget / std::max<size_t>(slot_bytes, 1), 1, 256));
  }
  // The state pool is allocated here: an impossible size is a clear error, not a crash.
  absl::StatusOr<std::unique_ptr<Backend>> backend = absl::InternalError("not created");
  try {
    backend = CreateBackend(v.backend, weights, bo);
  } catch (const std::bad_alloc&) {
    return Fail(absl::ResourceExhaustedError(
        absl::StrCat("cannot allocate the state of ", bo.num_slots, " slots (", slot_bytes,
                     " bytes each): lower --max-num-seqs or --state-memory-budget")));
  }
  if (!backend.ok()) return Fail(backend.status());
  EngineOptions eo;
  eo.max_num_batched_tokens = v.max_num_batched_tokens;
  eo.max_queued_requests = v.max_queued_requests;
  eo.max_prompt_tokens = v.max_prompt_tokens;
  eo.max_tokens_limit = v.max_tokens_limit;
  eo.max_n = v.max_n;
  eo.eos_token_id = tokenizer->eos_token_id() < config.vocab_size ? tokenizer->eos_token_id() : -1;
  eo.fault_injection = v.fault_injection;
  eo.state_cache_entries = v.state_cache_entries;
  eo.state_cache_min_tokens = v.state_cache_min_tokens;
  auto metrics = ServerMetrics::Create(config, {.moe_window_seconds = v.moe_metrics_window});
  if (!metrics.ok()) return Fail(metrics.status());
  eo.observer = *metrics;
  auto engine = Engine::Create(std::move(*backend), eo);
  if (!engine.ok()) return Fail(engine.status());
  weights = ModelWeights();  // the backend holds its own copy
  if (auto s = (*engine)->Start(); !s.ok()) return Fail(s);
  (*metrics)->AttachEngine(engine->get());

  ctx.engine = engine->get();
  ctx.tokenizer = tokenizer.get();
  ctx.served_model_name = v.served_model_name;
  ctx.vocab_size = config.vocab_size;
  ctx.max_sequence_length = config.max_sequence_length;
  ctx.created_unix = absl::ToUnixSeconds(absl::Now());
  ctx.limits.max_body_bytes = v.max_body_bytes;
  ctx.limits.max_prompt_tokens = v.max_prompt_tokens;
  ctx.limits.max_tokens_limit = v.max_tokens_limit;
  ctx.limits.max_n = v.max_n;
  ctx.limits.write_timeout = Ms(v.write_timeout);
  ctx.limits.idle_timeout = Ms(v.idle_timeout);
  ctx.limits.max_buffered_output = static_cast<size_t>(v.max_buffered_output);
  ctx.limits.max_header_bytes = v.max_header_bytes;
  ctx.limits.max_connections = v.max_connections;
  ctx.limits.max_stop_strings = v.max_stop_strings;
  ctx.limits.max_stop_string_bytes = v.max_stop_string_bytes;
  ctx.limits.max_logit_bias = v.max_logit_bias;
  ctx.limits.max_messages = v.max_messages;
  ctx.limits.max_stop_token_ids = v.max_stop_token_ids;

  // Frontends.
  HttpRouter router;
  HttpServerOptions ho;
  ho.host = v.host;
  ho.port = v.http_port;
  ho.threads = v.http_threads;
  ho.on_exchange_done = HttpMetricsHook(*metrics, &router);
  HttpServer http(router, ctx.limits, ho);
  router.AddFilter(MakeHttpAuthFilter(&ctx.api_keys));
  AddOpenAiRoutes(ctx, &http.counters(), &router);
  AddMetricsRoute(*metrics, &router);
  if (auto s = http.Start(); !s.ok()) {
    (*engine)->Stop();
    return Fail(s);
  }

  GrpcServerOptions go;
  go.host = v.host;
  go.port = v.grpc_port;
  go.max_message_bytes = v.grpc_max_message_bytes;
  go.on_call_done = [m = *metrics](const std::string& method, const std::string& code) {
    m->RecordGrpcRequest(method, code);
  };
  auto grpc = StartGrpcServer(ctx, go);
  if (!grpc.ok()) {
    http.Stop();
    (*engine)->Stop();
    return Fail(grpc.status());
  }

  LogLine(absl::StrCat("bmserve serve: config ", absl::StrJoin(flags.EffectiveValues(), " ")));
  LogLine(absl::StrCat(
      "bmserve serve: model=", v.served_model_name,
      demo ? " (demo: tiny preset, random weights)" : "", " layers=", config.num_layers,
      " d_model=", config.d_model, " vocab=", config.vocab_size, " tokenizer=", tokenizer->name(),
      " backend=", v.backend, " slots=", bo.num_slots, " state_bytes_per_slot=", slot_bytes));
  {
    const EngineStats st = (*engine)->Stats();
    std::string graphs;
    if (st.graphs.graphs > 0 || st.graphs.workspace_bytes > 0) {
      graphs = absl::StrFormat(
          "; %d CUDA graphs (batch buckets up to %d), graphs %.1f MiB, activation workspace "
          "%.1f MiB",
          st.graphs.graphs, st.graphs.max_batch, st.graphs.graph_bytes / 1048576.0,
          st.graphs.workspace_bytes / 1048576.0);
    }
    LogLine(absl::StrFormat("bmserve serve: start-up: warm-up + backend preparation %.2f s%s",
                            st.warmup_seconds, graphs));
  }
  if (!ctx.api_keys.enabled() && v.host != "127.0.0.1" && v.host != "::1" &&
      v.host != "localhost") {
    Log(LogLevel::kWarning,
        absl::StrCat("bmserve serve: listening on ", v.host,
                     " without --api-key: anyone who can reach this address can use the API"));
  }
  LogLine(absl::StrCat("bmserve serve: listening on http://", v.host, ":", http.port()));
  LogLine(absl::StrCat("bmserve serve: listening on grpc://", v.host, ":", (*grpc)->port()));

  // Wait for SIGINT/SIGTERM, then drain. The listeners stay open while draining so new
  // requests get a clear 503/UNAVAILABLE instead of a refused connection.
  boost::asio::io_context signals_ioc;
  boost::asio::signal_set signals(signals_ioc, SIGINT, SIGTERM);
  signals.async_wait([](const boost::system::error_code&, int) {});
  signals_ioc.run();
  LogLine(absl::StrCat("bmserve serve: shutting down (draining for up to ", v.drain_timeout,
                       " s; a second signal exits at once)"));
  ctx.draining.store(true);
  (*grpc)->UpdateHealth();  // gRPC health NOT_SERVING now
  signals_ioc.restart();
  signals.async_wait([](const boost::system::error_code& ec, int signo) {
    if (ec) return;  // cancelled: the drain finished
    Log(LogLevel::kWarning, "bmserve serve: second signal, exiting without draining",
        {{"signal", signo}});
    std::_Exit(128 + signo);
  });
  std::thread second_signal([&signals_ioc] { signals_ioc.run(); });
  auto busy = [&] {
    const EngineStats st = (*engine)->Stats();
    return st.running > 0 || st.waiting > 0 || http.counters().active_requests.load() > 0 ||
           (*grpc)->active_calls() > 0;
  };
  auto deadline = std::chrono::steady_clock::now() + Ms(v.drain_timeout);
  while (busy() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const EngineStats left = (*engine)->Stats();
  LogLine(absl::StrCat("bmserve serve: drain ", busy() ? "timed out" : "complete",
                       "; cancelling running=", left.running, " waiting=", left.waiting));
  http.StopAccepting();
  (*engine)->Stop();  // what still runs finishes with "abort"
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // let final frames flush
  (*grpc)->Shutdown(std::chrono::milliseconds(200));
  http.Stop();
  (*metrics)->AttachEngine(nullptr);
  signals.cancel();
  signals_ioc.stop();
  second_signal.join();
  LogLine("bmserve serve: stopped");
  return 0;
}

}  // namespace bms
