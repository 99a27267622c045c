// File: storage/store.h
//
// A study's durable state in SQLite: studies, their stacks, trials
// (parameters, status, attempts, worker, times, objective), metrics and
// workers. WAL mode; the schema is versioned and migrated on open. Every
// coordinator decision is written here before it is acted on, so a killed
// coordinator resumes from the file. Results are keyed by (trial, attempt):
// a result is recorded once, for the attempt that is running, and late or
// repeated reports are ignored. Readable with the sqlite3 CLI.
// Errors: every SQLite failure, on a write or a read (a corrupt page, a
// statement that does not prepare, a step that ends in neither a row nor
// done, a column of an unexpected type), is returned as an error whose
// message starts with the database's path; nothing is skipped silently.
// Leases: one live coordinator per study holds the study's lease (holder,
// host, pid, expiry); see AcquireLease.
// Thread-safety: a Store is used by one thread; open one per thread.
#pragma once

#include <sqlite3.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/benchmarks/benchmark.h"
#include "engine/status.h"

namespace masktune::storage {

// 1: studies, stacks, trials, metrics, workers.
// 2: studies.fingerprint, leases.
// 3: trials.status 'pruned' and trials.steps (samples a scheduled trial
//    reached); reports (per-sample results of scheduled trials, keyed by
//    trial, attempt and step, with the scheduler's decision).
// Older files are migrated by Open.
inline constexpr int kSchemaVersion = 3;

// The connection and its prepared statements (each SQL text compiled once),
// finalised before the connection closes.
struct Connection {
  explicit Connection(sqlite3* d) : db(d) {}
  ~Connection() {
    for (auto& [sql, st] : statements) sqlite3_finalize(st);
    sqlite3_close_v2(db);
  }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  sqlite3* db;
  std::unordered_map<std::string, sqlite3_stmt*> statements;
};

struct StudyRow {
  int64_t id = 0;
  std::string name, sweep_path, sweep_text, status;  // status: running | finished
  std::string fingerprint;  // of the study's plan; "" when not recorded (version 1 files)
};

// Who coordinates a study, and until when (unix seconds).
struct Lease {
  std::string holder;
  std::string host;
  int64_t pid = 0;
  double expires = 0;  // unix seconds
};

// This machine's host name, as leases record it.
std::string ThisHost();
// A lease whose holder ran on this host and whose process no longer exists
// (a coordinator killed with -9 before its lease ran out).
bool HolderGoneFromThisHost(const Lease& lease);

struct TrialRow {
  int64_t id = 0;
  std::string stack;
  int64_t number = 0;  // within its stack
  std::string params;  // JSON object: parameter name -> value
  std::string status;  // queued | running | done | failed | pruned
  int64_t attempts = 0;
  int64_t steps = 0;  // samples reached, for trials run under a scheduler; 0: not recorded
  std::string worker, error;
  std::optional<double> objective;
  Metrics metrics;                   // a NaN metric is stored as NULL and read back as NaN
  double started = 0, finished = 0;  // unix seconds, 0 if not yet
};

struct Progress {
  int64_t total = 0, queued = 0, running = 0, done = 0, failed = 0, pruned = 0;
  int64_t settled() const { return done + failed + pruned; }
};

// One per-sample report of a scheduled trial, with the scheduler's answer.
struct ReportRow {
  int64_t seq = 0;  // the order the coordinator took them in
  int64_t trial = 0, attempt = 0, step = 0;
  std::string stack;
  int64_t number = 0;    // the trial's number in its stack
  double objective = 0;  // NaN when the metrics lack the objective's
  std::string decision;  // continue | stop
  Metrics metrics;
};

class Store {
 public:
  // Opens (creating if needed) the database and migrates it to kSchemaVersion.
  // Safe while other processes open the same file (busy timeout, one of them
  // creates or migrates the schema).
  static Result<Store> Open(const std::string& path);
  // Opens an existing database for reading only (SQLITE_OPEN_READONLY): no
  // file is created, the schema is not migrated and the journal mode is not
  // changed, so it works on a file in a read-only folder. Files of an older
  // schema version are read as they are (no fingerprint, no leases). Every
  // writing call on it fails with an error naming the file. A WAL file that
  // was closed cleanly (no -wal beside it) in a folder we may not write is
  // opened immutable: SQLite cannot make its -shm there, and nobody can be
  // writing it without a -wal.
  static Result<Store> OpenReadOnly(const std::string& path);

  Store(Store&&) noexcept = default;
  Store& operator=(Store&&) noexcept = default;

  // Groups the writes until Commit into one durable transaction.
  Status Begin();
  Status Commit();

  Result<std::optional<StudyRow>> FindStudy(const std::string& name);
  Result<int64_t> CreateStudy(const std::string& name, const std::string& sweep_path,
                              const std::string& sweep_text, const std::string& fingerprint = "");
  // Replaces the study's stored sweep (path, text) and plan fingerprint.
  Status UpdateStudySweep(int64_t study, const std::string& sweep_path,
                          const std::string& sweep_text, const std::string& fingerprint);
  Status SetStudyStatus(int64_t study, const std::string& status);
  Result<int64_t> AddStack(int64_t study, const std::string& name, int64_t position);
  // Queues trial `number` of `stack` unless it exists (idempotent).
  Status AddTrial(int64_t stack, int64_t number, const std::string& params_json);

  // The oldest queued trial of the study, now marked running on `worker`
  // with attempts + 1; nullopt when none is queued.
  Result<std::optional<TrialRow>> StartNext(int64_t study, const std::string& worker);
  // Records a result if `attempt` is the trial's running attempt; false otherwise.
  // `steps` > 0: the samples it ran (under a scheduler), stored in trials.steps.
  Result<bool> RecordResult(int64_t trial, int64_t attempt, const Metrics& metrics,
                            double objective, int64_t steps = 0);
  // A trial a scheduler stopped at `step`: status pruned, with that step's
  // metrics and objective, if `attempt` is the running attempt (false otherwise).
  Result<bool> RecordPruned(int64_t trial, int64_t attempt, int64_t step, const Metrics& metrics,
                            double objective);
  // Stores a per-sample report and the decision taken on it. A report already
  // stored for (trial, attempt, step) is kept as it was: the return value is
  // then its decision (the answer a repeated report gets); nullopt: stored now.
  Result<std::optional<std::string>> AddReport(int64_t trial, int64_t attempt, int64_t step,
                                               const Metrics& metrics, double objective,
                                               const std::string& decision);
  // The decision stored for (trial, attempt, step); nullopt: no such report.
  Result<std::optional<std::string>> ReportDecision(int64_t trial, int64_t attempt, int64_t step);
  // The study's reports in the order they were taken (what a scheduler's
  // state is rebuilt from on resume). Empty for files before version 3.
  Result<std::vector<ReportRow>> Reports(int64_t study);
  // A failed attempt: queued again, or failed for good after `max_failures` attempts.
  Result<bool> RecordFailure(int64_t trial, int64_t attempt, const std::string& error,
                             int64_t max_failures);
  // Running trials of `worker` (or of the whole study: worker "") go back to the queue.
  // With `refund_attempt` their attempt is not counted (the stop was ours,
  // not the trial's: SIGINT/SIGTERM), so max_failures is not used up.
  Result<int64_t> Requeue(int64_t study, const std::string& worker, bool refund_attempt = false);
  Status TouchWorker(int64_t study, const std::string& worker, const std::string& info_json);

  Result<Progress> GetProgress(int64_t study);
  // The lowest objective of the study's finished trials; nullopt before the first.
  Result<std::optional<double>> BestObjective(int64_t study);
  // Trials of the study, optionally of one status, ordered by `sort`
  // (id | objective | stack); metrics filled in.
  Result<std::vector<TrialRow>> Trials(int64_t study, const std::string& status = "",
                                       const std::string& sort = "id");
  Result<std::vector<std::string>> Stacks(int64_t study);

  // Leases. Each works inside a transaction opened with Begin (it then only
  // executes its statements, under the write lock Begin took) and outside one
  // (it then runs in its own BEGIN IMMEDIATE transaction), so a check and its
  // write are atomic against other processes either way.
  //
  // Takes the study's lease for mine.holder if nobody holds it, the holder's
  // lease expired, or mine.holder already holds it (then renews). nullopt:
  // acquired. Otherwise returns the live holder (not acquired).
  Result<std::optional<Lease>> AcquireLease(int64_t study, const Lease& mine);
  // Extends it; an error if mine.holder no longer holds it (someone took it after expiry).
  Status RenewLease(int64_t study, const std::string& holder, double expires);
  // Gives it up; a no-op if `holder` does not hold it.
  Status ReleaseLease(int64_t study, const std::string& holder);
  // The live (unexpired) lease, nullopt if none. Works on a read-only Store.
  Result<std::optional<Lease>> LiveLease(int64_t study);

  // SQLite's PRAGMA integrity_check and foreign_key_check: the problems found,
  // one line each; empty when the file is sound.
  Result<std::vector<std::string>> Check();

  const std::string& path() const { return path_; }

 private:
  Store(sqlite3* db, std::string path, bool read_only)
      : conn_(std::make_unique<Connection>(db)), path_(std::move(path)), read_only_(read_only) {}
  Status Exec(const std::string& sql);
  // "PATH: what: SQLite's message for the connection's last error".
  Status Error(const std::string& what) const;
  Result<int64_t> SchemaVersion();
  // Runs `body` in the caller's open transaction, or in its own BEGIN IMMEDIATE one.
  Status InTransaction(const std::function<Status()>& body);
  // The study's lease row, expired or not.
  Result<std::optional<Lease>> CurrentLease(int64_t study);

  std::unique_ptr<Connection> conn_;
  std::string path_;
  bool read_only_ = false;
  int64_t version_ = kSchemaVersion;  // the file's schema version (older when read-only)
};

}  // namespace masktune::storage
