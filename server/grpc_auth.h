// API-key check for the bmserve.v1 gRPC methods: reads the `authorization` metadata
// ("Bearer <key>") of a call and checks it against the server's ApiKeys (server/auth.h).
// Stateless; thread-safe.
#pragma once

#include "grpcpp/server_context.h"
#include "grpcpp/support/status.h"
#include "server/auth.h"

namespace bms {

// OK when authentication is off or the call carries a valid key; else UNAUTHENTICATED.
grpc::Status CheckGrpcAuth(const ApiKeys& keys, const grpc::CallbackServerContext& call);

}  // namespace bms
