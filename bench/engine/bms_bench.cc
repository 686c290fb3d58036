// bms_bench: the engine-level GPU benchmark (bench/engine/engine_bench.h) as a standalone binary
// that links only bms_engine (no gRPC), for the device runs (bench/run_on_device.sh).
// `bmserve bench` runs the same code. `bms_bench --help` lists the flags.
#include <cstdio>
#include <string>
#include <vector>

#include "bench/engine/engine_bench.h"

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  return bms::EngineBenchMain("bms_bench", std::vector<std::string>(argv + 1, argv + argc));
}
