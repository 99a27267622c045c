#include "cli/report.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "search/objective.h"

namespace masktune::cli {
namespace {

double SteadySeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// "name (max)" / "name (min)" for the metrics of a metric objective.
std::string ModeOf(const configs::ObjectiveSpec& objective, size_t k) {
  return objective.metrics[k].second ? "min" : "max";
}

}  // namespace

std::string FormatDuration(double s) {
  if (!(s >= 1.0)) return "<1s";
  char buf[64];
  const auto t = static_cast<long long>(std::llround(std::min(s, 1e12)));
  if (t < 60)
    std::snprintf(buf, sizeof buf, "%llds", t);
  else if (t < 3600)
    std::snprintf(buf, sizeof buf, "%lldm%02llds", t / 60, t % 60);
  else if (t < 86400)
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", t / 3600, t % 3600 / 60);
  else
    std::snprintf(buf, sizeof buf, "%lldd%02lldh", t / 86400, t % 86400 / 3600);
  return buf;
}

std::string FormatNumber(double x) {
  if (std::isnan(x)) return "";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.6g", x);
  return buf;
}

std::string FormatParamValue(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_float()) {
    // A float keeps its point: 1.0 (a fraction) is not 1 (a count).
    std::string s = FormatNumber(v.get<double>());
    if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
    return s;
  }
  return v.dump();
}

std::string FormatParams(const std::string& params_json) {
  const nlohmann::json p = nlohmann::json::parse(params_json, nullptr, false);
  if (!p.is_object()) return params_json;
  std::string out;
  for (auto& [k, v] : p.items()) out += (out.empty() ? "" : ", ") + k + "=" + FormatParamValue(v);
  return out.empty() ? "(none)" : out;
}

std::string FormatTable(const std::vector<std::vector<std::string>>& rows, size_t max_width) {
  std::vector<size_t> width;
  auto cut = [&](const std::string& c) {
    return max_width > 0 && c.size() > max_width ? c.substr(0, max_width - 1) + "~" : c;
  };
  for (const auto& r : rows) {
    if (width.size() < r.size()) width.resize(r.size(), 0);
    for (size_t i = 0; i < r.size(); ++i) width[i] = std::max(width[i], cut(r[i]).size());
  }
  std::string out;
  for (const auto& r : rows) {
    std::string s;
    for (size_t i = 0; i < r.size(); ++i) {
      const std::string c = cut(r[i]);
      s += c + std::string(width[i] - c.size() + 2, ' ');
    }
    while (!s.empty() && s.back() == ' ') s.pop_back();
    out += s + "\n";
  }
  return out;
}

ProgressPrinter::ProgressPrinter(bool terminal, std::FILE* out, std::function<double()> clock)
    : terminal_(terminal), out_(out), clock_(clock ? std::move(clock) : SteadySeconds) {
  start_ = clock_();
}

void ProgressPrinter::SetObjective(const configs::ObjectiveSpec& objective) {
  negate_best_ = !objective.metrics.empty() && !objective.metrics.front().second;
  best_name_ = objective.metrics.empty() ? "" : objective.metrics.front().first + " ";
}

void ProgressPrinter::Print(const std::string& line, double fraction) {
  if (terminal_) {
    const int width = 30;
    const int filled = std::clamp(static_cast<int>(width * fraction), 0, width);
    std::fprintf(out_, "\r[%s%s] %s\033[K", std::string(filled, '#').c_str(),
                 std::string(width - filled, '.').c_str(), line.c_str());
  } else {
    std::fprintf(out_, "%s\n", line.c_str());
  }
  std::fflush(out_);
  printed_ = true;
}

void ProgressPrinter::Start(int64_t total, int64_t already_done, const std::string& what) {
  start_ = last_ = clock_();
  baseline_ = already_done;
  char line[256];
  std::snprintf(line, sizeof line, "%lld/%lld done, preparing %s, ETA --",
                static_cast<long long>(already_done), static_cast<long long>(total), what.c_str());
  Print(line, total > 0 ? static_cast<double>(already_done) / static_cast<double>(total) : 0.0);
}

void ProgressPrinter::Update(const storage::Progress& p, storage::Store& store, int64_t study) {
  const double now = clock_();
  const bool complete = p.settled() == p.total;
  if (!complete && now - last_ < (terminal_ ? 0.1 : 1.0)) return;
  std::optional<double> best;
  // One aggregate query: the progress line must not reload every trial.
  if (auto b = store.BestObjective(study); b.ok()) best = b.value();
  Show(p, best);
}

void ProgressPrinter::Show(const storage::Progress& p, std::optional<double> best) {
  const double now = clock_();
  const int64_t settled_total = p.settled();  // pruned trials are settled too
  const bool complete = settled_total == p.total;
  if (!complete && now - last_ < (terminal_ ? 0.1 : 1.0)) return;
  last_ = now;
  // Without Start, the clock starts at the first progress seen.
  if (baseline_ < 0) {
    baseline_ = settled_total;
    start_ = now;
  }
  const double elapsed = now - start_;
  const int64_t settled = settled_total - baseline_;
  const int64_t remaining = p.total - settled_total;
  std::string eta;
  if (complete) {
    eta = "took " + FormatDuration(elapsed);
  } else if (settled <= 0 || elapsed <= 0) {
    eta = "ETA --";
  } else {
    eta = "ETA " +
          FormatDuration(elapsed / static_cast<double>(settled) * static_cast<double>(remaining));
  }
  std::string best_text = "--";
  if (best) best_text = best_name_ + FormatNumber(negate_best_ ? -*best : *best);
  char line[320];
  // Once an early-stopping scheduler has pruned trials, the count is of
  // settled trials (done or pruned), so a finished study reads T/T.
  char head[96];
  if (p.pruned > 0)
    std::snprintf(head, sizeof head, "%lld/%lld settled (%lld done, %lld pruned)",
                  static_cast<long long>(settled_total), static_cast<long long>(p.total),
                  static_cast<long long>(p.done), static_cast<long long>(p.pruned));
  else
    std::snprintf(head, sizeof head, "%lld/%lld done", static_cast<long long>(p.done),
                  static_cast<long long>(p.total));
  std::snprintf(line, sizeof line, "%s, %lld running, %lld failed, best %s, %s", head,
                static_cast<long long>(p.running), static_cast<long long>(p.failed),
                best_text.c_str(), eta.c_str());
  Print(line, p.total ? static_cast<double>(settled_total) / static_cast<double>(p.total) : 1.0);
}

void ProgressPrinter::Finish() {
  if (terminal_ && printed_) std::fprintf(out_, "\n");
  std::fflush(out_);
}

int PrintBest(storage::Store& store, int64_t study, const configs::SweepConfig& sweep,
              const std::string& stack, bool include_pruned) {
  auto rows = store.Trials(study, "", "id");
  if (!rows.ok()) {
    std::fprintf(stderr, "masktune: %s\n", rows.status().message().c_str());
    return kExitFailure;
  }
  const configs::ObjectiveSpec& objective = sweep.objective;
  int code = kExitOk;
  bool any_stack = false;
  for (const configs::StackSpec& s : sweep.stacks) {
    if (!stack.empty() && s.name != stack) continue;
    any_stack = true;
    std::vector<std::pair<double, const storage::TrialRow*>> done;  // (objective, trial)
    std::vector<const storage::TrialRow*> failed;
    int64_t finished = 0, pending = 0, pruned = 0;
    for (const auto& r : rows.value()) {
      if (r.stack != s.name) continue;
      // A pruned trial ran fewer samples than a complete one: ranked only when asked.
      if (r.status == "done" || (r.status == "pruned" && include_pruned)) {
        ++finished;
        const double v = search::ObjectiveValue(objective, r.metrics);
        if (!std::isnan(v)) done.emplace_back(v, &r);
      } else if (r.status == "pruned") {
        ++pruned;
      } else if (r.status == "failed") {
        failed.push_back(&r);
      } else {
        ++pending;
      }
    }
    if (done.empty()) {
      // The most common failure message; on a tie, the one seen first.
      std::map<std::string, int64_t> count;
      for (const auto* r : failed) ++count[r->error];
      std::string common;
      int64_t most = 0;
      for (const auto* r : failed)
        if (count[r->error] > most) most = count[r->error], common = r->error;
      if (finished > 0) {
        std::printf("stack %s: no finished trial reports the metrics of objective %s\n",
                    s.name.c_str(), objective.name.c_str());
      } else if (pruned > 0 && pending == 0) {
        std::printf(
            "stack %s: no complete trial (%lld pruned by the scheduler, %zu failed); "
            "--include-pruned ranks the pruned ones by their last objective\n",
            s.name.c_str(), static_cast<long long>(pruned), failed.size());
      } else if (!failed.empty() && pending == 0) {
        std::fflush(stdout);  // in stack order when both go to one place
        std::fprintf(
            stderr,
            "masktune: stack %s: all %zu trials failed; most common failure (%lld of %zu): "
            "%s\n",
            s.name.c_str(), failed.size(), static_cast<long long>(most), failed.size(),
            common.c_str());
        code = kExitFailure;
      } else if (!failed.empty()) {
        std::printf(
            "stack %s: no finished trial yet (%zu failed, %lld to run); most common "
            "failure (%lld of %zu): %s\n",
            s.name.c_str(), failed.size(), static_cast<long long>(pending),
            static_cast<long long>(most), failed.size(), common.c_str());
      } else {
        std::printf("stack %s: no finished trial yet\n", s.name.c_str());
      }
      continue;
    }
    std::stable_sort(done.begin(), done.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    if (objective.multi()) {
      std::vector<Metrics> pts;
      for (const auto& [v, r] : done) pts.push_back(r->metrics);
      std::vector<std::vector<std::string>> table;
      std::vector<std::string> header = {"trial"};
      std::string names;
      for (size_t k = 0; k < objective.metrics.size(); ++k) {
        header.push_back(objective.metrics[k].first);
        names += (k ? ", " : "") + objective.metrics[k].first + " " + ModeOf(objective, k);
      }
      header.push_back("params");
      table.push_back(header);
      const std::vector<size_t> front = search::ParetoFront(objective, pts);
      for (size_t i : front) {
        const storage::TrialRow* r = done[i].second;
        std::vector<std::string> row = {std::to_string(r->id)};
        for (const auto& [m, minimise] : objective.metrics) {
          auto it = r->metrics.find(m);
          row.push_back(it == r->metrics.end() ? "" : FormatNumber(it->second));
        }
        row.push_back(FormatParams(r->params));
        table.push_back(std::move(row));
      }
      std::printf("stack %s: Pareto front of %zu of %zu finished trials (%s)\n%s", s.name.c_str(),
                  front.size(), done.size(), names.c_str(), FormatTable(table, 0).c_str());
      continue;
    }
    const storage::TrialRow* r = done.front().second;
    std::string value;
    if (objective.metrics.size() == 1) {
      // A metric objective: its real value (a maximised one is stored negated).
      const std::string& m = objective.metrics.front().first;
      value = m + " " + FormatNumber(r->metrics.at(m)) + " (" + ModeOf(objective, 0) + ")";
    } else {
      value = "objective " + FormatNumber(done.front().first) + " (" + objective.name + ")";
    }
    std::string metrics;
    for (const auto& [k, v] : r->metrics)
      metrics += (metrics.empty() ? "" : ", ") + k + " " + FormatNumber(v);
    if (r->status == "pruned") value += " (pruned at sample " + std::to_string(r->steps) + ")";
    std::printf("best %s: trial %lld, %s; %s; params %s\n", s.name.c_str(),
                static_cast<long long>(r->id), value.c_str(), metrics.c_str(),
                FormatParams(r->params).c_str());
  }
  if (!any_stack) {
    std::fprintf(stderr, "masktune best: no stack '%s' in study %s\n", stack.c_str(),
                 sweep.study.c_str());
    return kExitBadInput;
  }
  return code;
}

Result<configs::ObjectiveSpec> ParseObjectiveFlag(const std::string& text,
                                                  const std::vector<std::string>& reported) {
  if (configs::IsReferenceObjective(text)) return configs::ObjectiveSpec{text, {}};
  configs::ObjectiveSpec o;
  std::string known;
  for (const auto& m : reported) known += (known.empty() ? "" : ", ") + m;
  size_t begin = 0;
  while (begin <= text.size()) {
    const size_t end = std::min(text.find(',', begin), text.size());
    const std::string item = text.substr(begin, end - begin);
    begin = end + 1;
    const size_t colon = item.find(':');
    const std::string metric = item.substr(0, colon);
    const std::string mode = colon == std::string::npos ? "min" : item.substr(colon + 1);
    if (metric.empty() || (mode != "min" && mode != "max"))
      return Status::Error(
          "--objective: expected default, sparsity_5..25, METRIC[:min|max] or a "
          "comma-separated list of those, found '" +
          text + "'");
    if (!reported.empty() && std::find(reported.begin(), reported.end(), metric) == reported.end())
      return Status::Error("--objective: no trial of the study reports '" + metric +
                           "' (reported: " + known + ")");
    for (const auto& [m, unused] : o.metrics)
      if (m == metric) return Status::Error("--objective: '" + metric + "' is listed twice");
    o.metrics.emplace_back(metric, mode == "min");
  }
  o.name = o.metrics.size() == 1 ? o.metrics[0].first : "pareto";
  return o;
}

}  // namespace masktune::cli
