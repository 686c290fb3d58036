// EngineBench in a build without CUDA (bench/engine/engine_bench.h): the measurements need the
// CUDA backend, so RunEngineBench says so instead of measuring.
#include "bench/engine/engine_bench.h"

namespace bms {

absl::StatusOr<EngineBenchReport> RunEngineBench(const EngineBenchOptions&, std::FILE*) {
  return absl::FailedPreconditionError(
      "the engine benchmark needs the CUDA backend; this binary was built without CUDA "
      "(configure with -DBMS_CUDA=ON); for a CPU-backend measurement use `bmserve bench-engine`");
}

}  // namespace bms
