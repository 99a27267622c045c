// local: a window of keys ending at each query's position (spec: "local").
#include "engine/maskers/common.h"
#include "engine/maskers/maskers.h"

namespace masktune {
namespace {

class LocalMasker : public Masker {
 public:
  explicit LocalMasker(MaskerConfig c) : config_(std::move(c)) {}
  Result<Mask> AddMask(const AttentionInputs& in, const Mask& prev, LayerState&) const override {
    if (prev.is_full()) return prev;
    const MaskShape shape = in.mask_shape();
    const int64_t w = config_.Size("window_size", shape.keys);
    if (shape.keys <= w + shape.queries) return Mask::Full(shape);
    // Window of query i: keys pos-w+1 .. pos with pos = keys - queries + i
    // (pos-w+1 >= 1 here because keys > w + queries).
    std::vector<int32_t> idx(static_cast<size_t>(shape.rows() * w));
    for (int64_t r = 0; r < shape.rows(); ++r) {
      const int64_t first = shape.position_of(r) - w + 1;
      for (int64_t t = 0; t < w; ++t) idx[r * w + t] = static_cast<int32_t>(first + t);
    }
    // The reference writes ones from the window start onwards, then clears
    // everything after the query: earlier maskers' keys there go too.
    return prev.Merge(Mask::FromRowIndices(shape, idx, w, 1.0f)).ClearAfterQuery();
  }

 private:
  MaskerConfig config_;
};

}  // namespace

MaskerSchema LocalSchema() {
  MaskerSchema s;
  s.type = "local";
  s.reference_name = "LocalMaskerConfig";
  s.help = "the window_size keys ending at each query's position; clears keys after it";
  s.fields = {SizeField("window_size", "window length in keys (float: fraction of the keys)")};
  s.create = Factory<LocalMasker>([](const MaskerConfig& c, const std::string&) {
    return Result<std::unique_ptr<LocalMasker>>(std::make_unique<LocalMasker>(c));
  });
  return s;
}

}  // namespace masktune
