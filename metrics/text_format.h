// Helpers for the Prometheus text exposition format 0.0.4: name validation, escaping of label
// values and help text, and number formatting. Pure functions, thread-safe.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace bms::metrics {

// [a-zA-Z_:][a-zA-Z0-9_:]*
bool IsValidMetricName(std::string_view name);
// [a-zA-Z_][a-zA-Z0-9_]* and not starting with "__" (reserved by Prometheus).
bool IsValidLabelName(std::string_view name);

// A label value inside double quotes: '\' -> "\\", '"' -> "\"", newline -> "\n"; invalid
// UTF-8 bytes become U+FFFD so the output is always valid UTF-8.
std::string EscapeLabelValue(std::string_view value);
// A HELP line's text: '\' -> "\\", newline -> "\n"; invalid UTF-8 as above.
std::string EscapeHelp(std::string_view help);

// A sample value: the shortest decimal that round-trips ("3", "0.25", "1e-06"), or "+Inf",
// "-Inf", "NaN".
std::string FormatValue(double v);

// `{a="x",b="y"}` for the given names and values (sizes must match), or "" when both are
// empty. `extra` (e.g. {"le", "0.5"}) is appended when its name is non-empty.
std::string FormatLabels(const std::vector<std::string>& names,
                         const std::vector<std::string>& values,
                         const std::pair<std::string, std::string>& extra = {});

}  // namespace bms::metrics
