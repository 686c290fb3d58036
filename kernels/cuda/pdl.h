// Process-wide switch for programmatic dependent launch (PDL) of our decode-path kernels
// (kernels/cuda/pdl.cuh launches with it). Host-only: no CUDA headers, so tests and engine code
// can flip it. Read at every launch: graphs captured while it is on keep programmatic edges;
// flipping it affects only launches (and captures) made afterwards. Env BMS_PDL gives the initial
// value: default 1 (on; H100 A/B in bench/NOTES.md "PDL"), BMS_PDL=0 = plain launches.
#pragma once

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace bms::cuda {

inline std::atomic<bool>& PdlFlag() {
  static std::atomic<bool> flag = [] {
    const char* env = std::getenv("BMS_PDL");
    return env == nullptr || std::strcmp(env, "0") != 0;
  }();
  return flag;
}

// Whether kernels launched through LaunchPdl carry the programmatic-serialization attribute.
inline bool PdlEnabled() { return PdlFlag().load(std::memory_order_relaxed); }
inline void SetPdlEnabled(bool on) { PdlFlag().store(on, std::memory_order_relaxed); }

}  // namespace bms::cuda
