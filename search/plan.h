// File: search/plan.h
//
// From a sweep's search spaces to trials. Each named stack is searched on its
// own. The grid and random algorithms follow Ray Tune's basic variant
// generator: grid_search fields are crossed (the first listed varies
// slowest), the grid is repeated num_samples times, and every other space is
// sampled per trial. Draws come from the counter-based generator keyed by
// (seed, stack, trial, parameter), so the same seed gives the same trials and
// a resumed search continues the sequence. Thread-safety: pure functions.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "configs/sweep.h"
#include "engine/masker.h"
#include "engine/registry.h"

namespace masktune::search {

struct SearchedParam {
  std::string name;  // "oracle_top_k.heavy_size" (with "#i" after the type if it repeats)
  size_t masker = 0;
  std::string field;
  const configs::ParamSpace* space = nullptr;
};

struct StackPlan {
  const configs::StackSpec* stack = nullptr;
  size_t index = 0;  // the stack's place in the sweep: the generator's stream
  std::vector<SearchedParam> params;
  int64_t grid_points = 1;  // product of the grid_search sizes (saturates at INT64_MAX)
  // grid_points x num_samples (tpe: num_samples); 1 for a stack that searches
  // nothing (a dense baseline []): configs::StackTrials, saturating.
  int64_t trials = 0;
};

std::vector<StackPlan> PlanSweep(const configs::SweepConfig& sweep);

// A trial's parameter values, by SearchedParam::name.
using TrialParams = std::map<std::string, FieldValue>;

// A trial's parameters as stored (a JSON object) and back. Parsing fails on
// text that is not such an object of numbers, bools and strings.
std::string ParamsToJson(const TrialParams& params);
Result<TrialParams> ParamsFromJson(const std::string& text);

// The grid/random algorithms' parameters of trial `trial` (0 .. trials-1).
TrialParams SampleBasic(const configs::SweepConfig& sweep, const StackPlan& plan, int64_t trial);

// Draws one value of a sampled space from u in [0, 1).
FieldValue DrawFrom(const configs::ParamSpace& space, double u);

// The stack's masker configurations with `params` filled in, validated by the registry.
Result<std::vector<MaskerConfig>> Materialize(const MaskerRegistry& registry, const StackPlan& plan,
                                              const TrialParams& params);

}  // namespace masktune::search
