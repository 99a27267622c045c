// File: engine/cpu_kernels.h
//
// The CPU engine's inner loops, register-blocked so the compiler vectorises
// them, and compiled for several x86-64 levels (AVX-512, AVX2+FMA, baseline)
// with the best one picked at load time: one binary runs on any x86-64 and
// uses the vector units it finds. Internal to engine/.
#pragma once

#include <cstdint>

namespace masktune::kernels {

// s[r * ld + t] = scale * <q[r], k[t]> for r < rows, t < keys (vectors of d floats).
// `prefetch` (optional, `keys` entries, nullptr entries skipped): rows of d
// floats to bring into the cache meanwhile, spread over the computation; a
// streaming caller passes the next tile's rows so memory and arithmetic overlap.
void ScoreTile(const float* const* q, int64_t rows, const float* const* k, int64_t keys, int64_t d,
               float scale, float* s, int64_t ld, const float* const* prefetch = nullptr);

// o[r][e] += sum_t w[r * ldw + t] * v[t][e] for r < rows, e < d; `prefetch` as above.
void AccumulateTile(float* const* o, int64_t rows, const float* w, int64_t ldw,
                    const float* const* v, int64_t keys, int64_t d,
                    const float* const* prefetch = nullptr);

// dist[i] = ||x - centroid_i||^2 for i < c, centroids stored dimension-major
// (t[d * c + i], d < sub): the assignment step of k-means (pq_top_k).
void SquaredDistances(const float* x, const float* t, int64_t c, int64_t sub, float* dist);

// hit[j] |= (some lane of col[j] ^ q is zero) for j < n: lanes of `lane_bits`
// bits, `low`/`high` the lowest/highest bit of every lane (64-bit lanes:
// col[j] == q). The table match of magic_pig.
void MatchLanes(const uint64_t* col, int64_t n, uint64_t q, int lane_bits, uint64_t low,
                uint64_t high, uint8_t* hit);

// x[i] = exp(x[i]) over n floats; accurate to about 2 ulp, exp(-inf) = 0,
// underflow to 0 below -87.3. Inputs must not be NaN or +inf.
void ExpInPlace(float* x, int64_t n);

}  // namespace masktune::kernels
