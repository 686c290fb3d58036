// Unit tests for the structured log unit (server/log.h): text and JSON records, key=value
// splitting, level filtering and flag validation.
#include "server/log.h"

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace bms {
namespace {

TEST(LogTest, JsonRecordIsOneParsableObject) {
  const std::string line =
      FormatLogRecord(LogFormat::kJson, "2026-01-02T03:04:05.678Z", LogLevel::kWarning,
                      "slow \"client\"\nline", {{"id", "r1"}, {"tokens", 12}, {"msg", "x"}});
  EXPECT_EQ(line.find('\n'), std::string::npos);
  const nlohmann::json j = nlohmann::json::parse(line);
  EXPECT_EQ(j["ts"], "2026-01-02T03:04:05.678Z");
  EXPECT_EQ(j["level"], "warning");
  EXPECT_EQ(j["msg"], "slow \"client\"\nline");
  EXPECT_EQ(j["id"], "r1");
  EXPECT_EQ(j["tokens"], 12);
  EXPECT_EQ(j["field_msg"], "x");  // a field never replaces the fixed keys
}

TEST(LogTest, JsonSurvivesInvalidUtf8) {
  const std::string line =
      FormatLogRecord(LogFormat::kJson, "t", LogLevel::kInfo, "bad \xFF byte", {});
  EXPECT_EQ(nlohmann::json::parse(line)["msg"], "bad \xEF\xBF\xBD byte");
}

TEST(LogTest, TextRecord) {
  EXPECT_EQ(FormatLogRecord(LogFormat::kText, "T", LogLevel::kInfo, "started",
                            {{"port", 8000}, {"host", "0.0.0.0"}, {"note", "two words"}}),
            "T INFO started port=8000 host=0.0.0.0 note=\"two words\"");
}

TEST(LogTest, SplitsKeyValueLines) {
  std::string msg;
  LogFields f = SplitKeyValues(
      "request id=0042 method=POST status=200 ms=12.5 reason=client gone path=/v1", &msg);
  EXPECT_EQ(msg, "request");
  ASSERT_EQ(f.size(), 6u);
  EXPECT_EQ(f[0].first, "id");
  EXPECT_EQ(f[0].second, "0042");  // kept as a string
  EXPECT_EQ(f[1].second, "POST");
  EXPECT_EQ(f[2].second, 200);
  EXPECT_EQ(f[3].second, 12.5);
  EXPECT_EQ(f[4].second, "client gone");
  EXPECT_EQ(f[5].second, "/v1");
}

TEST(LogTest, ConfigureValidatesAndFilters) {
  EXPECT_TRUE(ConfigureLog("json", "warning").ok());
  EXPECT_EQ(CurrentLogFormat(), LogFormat::kJson);
  EXPECT_FALSE(LogEnabled(LogLevel::kInfo));
  EXPECT_TRUE(LogEnabled(LogLevel::kError));
  absl::Status s = ConfigureLog("xml", "info");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("--log-format"), std::string::npos);
  s = ConfigureLog("text", "loud");
  EXPECT_NE(s.message().find("--log-level"), std::string::npos);
  EXPECT_EQ(CurrentLogFormat(), LogFormat::kJson);  // unchanged after an error
  EXPECT_TRUE(ConfigureLog("TEXT", "Info").ok());
  EXPECT_EQ(CurrentLogLevel(), LogLevel::kInfo);
}

}  // namespace
}  // namespace bms
