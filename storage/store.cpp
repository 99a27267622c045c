#include "storage/store.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

namespace masktune::storage {
namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// A prepared statement from the store's cache: reset and unbound on scope
// exit, so each SQL text is compiled once per connection. A statement that
// did not prepare steps to its prepare error, so checking Step's result
// covers both (the connection's errmsg still names the cause).
class Stmt {
 public:
  Stmt(Connection& c, const std::string& sql) {
    sqlite3_stmt*& slot = c.statements[sql];
    if (!slot)
      rc_ = sqlite3_prepare_v3(c.db, sql.c_str(), -1, SQLITE_PREPARE_PERSISTENT, &slot, nullptr);
    st_ = slot;
    if (!st_ && rc_ == SQLITE_OK) rc_ = SQLITE_ERROR;  // an empty statement
  }
  ~Stmt() {
    if (!st_) return;
    sqlite3_reset(st_);
    sqlite3_clear_bindings(st_);
  }
  Stmt(const Stmt&) = delete;
  Stmt& Bind(int i, int64_t v) {
    if (st_) sqlite3_bind_int64(st_, i, v);
    return *this;
  }
  Stmt& Bind(int i, double v) {
    if (st_) sqlite3_bind_double(st_, i, v);
    return *this;
  }
  Stmt& Bind(int i, const std::string& v) {
    if (st_) sqlite3_bind_text(st_, i, v.c_str(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  int Step() { return st_ ? sqlite3_step(st_) : rc_; }
  int64_t Int(int c) const { return sqlite3_column_int64(st_, c); }
  double Double(int c) const { return sqlite3_column_double(st_, c); }
  bool Null(int c) const { return Type(c) == SQLITE_NULL; }
  int Type(int c) const { return sqlite3_column_type(st_, c); }
  // Numbers stored as REAL or INTEGER; NULL (how SQLite stores a NaN) reads as NaN.
  bool Number(int c) const { return Type(c) == SQLITE_FLOAT || Type(c) == SQLITE_INTEGER; }
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

// Version 1 -> 2: the plan's fingerprint per study, and one lease per study.
const char* kMigrateV2 = R"(
ALTER TABLE studies ADD COLUMN fingerprint TEXT NOT NULL DEFAULT '';
CREATE TABLE leases (
  study_id INTEGER PRIMARY KEY REFERENCES studies(id), holder TEXT NOT NULL, host TEXT NOT NULL,
  pid INTEGER NOT NULL, expires REAL NOT NULL);
)";

// Version 2 -> 3: trials may be 'pruned' (a CHECK constraint: the table is
// rebuilt, as SQLite's ALTER TABLE procedure says, with foreign keys off) and
// record the steps reached; reports hold the per-sample results of scheduled
// trials with the scheduler's decision, in the order taken (seq).
const char* kMigrateV3 = R"(
CREATE TABLE trials_v3 (
  id INTEGER PRIMARY KEY, study_id INTEGER NOT NULL REFERENCES studies(id),
  stack_id INTEGER NOT NULL REFERENCES stacks(id), number INTEGER NOT NULL,
  params TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'queued'
    CHECK (status IN ('queued', 'running', 'done', 'failed', 'pruned')),
  attempts INTEGER NOT NULL DEFAULT 0, worker TEXT, error TEXT, objective REAL,
  queued REAL NOT NULL, started REAL, finished REAL, steps INTEGER, UNIQUE (stack_id, number));
INSERT INTO trials_v3 (id, study_id, stack_id, number, params, status, attempts, worker, error,
                       objective, queued, started, finished)
  SELECT id, study_id, stack_id, number, params, status, attempts, worker, error, objective,
         queued, started, finished FROM trials;
DROP TABLE trials;
ALTER TABLE trials_v3 RENAME TO trials;
CREATE INDEX trials_by_status ON trials (study_id, status, id);
CREATE TABLE reports (
  seq INTEGER PRIMARY KEY, trial_id INTEGER NOT NULL REFERENCES trials(id),
  attempt INTEGER NOT NULL, step INTEGER NOT NULL, metrics TEXT NOT NULL, objective REAL,
  decision TEXT NOT NULL CHECK (decision IN ('continue', 'stop')),
  UNIQUE (trial_id, attempt, step));
)";

// `path` as an SQLite URI that opens it immutable (no locks, no -shm).
std::string ImmutableUri(const std::string& path) {
  std::string abs = std::filesystem::absolute(path).lexically_normal().string();
  std::string uri = "file:";
  for (char c : abs) {
    if (c == '%' || c == '?' || c == '#') {
      char buf[4];
      std::snprintf(buf, sizeof buf, "%%%02X", static_cast<unsigned char>(c));
      uri += buf;
    } else {
      uri += c;
    }
  }
  return uri + "?immutable=1";
}

}  // namespace

Status Store::Error(const std::string& what) const {
  return Status::Error(path_ + ": " + what + ": " + sqlite3_errmsg(conn_->db));
}

Status Store::Exec(const std::string& sql) {
  char* err = nullptr;
  if (sqlite3_exec(conn_->db, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : sqlite3_errmsg(conn_->db);
    sqlite3_free(err);
    return Status::Error(path_ + ": " + msg);
  }
  return Status::Ok();
}

Result<int64_t> Store::SchemaVersion() {
  Stmt v(*conn_, "PRAGMA user_version");
  const int rc = v.Step();
  if (rc != SQLITE_ROW) return Error("read the schema version");
  return v.Int(0);
}

Result<Store> Store::Open(const std::string& path) {
  sqlite3* raw = nullptr;
  const int rc =
      sqlite3_open_v2(path.c_str(), &raw,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  Store store(raw, path, false);
  if (rc != SQLITE_OK) return Status::Error(path + ": cannot open database: " + sqlite3_errstr(rc));
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
  // A file or folder we may not write: say so once, here, not at the first write.
  const char* kReadOnly =
      ": the database is read-only here (a writing command needs write access to the file and to "
      "its folder, for the -wal and -shm files beside it; best, trials, status, export and check "
      "only read)";
  if (!wal.ok() && (sqlite3_errcode(raw) & 0xff) == SQLITE_READONLY)
    return Status::Error(path + kReadOnly + ": " + sqlite3_errmsg(raw));
  MT_RETURN_IF_ERROR(wal);
  if (sqlite3_db_readonly(raw, "main") == 1) return Status::Error(path + kReadOnly);
  // Foreign keys are turned on after the migration: rebuilding a table (v3)
  // needs them off, and the pragma is a no-op inside a transaction.
  MT_RETURN_IF_ERROR(store.Exec("PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=OFF;"));
  // Read before BEGIN, and reset at once: a live read would make BEGIN
  // IMMEDIATE fail at once rather than wait.
  MT_ASSIGN_OR_RETURN(int64_t version, store.SchemaVersion());
  if (version > kSchemaVersion)
    return Status::Error(path + ": schema version " + std::to_string(version) +
                         " is newer than this masktune (" + std::to_string(kSchemaVersion) + ")");
  if (version < kSchemaVersion) {
    // Another process may be creating or migrating the schema at this
    // moment: look again under the write lock, so only one of them does.
    MT_RETURN_IF_ERROR(store.Exec("BEGIN IMMEDIATE"));
    Status migrated = Status::Ok();
    auto now = store.SchemaVersion();
    if (!now.ok()) migrated = now.status();
    if (migrated.ok() && now.value() < 1) migrated = store.Exec(kSchemaV1);
    if (migrated.ok() && now.value() < 2) migrated = store.Exec(kMigrateV2);
    if (migrated.ok() && now.value() < 3) migrated = store.Exec(kMigrateV3);
    if (migrated.ok() && now.value() < kSchemaVersion)
      migrated = store.Exec("PRAGMA user_version=" + std::to_string(kSchemaVersion));
    if (!migrated.ok()) {
      (void)store.Exec("ROLLBACK");
      return migrated.WithContext("migrating the schema to version " +
                                  std::to_string(kSchemaVersion) + ": ");
    }
    MT_RETURN_IF_ERROR(store.Exec("COMMIT"));
  }
  MT_RETURN_IF_ERROR(store.Exec("PRAGMA foreign_keys=ON;"));
  return store;
}

Result<Store> Store::OpenReadOnly(const std::string& path) {
  auto open = [&](const std::string& name, int flags) -> Result<Store> {
    sqlite3* raw = nullptr;
    const int rc = sqlite3_open_v2(name.c_str(), &raw,
                                   SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX | flags, nullptr);
    Store store(raw, path, true);
    if (rc != SQLITE_OK)
      return Status::Error(path + ": cannot open database: " + sqlite3_errstr(rc));
    sqlite3_busy_timeout(raw, 10000);
    return store;
  };
  MT_ASSIGN_OR_RETURN(Store store, open(path, 0));
  auto version = store.SchemaVersion();
  if (!version.ok()) {
    // A WAL file closed cleanly has no -wal and -shm beside it; in a folder
    // we may not write, a read-only connection cannot create them. With no
    // -wal there is nothing but the main file to read, and nobody writing
    // (a writer would have made a -wal): open it immutable.
    const int code = sqlite3_errcode(store.conn_->db) & 0xff;
    std::error_code ec;
    if ((code == SQLITE_READONLY || code == SQLITE_CANTOPEN) &&
        !std::filesystem::exists(path + "-wal", ec)) {
      MT_ASSIGN_OR_RETURN(store, open(ImmutableUri(path), SQLITE_OPEN_URI));
      version = store.SchemaVersion();
    }
    if (!version.ok()) return version.status();
  }
  if (version.value() < 1)
    return Status::Error(path + ": not a masktune database (no schema: user_version is 0)");
  if (version.value() > kSchemaVersion)
    return Status::Error(path + ": schema version " + std::to_string(version.value()) +
                         " is newer than this masktune (" + std::to_string(kSchemaVersion) + ")");
  store.version_ = version.value();
  return store;
}

Status Store::Begin() { return Exec("BEGIN IMMEDIATE"); }
Status Store::Commit() { return Exec("COMMIT"); }

Result<std::optional<StudyRow>> Store::FindStudy(const std::string& name) {
  Stmt s(*conn_,
         version_ >= 2
             ? "SELECT id, name, sweep_path, sweep_text, status, fingerprint FROM studies WHERE "
               "name = ?"
             : "SELECT id, name, sweep_path, sweep_text, status, '' FROM studies WHERE name = ?");
  s.Bind(1, name);
  const int rc = s.Step();
  if (rc == SQLITE_DONE) return std::optional<StudyRow>();
  if (rc != SQLITE_ROW) return Error("find study '" + name + "'");
  if (s.Type(0) != SQLITE_INTEGER || s.Type(3) != SQLITE_TEXT)
    return Status::Error(path_ + ": study '" + name +
                         "': malformed row (id or sweep_text of the wrong type)");
  StudyRow row{s.Int(0), s.Text(1), s.Text(2), s.Text(3), s.Text(4), s.Text(5)};
  if (s.Step() != SQLITE_DONE) return Error("find study '" + name + "'");
  return std::optional<StudyRow>(std::move(row));
}

Result<int64_t> Store::CreateStudy(const std::string& name, const std::string& sweep_path,
                                   const std::string& sweep_text, const std::string& fingerprint) {
  Stmt s(*conn_,
         "INSERT INTO studies (name, sweep_path, sweep_text, fingerprint, created) VALUES "
         "(?,?,?,?,?)");
  s.Bind(1, name).Bind(2, sweep_path).Bind(3, sweep_text).Bind(4, fingerprint).Bind(5, Now());
  if (s.Step() != SQLITE_DONE) return Error("create study '" + name + "'");
  return static_cast<int64_t>(sqlite3_last_insert_rowid(conn_->db));
}

Status Store::UpdateStudySweep(int64_t study, const std::string& sweep_path,
                               const std::string& sweep_text, const std::string& fingerprint) {
  Stmt s(*conn_, "UPDATE studies SET sweep_path = ?, sweep_text = ?, fingerprint = ? WHERE id = ?");
  s.Bind(1, sweep_path).Bind(2, sweep_text).Bind(3, fingerprint).Bind(4, study);
  if (s.Step() != SQLITE_DONE) return Error("update the study's sweep");
  if (sqlite3_changes(conn_->db) == 0)
    return Status::Error(path_ + ": update the study's sweep: no study with id " +
                         std::to_string(study));
  return Status::Ok();
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
  if (s.Step() != SQLITE_ROW) return Error("add stack " + name);
  const int64_t id = s.Int(0);
  if (s.Step() != SQLITE_DONE) return Error("add stack " + name);
  return id;
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
  int more;
  while ((more = s.Step()) == SQLITE_ROW) {
  }
  if (more != SQLITE_DONE) return Error("start trial");
  return std::optional<TrialRow>(std::move(t));
}

Result<bool> Store::RecordResult(int64_t trial, int64_t attempt, const Metrics& metrics,
                                 double objective, int64_t steps) {
  Stmt s(*conn_,
         "UPDATE trials SET status = 'done', objective = ?, finished = ?, error = NULL, "
         "steps = CASE WHEN ? > 0 THEN ? ELSE steps END "
         "WHERE id = ? AND status = 'running' AND attempts = ?");
  s.Bind(1, objective).Bind(2, Now()).Bind(3, steps).Bind(4, steps).Bind(5, trial).Bind(6, attempt);
  if (s.Step() != SQLITE_DONE) return Error("record result");
  if (sqlite3_changes(conn_->db) == 0) return false;  // late or repeated: already settled
  for (const auto& [name, value] : metrics) {
    Stmt m(*conn_, "INSERT OR REPLACE INTO metrics (trial_id, name, value) VALUES (?,?,?)");
    m.Bind(1, trial).Bind(2, name).Bind(3, value);
    if (m.Step() != SQLITE_DONE) return Error("record metric");
  }
  return true;
}

Result<bool> Store::RecordPruned(int64_t trial, int64_t attempt, int64_t step,
                                 const Metrics& metrics, double objective) {
  Stmt s(*conn_,
         "UPDATE trials SET status = 'pruned', objective = ?, finished = ?, error = NULL, "
         "steps = ? WHERE id = ? AND status = 'running' AND attempts = ?");
  s.Bind(1, objective).Bind(2, Now()).Bind(3, step).Bind(4, trial).Bind(5, attempt);
  if (s.Step() != SQLITE_DONE) return Error("record a pruned trial");
  if (sqlite3_changes(conn_->db) == 0) return false;
  for (const auto& [name, value] : metrics) {
    Stmt m(*conn_, "INSERT OR REPLACE INTO metrics (trial_id, name, value) VALUES (?,?,?)");
    m.Bind(1, trial).Bind(2, name).Bind(3, value);
    if (m.Step() != SQLITE_DONE) return Error("record metric");
  }
  return true;
}

namespace {

std::string MetricsJson(const Metrics& metrics) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [k, v] : metrics) j[k] = std::isfinite(v) ? nlohmann::json(v) : nullptr;
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace

Result<std::optional<std::string>> Store::AddReport(int64_t trial, int64_t attempt, int64_t step,
                                                    const Metrics& metrics, double objective,
                                                    const std::string& decision) {
  MT_ASSIGN_OR_RETURN(std::optional<std::string> earlier, ReportDecision(trial, attempt, step));
  if (earlier) return earlier;
  Stmt s(*conn_,
         "INSERT INTO reports (trial_id, attempt, step, metrics, objective, decision) "
         "VALUES (?,?,?,?,?,?)");
  s.Bind(1, trial).Bind(2, attempt).Bind(3, step).Bind(4, MetricsJson(metrics));
  if (std::isnan(objective))
    s.Bind(6, decision);  // objective stays NULL
  else
    s.Bind(5, objective).Bind(6, decision);
  if (s.Step() != SQLITE_DONE) return Error("record a report");
  return std::optional<std::string>();
}

Result<std::optional<std::string>> Store::ReportDecision(int64_t trial, int64_t attempt,
                                                         int64_t step) {
  Stmt s(*conn_, "SELECT decision FROM reports WHERE trial_id = ? AND attempt = ? AND step = ?");
  s.Bind(1, trial).Bind(2, attempt).Bind(3, step);
  const int rc = s.Step();
  if (rc == SQLITE_DONE) return std::optional<std::string>();
  if (rc != SQLITE_ROW) return Error("read a report");
  std::string d = s.Text(0);
  if (s.Step() != SQLITE_DONE) return Error("read a report");
  return std::optional<std::string>(std::move(d));
}

Result<std::vector<ReportRow>> Store::Reports(int64_t study) {
  std::vector<ReportRow> out;
  if (version_ < 3) return out;
  Stmt s(*conn_,
         "SELECT r.seq, r.trial_id, r.attempt, r.step, s.name, t.number, r.objective, r.decision, "
         "r.metrics FROM reports r JOIN trials t ON t.id = r.trial_id "
         "JOIN stacks s ON s.id = t.stack_id WHERE t.study_id = ? ORDER BY r.seq");
  s.Bind(1, study);
  int rc;
  while ((rc = s.Step()) == SQLITE_ROW) {
    ReportRow r;
    r.seq = s.Int(0);
    r.trial = s.Int(1);
    r.attempt = s.Int(2);
    r.step = s.Int(3);
    r.stack = s.Text(4);
    r.number = s.Int(5);
    if (!s.Null(6) && !s.Number(6))
      return Status::Error(path_ + ": report " + std::to_string(r.seq) +
                           ": malformed row (objective of the wrong type)");
    r.objective = s.Null(6) ? std::numeric_limits<double>::quiet_NaN() : s.Double(6);
    r.decision = s.Text(7);
    const nlohmann::json m = nlohmann::json::parse(s.Text(8), nullptr, false);
    if (!m.is_object())
      return Status::Error(path_ + ": report " + std::to_string(r.seq) +
                           ": malformed row (metrics are not a JSON object)");
    for (const auto& [k, v] : m.items())
      r.metrics[k] = v.is_number() ? v.get<double>() : std::numeric_limits<double>::quiet_NaN();
    out.push_back(std::move(r));
  }
  if (rc != SQLITE_DONE) return Error("read the study's reports");
  return out;
}

Result<bool> Store::RecordFailure(int64_t trial, int64_t attempt, const std::string& error,
                                  int64_t max_failures) {
  Stmt s(*conn_,
         "UPDATE trials SET status = CASE WHEN attempts >= ? THEN 'failed' ELSE 'queued' END, "
         "error = ?, finished = CASE WHEN attempts >= ? THEN ? ELSE NULL END, worker = NULL "
         "WHERE id = ? AND status = 'running' AND attempts = ?");
  s.Bind(1, max_failures)
      .Bind(2, error)
      .Bind(3, max_failures)
      .Bind(4, Now())
      .Bind(5, trial)
      .Bind(6, attempt);
  if (s.Step() != SQLITE_DONE) return Error("record failure");
  return sqlite3_changes(conn_->db) > 0;
}

Result<int64_t> Store::Requeue(int64_t study, const std::string& worker, bool refund_attempt) {
  const std::string set =
      refund_attempt
          ? "UPDATE trials SET status = 'queued', worker = NULL, attempts = MAX(attempts - 1, 0)"
          : "UPDATE trials SET status = 'queued', worker = NULL";
  Stmt s(*conn_, worker.empty()
                     ? set + " WHERE study_id = ? AND status = 'running'"
                     : set + " WHERE study_id = ? AND status = 'running' AND worker = ?");
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
    if (st == "queued")
      p.queued = n;
    else if (st == "running")
      p.running = n;
    else if (st == "done")
      p.done = n;
    else if (st == "failed")
      p.failed = n;
    else if (st == "pruned")
      p.pruned = n;
    else
      return Status::Error(path_ + ": progress: a trial has the unknown status '" + st + "'");
  }
  if (rc != SQLITE_DONE) return Error("progress");
  return p;
}

Result<std::optional<double>> Store::BestObjective(int64_t study) {
  Stmt s(*conn_, "SELECT MIN(objective) FROM trials WHERE study_id = ? AND status = 'done'");
  s.Bind(1, study);
  if (s.Step() != SQLITE_ROW) return Error("best objective");
  if (!s.Null(0) && !s.Number(0)) return Status::Error(path_ + ": best objective: not a number");
  const std::optional<double> best =
      s.Null(0) ? std::optional<double>() : std::optional<double>(s.Double(0));
  if (s.Step() != SQLITE_DONE) return Error("best objective");
  return best;
}

Result<std::vector<TrialRow>> Store::Trials(int64_t study, const std::string& status,
                                            const std::string& sort) {
  std::string order = "t.id";
  if (sort == "objective")
    order = "t.objective IS NULL, t.objective, t.id";
  else if (sort == "stack")
    order = "s.position, t.number";
  else if (sort != "id")
    return Status::Error("unknown sort '" + sort + "' (id, objective, stack)");
  const std::string sql =
      "SELECT t.id, s.name, t.number, t.params, t.status, t.attempts, COALESCE(t.worker, ''), "
      "COALESCE(t.error, ''), t.objective, COALESCE(t.started, 0), COALESCE(t.finished, 0), " +
      std::string(version_ >= 3 ? "COALESCE(t.steps, 0) " : "0 ") +
      "FROM trials t JOIN stacks s ON s.id = t.stack_id WHERE t.study_id = ? " +
      std::string(status.empty() ? "" : "AND t.status = ? ") + "ORDER BY " + order;
  Stmt s(*conn_, sql);
  s.Bind(1, study);
  if (!status.empty()) s.Bind(2, status);
  std::vector<TrialRow> rows;
  int rc;
  while ((rc = s.Step()) == SQLITE_ROW) {
    TrialRow t;
    t.id = s.Int(0);
    if (s.Type(0) != SQLITE_INTEGER || s.Type(3) != SQLITE_TEXT || (!s.Null(8) && !s.Number(8)))
      return Status::Error(path_ + ": trial " + std::to_string(t.id) +
                           ": malformed row (id, params or objective of the wrong type)");
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
    t.steps = s.Int(11);
    rows.push_back(std::move(t));
  }
  if (rc != SQLITE_DONE) return Error("read the study's trials");
  Stmt m(*conn_,
         "SELECT m.trial_id, m.name, m.value FROM metrics m JOIN trials t ON t.id = m.trial_id "
         "WHERE t.study_id = ?");
  m.Bind(1, study);
  std::map<int64_t, Metrics> by_trial;
  while ((rc = m.Step()) == SQLITE_ROW) {
    if (m.Type(0) != SQLITE_INTEGER || m.Type(1) != SQLITE_TEXT || (!m.Null(2) && !m.Number(2)))
      return Status::Error(path_ + ": metric of trial " + std::to_string(m.Int(0)) +
                           ": malformed row (trial_id, name or value of the wrong type)");
    by_trial[m.Int(0)][m.Text(1)] =
        m.Null(2) ? std::numeric_limits<double>::quiet_NaN() : m.Double(2);
  }
  if (rc != SQLITE_DONE) return Error("read the study's metrics");
  for (TrialRow& t : rows) t.metrics = by_trial[t.id];
  return rows;
}

Result<std::vector<std::string>> Store::Stacks(int64_t study) {
  Stmt s(*conn_, "SELECT name FROM stacks WHERE study_id = ? ORDER BY position");
  s.Bind(1, study);
  std::vector<std::string> out;
  int rc;
  while ((rc = s.Step()) == SQLITE_ROW) out.push_back(s.Text(0));
  if (rc != SQLITE_DONE) return Error("read the study's stacks");
  return out;
}

// --- leases ------------------------------------------------------------------

Status Store::InTransaction(const std::function<Status()>& body) {
  if (!sqlite3_get_autocommit(conn_->db)) return body();  // the caller's Begin holds the write lock
  MT_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  Status s = body();
  if (!s.ok()) {
    (void)Exec("ROLLBACK");
    return s;
  }
  return Exec("COMMIT");
}

Result<std::optional<Lease>> Store::CurrentLease(int64_t study) {
  Stmt s(*conn_, "SELECT holder, host, pid, expires FROM leases WHERE study_id = ?");
  s.Bind(1, study);
  const int rc = s.Step();
  if (rc == SQLITE_DONE) return std::optional<Lease>();
  if (rc != SQLITE_ROW) return Error("read the study's lease");
  if (!s.Number(3)) return Status::Error(path_ + ": the study's lease: expiry is not a number");
  Lease l{s.Text(0), s.Text(1), s.Int(2), s.Double(3)};
  if (s.Step() != SQLITE_DONE) return Error("read the study's lease");
  return std::optional<Lease>(std::move(l));
}

Result<std::optional<Lease>> Store::AcquireLease(int64_t study, const Lease& mine) {
  if (mine.holder.empty()) return Status::Error(path_ + ": acquire lease: empty holder name");
  std::optional<Lease> live;
  MT_RETURN_IF_ERROR(InTransaction([&]() -> Status {
    MT_ASSIGN_OR_RETURN(std::optional<Lease> current, CurrentLease(study));
    if (current && current->holder != mine.holder && current->expires > Now()) {
      live = std::move(current);
      return Status::Ok();
    }
    Stmt s(*conn_,
           "INSERT INTO leases (study_id, holder, host, pid, expires) VALUES (?,?,?,?,?) "
           "ON CONFLICT (study_id) DO UPDATE SET holder = excluded.holder, host = excluded.host, "
           "pid = excluded.pid, expires = excluded.expires");
    s.Bind(1, study)
        .Bind(2, mine.holder)
        .Bind(3, mine.host)
        .Bind(4, mine.pid)
        .Bind(5, mine.expires);
    return s.Step() == SQLITE_DONE ? Status::Ok() : Error("acquire the study's lease");
  }));
  return live;
}

Status Store::RenewLease(int64_t study, const std::string& holder, double expires) {
  return InTransaction([&]() -> Status {
    Stmt s(*conn_, "UPDATE leases SET expires = ? WHERE study_id = ? AND holder = ?");
    s.Bind(1, expires).Bind(2, study).Bind(3, holder);
    if (s.Step() != SQLITE_DONE) return Error("renew the study's lease");
    if (sqlite3_changes(conn_->db) > 0) return Status::Ok();
    MT_ASSIGN_OR_RETURN(std::optional<Lease> now, CurrentLease(study));
    if (!now)
      return Status::Error(path_ + ": renew lease: " + holder +
                           " no longer holds the study's lease (released)");
    return Status::Error(path_ + ": renew lease: " + holder +
                         " no longer holds the study's lease: taken by " + now->holder + " on " +
                         now->host + " pid " + std::to_string(now->pid));
  });
}

Status Store::ReleaseLease(int64_t study, const std::string& holder) {
  Stmt s(*conn_, "DELETE FROM leases WHERE study_id = ? AND holder = ?");
  s.Bind(1, study).Bind(2, holder);
  return s.Step() == SQLITE_DONE ? Status::Ok() : Error("release the study's lease");
}

Result<std::optional<Lease>> Store::LiveLease(int64_t study) {
  if (version_ < 2) return std::optional<Lease>();  // a read-only file from before leases
  MT_ASSIGN_OR_RETURN(std::optional<Lease> l, CurrentLease(study));
  if (l && l->expires <= Now()) l.reset();
  return l;
}

// --- checks ------------------------------------------------------------------

Result<std::vector<std::string>> Store::Check() {
  std::vector<std::string> problems;
  // A corrupt page can stop the check itself: that is a finding, not a failure to check.
  auto finding = [&](int rc) {
    const int code = rc & 0xff;
    return code == SQLITE_CORRUPT || code == SQLITE_NOTADB;
  };
  {
    Stmt s(*conn_, "PRAGMA integrity_check");
    int rc;
    while ((rc = s.Step()) == SQLITE_ROW) {
      // One row "ok", or rows of findings (one may hold several lines).
      const std::string text = s.Text(0);
      if (text == "ok") continue;
      size_t start = 0;
      while (start <= text.size()) {
        const size_t end = std::min(text.find('\n', start), text.size());
        const std::string line = text.substr(start, end - start);
        if (!line.empty() && line.rfind("*** in database", 0) != 0) problems.push_back(line);
        start = end + 1;
      }
    }
    if (rc != SQLITE_DONE) {
      if (!finding(rc)) return Error("integrity_check");
      problems.push_back(std::string("integrity_check stopped: ") + sqlite3_errmsg(conn_->db));
    }
  }
  {
    Stmt s(*conn_, "PRAGMA foreign_key_check");
    int rc;
    while ((rc = s.Step()) == SQLITE_ROW)
      problems.push_back("foreign key: " + s.Text(0) + " row " + std::to_string(s.Int(1)) +
                         " refers to a missing row of " + s.Text(2));
    if (rc != SQLITE_DONE) {
      if (!finding(rc)) return Error("foreign_key_check");
      problems.push_back(std::string("foreign_key_check stopped: ") + sqlite3_errmsg(conn_->db));
    }
  }
  return problems;
}

std::string ThisHost() {
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) != 0) return "localhost";
  return host;
}

bool HolderGoneFromThisHost(const Lease& lease) {
  if (lease.host != ThisHost() || lease.pid <= 0) return false;
  return ::kill(static_cast<pid_t>(lease.pid), 0) != 0 && errno == ESRCH;
}

}  // namespace masktune::storage
