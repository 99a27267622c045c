#include "engine/cpu_kernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define MT_KERNEL __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MT_KERNEL
#endif

namespace masktune::kernels {
namespace {

// Eight floats as one value (GCC vector extension): each instruction-set level
// the kernels are compiled for maps it to its own registers (two SSE halves,
// one AVX register). `aligned(4)` makes loads and stores unaligned-safe.
// Helpers are forced inline so that each kernel clone compiles them for its own level.
#define MT_INLINE inline __attribute__((always_inline))

typedef float V8 __attribute__((vector_size(32), aligned(4)));
constexpr int kLanes = 8;

MT_INLINE V8 Load(const float* p) { return *reinterpret_cast<const V8*>(p); }
MT_INLINE void Store(float* p, V8 v) { *reinterpret_cast<V8*>(p) = v; }
MT_INLINE float Sum(V8 v) {
  return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

typedef int V8i __attribute__((vector_size(32)));

// Sum of eight vectors at once, each by the same additions in the same
// order as Sum (so the results are identical), with whole-register
// shuffles instead of eight horizontal reductions. Returns the sums in the
// order a0, a2, a4, a6, a1, a3, a5, a7.
MT_INLINE V8 Sum8(const V8* a) {
  V8 b[4];  // b[k] = [lo(a_2k) + hi(a_2k), lo(a_2k+1) + hi(a_2k+1)]: Sum's first level
  for (int k = 0; k < 4; ++k) {
    const V8 lo = __builtin_shuffle(a[2 * k], a[2 * k + 1], V8i{0, 1, 2, 3, 8, 9, 10, 11});
    const V8 hi = __builtin_shuffle(a[2 * k], a[2 * k + 1], V8i{4, 5, 6, 7, 12, 13, 14, 15});
    b[k] = lo + hi;
  }
  // Second level: (v0+v4)+(v1+v5) and (v2+v6)+(v3+v7) of each; third: their sum.
  auto pairs = [](V8 x, V8 y) {
    return __builtin_shuffle(x, y, V8i{0, 2, 8, 10, 4, 6, 12, 14}) +
           __builtin_shuffle(x, y, V8i{1, 3, 9, 11, 5, 7, 13, 15});
  };
  return pairs(pairs(b[0], b[1]), pairs(b[2], b[3]));
}

// An R x T block of dot products over d (a multiple of kLanes), with R*T
// independent accumulators: each q and k load feeds T or R multiply-adds.
template <int R, int T>
MT_INLINE void ScoreBlock(const float* const* q, const float* const* k, int64_t d, float scale,
                          float* s, int64_t ld) {
  V8 acc[R][T] = {};
  for (int64_t x = 0; x < d; x += kLanes) {
    V8 kv[T];
    for (int t = 0; t < T; ++t) kv[t] = Load(k[t] + x);
    for (int r = 0; r < R; ++r) {
      const V8 qv = Load(q[r] + x);
      for (int t = 0; t < T; ++t) acc[r][t] += qv * kv[t];
    }
  }
  if constexpr (R * T >= 4) {  // reduce the block's sums eight at a time (padded)
    constexpr int kOrder[8] = {0, 2, 4, 6, 1, 3, 5, 7};
    for (int g0 = 0; g0 < R * T; g0 += 8) {
      V8 flat[8] = {};
      for (int x = g0; x < std::min(R * T, g0 + 8); ++x) flat[x - g0] = acc[x / T][x % T];
      const V8 o = Sum8(flat) * scale;
      for (int p = 0; p < 8; ++p) {
        const int x = g0 + kOrder[p];
        if (x < R * T) s[(x / T) * ld + x % T] = o[p];
      }
    }
  } else {
    for (int r = 0; r < R; ++r)
      for (int t = 0; t < T; ++t) s[r * ld + t] = Sum(acc[r][t]) * scale;
  }
}

// Hints one row of d floats into the cache (nullptr: nothing).
MT_INLINE void PrefetchRow(const float* p, int64_t d) {
  if (p)
    for (int64_t i = 0; i < d; i += 16) __builtin_prefetch(p + i);  // a 64-byte line per step
}

template <int R>
MT_INLINE void ScoreRows(const float* const* q, const float* const* k, int64_t keys, int64_t d,
                         float scale, float* s, int64_t ld, const float* const* pf) {
  constexpr int T = R == 1 ? 4 : 2;  // one row: block keys wider instead
  int64_t t = 0;
  for (; t + T <= keys; t += T) {
    if (pf)
      for (int x = 0; x < T; ++x) PrefetchRow(pf[t + x], d);
    ScoreBlock<R, T>(q, k + t, d, scale, s + t, ld);
  }
  for (; t < keys; ++t) {
    if (pf) PrefetchRow(pf[t], d);
    ScoreBlock<R, 1>(q, k + t, d, scale, s + t, ld);
  }
}

constexpr int kCols = 2 * kLanes;  // output floats per accumulator block

// o[r][e0 .. e0+16) += sum_t w[r][t] v[t][e0 ..], accumulators held in registers.
template <int R>
MT_INLINE void AccumulateBlock(float* const* o, const float* w, int64_t ldw, const float* const* v,
                               int64_t keys, int64_t e0, const float* const* pf) {
  V8 acc[R][2];
  for (int r = 0; r < R; ++r) {
    acc[r][0] = Load(o[r] + e0);
    acc[r][1] = Load(o[r] + e0 + kLanes);
  }
  for (int64_t t = 0; t < keys; ++t) {
    if (pf && pf[t]) __builtin_prefetch(pf[t] + e0);  // the same 64 bytes of the next tile
    const V8 v0 = Load(v[t] + e0), v1 = Load(v[t] + e0 + kLanes);
    for (int r = 0; r < R; ++r) {
      const float wt = w[r * ldw + t];
      acc[r][0] += wt * v0;
      acc[r][1] += wt * v1;
    }
  }
  for (int r = 0; r < R; ++r) {
    Store(o[r] + e0, acc[r][0]);
    Store(o[r] + e0 + kLanes, acc[r][1]);
  }
}

}  // namespace

MT_KERNEL
void ScoreTile(const float* const* q, int64_t rows, const float* const* k, int64_t keys, int64_t d,
               float scale, float* s, int64_t ld, const float* const* prefetch) {
  if (d % kLanes != 0) {  // odd head dims: plain loops
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t t = 0; t < keys; ++t) {
        float sum = 0.0f;
        for (int64_t x = 0; x < d; ++x) sum += q[r][x] * k[t][x];
        s[r * ld + t] = sum * scale;
      }
    return;
  }
  // Rows in blocks of four; the prefetch of the next tile rides on the first block.
  int64_t r = 0;
  for (; r + 4 <= rows; r += 4, prefetch = nullptr)
    ScoreRows<4>(q + r, k, keys, d, scale, s + r * ld, ld, prefetch);
  switch (rows - r) {
    case 3:
      ScoreRows<3>(q + r, k, keys, d, scale, s + r * ld, ld, prefetch);
      break;
    case 2:
      ScoreRows<2>(q + r, k, keys, d, scale, s + r * ld, ld, prefetch);
      break;
    case 1:
      ScoreRows<1>(q + r, k, keys, d, scale, s + r * ld, ld, prefetch);
      break;
    default:
      break;
  }
}

MT_KERNEL
void AccumulateTile(float* const* o, int64_t rows, const float* w, int64_t ldw,
                    const float* const* v, int64_t keys, int64_t d, const float* const* prefetch) {
  const int64_t dv = d - d % kCols;
  for (int64_t e0 = 0; e0 < dv; e0 += kCols) {
    int64_t r = 0;
    const float* const* pf = prefetch;  // once per column block, on its first row block
    for (; r + 4 <= rows; r += 4, pf = nullptr)
      AccumulateBlock<4>(o + r, w + r * ldw, ldw, v, keys, e0, pf);
    switch (rows - r) {
      case 3:
        AccumulateBlock<3>(o + r, w + r * ldw, ldw, v, keys, e0, pf);
        break;
      case 2:
        AccumulateBlock<2>(o + r, w + r * ldw, ldw, v, keys, e0, pf);
        break;
      case 1:
        AccumulateBlock<1>(o + r, w + r * ldw, ldw, v, keys, e0, pf);
        break;
      default:
        break;
    }
  }
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t t = 0; t < keys; ++t)
      for (int64_t e = dv; e < d; ++e) o[r][e] += w[r * ldw + t] * v[t][e];
}

MT_KERNEL
void ExpInPlace(float* x, int64_t n) {
  // exp(x) = 2^m * exp(f), m = round(x / ln 2), f = x - m ln 2 in [-ln2/2, ln2/2],
  // with ln 2 split in two parts (Cody-Waite) and a degree-6 polynomial for exp(f).
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i] < -87.3f ? -87.3f : x[i];
    // Round to nearest by the 1.5 * 2^23 trick, which vectorises at every level.
    const float m = (v * kLog2e + 12582912.0f) - 12582912.0f;
    const float f = (v - m * kLn2Hi) - m * kLn2Lo;
    float p = 1.3981999507e-3f;
    p = p * f + 8.3334519073e-3f;
    p = p * f + 4.1665795894e-2f;
    p = p * f + 1.6666665459e-1f;
    p = p * f + 5.0000001201e-1f;
    p = p * f * f + f + 1.0f;
    int32_t bits = (static_cast<int32_t>(m) + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, 4);
    x[i] = x[i] < -87.3f ? 0.0f : p * scale;
  }
}

MT_KERNEL
void SquaredDistances(const float* x, const float* t, int64_t c, int64_t sub, float* dist) {
  // Blocks of 32 centroids accumulate in registers across the sub-dimensions.
  constexpr int64_t kBlock = 32;
  int64_t i = 0;
  for (; i + kBlock <= c; i += kBlock) {
    float acc[kBlock] = {};
    for (int64_t d = 0; d < sub; ++d) {
      const float xd = x[d], *row = t + d * c + i;
      for (int64_t l = 0; l < kBlock; ++l) {
        const float e = xd - row[l];
        acc[l] += e * e;
      }
    }
    for (int64_t l = 0; l < kBlock; ++l) dist[i + l] = acc[l];
  }
  for (; i < c; ++i) {
    float acc = 0;
    for (int64_t d = 0; d < sub; ++d) {
      const float e = x[d] - t[d * c + i];
      acc += e * e;
    }
    dist[i] = acc;
  }
}

MT_KERNEL
void MatchLanes(const uint64_t* col, int64_t n, uint64_t q, int lane_bits, uint64_t low,
                uint64_t high, uint8_t* hit) {
  if (lane_bits == 64) {
    for (int64_t j = 0; j < n; ++j) hit[j] |= static_cast<uint8_t>(col[j] == q);
    return;
  }
  for (int64_t j = 0; j < n; ++j) {
    const uint64_t y = col[j] ^ q;
    hit[j] |= static_cast<uint8_t>(((y - low) & ~y & high) != 0);
  }
}

}  // namespace masktune::kernels
