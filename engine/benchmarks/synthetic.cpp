// attention_error's synthetic attention. The generator builds, per kv head,
// an orthonormal frame (the key mean, the sink, the recency and the heavy-
// hitter directions) and places keys and queries in it so that the scaled
// scores s_j = <q, k_j> / sqrt(D) of every query head are
//     content_j (Gaussian, std ~2.2, channel spectrum shared by q and k)
//   + R(d_j)    (recency: ~8.5 - 1.4 ln(1 + d) at distance d from the last query)
//   + S [j = 0] (an attention sink ~10-14 above the mean, on key 0 only)
//   + heavy hitters (a few keys the group's heads all favour, one needle)
// and the norms match: |q| ~ 1.6 sqrt(D), |k| ~ 2.1 sqrt(D) of which the
// shared key mean is ~0.7 (concentrated on a few outlier channels, and the
// queries point slightly away from it), |v| ~ 0.6 sqrt(D) with a shared
// value mean of ~0.55 and a small sink value. Heads differ: each query head
// scales its sink, recency and content terms, and one kv head in ten is a
// broad head (no sink, flatter scores) like SmolLM2's first layers.
// The constants were fitted to `masktune capture` output of
// SmolLM2-135M-Instruct (niah_single_1, 2048 tokens, layers 0, 8, 16 and all
// 30 layers); tests/test_synthetic.cpp lists the statistics and the per-stack
// errors, captured against generated.
#include "engine/benchmarks/synthetic.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "engine/random.h"

namespace masktune {
namespace {

// Purposes of the generator's Philox streams (key: seed, sample index, purpose).
enum Purpose : uint32_t {
  kDrawQuery = 1,
  kDrawKey = 2,
  kDrawValue = 3,
  kFrame = 4,        // frame directions, per kv head: counter (kvh << 40 | vec << 20 | dim)
  kHeadTraits = 5,   // per kv head and query head: uniforms
  kHeavy = 6,        // heavy-hitter positions and sizes
  kSpectrum = 7,     // per-channel scales
  kValueBlocks = 8,  // the value component shared by a block of 32 neighbouring keys
};

// Fitted constants (scaled-score units unless noted).
constexpr double kContentStd = 1.5;    // std of the content part of the scores
constexpr double kRecencyPeak = 10.5;  // R(0)
constexpr double kRecencySlope = 1.5;  // R(d) = peak - slope ln(1 + d), at least 0
constexpr double kSinkLo = 9.0, kSinkHi = 13.0;
constexpr double kBroadShare = 0.15;  // kv heads without a sink
constexpr double kKeyMean = 1.5;      // |key mean| / sqrt(D)
constexpr double kKeyNoise = 1.45;    // per-channel std of the key residual
constexpr double kQueryAway = -0.4;   // query component along the key mean / sqrt(D)
constexpr double kValueMean = 0.45;   // |value mean| / sqrt(D)
constexpr double kValueNoise = 0.5;   // per-channel std of the value residual
constexpr double kValueDrift = 0.5;   // per-channel std of the value part shared by 32 neighbours
constexpr double kSinkValue = 0.3;    // |v_0| / typical |v|

struct Frame {
  std::vector<double> mean, sink, recency, heavy;  // orthonormal, D each (zero when D is too small)
};

double Norm(const std::vector<double>& x) {
  double s = 0;
  for (double v : x) s += v * v;
  return std::sqrt(s);
}

// Gram-Schmidt of `x` against `basis`, normalised; zero when nothing is left.
std::vector<double> Orthonormal(std::vector<double> x,
                                const std::vector<const std::vector<double>*>& basis) {
  for (int pass = 0; pass < 2; ++pass)
    for (const auto* b : basis) {
      double dot = 0;
      for (size_t d = 0; d < x.size(); ++d) dot += x[d] * (*b)[d];
      for (size_t d = 0; d < x.size(); ++d) x[d] -= dot * (*b)[d];
    }
  const double n = Norm(x);
  if (n < 1e-6) return std::vector<double>(x.size(), 0.0);
  for (double& v : x) v /= n;
  return x;
}

}  // namespace

AttentionSample SynthesizeAttention(const nlohmann::json& s, int64_t index) {
  const int64_t N = s.value("keys", 4096), H = s.value("heads", 8), Hkv = s.value("kv_heads", 2);
  const int64_t D = s.value("head_dim", 64), Q = s.value("queries", 1);
  const uint64_t seed = s.value("seed", 0);
  const int64_t g = H / Hkv;
  const double sqrt_d = std::sqrt(static_cast<double>(D));
  const auto stream = static_cast<uint32_t>(index);
  auto key = [&](uint32_t purpose) { return RandomKey{seed, stream, purpose}; };
  auto uniform = [&](uint32_t purpose, uint64_t counter) {
    return RandomUniform(key(purpose), counter);
  };

  AttentionSample out;
  out.q = Tensor({1, H, Q, D});
  out.k = Tensor({1, Hkv, N, D});
  out.v = Tensor({1, Hkv, N, D});
  out.scaling = static_cast<float>(1.0 / sqrt_d);

  // Outlier channels: the key mean sits mostly on max(1, D / 32) of them.
  std::vector<int64_t> outliers;
  for (int64_t c = 0; c < std::max<int64_t>(1, D / 32); ++c)
    outliers.push_back(static_cast<int64_t>(uniform(kFrame, (uint64_t{1} << 62) + c) * D));

  for (int64_t kvh = 0; kvh < Hkv; ++kvh) {
    const uint64_t kv_base = static_cast<uint64_t>(kvh) << 40;
    auto draw = [&](int vec) {
      std::vector<double> x(static_cast<size_t>(D));
      for (int64_t d = 0; d < D; ++d)
        x[d] = RandomNormal(key(kFrame), kv_base | (uint64_t(vec) << 20) | uint64_t(d));
      return x;
    };
    Frame f;
    {
      std::vector<double> m = draw(0);
      for (double& x : m) x *= 0.15;
      for (int64_t c : outliers) m[c] += (RandomUniform(key(kFrame), kv_base | c) < 0.5 ? -1 : 1);
      f.mean = Orthonormal(m, {});
      f.sink = Orthonormal(draw(1), {&f.mean});
      f.recency = Orthonormal(draw(2), {&f.mean, &f.sink});
      f.heavy = Orthonormal(draw(3), {&f.mean, &f.sink, &f.recency});
    }
    // Channel spectrum of the content part, shared by the group's q and k
    // (mean square 1): a few channels carry most of the score variance.
    std::vector<double> lambda(static_cast<size_t>(D));
    double ms = 0;
    for (int64_t d = 0; d < D; ++d) {
      lambda[d] = std::exp(0.5 * RandomNormal(key(kSpectrum), kv_base | uint64_t(d)));
      ms += lambda[d] * lambda[d];
    }
    for (double& l : lambda) l /= std::sqrt(ms / static_cast<double>(D));

    const bool broad = uniform(kHeadTraits, kv_base) < kBroadShare;
    const double sink =
        broad ? -1.0 : kSinkLo + (kSinkHi - kSinkLo) * uniform(kHeadTraits, kv_base | 1);
    const double value_scale = 0.6 + 0.8 * uniform(kHeadTraits, kv_base | 2);

    // Keys: mean + content residual + recency + heavy hitters + the sink.
    // Component sizes are set for a query of unit weight on each direction
    // times sqrt(D) (see the queries below): bump b on direction e needs
    // b * sqrt(D) / (query's weight on e).
    const double q_dir = 0.5 * sqrt_d;  // query weight on the sink, recency and heavy directions
    std::vector<double> bump(static_cast<size_t>(N), 0.0);  // heavy-hitter score bumps
    for (int64_t t = 0; t < std::max<int64_t>(1, N / 64); ++t) {
      const auto j = static_cast<int64_t>(uniform(kHeavy, 2 * t) * N);
      bump[j] = std::max(bump[j], 1.0 + 3.0 * uniform(kHeavy, 2 * t + 1));
    }
    bump[static_cast<int64_t>(uniform(kHeavy, uint64_t{1} << 30) * N)] = 6.0;  // a needle
    const RandomKey kn = key(kDrawKey), vn = key(kDrawValue), vd = key(kValueBlocks);
    std::vector<double> vmean(static_cast<size_t>(D));
    for (int64_t d = 0; d < D; ++d)
      vmean[d] = RandomNormal(key(kFrame), kv_base | (uint64_t{5} << 20) | uint64_t(d));
    const double vm_norm = Norm(vmean);
    for (int64_t j = 0; j < N; ++j) {
      float* k = out.k.data() + (kvh * N + j) * D;
      float* v = out.v.data() + (kvh * N + j) * D;
      const double dist = static_cast<double>(N - 1 - j);
      const double rec = std::max(0.0, kRecencyPeak - kRecencySlope * std::log1p(dist));
      const double broad_damp = broad ? 0.5 : 1.0;
      const double c_rec = broad_damp * rec * sqrt_d / q_dir;
      const double c_heavy = bump[j] * sqrt_d / q_dir;
      const double c_sink = j == 0 && !broad ? sink * sqrt_d / q_dir : 0.0;
      const uint64_t row = (static_cast<uint64_t>(kvh) * N + j) * D;
      for (int64_t d = 0; d < D; ++d) {
        const double noise = kKeyNoise * std::sqrt(lambda[d]) * RandomNormal(kn, row + d);
        k[d] = static_cast<float>(kKeyMean * sqrt_d * f.mean[d] + noise + c_rec * f.recency[d] +
                                  c_heavy * f.heavy[d] + c_sink * f.sink[d]);
        const double vr =
            kValueNoise * RandomNormal(vn, row + d) +
            kValueDrift * RandomNormal(vd, (static_cast<uint64_t>(kvh) * N + j / 32) * D + d);
        v[d] = static_cast<float>(value_scale *
                                  (kValueMean * sqrt_d * vmean[d] / (vm_norm + 1e-12) + vr));
      }
      if (j == 0 && !broad) {  // the sink's value is small
        for (int64_t d = 0; d < D; ++d) v[d] = static_cast<float>(v[d] * kSinkValue);
      }
    }

    // Queries of the group: away from the key mean, toward the sink, recency
    // and heavy directions (per-head weights), plus content noise.
    const RandomKey qn = key(kDrawQuery);
    for (int64_t hh = 0; hh < g; ++hh) {
      const int64_t h = kvh * g + hh;
      const uint64_t hb = kv_base | (uint64_t(hh + 1) << 8);
      const double w_sink = 0.8 + 0.4 * uniform(kHeadTraits, hb);
      const double w_rec = 0.4 + 1.0 * uniform(kHeadTraits, hb | 1);
      const double w_heavy = 0.6 + 0.8 * uniform(kHeadTraits, hb | 2);
      const double w_content = (broad ? 0.7 : 1.0) * (0.8 + 0.4 * uniform(kHeadTraits, hb | 3));
      // Content std: kKeyNoise * sigma_q * sqrt(mean(lambda^2)) = kContentStd * w_content.
      const double sigma_q = kContentStd * w_content / kKeyNoise;
      for (int64_t i = 0; i < Q; ++i) {
        float* q = out.q.data() + (h * Q + i) * D;
        const uint64_t row = (static_cast<uint64_t>(h) * Q + i) * D;
        for (int64_t d = 0; d < D; ++d) {
          const double noise = sigma_q * std::sqrt(lambda[d]) * RandomNormal(qn, row + d);
          q[d] = static_cast<float>(
              kQueryAway * sqrt_d * f.mean[d] +
              q_dir * (w_sink * f.sink[d] + w_rec * f.recency[d] + w_heavy * f.heavy[d]) + noise);
        }
      }
    }
  }
  if (Q > 1) {  // several queries: causal
    out.has_mask = true;
    out.mask = Tensor({1, 1, Q, N});
    for (int64_t i = 0; i < Q; ++i)
      for (int64_t j = N - Q + i + 1; j < N; ++j)
        out.mask.data()[i * N + j] = -std::numeric_limits<float>::infinity();
  }
  return out;
}

}  // namespace masktune
