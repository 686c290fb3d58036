// Server log lines: one record per call on stderr (server/log.h: text or JSON), written whole
// (thread-safe). Used for the start-up configuration and the one-line-per-request log.
#pragma once

#include <string>

namespace bms {

void LogLine(const std::string& line);

}  // namespace bms
