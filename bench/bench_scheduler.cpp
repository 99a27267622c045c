// bench_scheduler: what early stopping saves. Random search on attention_error
// (the quickstart stacks, synthetic attention with 16 samples by default), run
// with and without a scheduler (ASHA by default) over several seeds, each
// through the real coordinator and local workers with every report in
// SQLite. Prints, per seed and in total, the sample evaluations spent (a
// trial run to the end costs its 16 samples, a pruned one the samples it
// reached) and the best objective per stack, then the ratio of evaluations
// and the largest relative gap of a stack's best objective.
// Usage: bench_scheduler [--seeds 5] [--num-samples 50] [--samples 16] [--keys 4096]
//                        [--workers 2] [--scheduler asha|hyperband|median] [--rf 4]
//                        [--grace 1] [--folder DIR] [--benchmark attention_error|ruler_niah]
// ruler_niah (the default model): tasks niah_single_1 and niah_multikey_1, --samples per
// task, --keys = context tokens; slow on a CPU: use few seeds and trials.   (safetensors samples
// instead of synthetic
//                        ones:
//                                          scripts/bench_optuna.py compares on such a folder)
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>

#include "bench/bench_args.h"
#include "local/local.h"

using namespace masktune;

namespace {

struct Outcome {
  int64_t trials = 0, pruned = 0, failed = 0, evaluations = 0;
  std::string failure;                 // the first failed trial's error
  std::map<std::string, double> best;  // per stack: the lowest objective of a complete trial
  double seconds = 0;
};

std::string SweepText(int64_t seed, int64_t num_samples, int64_t samples, int64_t keys,
                      const std::string& scheduler, int64_t rf, int64_t grace,
                      const std::string& folder, bool ruler) {
  // ruler_niah: two tasks, `samples` each (steps: tasks x samples, interleaved);
  // `keys` is the context length in tokens.
  const std::string benchmark =
      ruler ? "benchmark:\n  name: ruler_niah\n  tasks: [niah_single_1, niah_multikey_1]\n"
              "  context_tokens: " +
                  std::to_string(keys) + "\n  samples: " + std::to_string(samples) +
                  "\n  seed: 1\n  setup: B\n  max_new_tokens: 16\n"
            : "benchmark:\n  name: attention_error\n" +
                  (folder.empty() ? "  data: {synthetic: {keys: " + std::to_string(keys) +
                                        ", heads: 8, kv_heads: 2, head_dim: 64, samples: " +
                                        std::to_string(samples) + ", seed: 7}}\n"
                                  : "  data: {folder: '" + folder + "'}\n");
  std::string text = "study: bench\n" + benchmark +
                     "objective: sparsity_10\n"
                     "search:\n  algorithm: random\n  num_samples: " +
                     std::to_string(num_samples) + "\n  seed: " + std::to_string(seed) + "\n";
  if (!scheduler.empty())
    text += "  scheduler: {type: " + scheduler + ", grace_period: " + std::to_string(grace) +
            (scheduler == "median" ? std::string() : ", reduction_factor: " + std::to_string(rf)) +
            "}\n";
  // The quickstart stacks (configs/examples/quickstart.yaml).
  text +=
      "attention:\n"
      "  topk:\n"
      "    - sink: {sink_size: 64}\n"
      "    - local: {window_size: 64}\n"
      "    - oracle_top_k: {heavy_size: {uniform: [0.01, 0.15]}}\n"
      "  quest:\n"
      "    - sink: {sink_size: 64}\n"
      "    - local: {window_size: 64}\n"
      "    - quest_top_k: {heavy_size: {grid_search: [0.05, 0.1]}, page_size: {choice: [16, 32, "
      "64]}}\n"
      "  top_p:\n"
      "    - sink: {sink_size: 64}\n"
      "    - oracle_top_p: {top_p: {uniform: [0.5, 0.95]}}\n";
  return text;
}

Result<Outcome> RunOnce(const std::filesystem::path& dir, const std::string& text, int workers,
                        int64_t samples) {
  const MaskerRegistry registry = MaskerRegistry::WithBuiltins();
  const std::string db = (dir / "b.db").string();
  std::filesystem::remove(db);
  std::filesystem::remove(db + "-wal");
  std::filesystem::remove(db + "-shm");
  MT_ASSIGN_OR_RETURN(configs::SweepConfig sweep,
                      configs::ParseSweep(text, (dir / "b.yaml").string(), registry));
  MT_ASSIGN_OR_RETURN(storage::Store store, storage::Store::Open(db));
  MT_ASSIGN_OR_RETURN(int64_t study, PrepareStudy(store, sweep, text));
  CoordinatorOptions options;
  options.bind = "inproc://bench-scheduler-" + std::to_string(::getpid());
  options.heartbeat_interval_ms = 200;
  LocalRun local;
  local.workers = workers;
  local.threads_per_worker = 1;
  const auto t0 = std::chrono::steady_clock::now();
  zmq::context_t context;
  MT_RETURN_IF_ERROR(
      RunWithLocalWorkers(context, store, study, sweep, registry, options, local).status());
  Outcome o;
  o.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  MT_ASSIGN_OR_RETURN(auto rows, store.Trials(study));
  for (const auto& r : rows) {
    ++o.trials;
    o.pruned += r.status == "pruned";
    if (r.status == "failed") {
      if (o.failed++ == 0) o.failure = r.error;
      continue;
    }
    o.evaluations += r.steps > 0 ? r.steps : samples;
    if (r.status == "done" && r.objective) {
      auto [it, added] = o.best.emplace(r.stack, *r.objective);
      if (!added) it->second = std::min(it->second, *r.objective);
    }
  }
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  const char* usage =
      "usage: bench_scheduler [--seeds 5] [--num-samples 50] [--samples 16] [--keys 4096]\n"
      "                       [--workers 2] [--scheduler asha|hyperband|median] [--rf 4]\n"
      "                       [--grace 1] [--folder DIR] [--benchmark attention_error|ruler_niah]\n"
      "Random search on attention_error (the quickstart stacks; num_samples per stack, the\n"
      "quest stack's grid doubles it) with and without the scheduler, per seed: sample\n"
      "evaluations spent and the best objective (sparsity_10) per stack.\n";
  if (int rc = bench::HelpOrArgError(argc, argv, usage); rc >= 0) return rc;
  int64_t seeds = 5, num_samples = 50, samples = 16, keys = 4096, rf = 4, grace = 1;
  int64_t samples_per_trial = -1;  // what a complete trial costs; -1: `samples`
  int workers = 2;
  std::string scheduler = "asha", folder, benchmark = "attention_error";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string f = argv[i], v = argv[i + 1];
    if (f == "--seeds")
      seeds = std::atoll(v.c_str());
    else if (f == "--num-samples")
      num_samples = std::atoll(v.c_str());
    else if (f == "--samples")
      samples = std::atoll(v.c_str());
    else if (f == "--keys")
      keys = std::atoll(v.c_str());
    else if (f == "--workers")
      workers = std::atoi(v.c_str());
    else if (f == "--rf")
      rf = std::atoll(v.c_str());
    else if (f == "--grace")
      grace = std::atoll(v.c_str());
    else if (f == "--scheduler")
      scheduler = v;
    else if (f == "--benchmark")
      benchmark = v;
    else if (f == "--folder")
      folder = std::filesystem::absolute(v).string();
    else {
      std::fprintf(stderr, "bench_scheduler: unknown flag %s\n%s", f.c_str(), usage);
      return 2;
    }
  }
  if (benchmark != "attention_error" && benchmark != "ruler_niah") {
    std::fprintf(stderr, "bench_scheduler: --benchmark: expected attention_error or ruler_niah\n");
    return 2;
  }
  if (benchmark == "ruler_niah") samples_per_trial = 2 * samples;
  if (!folder.empty()) {  // a complete trial costs the folder's files
    samples_per_trial = 0;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(folder, ec))
      samples_per_trial += e.path().extension() == ".safetensors";
    if (ec || samples_per_trial == 0) {
      std::fprintf(stderr, "bench_scheduler: --folder %s: no .safetensors files\n", folder.c_str());
      return 2;
    }
  }
  const auto dir = std::filesystem::temp_directory_path() /
                   ("masktune_bench_scheduler_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  int64_t total_plain = 0, total_sched = 0;
  double worst_gap = 0;
  std::printf("%-5s %-10s %7s %7s %12s %8s  best objective per stack\n", "seed", "scheduler",
              "trials", "pruned", "evaluations", "seconds");
  for (int64_t seed = 1; seed <= seeds; ++seed) {
    std::map<std::string, double> plain_best;
    for (const std::string& mode : {std::string(), scheduler}) {
      auto o = RunOnce(dir,
                       SweepText(seed, num_samples, samples, keys, mode, rf, grace, folder,
                                 benchmark == "ruler_niah"),
                       workers, samples_per_trial > 0 ? samples_per_trial : samples);
      if (!o.ok()) {
        std::fprintf(stderr, "bench_scheduler: %s\n", o.status().message().c_str());
        std::filesystem::remove_all(dir);
        return 1;
      }
      std::string best;
      for (const auto& [stack, v] : o->best) {
        char buf[96];
        if (mode.empty()) {
          plain_best[stack] = v;
          std::snprintf(buf, sizeof buf, "%s %.5f  ", stack.c_str(), v);
        } else {
          const double gap = std::fabs(v - plain_best[stack]) / std::fabs(plain_best[stack]);
          worst_gap = std::max(worst_gap, v > plain_best[stack] ? gap : 0.0);
          std::snprintf(buf, sizeof buf, "%s %.5f (%+.2f%%)  ", stack.c_str(), v,
                        100.0 * (v - plain_best[stack]) / std::fabs(plain_best[stack]));
        }
        best += buf;
      }
      (mode.empty() ? total_plain : total_sched) += o->evaluations;
      if (o->failed > 0) {
        std::fprintf(stderr, "bench_scheduler: %lld trials failed: %s\n",
                     static_cast<long long>(o->failed), o->failure.c_str());
        std::filesystem::remove_all(dir);
        return 1;
      }
      std::printf("%-5lld %-10s %7lld %7lld %12lld %8.1f  %s\n", static_cast<long long>(seed),
                  mode.empty() ? "none" : mode.c_str(), static_cast<long long>(o->trials),
                  static_cast<long long>(o->pruned), static_cast<long long>(o->evaluations),
                  o->seconds, best.c_str());
      std::fflush(stdout);
    }
  }
  std::printf(
      "total sample evaluations: none %lld, %s %lld: %.2fx fewer; worst best-objective "
      "loss of a stack: %.2f%%\n",
      static_cast<long long>(total_plain), scheduler.c_str(), static_cast<long long>(total_sched),
      static_cast<double>(total_plain) / static_cast<double>(std::max<int64_t>(1, total_sched)),
      100.0 * worst_gap);
  std::filesystem::remove_all(dir);
  return 0;
}
