// masktune validate: check a sweep file and print the plan it makes.
#include <cstdio>

#include "cli/commands.h"
#include "configs/sweep.h"
#include "engine/benchmarks/benchmark.h"
#include "engine/device.h"
#include "search/plan.h"

namespace masktune::cli {
namespace {

int RunValidate(const std::string& path, int64_t max_trials, const std::string& device_flag) {
  const MaskerRegistry registry = MaskerRegistry::WithBuiltins();
  configs::ParseOptions options;
  options.max_trials = max_trials;
  auto sweep = configs::LoadSweep(path, registry, options);
  if (!sweep.ok()) {
    std::fprintf(stderr, "%s\n", sweep.status().message().c_str());
    return kExitBadInput;
  }
  const configs::SweepConfig& c = sweep.value();
  // The workers' device, when given: only whether the benchmark runs on it
  // (this machine need not have the GPU the workers will have).
  if (!device_flag.empty()) {
    auto device = Device::Parse(device_flag);
    Status st =
        device.ok() ? CheckBenchmarkDevice(c.benchmark.name, device.value()) : device.status();
    if (!st.ok()) {
      std::fprintf(stderr, "%s: --device %s: %s\n", path.c_str(), device_flag.c_str(),
                   st.message().c_str());
      return kExitBadInput;
    }
  }
  const auto plans = search::PlanSweep(c);
  int64_t total = 0;  // at most max_trials: LoadSweep checked the cap
  for (const auto& p : plans) total += p.trials;
  std::printf("study %s: %zu stack%s, %lld trials (algorithm %s, num_samples %lld, seed %lld)\n",
              c.study.c_str(), plans.size(), plans.size() == 1 ? "" : "s",
              static_cast<long long>(total), c.search.algorithm.c_str(),
              static_cast<long long>(c.search.num_samples), static_cast<long long>(c.search.seed));
  const configs::BenchmarkSpec& b = c.benchmark;
  std::printf("%s\n", b.Describe().c_str());
  std::string objective = c.objective.name;
  if (!c.objective.metrics.empty()) {
    objective.clear();
    for (const auto& [m, minimise] : c.objective.metrics)
      objective += (objective.empty() ? "" : ", ") + m + (minimise ? " min" : " max");
    if (c.objective.multi()) objective += " (Pareto front)";
  }
  std::printf("objective %s\nstorage %s\n", objective.c_str(), c.storage.c_str());
  if (const configs::SchedulerSpec& sc = c.search.scheduler; sc.enabled()) {
    std::printf("scheduler %s: max_t %lld samples, grace_period %lld", sc.type.c_str(),
                static_cast<long long>(sc.max_t), static_cast<long long>(sc.grace_period));
    if (sc.type == "median")
      std::printf(", min_samples_required %lld\n", static_cast<long long>(sc.min_samples_required));
    else
      std::printf(", reduction_factor %lld, brackets %s\n",
                  static_cast<long long>(sc.reduction_factor),
                  sc.brackets > 0 ? std::to_string(sc.brackets).c_str()
                                  : (sc.type == "asha" ? "1" : "all"));
  }
  for (const auto& p : plans) {
    std::printf("stack %s: %zu masker%s%s, %lld trials\n", p.stack->name.c_str(),
                p.stack->maskers.size(), p.stack->maskers.size() == 1 ? "" : "s",
                p.stack->maskers.empty() ? " (dense attention)" : "",
                static_cast<long long>(p.trials));
    for (const auto& m : p.stack->maskers) {
      std::string fixed;
      for (const auto& [field, space] : m.fields)
        if (!space.searched())
          fixed += (fixed.empty() ? "" : ", ") + field + " " + space.ToString();
      std::printf("  %s%s%s\n", m.type.c_str(), fixed.empty() ? "" : ": ", fixed.c_str());
    }
    for (const auto& param : p.params)
      std::printf("  searched %s: %s\n", param.name.c_str(), param.space->ToString().c_str());
  }
  return kExitOk;
}

}  // namespace

Action AddValidateCommand(CLI::App& app) {
  auto path = std::make_shared<std::string>();
  auto max_trials = std::make_shared<int64_t>(configs::kDefaultMaxTrials);
  CLI::App* cmd = app.add_subcommand(
      "validate",
      "Check a sweep file against the masker schemas and print its plan: the stacks,\n"
      "their searched fields and how many trials each will run. Side files (channel\n"
      "lists, weights, projections, the model) must exist and parse.");
  cmd->add_option("FILE", *path, "the sweep file (YAML)")->required();
  cmd->add_option("--max-trials", *max_trials,
                  "refuse plans of more trials than this, every stack together (default " +
                      std::to_string(configs::kDefaultMaxTrials) + ")")
      ->check(CLI::Range(int64_t{1}, INT64_MAX));
  auto device = std::make_shared<std::string>();
  cmd->add_option("--device", *device,
                  "also check that the benchmark runs on the workers' device: cpu, cuda or "
                  "cuda:N (this machine need not have it)");
  cmd->footer(
      "Exit codes: 0 valid, 2 invalid (every error on its own line: FILE:LINE:COLUMN: "
      "message).");
  return [path, max_trials, device] { return RunValidate(*path, *max_trials, *device); };
}

}  // namespace masktune::cli
