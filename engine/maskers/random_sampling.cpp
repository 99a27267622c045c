// random_sampling: m = int(rate * N) distinct keys per row, uniformly without
// replacement, each written with m / N, its true inclusion probability. (The
// reference draws with replacement and writes `rate`, which overstates the
// inclusion probability: about 0.26 is real for rate 0.3.) (spec: "random_sampling")
#include <algorithm>

#include "engine/maskers/common.h"
#include "engine/maskers/maskers.h"
#include "engine/random.h"

namespace masktune {
namespace {

constexpr uint32_t kPurposeRandomSampling = 0x5253u;  // "RS"

class RandomSamplingMasker : public Masker {
 public:
  explicit RandomSamplingMasker(MaskerConfig c) : config_(std::move(c)) {}
  Result<Mask> AddMask(const AttentionInputs& in, const Mask& prev, LayerState&) const override {
    if (prev.is_full()) return prev;
    const MaskShape shape = in.mask_shape();
    const int64_t n = shape.keys;
    const int64_t m = static_cast<int64_t>(config_.Float("sampling_rate") * static_cast<double>(n));
    if (m >= n) return Mask::Full(shape);
    if (m <= 0) return prev;
    const RandomKey key{static_cast<uint64_t>(config_.Int("seed")), static_cast<uint32_t>(in.layer),
                        kPurposeRandomSampling};
    std::vector<int32_t> idx(static_cast<size_t>(shape.rows() * m));
    ParallelRows(shape.rows(),
                 [&](int64_t row) { SampleDistinct(key, row, n, m, idx.data() + row * m); });
    const float p = static_cast<float>(static_cast<double>(m) / static_cast<double>(n));
    return prev.Merge(Mask::FromRowIndices(shape, idx, m, p));
  }

 private:
  MaskerConfig config_;
};

}  // namespace

MaskerSchema RandomSamplingSchema() {
  MaskerSchema s;
  s.type = "random_sampling";
  s.reference_name = "RandomSamplingMaskerConfig";
  s.help = "int(sampling_rate * keys) distinct keys per row, uniformly, each weighted by keys / m";
  s.sampling = true;
  FieldSpec rate;
  rate.name = "sampling_rate";
  rate.type = FieldType::kFloat;
  rate.float_range = Range{0, 1, true, false};
  rate.help = "share of the keys to draw, in (0, 1]";
  s.fields = {rate, IntField("seed", Range{0, 1e18, false, false},
                             "draw seed (with the layer and row)", int64_t{42})};
  s.create = Factory<RandomSamplingMasker>([](const MaskerConfig& c, const std::string&) {
    return Result<std::unique_ptr<RandomSamplingMasker>>(std::make_unique<RandomSamplingMasker>(c));
  });
  return s;
}

}  // namespace masktune
