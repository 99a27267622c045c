// File: coordinator/coordinator.h
//
// The coordinator: one poll loop owning its ROUTER socket, its timers and the
// study's Store. It enqueues the study's trials (once; a study that exists
// resumes), dispatches them to idle workers, tracks heartbeats, requeues the
// trials of silent workers, records results and failures, and returns once
// every trial is settled, after telling the workers the study is over.
// Everything is written to SQLite before it is acted on.
#pragma once

#include <zmq.hpp>

#include <functional>
#include <string>

#include "configs/sweep.h"
#include "protocol/security.h"
#include "protocol/protocol.h"
#include "engine/registry.h"
#include "storage/store.h"

namespace masktune {

struct CoordinatorOptions {
  std::string bind;                   // "inproc://..." or "tcp://host:port"
  // CURVE (protocol/security.h): only allowed workers get past the
  // handshake. Null: plain (inproc, or tcp when the user said --insecure).
  std::shared_ptr<const security::ServerKeys> curve;
  int64_t heartbeat_interval_ms = 1000;
  // Called once bound, with the endpoint (tcp://host:* resolves to the port).
  std::function<void(const std::string&)> on_bound;
  // Called after each loop turn that changed something (for progress output).
  std::function<void(const storage::Progress&)> on_progress;
};

struct CoordinatorStats {
  int64_t results = 0, failures = 0, requeued = 0, malformed = 0;
  int64_t refused = 0;  // peers the CURVE handshake turned away
};

// Creates the study in `store` if it does not exist and queues its trials;
// for an existing study, requeues its running trials. Returns the study id.
Result<int64_t> PrepareStudy(storage::Store& store, const configs::SweepConfig& sweep,
                             const std::string& sweep_text);

// Runs the study to completion. Returns an error only for a storage or socket failure.
Result<CoordinatorStats> RunCoordinator(zmq::context_t& context, storage::Store& store,
                                        int64_t study, const configs::SweepConfig& sweep,
                                        const MaskerRegistry& registry,
                                        const CoordinatorOptions& options);

}  // namespace masktune
