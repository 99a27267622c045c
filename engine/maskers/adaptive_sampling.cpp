// adaptive_sampling (vAttention): a base sample estimates the spread of the
// attention weights between init_offset and local_offset; from it, a budget
// b per row such that the sampled estimate of the softmax denominator stays
// within epsilon with probability 1 - delta; b distinct keys are drawn and
// written with b / R, their true inclusion probability (spec: "adaptive_sampling").
#include <algorithm>
#include <cmath>

#include "engine/maskers/common.h"
#include "engine/maskers/maskers.h"

namespace masktune {
namespace {

constexpr uint32_t kPurposeBase = 0x5642u;    // "VB"
constexpr uint32_t kPurposeBudget = 0x5653u;  // "VS"

class AdaptiveSamplingMasker : public Masker {
 public:
  explicit AdaptiveSamplingMasker(MaskerConfig c) : config_(std::move(c)) {}

  Result<Mask> AddMask(const AttentionInputs& in, const Mask& prev, LayerState&) const override {
    if (prev.is_full()) return prev;
    const MaskShape shape = in.mask_shape();
    const int64_t n = shape.keys;
    if (config_.Float("base_rate_sampling") == 0.0) return prev;  // sampling switched off
    const int64_t start = config_.Size("init_offset", n);
    const int64_t end = n - config_.Size("local_offset", n);
    const int64_t R = end - start;
    if (R < 2) return Mask::Full(shape);
    const int64_t nb = std::min(R, std::max<int64_t>(2, config_.Size("base_rate_sampling", R)));
    const double z = NormalQuantile(1.0 - config_.Float("delta"));
    const double eps = config_.Float("epsilon");
    const uint64_t seed = static_cast<uint64_t>(config_.Int("seed"));
    const RandomKey base_key{seed, static_cast<uint32_t>(in.layer), kPurposeBase};
    const RandomKey budget_key{seed, static_cast<uint32_t>(in.layer), kPurposeBudget};
    std::vector<std::vector<int32_t>> kept(static_cast<size_t>(shape.rows()));
    std::vector<std::vector<float>> prob(static_cast<size_t>(shape.rows()));
    ForEachScoreRow(in, in.scaling, [&](int64_t row, float* s) {
      thread_local std::vector<float> p;
      thread_local std::vector<int32_t> drawn;
      const float m = *std::max_element(s, s + n);
      for (int64_t j = 0; j < n; ++j) s[j] = std::exp(s[j] - m);  // e_j
      // Static part: the keys already kept, weighted by 1/p (all keys if none are).
      double S = 0;
      if (prev.is_empty()) {
        for (int64_t j = 0; j < n; ++j) S += s[j];
      } else {
        prev.ForEachKept(row, [&](int64_t j, float pj) { S += s[j] / pj; });
      }
      // Base sample: nb distinct keys of [start, end).
      drawn.resize(static_cast<size_t>(nb));
      SampleDistinct(base_key, row, R, nb, drawn.data());
      double sum = 0, sum2 = 0;
      for (int32_t t : drawn) {
        sum += s[start + t];
        sum2 += static_cast<double>(s[start + t]) * s[start + t];
      }
      const double mean = sum / static_cast<double>(nb);
      const double sigma = std::max(
          1e-8, std::sqrt(std::max(0.0, (sum2 - nb * mean * mean) / static_cast<double>(nb - 1))));
      const double Sb = sum * static_cast<double>(R) / static_cast<double>(nb);
      const double ratio = (z * sigma * static_cast<double>(R)) / std::max(eps * (S + Sb), 1e-8);
      int64_t b = static_cast<int64_t>(std::min(ratio * ratio, 1e18));
      b = std::clamp<int64_t>(b, 1, R);
      b = std::clamp<int64_t>(b, nb, R);
      kept[row].resize(static_cast<size_t>(b));
      SampleDistinct(budget_key, row, R, b, kept[row].data());
      for (int32_t& t : kept[row]) t += static_cast<int32_t>(start);
      prob[row].assign(static_cast<size_t>(b),
                       static_cast<float>(static_cast<double>(b) / static_cast<double>(R)));
    });
    return prev.Merge(Mask::FromRows(shape, kept, prob));
  }

  // Phi^-1(p) for p in (0, 1): Acklam's rational approximation, refined by
  // one Newton step on erfc (error below 1e-12).
  static double NormalQuantile(double p) {
    static const double a[] = {-3.969683028665376e+01, 2.209460984245205e+02,
                               -2.759285104469687e+02, 1.383577518672690e+02,
                               -3.066479806614716e+01, 2.506628277459239e+00};
    static const double b[] = {-5.447609879822406e+01, 1.615858368580409e+02,
                               -1.556989798598866e+02, 6.680131188771972e+01,
                               -1.328068155288572e+01};
    static const double c[] = {-7.784894002430293e-03, -3.223964580411365e-01,
                               -2.400758277161838e+00, -2.549732539343734e+00,
                               4.374664141464968e+00,  2.938163982698783e+00};
    static const double d[] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                               3.754408661907416e+00};
    double x;
    if (p < 0.02425) {
      const double q = std::sqrt(-2 * std::log(p));
      x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
          ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
    } else if (p <= 1 - 0.02425) {
      const double q = p - 0.5, r = q * q;
      x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
          (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
    } else {
      const double q = std::sqrt(-2 * std::log(1 - p));
      x = -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
          ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
    }
    const double e = 0.5 * std::erfc(-x / M_SQRT2) - p;
    return x - e * std::sqrt(2 * M_PI) * std::exp(x * x / 2);
  }

 private:
  MaskerConfig config_;
};

}  // namespace

double AdaptiveSamplingQuantile(double p) { return AdaptiveSamplingMasker::NormalQuantile(p); }

MaskerSchema AdaptiveSamplingSchema() {
  MaskerSchema s;
  s.type = "adaptive_sampling";
  s.reference_name = "AdaptiveSamplingMaskerConfig";
  s.help = "vAttention: a per-row budget from a base sample, for an (epsilon, delta) guarantee";
  s.sampling = true;
  FieldSpec base =
      SizeField("base_rate_sampling", "base sample: fraction of the range, or a count");
  base.int_range = Range{0, 1e300, false, false};
  base.float_range = Range{0, 1, false, true};
  FieldSpec eps;
  eps.name = "epsilon";
  eps.type = FieldType::kFloat;
  eps.float_range = Range{0, 1, true, true};
  eps.help = "relative error bound";
  FieldSpec delta = eps;
  delta.name = "delta";
  delta.help = "probability of exceeding the bound";
  FieldSpec init = SizeField("init_offset", "keys before the sampled range", int64_t{0});
  init.int_range = Range{0, 1e300, false, false};
  init.float_range = Range{0, 1, false, false};
  FieldSpec local = SizeField("local_offset", "keys after the sampled range", int64_t{0});
  local.int_range = init.int_range;
  local.float_range = init.float_range;
  s.fields = {base,
              eps,
              delta,
              init,
              local,
              IntField("seed", Range{0, 1e18, false, false}, "draw seed (with the layer and row)",
                       int64_t{42})};
  s.create = Factory<AdaptiveSamplingMasker>([](const MaskerConfig& c, const std::string&) {
    return Result<std::unique_ptr<AdaptiveSamplingMasker>>(
        std::make_unique<AdaptiveSamplingMasker>(c));
  });
  return s;
}

}  // namespace masktune
