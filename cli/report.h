// File: cli/report.h
//
// What run, resume and best print: progress while a study runs, and the best
// configuration per stack (or the Pareto front) from the database.
#pragma once

#include <cstdio>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "configs/sweep.h"
#include "storage/store.h"

namespace masktune::cli {

// A progress bar on a terminal (done/total, running, failed, best so far,
// ETA); plain lines, at most one a second, otherwise. The ETA comes from the
// trials settled (done or failed) since the printer started: "ETA --" until
// the first one settles, never "0s" while trials remain; a finished study
// shows the time it took instead.
class ProgressPrinter {
 public:
  // `clock`: monotonic seconds (default: steady_clock); tests pass their own.
  explicit ProgressPrinter(bool terminal, std::FILE* out = stdout,
                           std::function<double()> clock = {});
  // The sweep's objective: a maximised metric's best is shown as its real
  // value, not negated as stored. Optional; without it the stored value.
  void SetObjective(const configs::ObjectiveSpec& objective);
  // Prints "D/N done, ..., preparing WHAT, ETA --" at once (a terminal user
  // sees something within a second of `run` starting) and starts the ETA's
  // clock: trials settled after this call set the rate. `already_done`:
  // trials settled before (a resumed study).
  void Start(int64_t total, int64_t already_done, const std::string& what);
  void Update(const storage::Progress& p, storage::Store& store, int64_t study);
  // Update with the best stored objective already known (nullopt: none yet).
  void Show(const storage::Progress& p, std::optional<double> best);
  void Finish();

 private:
  void Print(const std::string& line, double fraction);

  bool terminal_;
  std::FILE* out_;
  std::function<double()> clock_;
  double start_ = 0, last_ = -1e300;
  int64_t baseline_ = -1;  // trials settled when the clock started; -1: not yet known
  bool printed_ = false;
  bool negate_best_ = false;
  std::string best_name_;
};

// A duration for people: "42s", "3m05s", "2h03m", "3d04h"; "<1s" under a second.
std::string FormatDuration(double seconds);

// A number with 6 significant digits at most ("%.6g"); "" for NaN.
std::string FormatNumber(double x);
// A stored parameter value for a table: strings as they are, floats with
// FormatNumber but keeping a point (1.0, a fraction, is not 1, a count).
std::string FormatParamValue(const nlohmann::json& value);
// A trial's stored parameters (a JSON object) as "name=value, ...".
std::string FormatParams(const std::string& params_json);
// Rows of cells as aligned columns (two spaces apart), one line each; a cell
// longer than `max_width` (0: no limit) is cut, ending in "~".
std::string FormatTable(const std::vector<std::vector<std::string>>& rows, size_t max_width);

// Prints each stack's best trial (lowest objective, recomputed from the
// stored metrics under `sweep.objective`) or, for a multi-metric objective,
// its Pareto front as a table; `stack` "" = all stacks. A maximised metric is
// shown as its real value. A stack whose trials all failed gets one line on
// stderr with its most common failure and its count, and the exit code is 1.
// Returns an exit code.
// Trials a scheduler pruned ran fewer samples: they are ranked only with
// `include_pruned` (best --include-pruned), marked "(pruned at sample S)".
int PrintBest(storage::Store& store, int64_t study, const configs::SweepConfig& sweep,
              const std::string& stack, bool include_pruned = false);

// `best --objective TEXT`: default, sparsity_5..25, METRIC[:min|max], or a
// comma-separated list of those metrics (a Pareto front). `reported`: the
// metrics the study's trials report; a metric outside them is an error.
Result<configs::ObjectiveSpec> ParseObjectiveFlag(const std::string& text,
                                                  const std::vector<std::string>& reported);

}  // namespace masktune::cli
