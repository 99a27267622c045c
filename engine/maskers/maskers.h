// File: engine/maskers/maskers.h
//
// The schemas (with factories) of the maskers masktune ships, one per file in
// engine/maskers/. MaskerRegistry::WithBuiltins() registers all of them.
#pragma once

#include <vector>

#include "engine/masker.h"

namespace masktune {

MaskerSchema SinkSchema();
MaskerSchema LocalSchema();
MaskerSchema CausalSchema();
MaskerSchema OracleTopKSchema();
MaskerSchema OracleTopPSchema();
MaskerSchema QuestTopKSchema();
MaskerSchema PqTopKSchema();
MaskerSchema DoubleSparsityTopKSchema();
MaskerSchema HashAttentionTopKSchema();
MaskerSchema MagicPigSchema();
MaskerSchema RandomSamplingSchema();
MaskerSchema AdaptiveSamplingSchema();
// Phi^-1(p), the standard normal quantile adaptive_sampling uses (exposed for tests).
double AdaptiveSamplingQuantile(double p);

inline std::vector<MaskerSchema> BuiltinMaskerSchemas() {
  return {SinkSchema(),
          LocalSchema(),
          CausalSchema(),
          OracleTopKSchema(),
          OracleTopPSchema(),
          QuestTopKSchema(),
          PqTopKSchema(),
          DoubleSparsityTopKSchema(),
          HashAttentionTopKSchema(),
          MagicPigSchema(),
          RandomSamplingSchema(),
          AdaptiveSamplingSchema()};
}

}  // namespace masktune
