// The gRPC side of the metrics: a server interceptor that reports every finished call (full
// method name and status code name, e.g. "/bmserve.v1.Inference/Generate", "OK") to a callback,
// which `serve` points at ServerMetrics::RecordGrpcRequest (bmserve:grpc_requests_total).
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "grpcpp/support/server_interceptor.h"

namespace bms {

using GrpcCallDoneFn = std::function<void(const std::string& method, const std::string& code)>;

// "OK", "CANCELLED", ..., "UNAUTHENTICATED" (the canonical upper-case names).
const char* GrpcStatusCodeName(int code);

// An interceptor factory for grpc::ServerBuilder::experimental().SetInterceptorCreators that calls
// `done` once per call, just before its status is sent, on a gRPC thread. `done` must be
// thread-safe and cheap.
std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> NewGrpcCallObserverFactory(
    GrpcCallDoneFn done);

}  // namespace bms
