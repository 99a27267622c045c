#include "storage/store.h"

#include <chrono>
#include <thread>

#include <chrono>
#include <map>
#include <nlohmann/json.hpp>

namespace masktune::storage {
namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// A prepared statement from the store's cache: reset and unbound on scope
// exit, so each SQL text is compiled once per connection.
class Stmt {
 public:
  Stmt(Connection& c, const std::string& sql) {
    sqlite3_stmt*& slot = c.statements[sql];
    if (!slot) rc_ = sqlite3_prepare_v3(c.db, sql.c_str(), -1, SQLITE_PREPARE_PERSISTENT, &slot, nullptr);
    st_ = slot;
    if (!st_) rc_ = SQLITE_ERROR;
  }
  ~Stmt() {
    if (!st_) return;
    sqlite3_reset(st_);
    sqlite3_clear_bindings(st_);
  }
  Stmt(const Stmt&) = delete;
  bool ok() const { return rc_ == SQLITE_OK; }
  Stmt& Bind(int i, int64_t v) { sqlite3_bind_int64(st_, i, v); return *this; }
  Stmt& Bind(int i, double v) { sqlite3_bind_double(st_, i, v); return *this; }
  Stmt& Bind(int i, const std::string& v) {
    sqlite3_bind_text(st_, i, v.c_str(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  int Step() { return st_ ? sqlite3_step(st_) : SQLITE_ERROR; }
  int64_t Int(int c) const { return sqlite3_column_int64(st_, c); }
  double Double(int c) const { return sqlite3_column_double(st_, c); }
  bool Null(int c) const { return sqlite3_column_type(st_, c) == SQLITE_NULL; }
  std::string Text(int c) const {
    const unsigned char* t = sqlite3_column_text(st_, c);
    return t ? reinterpret_cast<const char*>(t) : "";
  }

 private:
  sqlite3_stmt* st_ = nullptr;
  int rc_ = SQLITE_OK;
};

const char* kSchemaV1 = R"(
CREATE TABLE studies (
  id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, sweep_path TEXT NOT NULL,
  sweep_text TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'running', created REAL NOT NULL);
CREATE TABLE stacks (
  id INTEGER PRIMARY KEY, study_id INTEGER NOT NULL REFERENCES studies(id), name TEXT NOT NULL,
  position INTEGER NOT NULL, UNIQUE (study_id, name));
CREATE TABLE trials (
  id INTEGER PRIMARY KEY, study_id INTEGER NOT NULL REFERENCES studies(id),
  stack_id INTEGER NOT NULL REFERENCES stacks(id), number INTEGER NOT NULL,
  params TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'queued'
    CHECK (status IN ('queued', 'running', 'done', 'failed')),
  attempts INTEGER NOT NULL DEFAULT 0, worker TEXT, error TEXT, objective REAL,
  queued REAL NOT NULL, started REAL, finished REAL, UNIQUE (stack_id, number));
CREATE INDEX trials_by_status ON trials (study_id, status, id);
CREATE TABLE metrics (
  trial_id INTEGER NOT NULL REFERENCES trials(id), name TEXT NOT NULL, value REAL,
  PRIMARY KEY (trial_id, name));
CREATE TABLE workers (
  study_id INTEGER NOT NULL REFERENCES studies(id), name TEXT NOT NULL, info TEXT,
  last_seen REAL NOT NULL, PRIMARY KEY (study_id, name));
)";

}  // namespace

Status Store::Error(const std::string& what) const {
  return Status::Error("sqlite: " + what + ": " + sqlite3_errmsg(conn_->db));
}

Status Store::Exec(const std::string& sql) {
  char* err = nullptr;
  if (sqlite3_exec(conn_->db, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "error";
    sqlite3_free(err);
    return Status::Error("sqlite: " + msg);
  }
  return Status::Ok();
}

Result<Store> Store::Open(const std::string& path) {
  sqlite3* raw = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &raw,
                                 SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                                 nullptr);
  Store store(raw, path, false);
  if (rc != SQLITE_OK)
    return Status::Error(path + ": cannot open database: " + sqlite3_errstr(rc));
  sqlite3_busy_timeout(raw, 10000);
  // WAL + synchronous NORMAL: a commit survives a killed process (the WAL is
  // written before COMMIT returns); only a power loss may drop the last ones.
  // Switching a new file to WAL takes an exclusive lock and does not wait
  // on the busy handler: another process opening it at the same moment
  // makes it fail with "locked", so retry for as long as busy_timeout.
  Status wal = store.Exec("PRAGMA journal_mode=WAL");
  for (int i = 0; !wal.ok() && wal.message().find("locked") != std::string::npos && i < 1000; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    wal = store.Exec("PRAGMA journal_mode=WAL");
  }
  MT_RETURN_IF_ERROR(wal.WithContext(path + ": "));
  MT_RETURN_IF_ERROR(store.Exec("PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;")
                         .WithContext(path + ": "));
  int64_t version = 0;
  {  // reset before BEGIN: a live read would make BEGIN IMMEDIATE fail at once, not wait
    Stmt v(*store.conn_, "PRAGMA user_version");
    v.Step();
    version = v.Int(0);
  }
  if (version > kSchemaVersion)
    return Status::Error(path + ": schema version " + std::to_string(version) +
                         " is newer than this masktune (" + std::to_string(kSchemaVersion) + ")");
  if (version < 1) {
    // Another process may be creating the schema at this moment: look again
    // under the write lock, so only one of them does.
    MT_RETURN_IF_ERROR(store.Exec("BEGIN IMMEDIATE").WithContext(path + ": "));
    int64_t now = 0;
    {
      Stmt again(*store.conn_, "PRAGMA user_version");
      again.Step();
      now = again.Int(0);
    }
    const Status created = now < 1 ? store.Exec(std::string(kSchemaV1) + "PRAGMA user_version=1;")
                                   : Status::Ok();
    if (!created.ok()) {
      (void)store.Exec("ROLLBACK");
      return created.WithContext(path + ": ");
    }
    MT_RETURN_IF_ERROR(store.Exec("COMMIT").WithContext(path + ": "));
  }
  return store;
}

Status Store::Begin() { return Exec("BEGIN IMMEDIATE"); }
Status Store::Commit() { return Exec("COMMIT"); }

Result<std::optional<StudyRow>> Store::FindStudy(const std::string& name) {
  Stmt s(*conn_, "SELECT id, name, sweep_path, sweep_text, status FROM studies WHERE name = ?");
  s.Bind(1, name);
  const int rc = s.Step();
  if (rc == SQLITE_DONE) return std::optional<StudyRow>();
  if (rc != SQLITE_ROW) return Error("find study");
  return std::optional<StudyRow>(StudyRow{s.Int(0), s.Text(1), s.Text(2), s.Text(3), s.Text(4), ""});
}

Result<int64_t> Store::CreateStudy(const std::string& name, const std::string& sweep_path,
                                   const std::string& sweep_text, const std::string& fingerprint) {
  (void)fingerprint;
  Stmt s(*conn_, "INSERT INTO studies (name, sweep_path, sweep_text, created) VALUES (?,?,?,?)");
  s.Bind(1, name).Bind(2, sweep_path).Bind(3, sweep_text).Bind(4, Now());
  if (s.Step() != SQLITE_DONE) return Error("create study");
  return static_cast<int64_t>(sqlite3_last_insert_rowid(conn_->db));
}

Status Store::SetStudyStatus(int64_t study, const std::string& status) {
  Stmt s(*conn_, "UPDATE studies SET status = ? WHERE id = ?");
  s.Bind(1, status).Bind(2, study);
  return s.Step() == SQLITE_DONE ? Status::Ok() : Error("set study status");
}

Result<int64_t> Store::AddStack(int64_t study, const std::string& name, int64_t position) {
  Stmt s(*conn_,
         "INSERT INTO stacks (study_id, name, position) VALUES (?,?,?) "
         "ON CONFLICT (study_id, name) DO UPDATE SET position = excluded.position RETURNING id");
  s.Bind(1, study).Bind(2, name).Bind(3, position);
  if (s.Step() != SQLITE_ROW) return Error("add stack");
  return s.Int(0);
}

Status Store::AddTrial(int64_t stack, int64_t number, const std::string& params_json) {
  Stmt s(*conn_,
         "INSERT OR IGNORE INTO trials (study_id, stack_id, number, params, queued) "
         "SELECT study_id, id, ?, ?, ? FROM stacks WHERE id = ?");
  s.Bind(1, number).Bind(2, params_json).Bind(3, Now()).Bind(4, stack);
  return s.Step() == SQLITE_DONE ? Status::Ok() : Error("add trial");
}

Result<std::optional<TrialRow>> Store::StartNext(int64_t study, const std::string& worker) {
  Stmt s(*conn_,
         "UPDATE trials SET status = 'running', attempts = attempts + 1, worker = ?, started = ? "
         "WHERE id = (SELECT id FROM trials WHERE study_id = ? AND status = 'queued' "
         "ORDER BY id LIMIT 1) "
         "RETURNING id, (SELECT name FROM stacks WHERE stacks.id = stack_id), number, params, "
         "attempts");
  s.Bind(1, worker).Bind(2, Now()).Bind(3, study);
  const int rc = s.Step();
  if (rc == SQLITE_DONE) return std::optional<TrialRow>();
  if (rc != SQLITE_ROW) return Error("start trial");
  TrialRow t;
  t.id = s.Int(0);
  t.stack = s.Text(1);
  t.number = s.Int(2);
  t.params = s.Text(3);
  t.attempts = s.Int(4);
  t.status = "running";
  t.worker = worker;
  while (s.Step() == SQLITE_ROW) {
  }
  return std::optional<TrialRow>(std::move(t));
}

Result<bool> Store::RecordResult(int64_t trial, int64_t attempt, const Metrics& metrics,
                                 double objective) {
  Stmt s(*conn_,
         "UPDATE trials SET status = 'done', objective = ?, finished = ?, error = NULL "
         "WHERE id = ? AND status = 'running' AND attempts = ?");
  s.Bind(1, objective).Bind(2, Now()).Bind(3, trial).Bind(4, attempt);
  if (s.Step() != SQLITE_DONE) return Error("record result");
  if (sqlite3_changes(conn_->db) == 0) return false;  // late or repeated: already settled
  for (const auto& [name, value] : metrics) {
    Stmt m(*conn_, "INSERT OR REPLACE INTO metrics (trial_id, name, value) VALUES (?,?,?)");
    m.Bind(1, trial).Bind(2, name).Bind(3, value);
    if (m.Step() != SQLITE_DONE) return Error("record metric");
  }
  return true;
}

Result<bool> Store::RecordFailure(int64_t trial, int64_t attempt, const std::string& error,
                                  int64_t max_failures) {
  Stmt s(*conn_,
         "UPDATE trials SET status = CASE WHEN attempts >= ? THEN 'failed' ELSE 'queued' END, "
         "error = ?, finished = CASE WHEN attempts >= ? THEN ? ELSE NULL END, worker = NULL "
         "WHERE id = ? AND status = 'running' AND attempts = ?");
  s.Bind(1, max_failures).Bind(2, error).Bind(3, max_failures).Bind(4, Now()).Bind(5, trial).Bind(6, attempt);
  if (s.Step() != SQLITE_DONE) return Error("record failure");
  return sqlite3_changes(conn_->db) > 0;
}

Result<int64_t> Store::Requeue(int64_t study, const std::string& worker) {
  Stmt s(*conn_,
         worker.empty()
             ? "UPDATE trials SET status = 'queued', worker = NULL WHERE study_id = ? AND status = 'running'"
             : "UPDATE trials SET status = 'queued', worker = NULL WHERE study_id = ? AND status = 'running' AND worker = ?");
  s.Bind(1, study);
  if (!worker.empty()) s.Bind(2, worker);
  if (s.Step() != SQLITE_DONE) return Error("requeue");
  return static_cast<int64_t>(sqlite3_changes(conn_->db));
}

Status Store::TouchWorker(int64_t study, const std::string& worker, const std::string& info) {
  Stmt s(*conn_,
         "INSERT INTO workers (study_id, name, info, last_seen) VALUES (?,?,?,?) "
         "ON CONFLICT (study_id, name) DO UPDATE SET last_seen = excluded.last_seen, "
         "info = COALESCE(excluded.info, info)");
  s.Bind(1, study).Bind(2, worker).Bind(3, info).Bind(4, Now());
  return s.Step() == SQLITE_DONE ? Status::Ok() : Error("touch worker");
}

Result<Progress> Store::GetProgress(int64_t study) {
  Stmt s(*conn_, "SELECT status, COUNT(*) FROM trials WHERE study_id = ? GROUP BY status");
  s.Bind(1, study);
  Progress p;
  int rc;
  while ((rc = s.Step()) == SQLITE_ROW) {
    const std::string st = s.Text(0);
    const int64_t n = s.Int(1);
    p.total += n;
    if (st == "queued") p.queued = n;
    else if (st == "running") p.running = n;
    else if (st == "done") p.done = n;
    else if (st == "failed") p.failed = n;
  }
  if (rc != SQLITE_DONE) return Error("progress");
  return p;
}

Result<std::optional<double>> Store::BestObjective(int64_t study) {
  Stmt s(*conn_, "SELECT MIN(objective) FROM trials WHERE study_id = ? AND status = 'done'");
  s.Bind(1, study);
  if (s.Step() != SQLITE_ROW) return Error("best objective");
  return s.Null(0) ? std::optional<double>() : std::optional<double>(s.Double(0));
}

Result<std::vector<TrialRow>> Store::Trials(int64_t study, const std::string& status,
                                            const std::string& sort) {
  std::string order = "t.id";
  if (sort == "objective") order = "t.objective IS NULL, t.objective, t.id";
  else if (sort == "stack") order = "s.position, t.number";
  else if (sort != "id") return Status::Error("unknown sort '" + sort + "' (id, objective, stack)");
  const std::string sql =
      "SELECT t.id, s.name, t.number, t.params, t.status, t.attempts, COALESCE(t.worker, ''), "
      "COALESCE(t.error, ''), t.objective, COALESCE(t.started, 0), COALESCE(t.finished, 0) "
      "FROM trials t JOIN stacks s ON s.id = t.stack_id WHERE t.study_id = ? " +
      std::string(status.empty() ? "" : "AND t.status = ? ") + "ORDER BY " + order;
  Stmt s(*conn_, sql.c_str());
  s.Bind(1, study);
  if (!status.empty()) s.Bind(2, status);
  std::vector<TrialRow> rows;
  int rc;
  while ((rc = s.Step()) == SQLITE_ROW) {
    TrialRow t;
    t.id = s.Int(0);
    t.stack = s.Text(1);
    t.number = s.Int(2);
    t.params = s.Text(3);
    t.status = s.Text(4);
    t.attempts = s.Int(5);
    t.worker = s.Text(6);
    t.error = s.Text(7);
    if (!s.Null(8)) t.objective = s.Double(8);
    t.started = s.Double(9);
    t.finished = s.Double(10);
    rows.push_back(std::move(t));
  }
  if (rc != SQLITE_DONE) return Error("trials");
  Stmt m(*conn_,
         "SELECT m.trial_id, m.name, m.value FROM metrics m JOIN trials t ON t.id = m.trial_id "
         "WHERE t.study_id = ?");
  m.Bind(1, study);
  std::map<int64_t, Metrics> by_trial;
  while ((rc = m.Step()) == SQLITE_ROW) by_trial[m.Int(0)][m.Text(1)] = m.Double(2);
  for (TrialRow& t : rows) t.metrics = by_trial[t.id];
  return rows;
}

Result<std::vector<std::string>> Store::Stacks(int64_t study) {
  Stmt s(*conn_, "SELECT name FROM stacks WHERE study_id = ? ORDER BY position");
  s.Bind(1, study);
  std::vector<std::string> out;
  while (s.Step() == SQLITE_ROW) out.push_back(s.Text(0));
  return out;
}

Result<Store> Store::OpenReadOnly(const std::string& path) { return Open(path); }
Status Store::UpdateStudySweep(int64_t, const std::string&, const std::string&, const std::string&) {
  return Status::Error("not implemented");
}
Result<std::optional<Lease>> Store::AcquireLease(int64_t, const Lease&) {
  return Status::Error("not implemented");
}
Status Store::RenewLease(int64_t, const std::string&, double) { return Status::Error("not implemented"); }
Status Store::ReleaseLease(int64_t, const std::string&) { return Status::Error("not implemented"); }
Result<std::optional<Lease>> Store::LiveLease(int64_t) { return Status::Error("not implemented"); }
Result<std::vector<std::string>> Store::Check() { return Status::Error("not implemented"); }

}  // namespace masktune::storage
