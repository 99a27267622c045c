// oracle_top_p: the smallest set of keys holding a share top_p of the
// attention mass (spec: "oracle_top_p").
#include <algorithm>

#include "engine/maskers/common.h"
#include "engine/maskers/maskers.h"

namespace masktune {
namespace {

class OracleTopPMasker : public Masker {
 public:
  explicit OracleTopPMasker(MaskerConfig c) : config_(std::move(c)) {}
  Result<Mask> AddMask(const AttentionInputs& in, const Mask& prev, LayerState&) const override {
    if (prev.is_full()) return prev;
    const MaskShape shape = in.mask_shape();
    const int64_t n = shape.keys;
    const double top_p = config_.Float("top_p");
    if (n <= static_cast<int64_t>(top_p * static_cast<double>(n))) return Mask::Full(shape);
    const float top_p_f = static_cast<float>(top_p);  // the reference compares in float32
    std::vector<std::vector<int32_t>> kept(static_cast<size_t>(shape.rows()));
    ForEachScoreRow(in, in.scaling, [&](int64_t row, float* s) {
      thread_local std::vector<float> prev_row, sorted, cum;
      ExcludePrevious(prev, row, kLowest, s, prev_row);
      const float m = *std::max_element(s, s + n);
      for (int64_t j = 0; j < n; ++j) s[j] = std::exp(s[j] - m);
      sorted.assign(s, s + n);
      std::sort(sorted.begin(), sorted.end(), std::greater<float>());
      // torch's CPU cumsum accumulates in double and stores float.
      cum.resize(static_cast<size_t>(n));
      double acc = 0.0;
      for (int64_t t = 0; t < n; ++t) cum[t] = static_cast<float>(acc += sorted[t]);
      const float total = cum[n - 1];
      // t* = how many normalised sums are <= top_p (searchsorted, right side).
      int64_t t_star = 0;
      while (t_star < n && cum[t_star] / total <= top_p_f) ++t_star;
      const float thr = sorted[std::min(t_star, n - 1)];
      for (int64_t j = 0; j < n; ++j)
        if (s[j] >= thr) kept[row].push_back(static_cast<int32_t>(j));
    });
    std::vector<int64_t> row_ptr(1, 0);
    std::vector<int32_t> cols;
    for (const auto& r : kept) {
      cols.insert(cols.end(), r.begin(), r.end());
      row_ptr.push_back(static_cast<int64_t>(cols.size()));
    }
    std::vector<float> ones(cols.size(), 1.0f);
    return prev.Merge(Mask::Sparse(shape, std::move(row_ptr), std::move(cols), std::move(ones)));
  }

 private:
  MaskerConfig config_;
};

}  // namespace

MaskerSchema OracleTopPSchema() {
  MaskerSchema s;
  s.type = "oracle_top_p";
  s.reference_name = "OracleTopPMaskerConfig";
  s.help = "the smallest key set holding a share top_p of each row's attention mass";
  FieldSpec p;
  p.name = "top_p";
  p.type = FieldType::kFloat;
  p.float_range = Range{0, 1, false, false};
  p.help = "share of the attention mass to keep, in [0, 1]";
  s.fields = {p};
  s.create = Factory<OracleTopPMasker>([](const MaskerConfig& c, const std::string&) {
    return Result<std::unique_ptr<OracleTopPMasker>>(std::make_unique<OracleTopPMasker>(c));
  });
  return s;
}

}  // namespace masktune
