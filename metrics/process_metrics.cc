#include "metrics/process_metrics.h"

#include <sys/resource.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"

namespace bms::metrics {
namespace {

bool ReadFile(const char* path, std::string* out) {
  std::ifstream in(path);
  if (!in) return false;
  std::stringstream ss;
  ss << in.rdbuf();
  *out = ss.str();
  return true;
}

// Boot time (Unix seconds) from /proc/stat's "btime" line.
bool ReadBootTime(double* btime) {
  std::string stat;
  if (!ReadFile("/proc/stat", &stat)) return false;
  for (absl::string_view line : absl::StrSplit(stat, '\n')) {
    if (absl::ConsumePrefix(&line, "btime ")) return absl::SimpleAtod(line, btime);
  }
  return false;
}

}  // namespace

absl::StatusOr<ProcessStats> ReadProcessStats() {
  std::string stat;
  if (!ReadFile("/proc/self/stat", &stat)) {
    return absl::UnavailableError("cannot read /proc/self/stat");
  }
  // The command name (field 2) is in parentheses and may contain spaces: parse after the last ')'.
  const size_t close = stat.rfind(')');
  if (close == std::string::npos) return absl::InternalError("malformed /proc/self/stat");
  std::vector<std::string> f = absl::StrSplit(stat.substr(close + 2), ' ', absl::SkipEmpty());
  // f[k] is field k + 3 of proc(5): utime 14, stime 15, num_threads 20, starttime 22,
  // vsize 23, rss 24.
  if (f.size() < 22) return absl::InternalError("short /proc/self/stat");
  double utime, stime, threads, start_ticks, vsize, rss_pages;
  if (!absl::SimpleAtod(f[11], &utime) || !absl::SimpleAtod(f[12], &stime) ||
      !absl::SimpleAtod(f[17], &threads) || !absl::SimpleAtod(f[19], &start_ticks) ||
      !absl::SimpleAtod(f[20], &vsize) || !absl::SimpleAtod(f[21], &rss_pages)) {
    return absl::InternalError("unparsable /proc/self/stat");
  }
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
  ProcessStats s;
  s.cpu_seconds_total = (utime + stime) / ticks;
  s.threads = threads;
  s.virtual_memory_bytes = vsize;
  s.resident_memory_bytes = rss_pages * page;
  double btime = 0;
  if (ReadBootTime(&btime)) s.start_time_seconds = btime + start_ticks / ticks;
  std::error_code ec;
  double fds = 0;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++fds;
  }
  s.open_fds = fds;
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0) s.max_fds = static_cast<double>(lim.rlim_cur);
  return s;
}

absl::Status RegisterProcessMetrics(Registry* registry) {
  struct Def {
    const char* name;
    const char* help;
    double ProcessStats::*field;
    bool counter;
  };
  static const Def kDefs[] = {
      {"process_resident_memory_bytes", "Resident memory size in bytes.",
       &ProcessStats::resident_memory_bytes, false},
      {"process_virtual_memory_bytes", "Virtual memory size in bytes.",
       &ProcessStats::virtual_memory_bytes, false},
      {"process_open_fds", "Number of open file descriptors.", &ProcessStats::open_fds, false},
      {"process_max_fds", "Maximum number of open file descriptors.", &ProcessStats::max_fds,
       false},
      {"process_start_time_seconds", "Start time of the process since unix epoch in seconds.",
       &ProcessStats::start_time_seconds, false},
      {"process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
       &ProcessStats::cpu_seconds_total, true},
      {"process_threads", "Number of OS threads in the process.", &ProcessStats::threads, false},
  };
  for (const Def& d : kDefs) {
    SampleFunc fn = [field = d.field]() -> std::vector<FuncSample> {
      auto s = ReadProcessStats();
      if (!s.ok()) return {};
      return {FuncSample{{}, (*s).*field}};
    };
    absl::Status st = d.counter ? registry->AddCounterFunc(d.name, d.help, {}, std::move(fn))
                                : registry->AddGaugeFunc(d.name, d.help, {}, std::move(fn));
    if (!st.ok()) return st;
  }
  return absl::OkStatus();
}

}  // namespace bms::metrics
