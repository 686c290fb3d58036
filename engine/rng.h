// Counter-based random numbers for sampling: a pure function of (seed, choice, position), so a
// request's random draws do not depend on which other requests share its batch or on how its
// prompt was chunked. splitmix64 finalizers chained over the three counters.
#pragma once

#include <cstdint>

namespace bms {

// The splitmix64 output function (Steele, Lea, Flood 2014): a bijective 64-bit mixer.
inline uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// 64 random bits for draw `position` (the generated-token index) of choice `choice`.
inline uint64_t CounterRandomBits(uint64_t seed, uint64_t choice, uint64_t position) {
  uint64_t h = SplitMix64(seed);
  h = SplitMix64(h ^ (choice * 0xd1b54a32d192ed03ULL));
  h = SplitMix64(h ^ (position * 0x8cb92ba72f3d8dd7ULL));
  return h;
}

// A double uniform in [0, 1) with 53 random bits.
inline double CounterUniform(uint64_t seed, uint64_t choice, uint64_t position) {
  return static_cast<double>(CounterRandomBits(seed, choice, position) >> 11) * 0x1.0p-53;
}

}  // namespace bms
