// Unit tests of server/auth.h: key parsing (repeated flag, comma lists, rejects), bearer header
// checks, constant-time equality, which paths are protected, and the HTTP filter's 401 answer.
#include "server/auth.h"

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace bms {
namespace {

TEST(ConstantTimeEquals, MatchesOnlyEqualStrings) {
  EXPECT_TRUE(ConstantTimeEquals("abc", "abc"));
  EXPECT_TRUE(ConstantTimeEquals("", ""));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abd"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "ab"));
  EXPECT_FALSE(ConstantTimeEquals("ab", "abc"));
  EXPECT_FALSE(ConstantTimeEquals("", "a"));
  EXPECT_FALSE(ConstantTimeEquals("a", ""));
  // A prefix repeated (the loop wraps around b) is still different.
  EXPECT_FALSE(ConstantTimeEquals("abab", "ab"));
}

TEST(ApiKeys, ParsesRepeatedAndCommaLists) {
  auto keys = ApiKeys::Create({"k1", " k2 , k3 "});
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_TRUE(keys->enabled());
  EXPECT_EQ(keys->size(), 3u);
  EXPECT_TRUE(keys->Matches("k1"));
  EXPECT_TRUE(keys->Matches("k2"));
  EXPECT_TRUE(keys->Matches("k3"));
  EXPECT_FALSE(keys->Matches(" k2"));
  EXPECT_FALSE(keys->Matches("k"));
  EXPECT_FALSE(keys->Matches(""));
}

TEST(ApiKeys, RejectsBadKeysNamingTheFlag) {
  for (const std::vector<std::string>& bad :
       {std::vector<std::string>{""}, {"a,,b"}, {"a b"}, {"tab\there"}, {std::string(513, 'x')}}) {
    auto keys = ApiKeys::Create(bad);
    ASSERT_FALSE(keys.ok());
    EXPECT_EQ(keys.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(keys.status().message().find("--api-key"), absl::string_view::npos);
  }
  EXPECT_TRUE(ApiKeys::Create({std::string(512, 'x')}).ok());
}

TEST(ApiKeys, NoKeysMeansOpen) {
  ApiKeys none;
  EXPECT_FALSE(none.enabled());
  EXPECT_TRUE(none.CheckAuthorization("").ok());
  EXPECT_TRUE(none.CheckAuthorization("Bearer whatever").ok());
}

TEST(ApiKeys, ChecksBearerHeaders) {
  auto keys = ApiKeys::Create({"secret"});
  ASSERT_TRUE(keys.ok());
  EXPECT_TRUE(keys->CheckAuthorization("Bearer secret").ok());
  EXPECT_TRUE(keys->CheckAuthorization("bearer secret").ok());
  EXPECT_TRUE(keys->CheckAuthorization("BEARER   secret ").ok());
  for (const char* bad : {"", "secret", "Basic secret", "Bearer", "Bearer ", "Bearer secre",
                          "Bearer secrets", "Bearersecret", "Token secret"}) {
    absl::Status s = keys->CheckAuthorization(bad);
    EXPECT_EQ(s.code(), absl::StatusCode::kUnauthenticated) << bad;
    EXPECT_FALSE(s.message().empty());
  }
}

TEST(PathRequiresAuth, ProtectsTheApiOnly) {
  for (const char* p : {"/v1/completions", "/v1/chat/completions", "/v1/models", "/v1/models/x",
                        "/v1", "/tokenize", "/detokenize"}) {
    EXPECT_TRUE(PathRequiresAuth(p)) << p;
  }
  for (const char* p : {"/health", "/ready", "/metrics", "/", "/v10", "/tokenizer"}) {
    EXPECT_FALSE(PathRequiresAuth(p)) << p;
  }
}

TEST(HttpAuthFilter, AnswersOpenAiShaped401) {
  auto keys = ApiKeys::Create({"secret"});
  ASSERT_TRUE(keys.ok());
  HttpFilter filter = MakeHttpAuthFilter(&*keys);
  HttpRequest req;
  req.method = "POST";
  req.path = "/v1/completions";
  auto r = filter(req);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 401);
  auto body = nlohmann::json::parse(r->body);
  EXPECT_EQ(body["error"]["code"], "invalid_api_key");
  EXPECT_EQ(body["error"]["type"], "invalid_request_error");
  EXPECT_TRUE(body["error"]["param"].is_null());
  bool www = false;
  for (const auto& [k, v] : r->headers) www |= (k == "WWW-Authenticate" && v == "Bearer");
  EXPECT_TRUE(www);
  req.headers["authorization"] = "Bearer secret";
  EXPECT_FALSE(filter(req).has_value());
  req.headers.clear();
  req.path = "/metrics";
  EXPECT_FALSE(filter(req).has_value());
}

}  // namespace
}  // namespace bms
