// File: worker/worker.h
//
// A worker: connects a DEALER to the coordinator, announces its resources,
// builds the study's benchmark once, runs the trials it is sent (one at a
// time, on a thread of its own, so heartbeats keep flowing) and reports their
// metrics. On coordinator silence it reconnects with capped exponential
// back-off instead of exiting; it returns when told the study is over, or
// when `stop` is set.
#pragma once

#include "protocol/security.h"

#include <zmq.hpp>

#include <atomic>
#include <string>

#include "engine/registry.h"
#include "engine/status.h"

namespace masktune {

struct WorkerOptions {
  std::string connect;   // the coordinator's endpoint
  std::shared_ptr<const security::ClientKeys> curve;  // null: plain
  std::string name;      // shown in the trials table; unique per worker
  int64_t heartbeat_interval_ms = 1000;
  int threads = 0;       // OpenMP threads for this worker's trials (0: the default)
  std::string device = "cpu";  // where attention runs: cpu or cuda
  const std::atomic<bool>* stop = nullptr;
};

struct WorkerStats {
  int64_t trials = 0, reconnects = 0;
};

Result<WorkerStats> RunWorker(zmq::context_t& context, const MaskerRegistry& registry,
                              const WorkerOptions& options);

}  // namespace masktune
