#include "server/auth.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace bms {
namespace {

constexpr size_t kMaxKeyBytes = 512;

}  // namespace

bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  // Walks a.size() bytes whatever b holds; a length mismatch still costs the same loop.
  unsigned diff = a.size() == b.size() ? 0u : 1u;
  const size_t nb = b.size();
  for (size_t i = 0; i < a.size(); ++i) {
    const unsigned char cb = nb == 0 ? 0 : static_cast<unsigned char>(b[i < nb ? i : i % nb]);
    diff |= static_cast<unsigned char>(a[i]) ^ cb;
  }
  // Keep the compiler from turning the loop into an early-exit memcmp.
  volatile unsigned sink = diff;
  return sink == 0;
}

absl::StatusOr<ApiKeys> ApiKeys::Create(const std::vector<std::string>& entries) {
  ApiKeys out;
  for (const std::string& entry : entries) {
    for (absl::string_view part : absl::StrSplit(entry, ',')) {
      absl::string_view key = absl::StripAsciiWhitespace(part);
      if (key.empty()) {
        return absl::InvalidArgumentError("flag --api-key: a key must not be empty");
      }
      if (key.size() > kMaxKeyBytes) {
        return absl::InvalidArgumentError("flag --api-key: a key must be at most 512 bytes");
      }
      for (char c : key) {
        const auto u = static_cast<unsigned char>(c);
        if (u <= 0x20 || u == 0x7f) {
          return absl::InvalidArgumentError(
              "flag --api-key: a key must not hold spaces or control characters");
        }
      }
      out.keys_.emplace_back(key);
    }
  }
  return out;
}

bool ApiKeys::Matches(absl::string_view key) const {
  bool hit = false;
  for (const std::string& k : keys_) hit |= ConstantTimeEquals(key, k);
  return hit;
}

absl::Status ApiKeys::CheckAuthorization(absl::string_view header) const {
  if (!enabled()) return absl::OkStatus();
  header = absl::StripAsciiWhitespace(header);
  if (header.empty()) {
    return absl::UnauthenticatedError(
        "missing API key: send the header 'Authorization: Bearer <key>'");
  }
  constexpr absl::string_view kScheme = "bearer ";
  if (header.size() <= kScheme.size() ||
      absl::AsciiStrToLower(header.substr(0, kScheme.size())) != kScheme) {
    return absl::UnauthenticatedError("malformed Authorization header: expected 'Bearer <key>'");
  }
  absl::string_view key = absl::StripLeadingAsciiWhitespace(header.substr(kScheme.size()));
  if (!Matches(key)) return absl::UnauthenticatedError("incorrect API key provided");
  return absl::OkStatus();
}

bool PathRequiresAuth(absl::string_view path) {
  return path == "/v1" || absl::StartsWith(path, "/v1/") || path == "/tokenize" ||
         path == "/detokenize";
}

HttpFilter MakeHttpAuthFilter(const ApiKeys* keys) {
  return [keys](const HttpRequest& request) -> std::optional<HttpResponse> {
    if (!keys->enabled() || !PathRequiresAuth(request.path)) return std::nullopt;
    absl::Status s = keys->CheckAuthorization(request.Header("authorization"));
    if (s.ok()) return std::nullopt;
    HttpResponse r =
        JsonError(401, std::string(s.message()), "invalid_request_error", "", "invalid_api_key");
    r.headers.emplace_back("WWW-Authenticate", "Bearer");
    return r;
  };
}

}  // namespace bms
