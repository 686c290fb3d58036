// API-key authentication of the network frontends. `serve --api-key KEY` (repeatable, or a
// comma list, or BMSERVE_API_KEY) turns it on: /v1/*, /tokenize and /detokenize over HTTP and
// every bmserve.v1.Inference gRPC method then need `Authorization: Bearer <key>` (gRPC metadata
// `authorization`). /health, /ready, /metrics, gRPC health and reflection stay open. Keys are
// compared in constant time (the time depends only on the length of what the client sent).
// ApiKeys is immutable after Create() and thread-safe to read.
#pragma once

#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/http_router.h"

namespace bms {

class ApiKeys {
 public:
  ApiKeys() = default;  // no keys: authentication off

  // Each entry may itself be a comma-separated list; surrounding spaces are trimmed. A key that
  // is empty after trimming, or holds whitespace or control characters, or is longer than
  // 512 bytes, is InvalidArgument naming --api-key.
  static absl::StatusOr<ApiKeys> Create(const std::vector<std::string>& entries);

  bool enabled() const { return !keys_.empty(); }
  size_t size() const { return keys_.size(); }

  // True when `key` equals one of the keys. Every key is compared (no early exit), each in
  // constant time for a given length of `key`.
  bool Matches(absl::string_view key) const;

  // Checks an Authorization header value. OK when authentication is off or the header is
  // "Bearer <key>" (scheme case-insensitive) with a valid key; otherwise Unauthenticated with a
  // message saying what was wrong (missing header, wrong scheme, unknown key).
  absl::Status CheckAuthorization(absl::string_view header) const;

 private:
  std::vector<std::string> keys_;
};

// Byte equality whose running time depends only on a.size() (the client's input), never on
// where the first difference lies or on b's contents.
bool ConstantTimeEquals(absl::string_view a, absl::string_view b);

// Whether an HTTP path needs a key when authentication is on: /v1/..., /tokenize, /detokenize.
bool PathRequiresAuth(absl::string_view path);

// A router filter: 401 in the OpenAI error shape (code "invalid_api_key", header
// WWW-Authenticate: Bearer) for protected paths without a valid key. `keys` must outlive it.
HttpFilter MakeHttpAuthFilter(const ApiKeys* keys);

}  // namespace bms
