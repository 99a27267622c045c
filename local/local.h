// File: local/local.h
//
// A coordinator and N workers in one process: what `masktune run` does, and
// what tests and bench_runtime use. The workers connect to wherever the
// coordinator bound (inproc:// or tcp://, ephemeral ports included).
#pragma once

#include <functional>
#include <string>

#include "coordinator/coordinator.h"
#include "worker/worker.h"

namespace masktune {

struct LocalRun {
  int workers = 1;
  // The cores each worker announces (its share), which its trials' OpenMP
  // threads divide among themselves (0: the cores this process may use).
  int threads_per_worker = 0;
  Device device;                       // where the workers' trials run (activated by the caller)
  std::string name_prefix = "local-";  // names read PREFIX<i>@HOST:PID
  std::shared_ptr<const security::ClientKeys>
      curve;  // the workers' keys when the coordinator uses CURVE
  // Called once the coordinator is bound, before the workers start (tests
  // use it to add peers of their own on the same context).
  std::function<void(zmq::context_t&, const std::string& endpoint)> before_workers;
  // Called when a signal stopped the coordinator (state committed), before
  // the workers are joined; a trial in flight is not interrupted, so the
  // command line ends the process here (std::_Exit) instead of waiting for it.
  std::function<void(const CoordinatorStats&)> on_interrupted;
};

// Runs the study to completion on `context` (the caller's: sockets it opens
// on it in before_workers must be closed before it is destroyed); returns
// the coordinator's result.
Result<CoordinatorStats> RunWithLocalWorkers(zmq::context_t& context, storage::Store& store,
                                             int64_t study, const configs::SweepConfig& sweep,
                                             const MaskerRegistry& registry,
                                             CoordinatorOptions options, const LocalRun& local);

}  // namespace masktune
