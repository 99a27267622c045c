#include "engine/maskers/magic_pig_math.h"

#include <algorithm>
#include <cmath>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define MT_KERNEL __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MT_KERNEL
#endif
#define MT_INLINE inline __attribute__((always_inline))

namespace masktune::magic_pig {
namespace {

constexpr double kPi = 3.14159265358979311600e+00;
constexpr double kPiOver2 = 1.57079632679489655800e+00;
constexpr float kPiF = static_cast<float>(M_PI);  // as the libm formula divides by it

// asin(s) = s + s * R(s^2) for |s| <= 0.5: fdlibm's rational approximation
// (e_asin.c), relative error below 2^-58 on z = s^2 in [0, 0.25].
MT_INLINE double AsinRational(double z) {
  const double p =
      z * (1.66666666666666657415e-01 +
           z * (-3.25565818622400915405e-01 +
                z * (2.01212532134862925881e-01 +
                     z * (-4.00555345006794114027e-02 +
                          z * (7.91534994289814532176e-04 + z * 3.47933107596021167570e-05)))));
  const double q =
      1.0 + z * (-2.40339491173441421878e+00 +
                 z * (2.02094576023350569471e+00 +
                      z * (-6.88283971605453293030e-01 + z * 7.70381505559019352791e-02)));
  return p / q;
}

// acos(x) in double, branch-free (selects), so a loop of it vectorises:
// |x| <= 0.5: pi/2 - asin(x); else 2 asin(sqrt((1 - |x|) / 2)), from pi for x < 0.
MT_INLINE double AcosD(double x) {
  const double a = x < 0 ? -x : x;
  const bool big = a > 0.5;
  const double z = big ? 0.5 * (1.0 - a) : x * x;
  const double s = big ? std::sqrt(z) : x;
  const double w = s + s * AsinRational(z);
  return big ? (x > 0 ? 2.0 * w : kPi - 2.0 * w) : kPiOver2 - w;
}

// r[i] = x[i]^n by repeated squaring (the same multiplications as PowD).
MT_INLINE void PowBlock(const double* x, int64_t m, int64_t n, double* r, double* b) {
  for (int64_t i = 0; i < m; ++i) {
    r[i] = 1.0;
    b[i] = x[i];
  }
  for (; n > 0; n >>= 1) {
    if (n & 1)
      for (int64_t i = 0; i < m; ++i) r[i] = r[i] * b[i];
    if (n > 1)
      for (int64_t i = 0; i < m; ++i) b[i] = b[i] * b[i];
  }
}

MT_INLINE double PowD(double x, int64_t n) {
  double r = 1.0, b = x;
  for (; n > 0; n >>= 1) {
    if (n & 1) r = r * b;
    if (n > 1) b = b * b;
  }
  return r;
}

}  // namespace

float Acos(float x) { return static_cast<float>(AcosD(x)); }

float PowInt(float x, int64_t n) { return static_cast<float>(PowD(x, n)); }

float CollisionProbability(float cosv, int64_t K, int64_t L) {
  const float theta = Acos(cosv);
  const float p1 = PowInt(1.0f - theta / kPiF, K);
  return 1.0f - PowInt(1.0f - p1, L);
}

MT_KERNEL
void GroupDots(const float* const* x, int64_t rows, const float* const* keys, int64_t n, int64_t d,
               float* out) {
  constexpr int kLanes = 8;
  constexpr int64_t kAhead = 8;
  const int64_t body = d - d % kLanes;
  for (int64_t t = 0; t < n; ++t) {
    if (t + kAhead < n)
      for (int64_t e = 0; e < d; e += 16) __builtin_prefetch(keys[t + kAhead] + e);
    const float* k = keys[t];
    for (int64_t r = 0; r < rows; ++r) {
      const float* a = x[r];
      float acc[kLanes] = {};
      for (int64_t i = 0; i < body; i += kLanes)
        for (int l = 0; l < kLanes; ++l) acc[l] += a[i + l] * k[i + l];
      float s = 0.0f;
      for (int64_t i = body; i < d; ++i) s += a[i] * k[i];
      for (int l = 0; l < kLanes; ++l) s += acc[l];
      out[r * n + t] = s;
    }
  }
}

MT_KERNEL
void Cosines(const float* dot, const float* kn, int64_t n, float M, float inv_xq, bool simple_lsh,
             float* cosv) {
  if (simple_lsh) {
    for (int64_t t = 0; t < n; ++t) {
      const float k = kn[t];
      const float aug = std::sqrt(std::max(0.0f, M * M - k * k)) / M;
      const float xk = std::sqrt((k / M) * (k / M) + aug * aug);
      cosv[t] = std::clamp(dot[t] * inv_xq / (xk + 1e-8f), -1.0f, 1.0f);
    }
  } else {
    for (int64_t t = 0; t < n; ++t)
      cosv[t] = std::clamp(dot[t] * inv_xq / (kn[t] + 1e-8f), -1.0f, 1.0f);
  }
}

MT_KERNEL
void CollisionProbabilities(const float* cosv, int64_t n, int64_t K, int64_t L, float* p) {
  constexpr int64_t kBlock = 256;
  double t[kBlock], r[kBlock], b[kBlock];
  for (int64_t i0 = 0; i0 < n; i0 += kBlock) {
    const int64_t m = std::min(kBlock, n - i0);
    for (int64_t i = 0; i < m; ++i) {
      const float theta = static_cast<float>(AcosD(cosv[i0 + i]));
      t[i] = 1.0f - theta / kPiF;
    }
    PowBlock(t, m, K, r, b);
    for (int64_t i = 0; i < m; ++i) t[i] = 1.0f - static_cast<float>(r[i]);
    PowBlock(t, m, L, r, b);
    for (int64_t i = 0; i < m; ++i) p[i0 + i] = 1.0f - static_cast<float>(r[i]);
  }
}

}  // namespace masktune::magic_pig
