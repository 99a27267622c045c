#include "cli/report.h"

#include <cstdio>
#include <limits>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "search/objective.h"

namespace masktune::cli {

ProgressPrinter::ProgressPrinter(bool terminal)
    : terminal_(terminal), start_(std::chrono::steady_clock::now()), last_(start_) {}

void ProgressPrinter::Update(const storage::Progress& p, storage::Store& store, int64_t study) {
  const auto now = std::chrono::steady_clock::now();
  const bool complete = p.done + p.failed == p.total;
  if (!terminal_ && !complete && now - last_ < std::chrono::seconds(1)) return;
  if (terminal_ && !complete && now - last_ < std::chrono::milliseconds(100)) return;
  last_ = now;
  if (first_done_ < 0) first_done_ = p.done + p.failed;
  double best = std::numeric_limits<double>::quiet_NaN();
  // One aggregate query: the progress line must not reload every trial.
  if (auto b = store.BestObjective(study); b.ok() && b.value()) best = *b.value();
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const int64_t settled = p.done + p.failed - first_done_;
  const double eta = settled > 0 ? elapsed / settled * (p.total - p.done - p.failed) : 0.0;
  char line[256];
  std::snprintf(line, sizeof line, "%lld/%lld done, %lld running, %lld failed, best %.4g, ETA %.0fs",
                static_cast<long long>(p.done), static_cast<long long>(p.total),
                static_cast<long long>(p.running), static_cast<long long>(p.failed), best, eta);
  if (terminal_) {
    const int width = 30;
    const int filled = p.total ? static_cast<int>(width * (p.done + p.failed) / p.total) : width;
    std::printf("\r[%s%s] %s\033[K", std::string(filled, '#').c_str(),
                std::string(width - filled, '.').c_str(), line);
  } else {
    std::printf("%s\n", line);
  }
  std::fflush(stdout);
  printed_ = true;
}

void ProgressPrinter::Finish() {
  if (terminal_ && printed_) std::printf("\n");
}

int PrintBest(storage::Store& store, int64_t study, const configs::SweepConfig& sweep,
              const std::string& stack) {
  auto rows = store.Trials(study, "done", "objective");
  if (!rows.ok()) {
    std::fprintf(stderr, "masktune: %s\n", rows.status().message().c_str());
    return kExitFailure;
  }
  bool any_stack = false;
  for (const configs::StackSpec& s : sweep.stacks) {
    if (!stack.empty() && s.name != stack) continue;
    any_stack = true;
    std::vector<const storage::TrialRow*> mine;
    for (const auto& r : rows.value())
      if (r.stack == s.name) mine.push_back(&r);
    if (mine.empty()) {
      std::printf("stack %s: no finished trial\n", s.name.c_str());
      continue;
    }
    std::vector<const storage::TrialRow*> shown;
    if (sweep.objective.multi()) {
      std::vector<Metrics> pts;
      for (const auto* r : mine) pts.push_back(r->metrics);
      for (size_t i : search::ParetoFront(sweep.objective, pts)) shown.push_back(mine[i]);
      std::printf("stack %s: Pareto front of %zu trials\n", s.name.c_str(), shown.size());
    } else {
      shown.push_back(mine.front());  // sorted by objective
    }
    for (const auto* r : shown) {
      std::string metrics;
      for (const auto& [k, v] : r->metrics) {
        char buf[64];
        std::snprintf(buf, sizeof buf, "%s%s %.6g", metrics.empty() ? "" : ", ", k.c_str(), v);
        metrics += buf;
      }
      std::printf("best %s: trial %lld, objective %.6g (%s); %s; params %s\n", s.name.c_str(),
                  static_cast<long long>(r->id), r->objective.value_or(NAN),
                  sweep.objective.name.c_str(), metrics.c_str(), r->params.c_str());
    }
  }
  if (!any_stack) {
    std::fprintf(stderr, "masktune best: no stack '%s' in study %s\n", stack.c_str(),
                 sweep.study.c_str());
    return kExitBadInput;
  }
  return kExitOk;
}

}  // namespace masktune::cli
