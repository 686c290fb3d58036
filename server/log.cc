#include "server/log.h"

#include <atomic>
#include <cstdio>
#include <mutex>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace bms {
namespace {

std::atomic<LogFormat> g_format{LogFormat::kText};
std::atomic<LogLevel> g_level{LogLevel::kInfo};

const char* LevelName(LogLevel level, bool upper) {
  switch (level) {
    case LogLevel::kDebug:
      return upper ? "DEBUG" : "debug";
    case LogLevel::kInfo:
      return upper ? "INFO" : "info";
    case LogLevel::kWarning:
      return upper ? "WARNING" : "warning";
    case LogLevel::kError:
      return upper ? "ERROR" : "error";
  }
  return "info";
}

// A text value: bare when it has no spaces, quotes or '=', JSON-quoted otherwise.
std::string TextValue(const nlohmann::json& v) {
  if (!v.is_string()) return v.dump();
  const std::string& s = v.get_ref<const std::string&>();
  if (!s.empty() && s.find_first_of(" \"=\n\t") == std::string::npos) return s;
  return v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace

absl::Status ConfigureLog(absl::string_view format, absl::string_view level) {
  const std::string f = absl::AsciiStrToLower(format);
  const std::string l = absl::AsciiStrToLower(level);
  LogFormat new_format;
  if (f == "text") {
    new_format = LogFormat::kText;
  } else if (f == "json") {
    new_format = LogFormat::kJson;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("flag --log-format: expected text or json, got '", format, "'"));
  }
  LogLevel new_level;
  if (l == "debug") {
    new_level = LogLevel::kDebug;
  } else if (l == "info") {
    new_level = LogLevel::kInfo;
  } else if (l == "warning" || l == "warn") {
    new_level = LogLevel::kWarning;
  } else if (l == "error") {
    new_level = LogLevel::kError;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "flag --log-level: expected debug, info, warning or error, got '", level, "'"));
  }
  g_format.store(new_format);
  g_level.store(new_level);
  return absl::OkStatus();
}

LogFormat CurrentLogFormat() { return g_format.load(); }
LogLevel CurrentLogLevel() { return g_level.load(); }
bool LogEnabled(LogLevel level) { return level >= g_level.load(); }

std::string FormatLogRecord(LogFormat format, absl::string_view ts, LogLevel level,
                            absl::string_view msg, const LogFields& fields) {
  if (format == LogFormat::kJson) {
    nlohmann::ordered_json j;
    j["ts"] = std::string(ts);
    j["level"] = LevelName(level, false);
    j["msg"] = std::string(msg);
    for (const auto& [key, value] : fields) {
      // Fields never overwrite the three fixed keys.
      if (key == "ts" || key == "level" || key == "msg") {
        j["field_" + key] = value;
      } else {
        j[key] = value;
      }
    }
    // Invalid UTF-8 in messages becomes U+FFFD instead of throwing.
    return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  std::string out = absl::StrCat(ts, " ", LevelName(level, true), " ", msg);
  for (const auto& [key, value] : fields) absl::StrAppend(&out, " ", key, "=", TextValue(value));
  return out;
}

LogFields SplitKeyValues(absl::string_view line, std::string* msg) {
  LogFields fields;
  msg->clear();
  bool in_fields = false;
  for (absl::string_view token : absl::StrSplit(line, ' ', absl::SkipEmpty())) {
    const size_t eq = token.find('=');
    if (eq == absl::string_view::npos || eq == 0) {
      if (in_fields && !fields.empty()) {
        // A word after the fields belongs to the previous value ("reason=client gone").
        std::string& v = fields.back().second.get_ref<std::string&>();
        absl::StrAppend(&v, " ", token);
      } else {
        absl::StrAppend(msg, msg->empty() ? "" : " ", token);
      }
      continue;
    }
    in_fields = true;
    fields.emplace_back(std::string(token.substr(0, eq)), std::string(token.substr(eq + 1)));
  }
  // Numeric values become JSON numbers.
  for (auto& [key, value] : fields) {
    const std::string& s = value.get_ref<const std::string&>();
    // Ids such as "0042" stay strings (a number would drop the zeros).
    const size_t digits = s.find_first_not_of("+-");
    if (digits != std::string::npos && s[digits] == '0' && digits + 1 < s.size() &&
        s[digits + 1] != '.') {
      continue;
    }
    int64_t i;
    double d;
    if (absl::SimpleAtoi(s, &i)) {
      value = i;
    } else if (!s.empty() && s.find_first_not_of("0123456789.-+eE") == std::string::npos &&
               absl::SimpleAtod(s, &d)) {
      value = d;
    }
  }
  return fields;
}

void Log(LogLevel level, absl::string_view msg, const LogFields& fields) {
  if (!LogEnabled(level)) return;
  static std::mutex mu;
  const std::string ts = absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone());
  const std::string record = FormatLogRecord(g_format.load(), ts, level, msg, fields);
  std::lock_guard<std::mutex> lock(mu);
  std::fprintf(stderr, "%s\n", record.c_str());
  std::fflush(stderr);
}

void LogKeyValues(LogLevel level, absl::string_view line) {
  if (!LogEnabled(level)) return;
  if (g_format.load() == LogFormat::kText) {
    Log(level, line);
    return;
  }
  std::string msg;
  LogFields fields = SplitKeyValues(line, &msg);
  Log(level, msg, fields);
}

}  // namespace bms
