// The OpenAI-compatible HTTP routes: POST /v1/completions, POST /v1/chat/completions (both
// streaming as SSE or not), GET /v1/models, GET /v1/models/{id}, POST /tokenize,
// POST /detokenize, GET /health and GET /ready (engine counters in the body). Handlers only
// translate: parsing/validation lives in openai_request, JSON shapes in openai_response and the
// event-to-text pipeline in openai_generation.
#pragma once

#include "server/http_router.h"
#include "server/http_session.h"
#include "server/server_context.h"

namespace bms {

// Adds the routes above to `router`. `ctx` and `counters` (may be null) must outlive it.
void AddOpenAiRoutes(ServerContext& ctx, const HttpCounters* counters, HttpRouter* router);

}  // namespace bms
