#include "local/local.h"

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "worker/worker.h"

namespace masktune {

Result<CoordinatorStats> RunWithLocalWorkers(zmq::context_t& context, storage::Store& store,
                                             int64_t study, const configs::SweepConfig& sweep,
                                             const MaskerRegistry& registry,
                                             CoordinatorOptions options, const LocalRun& local) {
  std::mutex mu;
  std::condition_variable cv;
  std::string endpoint;
  bool bound = false;
  auto user_on_bound = options.on_bound;
  options.on_bound = [&](const std::string& e) {
    if (user_on_bound) user_on_bound(e);
    std::lock_guard<std::mutex> lock(mu);
    endpoint = e;
    bound = true;
    cv.notify_all();
  };
  Result<CoordinatorStats> stats = Status::Error("the coordinator did not run");
  std::thread coordinator([&] {
    try {
      stats = RunCoordinator(context, store, study, sweep, registry, options);
    } catch (const std::exception& e) {  // a bug: report it rather than abort
      stats = Status::Error(std::string("internal error: ") + e.what());
    }
    std::lock_guard<std::mutex> lock(mu);
    bound = true;  // also wakes the waiter when binding failed
    cv.notify_all();
  });
  {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return bound; });
  }
  std::atomic<bool> stop{false};
  std::vector<std::thread> workers;
  if (!endpoint.empty()) {
    if (local.before_workers) local.before_workers(context, endpoint);
    for (int i = 0; i < local.workers; ++i) {
      workers.emplace_back([&, i] {
        WorkerOptions w;
        w.connect = endpoint;
        w.curve = local.curve;
        w.name = DefaultWorkerName(local.name_prefix + std::to_string(i));
        w.heartbeat_interval_ms = options.heartbeat_interval_ms;
        // Its share of the node's cores; WELCOME then divides them among its
        // trials (resources), all to one trial by default.
        w.announce_cores = local.threads_per_worker;
        w.device = local.device;
        w.stop = &stop;
        (void)RunWorker(context, registry, w);
      });
    }
  }
  coordinator.join();
  if (stats.ok() && stats->interrupted_by && local.on_interrupted)
    local.on_interrupted(stats.value());
  stop = true;  // workers normally exit on DONE; this covers a failed coordinator
  for (auto& t : workers) t.join();
  return stats;
}

}  // namespace masktune
