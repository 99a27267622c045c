// oracle_top_p: the smallest set of keys holding a share top_p of the
// attention mass (spec: "oracle_top_p").
#include <algorithm>

#include "engine/maskers/common.h"
#include "engine/maskers/maskers.h"

namespace masktune {
namespace {

// The reference sorts e descending, takes cumulative sums c_t (accumulated in
// double, stored as float, as torch's CPU cumsum does), normalises u_t =
// c_t / c_last in float, counts t* = #{u_t <= top_p} and returns sorted[t*]
// (t* clamped to n - 1). This finds the same t* without sorting: quickselect
// on ranks, steered by the sum of the values ranked above the pivot. Ties
// have equal values, so the order among them changes no prefix sum.
float Threshold(const float* e, int64_t n, float top_p, std::vector<float>& a) {
  a.assign(e, e + n);
  double total_d = 0.0;
  for (float x : a) total_d += x;
  const float total = static_cast<float>(total_d);
  auto within = [&](double prefix) { return static_cast<float>(prefix) / total <= top_p; };
  // a[lo, end) holds exactly the ranks lo .. end-1; `above` sums ranks < lo;
  // t* lies in [lo, end - 1], or is n when end == n and no prefix exceeds top_p.
  int64_t lo = 0, end = n;
  double above = 0.0;
  while (end - lo > 32) {
    const int64_t mid = lo + (end - lo) / 2;
    std::nth_element(a.begin() + lo, a.begin() + mid, a.begin() + end, std::greater<float>());
    double prefix = above;  // the sum of ranks 0 .. mid
    for (int64_t t = lo; t <= mid; ++t) prefix += a[t];
    if (within(prefix)) {  // u_mid <= top_p: t* > mid
      above = prefix;
      lo = mid + 1;
    } else {  // t* <= mid
      end = mid + 1;
    }
  }
  std::sort(a.begin() + lo, a.begin() + end, std::greater<float>());
  int64_t t = lo;
  for (; t < end; ++t) {
    above += a[t];
    if (!within(above)) break;
  }
  return a[std::min(t, n - 1)];
}

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
      thread_local std::vector<float> prev_row, sorted;
      ExcludePrevious(prev, row, kLowest, s, prev_row);
      const float m = *std::max_element(s, s + n);
      for (int64_t j = 0; j < n; ++j) s[j] = std::exp(s[j] - m);
      const float thr = Threshold(s, n, top_p_f, sorted);
      for (int64_t j = 0; j < n; ++j)
        if (s[j] >= thr) kept[row].push_back(static_cast<int32_t>(j));
    });
    return prev.Merge(Mask::FromRows(shape, kept, 1.0f));
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
