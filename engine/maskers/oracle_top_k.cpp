// oracle_top_k: the keys with the largest true scores (spec: "oracle_top_k").
#include "engine/maskers/common.h"
#include "engine/maskers/maskers.h"

namespace masktune {
namespace {

class OracleTopKMasker : public Masker {
 public:
  explicit OracleTopKMasker(MaskerConfig c) : config_(std::move(c)) {}
  Result<Mask> AddMask(const AttentionInputs& in, const Mask& prev, LayerState&) const override {
    if (prev.is_full()) return prev;
    const MaskShape shape = in.mask_shape();
    const int64_t k = config_.Size("heavy_size", shape.keys);
    if (shape.keys <= k) return Mask::Full(shape);
    std::vector<int32_t> idx(static_cast<size_t>(shape.rows() * k));
    // Unscaled scores, as the reference ranks them; keys already kept rank at
    // the lowest finite float, above keys the attention mask forbids (-inf).
    ForEachScoreRow(in, 1.0f, [&](int64_t row, float* scores) {
      thread_local std::vector<float> prev_row, scratch;
      ExcludePrevious(prev, row, kLowest, scores, prev_row);
      SelectTopK(scores, shape.keys, k, idx.data() + row * k, scratch);
    });
    return prev.Merge(Mask::FromRowIndices(shape, idx, k, 1.0f));
  }

 private:
  MaskerConfig config_;
};

}  // namespace

MaskerSchema OracleTopKSchema() {
  MaskerSchema s;
  s.type = "oracle_top_k";
  s.reference_name = "OracleTopKConfig";
  s.help = "the heavy_size keys with the largest true scores <q, k>";
  s.fields = {SizeField("heavy_size", "keys to keep per row (float: fraction of the keys)")};
  s.create = Factory<OracleTopKMasker>([](const MaskerConfig& c, const std::string&) {
    return Result<std::unique_ptr<OracleTopKMasker>>(std::make_unique<OracleTopKMasker>(c));
  });
  return s;
}

}  // namespace masktune
