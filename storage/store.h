// File: storage/store.h
//
// A study's durable state in SQLite: studies, their stacks, trials
// (parameters, status, attempts, worker, times, objective), metrics and
// workers. WAL mode; the schema is versioned and migrated on open. Every
// coordinator decision is written here before it is acted on, so a killed
// coordinator resumes from the file. Results are keyed by (trial, attempt):
// a result is recorded once, for the attempt that is running, and late or
// repeated reports are ignored. Readable with the sqlite3 CLI.
// Thread-safety: a Store is used by one thread; open one per thread.
#pragma once

#include <sqlite3.h>

#include <memory>
#include <optional>
#include <unordered_map>
#include <string>
#include <vector>

#include "engine/benchmarks/benchmark.h"
#include "engine/status.h"

namespace masktune::storage {

inline constexpr int kSchemaVersion = 1;

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
};

struct TrialRow {
  int64_t id = 0;
  std::string stack;
  int64_t number = 0;  // within its stack
  std::string params;  // JSON object: parameter name -> value
  std::string status;  // queued | running | done | failed
  int64_t attempts = 0;
  std::string worker, error;
  std::optional<double> objective;
  Metrics metrics;
  double started = 0, finished = 0;  // unix seconds, 0 if not yet
};

struct Progress {
  int64_t total = 0, queued = 0, running = 0, done = 0, failed = 0;
};

class Store {
 public:
  // Opens (creating if needed) the database and migrates it to kSchemaVersion.
  static Result<Store> Open(const std::string& path);

  Store(Store&&) noexcept = default;
  Store& operator=(Store&&) noexcept = default;

  // Groups the writes until Commit into one durable transaction.
  Status Begin();
  Status Commit();

  Result<std::optional<StudyRow>> FindStudy(const std::string& name);
  Result<int64_t> CreateStudy(const std::string& name, const std::string& sweep_path,
                              const std::string& sweep_text);
  Status SetStudyStatus(int64_t study, const std::string& status);
  Result<int64_t> AddStack(int64_t study, const std::string& name, int64_t position);
  // Queues trial `number` of `stack` unless it exists (idempotent).
  Status AddTrial(int64_t stack, int64_t number, const std::string& params_json);

  // The oldest queued trial of the study, now marked running on `worker`
  // with attempts + 1; nullopt when none is queued.
  Result<std::optional<TrialRow>> StartNext(int64_t study, const std::string& worker);
  // Records a result if `attempt` is the trial's running attempt; false otherwise.
  Result<bool> RecordResult(int64_t trial, int64_t attempt, const Metrics& metrics,
                            double objective);
  // A failed attempt: queued again, or failed for good after `max_failures` attempts.
  Result<bool> RecordFailure(int64_t trial, int64_t attempt, const std::string& error,
                             int64_t max_failures);
  // Running trials of `worker` (or of the whole study: worker "") go back to the queue.
  Result<int64_t> Requeue(int64_t study, const std::string& worker);
  Status TouchWorker(int64_t study, const std::string& worker, const std::string& info_json);

  Result<Progress> GetProgress(int64_t study);
  // The lowest objective of the study's finished trials; nullopt before the first.
  Result<std::optional<double>> BestObjective(int64_t study);
  // Trials of the study, optionally of one status, ordered by `sort`
  // (id | objective | stack); metrics filled in.
  Result<std::vector<TrialRow>> Trials(int64_t study, const std::string& status = "",
                                       const std::string& sort = "id");
  Result<std::vector<std::string>> Stacks(int64_t study);

 private:
  explicit Store(sqlite3* db) : conn_(std::make_unique<Connection>(db)) {}
  Status Exec(const std::string& sql);
  Status Error(const std::string& what) const;

  std::unique_ptr<Connection> conn_;
};

}  // namespace masktune::storage
