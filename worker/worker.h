// File: worker/worker.h
//
// A worker: connects a DEALER to the coordinator, announces its resources,
// builds the study's benchmark once per slot, runs the trials it is sent
// (as many at once as WELCOME's slots, each on a thread of its own, so
// heartbeats keep flowing) and reports their metrics. Every message from the coordinator is checked
// (protocol/): a wrong one is logged and dropped, never fatal. One socket for the worker's life:
// ZeroMQ reconnects it to a restarted coordinator, which answers a peer it does not know with
// REJOIN, and the worker introduces itself again (READY, once its trial in flight is over). It says
// why it is not getting in (no answer in 10 s, key refused, plain against CURVE, nothing
// listening). It returns when told the study is over, or when `stop` is set, or with an error once
// the coordinator has been silent for `give_up_after_ms`.
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <zmq.hpp>

#include "engine/device.h"
#include "engine/registry.h"
#include "engine/status.h"
#include "protocol/security.h"

namespace masktune {

struct WorkerOptions {
  std::string connect;                                // the coordinator's endpoint
  std::shared_ptr<const security::ClientKeys> curve;  // null: plain
  std::string name;  // shown in the trials table; unique per worker (DefaultWorkerName)
  int64_t heartbeat_interval_ms = 1000;
  // OpenMP threads per trial; 0: what WELCOME says (resources), else the default.
  int threads = 0;
  Device device;  // where trials run (engine/device.h), activated by the caller
  // --device was given: a benchmark that cannot run there is refused (the
  // worker leaves, WorkerStats::refused); defaulted: such a benchmark runs on
  // the CPU.
  bool device_given = true;
  // GPUs announced in READY; -1: 1 on a cuda device (a worker drives one),
  // else 0. Tests override it (the hidden `worker --announce-gpus N`).
  int64_t announce_gpus = -1;
  // Cores announced in READY; 0: the cores this process may run on
  // (sched_getaffinity). Local workers announce their share.
  int64_t announce_cores = 0;
  const std::atomic<bool>* stop = nullptr;
  // Called when `stop` is seen while trials are in flight, before waiting for
  // them to end (a RULER trial can take minutes): `masktune worker` ends the
  // process there, abandoning them (the coordinator requeues them when the
  // heartbeats stop). Null: wait for them.
  std::function<void()> on_stop_busy;
  // With no message from the coordinator for this long, give up (an error).
  int64_t give_up_after_ms = 600000;
  // Without WELCOME this long after connecting, say so (and keep trying).
  int64_t welcome_timeout_ms = 10000;
  // Where log lines go; null: stderr, prefixed with the worker's name.
  std::function<void(const std::string&)> log;
};

// "PREFIX@HOST:PID": unique per process and host, so two `run`s or two
// workers on one node never share a name.
std::string DefaultWorkerName(const std::string& prefix);

struct WorkerStats {
  int64_t trials = 0;
  int64_t rejoins = 0;  // READY sent again because the coordinator did not know us
  int64_t dropped = 0;  // malformed messages from the coordinator
  bool done = false;    // DONE received
  // Not empty: the study's benchmark cannot run on this worker's device (the
  // message names both); the worker left at WELCOME, before taking a trial.
  std::string refused;
};

Result<WorkerStats> RunWorker(zmq::context_t& context, const MaskerRegistry& registry,
                              const WorkerOptions& options);

}  // namespace masktune
