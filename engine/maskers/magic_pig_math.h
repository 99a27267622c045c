// File: engine/maskers/magic_pig_math.h
//
// MagicPIG's collision probability p = 1 - (1 - (1 - acos(c) / pi)^K)^L for
// arrays of cosines, vectorised. The float steps are those of the libm
// formula (acosf, then 1 - theta / pi in float, powf, 1 - p1 in float, powf,
// 1 - q in float); only acos and the integer powers are computed otherwise:
// in double (acos by fdlibm's rational approximation of asin, x^n by
// repeated squaring), then rounded to float. So each is within 1 ulp of
// libm's acosf / powf (tests/test_magic_pig.cpp measures the bound over a
// dense sweep), and the arithmetic is the same at every x86-64 level this
// file is compiled for (no fused multiply-add: CMakeLists.txt compiles it
// with -ffp-contract=off), so the vectorised and scalar paths agree bit for
// bit and masks do not depend on the machine's vector units.
#pragma once

#include <cstdint>

namespace masktune::magic_pig {

// acos(x) rounded to float, x in [-1, 1].
float Acos(float x);

// x^n rounded to float, for x >= 0 and an integer n >= 0 (x^0 = 1).
float PowInt(float x, int64_t n);

// cosv[t] = clamp(dot[t] * inv_xq / (xk + 1e-8f), -1, 1), the cosine of a
// query (inv_xq = 1 / (|q~| + 1e-8)) with key t, whose transformed norm xk
// is, with simple_lsh, sqrt((kn/M)^2 + aug^2), aug = sqrt(max(0, M^2 - kn^2)) / M
// (kn[t] the key's centred norm, M the largest), else kn[t]. The masker's
// scalar expressions, vectorised (sqrt and division are exact IEEE
// operations, so the values are the same).
void Cosines(const float* dot, const float* kn, int64_t n, float M, float inv_xq, bool simple_lsh,
             float* cosv);

// out[r * n + t] = <x[r], keys[t]> over d floats, for r < rows and t < n:
// each key row is read once for all rows (the query heads of a kv-head
// group), and each dot product is summed exactly as Dot (maskers/common.h)
// sums it (eight lane accumulators, the tail, then the lanes in order), so
// the values equal Dot's bit for bit. Key rows are prefetched ahead.
void GroupDots(const float* const* x, int64_t rows, const float* const* keys, int64_t n, int64_t d,
               float* out);

// p for one cosine, with the scalar code path.
float CollisionProbability(float cosv, int64_t K, int64_t L);

// p[i] = CollisionProbability(cosv[i], K, L) for i < n (vectorised; the same bits).
void CollisionProbabilities(const float* cosv, int64_t n, int64_t K, int64_t L, float* p);

}  // namespace masktune::magic_pig
