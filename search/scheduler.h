// File: search/scheduler.h
//
// Early-stopping schedulers (`search.scheduler` in the sweep file), in Ray
// Tune's manner, on the benchmark's samples as time: a scheduled trial
// reports its metrics after every sample (protocol REPORT), and the
// scheduler answers continue or stop. Values are the objective (lower is
// better; configs refuse a Pareto objective). Each stack is scheduled on its
// own, as it is searched on its own.
//
//  - asha: Ray's AsyncHyperBandScheduler (= ASHAScheduler; Li et al. 2018,
//    "A System for Massively Parallel Hyperparameter Tuning"). Bracket s has
//    rungs at grace_period * reduction_factor^(k + s) <= max_t. A trial
//    reaching a rung's milestone for the first time is compared with the
//    values recorded at that rung so far (before its own): it stops when it
//    is worse than their (1 - 1/reduction_factor) quantile (numpy's linear
//    percentile, as Ray's nanpercentile), i.e. it continues only in the top
//    1/reduction_factor; its value is recorded either way. Nobody waits for a
//    rung to fill. At max_t a trial stops (it is complete; nothing recorded).
//  - hyperband: the same with several brackets (Ray's AsyncHyperBand with
//    brackets > 1; default: every bracket that has a rung), not synchronous
//    HyperBand. A trial's bracket is drawn as Ray draws it (probability
//    proportional to e^(rungs - most rungs)), from the counter-based
//    generator keyed by (seed, stack) at counter = the trial's number, so
//    it is a pure function of the trial.
//  - median: Ray's MedianStoppingRule (hard_stop): at step t >= grace_period,
//    among the other trials whose latest report is at t or beyond (at least
//    min_samples_required of them, else continue), take each one's mean of
//    its values up to t; the trial stops when its best value so far is worse
//    than the median of those means.
//
// A trial is recorded once per rung (asha) and once per step (median),
// whichever attempt reports it: a requeued attempt (its worker died)
// re-reporting a step it passed before continues and changes nothing, so no
// trial is promoted twice. The state is a pure function of the sequence of
// reports: the coordinator rebuilds it on resume by replaying the study's
// stored reports in the order they were taken (storage reports.seq).
// Thread-safety: one thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "configs/sweep.h"

namespace masktune::search {

class Scheduler {
 public:
  virtual ~Scheduler() = default;
  // Trial `trial` (number `number` in `stack`) reports `objective` (lower is
  // better; NaN: continue, nothing recorded) after sample `step` (1-based).
  // True: stop it (at or beyond max_t: it is complete).
  virtual bool OnReport(const std::string& stack, int64_t trial, int64_t number, int64_t step,
                        double objective) = 0;
  // The whole state as canonical text (equal texts: equal states).
  virtual std::string StateText() const = 0;
  int64_t max_t() const { return max_t_; }

 protected:
  int64_t max_t_ = 0;
};

// Null when the spec has no scheduler. `spec` as configs fill it in (max_t
// and brackets known).
std::unique_ptr<Scheduler> CreateScheduler(const configs::SchedulerSpec& spec, int64_t seed);

}  // namespace masktune::search
