// Process metrics in the standard Prometheus names (no bmserve prefix, as every Prometheus
// client library exports them): resident/virtual memory, open and maximum file descriptors,
// start time, CPU seconds and thread count, read from /proc (Linux) at scrape time.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "metrics/registry.h"

namespace bms::metrics {

struct ProcessStats {
  double resident_memory_bytes = 0;
  double virtual_memory_bytes = 0;
  double open_fds = 0;
  double max_fds = 0;
  double start_time_seconds = 0;  // Unix time the process started
  double cpu_seconds_total = 0;   // user + system
  double threads = 0;
};

// Reads this process's statistics. Unavailable when /proc cannot be read (not Linux).
absl::StatusOr<ProcessStats> ReadProcessStats();

// Registers process_resident_memory_bytes, process_virtual_memory_bytes, process_open_fds,
// process_max_fds, process_start_time_seconds, process_cpu_seconds_total and process_threads.
// When /proc is unreadable at scrape time the families render without samples.
absl::Status RegisterProcessMetrics(Registry* registry);

}  // namespace bms::metrics
