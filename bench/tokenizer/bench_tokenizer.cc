// bench_tokenizer: single-threaded encode/decode throughput of bms::Tokenizer on one text file.
// Not a test. Usage: bench_tokenizer TOKENIZER_JSON INPUT_TEXT [ITERATIONS]
// Prints one line per phase; bench/tokenizer/run.sh puts it next to the HF (Rust) numbers.
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// FNV-1a over the ids, to compare with the reference implementation's output.
uint64_t Checksum(const std::vector<int32_t>& ids) {
  uint64_t h = 1469598103934665603ull;
  for (int32_t id : ids) {
    h ^= static_cast<uint32_t>(id);
    h *= 1099511628211ull;
  }
  return h;
}

// CPU seconds used by the process (robust to a loaded machine, unlike wall time).
double CpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s TOKENIZER_JSON INPUT_TEXT [ITERATIONS]\n", argv[0]);
    return 2;
  }
  const int iterations = argc > 3 ? std::max(1, std::atoi(argv[3])) : 5;
  std::ifstream in(argv[2], std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "cannot open %s\n", argv[2]);
    return 1;
  }
  std::ostringstream buf;
  buf << in.rdbuf();
  const std::string text = buf.str();
  const double mb = static_cast<double>(text.size()) / 1e6;

  const auto t0 = Clock::now();
  auto tokenizer = bms::Tokenizer::FromFile(argv[1]);
  const auto t1 = Clock::now();
  if (!tokenizer.ok()) {
    std::fprintf(stderr, "%s\n", std::string(tokenizer.status().message()).c_str());
    return 1;
  }
  std::printf("bmserve  load      %8.1f ms\n", Seconds(t0, t1) * 1e3);

  std::vector<double> times, cpu_times;
  std::vector<int32_t> ids;
  for (int i = 0; i < iterations; ++i) {
    const double cpu = CpuSeconds();
    const auto a = Clock::now();
    auto r = (*tokenizer)->Encode(text);
    const auto b = Clock::now();
    cpu_times.push_back(CpuSeconds() - cpu);
    if (!r.ok()) {
      std::fprintf(stderr, "%s\n", std::string(r.status().message()).c_str());
      return 1;
    }
    ids = *std::move(r);
    times.push_back(Seconds(a, b));
  }
  // Cold: the first call (empty word cache); warm: the median of the others.
  auto cold_warm = [&](std::vector<double> t) {
    const double cold = t[0];
    std::sort(t.begin() + (iterations > 1 ? 1 : 0), t.end());
    return std::pair<double, double>(cold, iterations > 1 ? t[1 + (iterations - 2) / 2] : t[0]);
  };
  const auto [cold, warm] = cold_warm(times);
  const auto [cpu_cold, cpu_warm] = cold_warm(cpu_times);
  std::printf(
      "bmserve  encode    cold %7.2f MB/s   warm(median) %7.2f MB/s   per CPU-second: cold %7.2f "
      "warm %7.2f MB/s   %zu ids  checksum %016llx\n",
      mb / cold, mb / warm, mb / cpu_cold, mb / cpu_warm, ids.size(),
      static_cast<unsigned long long>(Checksum(ids)));

  // Line by line (each line with its '\n'): many short encodes, as a server sees prompts.
  std::vector<std::string_view> lines;
  for (size_t pos = 0; pos < text.size();) {
    const size_t nl = text.find('\n', pos);
    const size_t end = nl == std::string::npos ? text.size() : nl + 1;
    lines.push_back(std::string_view(text).substr(pos, end - pos));
    pos = end;
  }
  std::vector<int32_t> line_ids;
  const double lcpu = CpuSeconds();
  const auto l0 = Clock::now();
  for (std::string_view line : lines) {
    auto r = (*tokenizer)->Encode(line);
    if (r.ok()) line_ids.insert(line_ids.end(), r->begin(), r->end());
  }
  const auto l1 = Clock::now();
  std::printf(
      "bmserve  lines     %7.2f MB/s   per CPU-second %7.2f MB/s   %zu lines  %zu ids  checksum "
      "%016llx\n",
      mb / Seconds(l0, l1), mb / (CpuSeconds() - lcpu), lines.size(), line_ids.size(),
      static_cast<unsigned long long>(Checksum(line_ids)));

  const auto d0 = Clock::now();
  const std::string back = (*tokenizer)->Decode(ids);
  const auto d1 = Clock::now();
  bms::IncrementalDecoder stream(**tokenizer);
  std::string streamed;
  for (int32_t id : ids) streamed += stream.Add(id);
  streamed += stream.Flush();
  const auto d2 = Clock::now();
  std::printf("bmserve  decode    %7.2f MB/s   streaming %7.2f MB/s   roundtrip %s\n",
              mb / Seconds(d0, d1), mb / Seconds(d1, d2),
              back == text && streamed == text ? "exact" : "DIFFERS");
  return 0;
}
