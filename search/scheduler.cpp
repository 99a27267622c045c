#include "search/scheduler.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>
#include <vector>

#include "engine/random.h"

namespace masktune::search {
namespace {

constexpr uint32_t kPurposeBracket = 0x42524b54;  // "BRKT"

// numpy.percentile's default (linear interpolation between closest ranks).
double Percentile(std::vector<double> values, double q) {
  std::sort(values.begin(), values.end());
  const double pos = q / 100.0 * static_cast<double>(values.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(lo + 1, values.size() - 1);
  return values[lo] + (values[hi] - values[lo]) * (pos - static_cast<double>(lo));
}

std::string Number(double x) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", x);
  return buf;
}

uint32_t StackStream(const std::string& stack) {
  uint32_t h = 2166136261u;  // FNV-1a
  for (unsigned char c : stack) h = (h ^ c) * 16777619u;
  return h;
}

class Asha : public Scheduler {
 public:
  Asha(const configs::SchedulerSpec& spec, int64_t seed)
      : grace_(spec.grace_period), rf_(spec.reduction_factor), seed_(seed) {
    max_t_ = spec.max_t;
    for (int64_t s = 0; s < std::max<int64_t>(1, spec.brackets); ++s) {
      std::vector<int64_t> milestones;  // highest first, as Ray walks them
      int64_t m = grace_;
      for (int64_t k = 0; k < s; ++k) m *= rf_;
      for (; m <= max_t_; m *= rf_) milestones.insert(milestones.begin(), m);
      milestones_.push_back(std::move(milestones));
    }
  }

  bool OnReport(const std::string& stack, int64_t trial, int64_t number, int64_t step,
                double objective) override {
    if (step >= max_t_) return true;  // complete (Ray: stop_last_trials)
    if (std::isnan(objective)) return false;
    StackState& st = stacks_[stack];
    if (st.rungs.empty()) st.rungs.resize(milestones_.size());
    auto [it, added] = st.bracket_of.emplace(trial, 0);
    if (added) it->second = DrawBracket(stack, number);
    const size_t b = it->second;
    const double reward = -objective;  // Ray compares metric_op * metric: higher is better
    auto& rungs = st.rungs[b];
    rungs.resize(milestones_[b].size());
    for (size_t r = 0; r < milestones_[b].size(); ++r) {
      std::map<int64_t, double>& recorded = rungs[r];
      if (step < milestones_[b][r] || recorded.count(trial)) continue;
      bool stop = false;
      if (!recorded.empty()) {
        std::vector<double> values;
        for (const auto& [t, v] : recorded) values.push_back(v);
        const double cutoff = Percentile(values, (1.0 - 1.0 / static_cast<double>(rf_)) * 100.0);
        stop = reward < cutoff;
      }
      recorded[trial] = reward;
      return stop;
    }
    return false;
  }

  std::string StateText() const override {
    std::string out;
    for (const auto& [stack, st] : stacks_) {
      out += "stack " + stack + "\n";
      for (const auto& [trial, b] : st.bracket_of)
        out += "  trial " + std::to_string(trial) + " bracket " + std::to_string(b) + "\n";
      for (size_t b = 0; b < st.rungs.size(); ++b)
        for (size_t r = 0; r < st.rungs[b].size(); ++r) {
          out +=
              "  bracket " + std::to_string(b) + " rung " + std::to_string(milestones_[b][r]) + ":";
          for (const auto& [t, v] : st.rungs[b][r])
            out += " " + std::to_string(t) + "=" + Number(v);
          out += "\n";
        }
    }
    return out;
  }

 private:
  // Ray: a bracket with more rungs is likelier, p ~ e^(rungs - most rungs).
  size_t DrawBracket(const std::string& stack, int64_t number) const {
    if (milestones_.size() == 1) return 0;
    size_t most = 0;
    for (const auto& m : milestones_) most = std::max(most, m.size());
    std::vector<double> p;
    double total = 0;
    for (const auto& m : milestones_)
      total += p.emplace_back(std::exp(static_cast<double>(m.size()) - static_cast<double>(most)));
    double u =
        RandomUniform(RandomKey{static_cast<uint64_t>(seed_), StackStream(stack), kPurposeBracket},
                      static_cast<uint64_t>(number)) *
        total;
    for (size_t b = 0; b < p.size(); ++b) {
      if (u < p[b]) return b;
      u -= p[b];
    }
    return p.size() - 1;
  }

  struct StackState {
    std::map<int64_t, size_t> bracket_of;                       // trial -> bracket
    std::vector<std::vector<std::map<int64_t, double>>> rungs;  // [bracket][rung]: trial -> reward
  };
  int64_t grace_, rf_, seed_;
  std::vector<std::vector<int64_t>> milestones_;  // per bracket, highest first
  std::map<std::string, StackState> stacks_;
};

class Median : public Scheduler {
 public:
  explicit Median(const configs::SchedulerSpec& spec)
      : grace_(spec.grace_period), min_samples_(spec.min_samples_required) {
    max_t_ = spec.max_t;
  }

  bool OnReport(const std::string& stack, int64_t trial, int64_t, int64_t step,
                double objective) override {
    if (std::isnan(objective)) return step >= max_t_;
    StackState& st = stacks_[stack];
    if (st.stopped.count(trial)) return true;  // hard_stop: it stays stopped
    TrialState& me = st.trials[trial];
    me.values[step] = objective;  // a requeued attempt's repeat replaces its first report
    me.last = step;
    if (step >= max_t_) return true;  // complete: its values count for the others
    if (step < grace_) return false;
    std::vector<double> means;
    for (const auto& [other, o] : st.trials) {
      if (other == trial || o.last < step) continue;
      double sum = 0;
      int64_t n = 0;
      for (const auto& [t, v] : o.values) {
        if (t > step) break;
        sum += v;
        ++n;
      }
      if (n > 0) means.push_back(sum / static_cast<double>(n));
    }
    if (static_cast<int64_t>(means.size()) < min_samples_) return false;
    double best = INFINITY;
    for (const auto& [t, v] : me.values) best = std::min(best, v);
    // np.median: the mean of the two middle values for an even count.
    const double median = Percentile(means, 50.0);
    if (best > median) {
      st.stopped.insert(trial);
      return true;
    }
    return false;
  }

  std::string StateText() const override {
    std::string out;
    for (const auto& [stack, st] : stacks_) {
      out += "stack " + stack + "\n";
      for (const auto& [trial, t] : st.trials) {
        out += "  trial " + std::to_string(trial) + " last " + std::to_string(t.last) +
               (st.stopped.count(trial) ? " stopped" : "") + ":";
        for (const auto& [s, v] : t.values) out += " " + std::to_string(s) + "=" + Number(v);
        out += "\n";
      }
    }
    return out;
  }

 private:
  struct TrialState {
    std::map<int64_t, double> values;  // step -> objective
    int64_t last = 0;                  // the step of its latest report
  };
  struct StackState {
    std::map<int64_t, TrialState> trials;
    std::set<int64_t> stopped;
  };
  int64_t grace_, min_samples_;
  std::map<std::string, StackState> stacks_;
};

}  // namespace

std::unique_ptr<Scheduler> CreateScheduler(const configs::SchedulerSpec& spec, int64_t seed) {
  if (spec.type == "asha" || spec.type == "hyperband") return std::make_unique<Asha>(spec, seed);
  if (spec.type == "median") return std::make_unique<Median>(spec);
  return nullptr;
}

}  // namespace masktune::search
