// File: search/tpe.h
//
// The Tree-structured Parzen Estimator, as Optuna's TPESampler does it by
// default: the first n_startup_trials of a stack are drawn at random; after
// that, finished trials are split into the best gamma(n) = min(ceil(0.1 n),
// 25) and the rest, each parameter gets a Parzen density l(x) over the good
// and g(x) over the rest (independently per parameter), 24 candidates are
// drawn from l, and the one with the largest l(x) / g(x) is suggested.
// grid_search fields are treated as categorical choices. Draws come from the
// counter-based generator keyed by (seed, stack, parameter, trial), so a
// given history always yields the same suggestion.
#pragma once

#include <utility>
#include <vector>

#include "search/plan.h"

namespace masktune::search {

// A finished trial, or one a scheduler pruned. As Optuna's TPE does
// (_split_trials), complete trials rank first by objective, then pruned ones
// by (the step they reached, further first; then the objective at that
// step, their last intermediate value); every one of them counts in n.
struct Observation {
  TrialParams params;
  double objective = 0;  // lower is better; a pruned trial's at its last step
  bool pruned = false;
  int64_t step = 0;  // pruned: the step it was stopped at
};

TrialParams SuggestTpe(const configs::SweepConfig& sweep, const StackPlan& plan, int64_t trial,
                       const std::vector<Observation>& history);

}  // namespace masktune::search
