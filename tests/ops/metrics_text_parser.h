// A minimal parser for the Prometheus text format used by the ops tests: maps each sample's
// series ("name" or "name{labels as rendered}") to its value, and collects TYPE lines. It is
// deliberately independent of metrics/ (it re-reads the text instead of trusting the registry).
#pragma once

#include <cstdlib>
#include <map>
#include <sstream>
#include <string>

namespace bms::testing_ops {

struct ParsedMetrics {
  std::map<std::string, double> samples;     // series -> value
  std::map<std::string, std::string> types;  // family name -> "counter" | "gauge" | ...
  bool Has(const std::string& series) const { return samples.count(series) > 0; }
  double Get(const std::string& series) const {
    auto it = samples.find(series);
    return it == samples.end() ? -1e300 : it->second;
  }
};

inline ParsedMetrics ParseMetricsText(const std::string& text) {
  ParsedMetrics out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    if (line.rfind("# TYPE ", 0) == 0) {
      const std::string rest = line.substr(7);
      const size_t sp = rest.find(' ');
      out.types[rest.substr(0, sp)] = rest.substr(sp + 1);
      continue;
    }
    if (line[0] == '#') continue;
    // The value follows the last space (label values in these tests contain no spaces).
    const size_t sp = line.rfind(' ');
    const std::string value = line.substr(sp + 1);
    double v = value == "+Inf"   ? 1.0 / 0.0
               : value == "-Inf" ? -1.0 / 0.0
                                 : std::strtod(value.c_str(), nullptr);
    out.samples[line.substr(0, sp)] = v;
  }
  return out;
}

}  // namespace bms::testing_ops
