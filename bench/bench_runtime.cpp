// bench_runtime: the sweep runtime's own speed, with the noop benchmark.
//   trials/s through the coordinator with 4 workers over tcp on 127.0.0.1,
//   every result durable in SQLite (WAL) before the next dispatch; and
//   SQLite result writes/s, one transaction per write and batched.
// Usage: bench_runtime [--trials 20000] [--workers 4]
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>

#include "bench/bench_args.h"
#include "local/local.h"

using namespace masktune;

int main(int argc, char** argv) {
  if (int rc =
          masktune::bench::HelpOrArgError(argc, argv,
                                          "usage: bench_runtime [--trials 20000] [--workers 4]\n"
                                          "Trials/s through the coordinator over tcp (noop "
                                          "benchmark), and SQLite result writes/s.\n");
      rc >= 0)
    return rc;
  int64_t trials = 20000;
  int workers = 4;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string f = argv[i];
    if (f == "--trials")
      trials = std::atoll(argv[i + 1]);
    else if (f == "--workers")
      workers = std::atoi(argv[i + 1]);
    else {
      std::fprintf(stderr, "bench_runtime: unknown flag %s\n", f.c_str());
      return 2;
    }
  }
  const auto dir = std::filesystem::temp_directory_path() /
                   ("masktune_bench_runtime_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const MaskerRegistry registry = MaskerRegistry::WithBuiltins();
  const std::string yaml =
      "study: bench\nbenchmark: {name: noop}\nsearch: {algorithm: random, num_samples: " +
      std::to_string(trials) +
      ", seed: 1}\n"
      "attention: {a: [{oracle_top_k: {heavy_size: {uniform: [0.01, 0.9]}}}]}\n";
  auto fail = [](const Status& s) {
    std::fprintf(stderr, "bench_runtime: %s\n", s.message().c_str());
    return 1;
  };
  auto sweep = configs::ParseSweep(yaml, (dir / "b.yaml").string(), registry);
  if (!sweep.ok()) return fail(sweep.status());
  auto store = storage::Store::Open((dir / "b.db").string());
  if (!store.ok()) return fail(store.status());
  auto t0 = std::chrono::steady_clock::now();
  auto study = PrepareStudy(store.value(), sweep.value(), yaml);
  if (!study.ok()) return fail(study.status());
  const double queue_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  CoordinatorOptions copt;
  copt.bind = "tcp://127.0.0.1:*";
  copt.linger_intervals = 0;  // its workers are in-process and got DONE: no late peer to wait for
  LocalRun local;
  local.workers = workers;
  local.threads_per_worker = 1;
  t0 = std::chrono::steady_clock::now();
  zmq::context_t context;
  auto stats = RunWithLocalWorkers(context, store.value(), study.value(), sweep.value(), registry,
                                   copt, local);
  const double run_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!stats.ok()) return fail(stats.status());
  std::printf("queued %lld trials in %.3f s\n", static_cast<long long>(trials), queue_s);
  std::printf(
      "%lld noop trials, %d workers over tcp: %.3f s = %.0f trials/s (every result in SQLite, "
      "WAL)\n",
      static_cast<long long>(stats->results), workers, run_s, stats->results / run_s);

  // Raw store writes: a trial started and its result recorded, per transaction and batched.
  const std::string yaml2 =
      "study: writes\nbenchmark: {name: noop}\nsearch: {num_samples: 6000}\n"
      "attention: {a: [{sink: {sink_size: {randint: [1, 100]}}}]}\n";
  auto sweep2 = configs::ParseSweep(yaml2, (dir / "w.yaml").string(), registry);
  if (!sweep2.ok()) return fail(sweep2.status());
  auto store2 = storage::Store::Open((dir / "w.db").string());
  if (!store2.ok()) return fail(store2.status());
  auto study2 = PrepareStudy(store2.value(), sweep2.value(), yaml2);
  if (!study2.ok()) return fail(study2.status());
  const Metrics m = {{"density", 0.1}, {"error", 0.2}, {"recall", 0.9}};
  for (int batch : {1, 100}) {
    const int n = 3000;
    t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < n; i += batch) {
      (void)store2->Begin();
      for (int j = 0; j < batch; ++j) {
        auto t = store2->StartNext(study2.value(), "w");
        (void)store2->RecordResult(t.value()->id, 1, m, 0.3);
      }
      (void)store2->Commit();
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("SQLite: start + result of %d trials, %d per transaction: %.0f trials/s\n", n,
                batch, n / s);
  }
  std::filesystem::remove_all(dir);
  return 0;
}
