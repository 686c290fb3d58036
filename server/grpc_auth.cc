#include "server/grpc_auth.h"

#include "absl/strings/string_view.h"

namespace bms {

grpc::Status CheckGrpcAuth(const ApiKeys& keys, const grpc::CallbackServerContext& call) {
  if (!keys.enabled()) return grpc::Status::OK;
  absl::string_view header;
  const auto& md = call.client_metadata();
  if (auto it = md.find("authorization"); it != md.end()) {
    header = absl::string_view(it->second.data(), it->second.size());
  }
  absl::Status s = keys.CheckAuthorization(header);
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, std::string(s.message()));
}

}  // namespace bms
