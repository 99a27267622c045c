// File: search/objective.h
//
// Objectives, lower is better, with the reference runner's formulas:
//   default    = error + 0.1 density + (5 if density > 0.5 else 0)
//   sparsity_N = 0.99 error + 0.01 density + 10 max(0, density - N / 100)
// or a single reported metric with its mode (a "max" metric is negated, so
// lower is still better). Several metrics make a Pareto front instead.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "configs/sweep.h"
#include "engine/benchmarks/benchmark.h"

namespace masktune::search {

using masktune::Metrics;

// The scalar objective of `metrics` (lower is better); for a multi-metric
// objective, the first metric's (the front is computed from all of them).
double ObjectiveValue(const configs::ObjectiveSpec& objective, const Metrics& metrics);

// Indices of the points not dominated by any other (all metrics oriented so
// that lower is better: minimised as they are, maximised negated).
std::vector<size_t> ParetoFront(const configs::ObjectiveSpec& objective,
                                const std::vector<Metrics>& points);

}  // namespace masktune::search
