#include "server/metrics_grpc.h"

#include <utility>

namespace bms {
namespace {

class CallObserver : public grpc::experimental::Interceptor {
 public:
  CallObserver(const GrpcCallDoneFn* done, const char* method) : done_(done), method_(method) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS)) {
      (*done_)(method_ != nullptr ? method_ : "unknown",
               GrpcStatusCodeName(static_cast<int>(methods->GetSendStatus().error_code())));
    }
    methods->Proceed();
  }

 private:
  const GrpcCallDoneFn* done_;  // owned by the factory, which outlives every call
  const char* method_;
};

class CallObserverFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit CallObserverFactory(GrpcCallDoneFn done) : done_(std::move(done)) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new CallObserver(&done_, info->method());
  }

 private:
  const GrpcCallDoneFn done_;
};

}  // namespace

const char* GrpcStatusCodeName(int code) {
  static const char* const kNames[] = {"OK",
                                       "CANCELLED",
                                       "UNKNOWN",
                                       "INVALID_ARGUMENT",
                                       "DEADLINE_EXCEEDED",
                                       "NOT_FOUND",
                                       "ALREADY_EXISTS",
                                       "PERMISSION_DENIED",
                                       "RESOURCE_EXHAUSTED",
                                       "FAILED_PRECONDITION",
                                       "ABORTED",
                                       "OUT_OF_RANGE",
                                       "UNIMPLEMENTED",
                                       "INTERNAL",
                                       "UNAVAILABLE",
                                       "DATA_LOSS",
                                       "UNAUTHENTICATED"};
  if (code < 0 || code >= static_cast<int>(sizeof(kNames) / sizeof(kNames[0]))) return "UNKNOWN";
  return kNames[code];
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> NewGrpcCallObserverFactory(
    GrpcCallDoneFn done) {
  return std::make_unique<CallObserverFactory>(std::move(done));
}

}  // namespace bms
