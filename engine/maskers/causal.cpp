// causal: clears keys after each query's position. The reference's causal
// masker returns its input unchanged; masktune's is real (spec: "causal").
#include "engine/maskers/common.h"
#include "engine/maskers/maskers.h"

namespace masktune {
namespace {

class CausalMasker : public Masker {
 public:
  Result<Mask> AddMask(const AttentionInputs&, const Mask& prev, LayerState&) const override {
    // Empty stays empty (dense attention with the attention mask is already
    // causal); full stays full, as for every masker.
    return prev.ClearAfterQuery();
  }
};

}  // namespace

MaskerSchema CausalSchema() {
  MaskerSchema s;
  s.type = "causal";
  s.reference_name = "CausalMaskConfig";
  s.help = "clears keys after each query's position (no fields)";
  s.create = Factory<CausalMasker>([](const MaskerConfig&, const std::string&) {
    return Result<std::unique_ptr<CausalMasker>>(std::make_unique<CausalMasker>());
  });
  return s;
}

}  // namespace masktune
