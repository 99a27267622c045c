// sink: the first keys of every row (spec: "sink").
#include "engine/maskers/common.h"
#include "engine/maskers/maskers.h"

namespace masktune {
namespace {

class SinkMasker : public Masker {
 public:
  explicit SinkMasker(MaskerConfig c) : config_(std::move(c)) {}
  Result<Mask> AddMask(const AttentionInputs& in, const Mask& prev, LayerState&) const override {
    if (prev.is_full()) return prev;
    const MaskShape shape = in.mask_shape();
    const int64_t s = config_.Size("sink_size", shape.keys);
    if (shape.keys <= s) return Mask::Full(shape);
    std::vector<int32_t> idx(static_cast<size_t>(shape.rows() * s));
    for (int64_t r = 0; r < shape.rows(); ++r)
      for (int64_t j = 0; j < s; ++j) idx[r * s + j] = static_cast<int32_t>(j);
    return prev.Merge(Mask::FromRowIndices(shape, idx, s, 1.0f));
  }

 private:
  MaskerConfig config_;
};

}  // namespace

MaskerSchema SinkSchema() {
  MaskerSchema s;
  s.type = "sink";
  s.reference_name = "SinkMaskerConfig";
  s.help = "the first sink_size keys of every row (attention sinks)";
  s.fields = {SizeField("sink_size", "number of leading keys (float: fraction of the keys)")};
  s.create = Factory<SinkMasker>([](const MaskerConfig& c, const std::string&) {
    return Result<std::unique_ptr<SinkMasker>>(std::make_unique<SinkMasker>(c));
  });
  return s;
}

}  // namespace masktune
