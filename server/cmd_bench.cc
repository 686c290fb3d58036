// `bmserve bench`: the engine-level GPU benchmark suite (bench/engine/engine_bench.h; the same
// code as the standalone `bms_bench`): ceilings, decode per batch, prefill, TTFT, host time per
// step and capacity for the blackmamba presets with random weights, each row against its floor.
// Unlike `bench-engine` (closed-loop requests through the engine loop, any backend and model),
// it drives the CUDA backend directly.
#include <string>

#include "bench/engine/engine_bench.h"
#include "server/commands.h"

namespace bms {

int BenchCommand(const Args& args) { return EngineBenchMain("bmserve bench", args); }

}  // namespace bms
