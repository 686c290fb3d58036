// Server log lines: one line per call on stderr, prefixed with a UTC timestamp, written whole
// (thread-safe). Used for the start-up configuration and the one-line-per-request log.
#pragma once

#include <string>

namespace bms {

void LogLine(const std::string& line);

}  // namespace bms
