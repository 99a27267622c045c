// File: engine/random.h
//
// masktune's one source of randomness: Philox4x32-10 (Random123), a
// counter-based generator. A draw is a pure function of (seed, stream,
// index, purpose), so results do not depend on thread counts, scheduling or
// device: the CUDA engine computes the same draws, and a resumed search
// continues the sequence it would have produced. Thread-safety: pure functions.
#pragma once

#include <Random123/philox.h>

#include <cmath>
#include <cstdint>

namespace masktune {

struct RandomKey {
  uint64_t seed = 0;
  uint32_t stream = 0;   // e.g. the stack, or the layer
  uint32_t purpose = 0;  // what the draw is for, so two uses never share numbers
};

// Four independent 32-bit words for counter `index` under `key`.
inline r123::Philox4x32::ctr_type RandomWords(const RandomKey& key, uint64_t index) {
  r123::Philox4x32 rng;
  r123::Philox4x32::key_type k = {
      {static_cast<uint32_t>(key.seed), static_cast<uint32_t>(key.seed >> 32)}};
  r123::Philox4x32::ctr_type c = {
      {static_cast<uint32_t>(index), static_cast<uint32_t>(index >> 32), key.stream, key.purpose}};
  return rng(c, k);
}

// A double uniform in [0, 1) with 53 random bits, from counter `index`.
inline double RandomUniform(const RandomKey& key, uint64_t index) {
  const auto w = RandomWords(key, index);
  const uint64_t bits = (static_cast<uint64_t>(w[0]) << 21) ^ (static_cast<uint64_t>(w[1]) >> 11);
  return static_cast<double>(bits & ((1ull << 53) - 1)) * 0x1.0p-53;
}

// A standard normal draw from counter `index` (Box-Muller on two words).
inline double RandomNormal(const RandomKey& key, uint64_t index) {
  const auto w = RandomWords(key, index);
  const double u1 = (static_cast<double>(w[0]) + 1.0) / 4294967297.0;  // (0, 1]
  const double u2 = static_cast<double>(w[1]) / 4294967296.0;
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
}

}  // namespace masktune
