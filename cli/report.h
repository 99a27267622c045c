// File: cli/report.h
//
// What run, resume and best print: progress while a study runs, and the best
// configuration per stack (or the Pareto front) from the database.
#pragma once

#include <chrono>
#include <string>

#include "configs/sweep.h"
#include "storage/store.h"

namespace masktune::cli {

// A progress bar on a terminal (done/total, running, failed, best so far,
// ETA); plain lines, at most one a second, otherwise.
class ProgressPrinter {
 public:
  explicit ProgressPrinter(bool terminal);
  void Update(const storage::Progress& p, storage::Store& store, int64_t study);
  void Finish();

 private:
  bool terminal_;
  std::chrono::steady_clock::time_point start_, last_;
  int64_t first_done_ = -1;
  bool printed_ = false;
};

// Prints each stack's best trial (lowest objective) or, for a multi-metric
// objective, its Pareto front; `stack` "" = all stacks. Returns an exit code.
int PrintBest(storage::Store& store, int64_t study, const configs::SweepConfig& sweep,
              const std::string& stack);

}  // namespace masktune::cli
