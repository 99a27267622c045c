// File: coordinator/coordinator.h
//
// The coordinator: one poll loop owning its ROUTER socket, its timers and the
// study's Store, in the manner of the ZeroMQ guide's Paranoid Pirate queue.
// Each turn: take every message that arrived (OnMessage), forget workers
// that went silent and requeue their trials (PurgeSilent), hand queued trials
// to idle workers (Dispatch), commit, and only then send. It enqueues the
// study's trials once (a study that exists resumes), holds the study's lease
// in SQLite while it runs (one live coordinator per study), and returns once
// every trial is settled (Finish: DONE to every worker, then a short linger
// answering late peers with DONE) or when a signal asks it to stop
// (Interrupt: running trials back to the queue, their attempt refunded).
// Everything is written to SQLite before it is acted on.
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <zmq.hpp>

#include "configs/sweep.h"
#include "engine/registry.h"
#include "protocol/protocol.h"
#include "protocol/security.h"
#include "search/scheduler.h"
#include "storage/store.h"

namespace masktune {

struct CoordinatorOptions {
  std::string bind;  // "inproc://..." or "tcp://host:port"
  // CURVE (protocol/security.h): only allowed workers get past the
  // handshake. Null: plain (inproc, or tcp when the user said --insecure).
  std::shared_ptr<const security::ServerKeys> curve;
  int64_t heartbeat_interval_ms = 1000;
  // Called once bound, with the endpoint (tcp://host:* resolves to the port).
  std::function<void(const std::string&)> on_bound;
  // Called after each loop turn that changed something (for progress output).
  std::function<void(const storage::Progress&)> on_progress;
  // Set (to the signal number) by a signal handler: the loop stops at its next
  // turn, requeues the running trials without counting their attempt, marks
  // the study interrupted and returns with stats.interrupted_by set.
  const std::atomic<int>* interrupt = nullptr;
  // After the study is settled, how long to keep answering late workers with
  // DONE (a worker that was paused or reconnecting when DONE went out).
  int64_t linger_intervals = 3;
  // Where log lines go (rate-limited refusals, dropped messages); null: stderr.
  std::function<void(const std::string&)> log;
  // The study's lease, as PrepareStudy took it; renewed every heartbeat and
  // released on return. holder "": no lease (tests that drive a Store alone).
  storage::Lease lease;
};

struct CoordinatorStats {
  int64_t results = 0, failures = 0, requeued = 0;
  int64_t reports = 0, pruned = 0;  // per-sample reports taken; trials a scheduler stopped
  int64_t malformed = 0;            // messages dropped by protocol checks (logged, rate-limited)
  int64_t refused = 0;              // peers the CURVE handshake (ZAP) turned away
  int64_t handshake_failures = 0;   // plain, garbage or HTTP peers on a CURVE socket
  int64_t rejoins = 0;              // unknown peers asked to send READY (e.g. after our restart)
  int interrupted_by = 0;           // the signal that stopped the study; 0: it finished
};

// Who runs a coordinator, for the study's lease: "HOST:PID".
storage::Lease ThisProcessLease(int64_t heartbeat_interval_ms);

// An error naming each part that differs between the stored and the new
// plan fingerprint (configs::PlanFingerprintText: canonical JSON with one
// key per part); OK when they match or the study predates fingerprints ("").
Status CheckSamePlan(const std::string& stored, const std::string& fresh);

struct PrepareOptions {
  bool extend = false;   // an existing study takes the new plan (its trials are kept)
  storage::Lease lease;  // taken inside the same transaction; holder "" = no lease
};

// Creates the study in `store` if it does not exist and queues its trials;
// for an existing study, checks the plan is the stored one (or takes the new
// one with `extend`) and requeues its running trials. Takes the study's lease
// first: another live coordinator holding it is an error that names it.
// Returns the study id.
Result<int64_t> PrepareStudy(storage::Store& store, const configs::SweepConfig& sweep,
                             const std::string& sweep_text, const PrepareOptions& options = {});

// The study's scheduler (search/scheduler.h) with the state its stored
// reports leave it in: they are replayed in the order they were taken, as
// the coordinator does when it resumes a study. Null without a scheduler.
// `mismatches`, when given, receives the number of reports whose stored
// decision differs from the replayed one (0: the same decisions).
Result<std::unique_ptr<search::Scheduler>> RebuildScheduler(storage::Store& store, int64_t study,
                                                            const configs::SweepConfig& sweep,
                                                            int64_t* mismatches = nullptr);

// Runs the study to completion (or interruption). Returns an error only for a
// storage or socket failure, or a lost lease.
Result<CoordinatorStats> RunCoordinator(zmq::context_t& context, storage::Store& store,
                                        int64_t study, const configs::SweepConfig& sweep,
                                        const MaskerRegistry& registry,
                                        const CoordinatorOptions& options);

}  // namespace masktune
