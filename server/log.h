// Process-wide structured logging for the server: one record per line on stderr, as text
// ("2026-01-02T03:04:05.678Z INFO message key=value ...") or JSON (one object per line:
// {"ts": ..., "level": ..., "msg": ..., <fields>}), filtered by a minimum level. Configured once
// at start-up from --log-format / --log-level. Thread-safe: records are written whole.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace bms {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };
enum class LogFormat { kText, kJson };

using LogFields = std::vector<std::pair<std::string, nlohmann::json>>;

// format: "text" | "json"; level: "debug" | "info" | "warning" (or "warn") | "error".
// InvalidArgument naming the flag (--log-format / --log-level) otherwise; nothing changes then.
absl::Status ConfigureLog(absl::string_view format, absl::string_view level);
LogFormat CurrentLogFormat();
LogLevel CurrentLogLevel();
bool LogEnabled(LogLevel level);

// Writes one record when `level` is enabled.
void Log(LogLevel level, absl::string_view msg, const LogFields& fields = {});

// A record from a "message key=value key=value" line (the style of the request log): in JSON
// the leading words without '=' become "msg" and every key=value token a string field (numbers
// stay numbers); in text the line is written as is.
void LogKeyValues(LogLevel level, absl::string_view line);

// Renders a record without writing it (what Log writes, minus the trailing newline); `ts` is the
// timestamp text. Exposed for tests.
std::string FormatLogRecord(LogFormat format, absl::string_view ts, LogLevel level,
                            absl::string_view msg, const LogFields& fields);
LogFields SplitKeyValues(absl::string_view line, std::string* msg);

}  // namespace bms
