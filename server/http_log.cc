#include "server/http_log.h"

#include "server/log.h"

namespace bms {

// Forwarded to the structured log (server/log.h): honours --log-format and --log-level; in JSON
// the line's key=value pairs become fields.
void LogLine(const std::string& line) { LogKeyValues(LogLevel::kInfo, line); }

}  // namespace bms
