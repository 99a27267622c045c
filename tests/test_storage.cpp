// Tests: storage. Real SQLite files in temporary folders, real masktune
// processes: corruption is reported (naming the file), reading commands open
// the database read-only, version 1 files migrate, leases give one holder per
// study even when processes race, and `status` tells running from interrupted.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <grp.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>

#include "storage/store.h"
#include "tests/helpers.h"

namespace masktune {
namespace {

namespace fs = std::filesystem;
using storage::Lease;
using storage::Store;

double UnixNow() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

struct Run {
  int code = -1;
  std::string output;  // stdout and stderr together
};

// The masktune binary with `args` (as in test_cli.cpp). `unprivileged`: as
// user nobody when the test runs as root, for whom folder modes do not count.
Run Masktune(const std::string& args, bool unprivileged = false) {
  const std::string cmd = std::string(MASKTUNE_BINARY) + " " + args + " 2>&1";
  int out[2];
  REQUIRE(pipe(out) == 0);
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    dup2(out[1], 1);
    close(out[0]);
    close(out[1]);
    if (unprivileged && geteuid() == 0 &&
        (setgroups(0, nullptr) != 0 || setgid(65534) != 0 || setuid(65534) != 0))
      _exit(125);
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(126);
  }
  close(out[1]);
  Run r;
  char buf[4096];
  ssize_t n;
  while ((n = read(out[0], buf, sizeof buf)) > 0) r.output.append(buf, static_cast<size_t>(n));
  close(out[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

// A study of `n` finished trials (noop benchmark), made by `masktune run` in
// `dir`/s.db, closed cleanly (no -wal or -shm left).
std::string MakeStudy(const testing::TempDir& dir, int n) {
  std::ofstream(dir / "s.yaml")
      << "study: c\nstorage: s.db\nbenchmark: {name: noop}\n"
         "search: {algorithm: random, num_samples: "
      << n
      << ", seed: 2}\n"
         "attention:\n  a:\n    - sink:\n        sink_size: 4\n"
         "    - oracle_top_k:\n        heavy_size: {uniform: [0.05, 0.5]}\n";
  const Run run = Masktune("run " + dir / "s.yaml" + " --workers 2 --heartbeat-ms 50");
  CAPTURE(run.output);
  REQUIRE(run.code == 0);
  REQUIRE(!fs::exists(dir / "s.db-wal"));
  return dir / "s.db";
}

// One SQL statement's first column of its first row, on its own connection.
std::string Query(const std::string& db, const std::string& sql) {
  sqlite3* c = nullptr;
  REQUIRE(sqlite3_open_v2(db.c_str(), &c, SQLITE_OPEN_READWRITE, nullptr) == SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  REQUIRE_MESSAGE(sqlite3_prepare_v2(c, sql.c_str(), -1, &st, nullptr) == SQLITE_OK,
                  sqlite3_errmsg(c));
  std::string out;
  const int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW && sqlite3_column_text(st, 0))
    out = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
  CHECK_MESSAGE((rc == SQLITE_ROW || rc == SQLITE_DONE), sqlite3_errmsg(c));
  sqlite3_finalize(st);
  sqlite3_close(c);
  return out;
}

void Exec(const std::string& db, const std::string& sql) {
  sqlite3* c = nullptr;
  REQUIRE(sqlite3_open_v2(db.c_str(), &c, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) ==
          SQLITE_OK);
  char* err = nullptr;
  const int rc = sqlite3_exec(c, sql.c_str(), nullptr, nullptr, &err);
  const std::string msg = err ? err : "";
  sqlite3_free(err);
  sqlite3_close(c);
  REQUIRE_MESSAGE(rc == SQLITE_OK, msg);
}

// Overwrites the first 512 bytes of `table`'s root page with 0xff.
int64_t CorruptRootPage(const std::string& db, const std::string& table) {
  const int64_t root =
      std::stoll(Query(db, "SELECT rootpage FROM sqlite_master WHERE name = '" + table + "'"));
  const int64_t page = std::stoll(Query(db, "PRAGMA page_size"));
  REQUIRE(root > 1);
  std::fstream f(db, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp((root - 1) * page);
  const std::string garbage(512, '\xff');
  f.write(garbage.data(), static_cast<std::streamsize>(garbage.size()));
  REQUIRE(f.good());
  return root;
}

std::string ReadAll(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

bool Contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

TEST_CASE("storage: a corrupt metrics table is an error naming the file, never silent") {
  testing::TempDir dir;
  const std::string db = MakeStudy(dir, 40);
  fs::copy_file(db, dir / "good.db");
  const int64_t root = CorruptRootPage(db, "metrics");
  // Every reading command fails with exit 1 and says which file and what.
  for (const std::string& cmd :
       {"trials c --db " + db, "trials c --csv --db " + db, "best c --db " + db,
        "export c --format json --out " + dir / "out" + " --db " + db}) {
    CAPTURE(cmd);
    const Run r = Masktune(cmd);
    CAPTURE(r.output);
    CHECK(r.code == 1);
    CHECK(Contains(r.output, db + ": "));
    CHECK(Contains(r.output, "malformed"));
  }
  CHECK(!fs::exists(dir / "out/a.json"));  // nothing exported without its metrics
  // resume reads the trials too: it stops rather than carry on without metrics.
  const Run resume = Masktune("resume c --db " + db + " --workers 1 --heartbeat-ms 50");
  CAPTURE(resume.output);
  CHECK(resume.code != 0);
  CHECK(Contains(resume.output, "malformed"));
  // The Store API says the same.
  auto store = Store::OpenReadOnly(db);
  REQUIRE(store.ok());
  auto study = store->FindStudy("c");
  REQUIRE(study.ok());
  REQUIRE(study.value());
  auto trials = store->Trials(study.value()->id);
  REQUIRE(!trials.ok());
  CHECK(trials.status().message().rfind(db + ": read the study's metrics: ", 0) == 0);
  // status only counts trials (exit 0); check and status --check find the damage.
  CHECK(Masktune("status c --db " + db).code == 0);
  const Run check = Masktune("check c --db " + db);
  CAPTURE(check.output);
  CHECK(check.code == 1);
  CHECK(Contains(check.output, db + ": Page " + std::to_string(root) + ": "));
  CHECK(Contains(check.output, "masktune check: " + db + ": "));
  const Run status_check = Masktune("status c --check --db " + db);
  CHECK(status_check.code == 1);
  CHECK(Contains(status_check.output, "study c (finished): 40 trials: 40 done"));
  CHECK(Contains(status_check.output, "Page " + std::to_string(root)));
  // The intact copy: everything reads, and the checks say ok.
  const Run good = Masktune("check c --db " + dir / "good.db");
  CHECK(good.code == 0);
  CHECK(good.output ==
        dir / "good.db" + ": ok (integrity_check and foreign_key_check found no problem)\n");
  const Run good_status = Masktune("status c --check --db " + dir / "good.db");
  CHECK(good_status.code == 0);
  CHECK(Contains(good_status.output, ": ok (integrity_check"));
  const Run csv = Masktune("trials c --csv --db " + dir / "good.db");
  CHECK(csv.code == 0);
  CHECK(std::count(csv.output.begin(), csv.output.end(), '\n') == 41);
}

TEST_CASE(
    "storage: a corrupt trials index fails status, and a metric of the wrong type fails Trials") {
  testing::TempDir dir;
  const std::string db = MakeStudy(dir, 40);
  fs::copy_file(db, dir / "typed.db");
  CorruptRootPage(db, "trials_by_status");  // what status's counts read
  const Run status = Masktune("status c --db " + db);
  CAPTURE(status.output);
  CHECK(status.code == 1);
  CHECK(Contains(status.output, "masktune status: " + db + ": progress: "));
  CHECK(Contains(status.output, "malformed"));
  // A value SQLite reads back as text, not a number: once read as 0.0.
  const std::string typed = dir / "typed.db";
  Exec(typed, "UPDATE metrics SET value = 'abc' WHERE rowid = (SELECT MIN(rowid) FROM metrics)");
  auto store = Store::OpenReadOnly(typed);
  REQUIRE(store.ok());
  auto study = store->FindStudy("c");
  REQUIRE(study.ok());
  auto trials = store->Trials(study.value()->id);
  REQUIRE(!trials.ok());
  CHECK(Contains(trials.status().message(), typed + ": metric of trial "));
  CHECK(Contains(trials.status().message(), "wrong type"));
}

TEST_CASE("storage: reading commands open the database read-only, in a read-only folder too") {
  testing::TempDir dir, out;
  const std::string db = MakeStudy(dir, 5);
  const std::string before = ReadAll(db);
  fs::permissions(out.path, fs::perms::all);  // export writes here, as whoever runs it
  fs::permissions(dir.path, fs::perms::owner_read | fs::perms::owner_exec | fs::perms::group_read |
                                fs::perms::group_exec | fs::perms::others_read |
                                fs::perms::others_exec);
  struct Writable {  // again, so that TempDir can remove it whatever happens
    fs::path p;
    ~Writable() { fs::permissions(p, fs::perms::owner_all); }
  } restore{dir.path};
  struct Case {
    std::string args, expect;
  };
  for (const Case& c :
       {Case{"status c --db " + db, "study c (finished): 5 trials: 5 done"},
        Case{"status c --check --db " + db, ": ok (integrity_check"},
        Case{"check c --db " + db, ": ok (integrity_check"},
        Case{"trials c --csv --db " + db, "trial_id,stack,number,status"},
        Case{"best c --db " + db, "best a: trial"},
        Case{"export c --format json --out " + out.path.string() + " --db " + db, "a.json"}}) {
    CAPTURE(c.args);
    const Run r = Masktune(c.args, /*unprivileged=*/true);
    CAPTURE(r.output);
    CHECK(r.code == 0);
    CHECK(Contains(r.output, c.expect));
  }
  // Nothing was written beside it, and the file is as it was.
  CHECK(!fs::exists(db + "-wal"));
  CHECK(!fs::exists(db + "-shm"));
  CHECK(ReadAll(db) == before);
  // A writing command there fails, naming the file.
  const Run resume = Masktune("resume c --db " + db, /*unprivileged=*/true);
  CHECK(resume.code == 1);
  CHECK(Contains(resume.output,
                 db + ": the database is read-only here (a writing command needs write"));
}

TEST_CASE("storage: read-only stores refuse writes and missing files; errors name the file") {
  testing::TempDir dir;
  const std::string none = dir / "none.db";
  auto missing = Store::OpenReadOnly(none);
  REQUIRE(!missing.ok());
  CHECK(missing.status().message().rfind(none + ": cannot open database", 0) == 0);
  CHECK(!fs::exists(none));
  std::ofstream(dir / "text.db") << "not a database, but long enough to look at its header......\n";
  auto text = Store::OpenReadOnly(dir / "text.db");
  REQUIRE(!text.ok());
  CHECK(text.status().message().rfind(dir / "text.db" + ": ", 0) == 0);
  const Run r = Masktune("status c --db " + dir / "text.db");
  CHECK(r.code == 1);
  CHECK(r.output == "masktune status: " + text.status().message() + "\n");
  {
    auto w = Store::Open(dir / "s.db");
    REQUIRE(w.ok());
    REQUIRE(w->CreateStudy("c", "s.yaml", "study: c").ok());
  }
  auto ro = Store::OpenReadOnly(dir / "s.db");
  REQUIRE(ro.ok());
  auto created = ro->CreateStudy("d", "d.yaml", "study: d");
  REQUIRE(!created.ok());
  CHECK(created.status().message().rfind(dir / "s.db" + ": create study 'd': ", 0) == 0);
  CHECK(Contains(created.status().message(), "readonly"));
  auto study = ro->FindStudy("c");
  REQUIRE(study.ok());
  REQUIRE(study.value());
  CHECK(!ro->AcquireLease(study.value()->id, Lease{"me", "h", 1, UnixNow() + 60}).ok());
  // Bad input from the commands: exit 2.
  CHECK(Masktune("check c --db " + none).code == 2);
  CHECK(Masktune("check nope --db " + dir / "s.db").code == 2);
}

// The version 1 schema exactly as the first masktune wrote it.
const char* kV1 = R"(
PRAGMA journal_mode=WAL;
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
PRAGMA user_version=1;
INSERT INTO studies (name, sweep_path, sweep_text, status, created) VALUES ('old', 'o.yaml', 'study: old', 'running', 1);
INSERT INTO stacks (study_id, name, position) VALUES (1, 'a', 0);
INSERT INTO trials (study_id, stack_id, number, params, status, attempts, objective, queued)
  VALUES (1, 1, 0, '{"x":1}', 'done', 1, 0.5, 1), (1, 1, 1, '{"x":2}', 'queued', 0, NULL, 1);
INSERT INTO metrics VALUES (1, 'error', 0.25);
)";

TEST_CASE("storage: a version 1 database is read as it is read-only, and migrated to 2 by Open") {
  testing::TempDir dir;
  const std::string db = dir / "v1.db";
  Exec(db, kV1);
  {  // read-only: readable, no fingerprint, no leases, left at version 1
    auto ro = Store::OpenReadOnly(db);
    REQUIRE_MESSAGE(ro.ok(), ro.status().message());
    auto study = ro->FindStudy("old");
    REQUIRE(study.ok());
    REQUIRE(study.value());
    CHECK(study.value()->fingerprint == "");
    CHECK(study.value()->sweep_text == "study: old");
    auto lease = ro->LiveLease(study.value()->id);
    REQUIRE(lease.ok());
    CHECK(!lease.value());
    auto trials = ro->Trials(study.value()->id);
    REQUIRE(trials.ok());
    REQUIRE(trials->size() == 2);
    CHECK(trials.value()[0].metrics.at("error") == 0.25);
  }
  CHECK(Query(db, "PRAGMA user_version") == "1");
  // Several processes' worth of connections open it at once: one migrates.
  std::vector<std::thread> threads;
  std::vector<std::string> errors(6);
  for (int t = 0; t < 6; ++t)
    threads.emplace_back([&, t] {
      auto s = Store::Open(db);
      if (!s.ok()) errors[t] = s.status().message();
    });
  for (auto& th : threads) th.join();
  for (const auto& e : errors) CHECK_MESSAGE(e.empty(), e);
  CHECK(Query(db, "PRAGMA user_version") == std::to_string(storage::kSchemaVersion));
  auto store = Store::Open(db);
  REQUIRE(store.ok());
  auto study = store->FindStudy("old");
  REQUIRE(study.ok());
  REQUIRE(study.value());
  const int64_t id = study.value()->id;
  CHECK(study.value()->fingerprint == "");
  auto progress = store->GetProgress(id);
  REQUIRE(progress.ok());
  CHECK(progress->done == 1);
  CHECK(progress->queued == 1);
  REQUIRE(store->UpdateStudySweep(id, "n.yaml", "study: old\n# edited", "fp-2").ok());
  auto acquired = store->AcquireLease(id, Lease{"me", "h", 1, UnixNow() + 60});
  REQUIRE(acquired.ok());
  CHECK(!acquired.value());
  auto again = store->FindStudy("old");
  REQUIRE(again.ok());
  CHECK(again.value()->fingerprint == "fp-2");
  CHECK(again.value()->sweep_path == "n.yaml");
  CHECK(again.value()->sweep_text == "study: old\n# edited");
  auto check = store->Check();
  REQUIRE(check.ok());
  CHECK(check->empty());
}

TEST_CASE("storage: the plan fingerprint is stored per study") {
  testing::TempDir dir;
  auto store = Store::Open(dir / "s.db");
  REQUIRE(store.ok());
  auto a = store->CreateStudy("a", "a.yaml", "study: a", "fp-a");
  auto b = store->CreateStudy("b", "b.yaml", "study: b");  // the default: none
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  CHECK(store->FindStudy("a")->value().fingerprint == "fp-a");
  CHECK(store->FindStudy("b")->value().fingerprint == "");
  REQUIRE(store->UpdateStudySweep(b.value(), "b2.yaml", "study: b\n", "fp-b").ok());
  const auto row = store->FindStudy("b")->value();
  CHECK(row.fingerprint == "fp-b");
  CHECK(row.sweep_path == "b2.yaml");
  CHECK(row.sweep_text == "study: b\n");
  CHECK(store->FindStudy("a")->value().fingerprint == "fp-a");
  Status none = store->UpdateStudySweep(99, "x", "y", "z");
  REQUIRE(!none.ok());
  CHECK(none.message() == dir / "s.db" + ": update the study's sweep: no study with id 99");
}

TEST_CASE("storage: a study's lease: acquire, renew, expire, take over, release") {
  testing::TempDir dir;
  auto store = Store::Open(dir / "s.db");
  REQUIRE(store.ok());
  const int64_t study = store->CreateStudy("c", "c.yaml", "study: c").value();
  const double now = UnixNow();
  auto none = store->LiveLease(study);
  REQUIRE(none.ok());
  CHECK(!none.value());
  // Outside a transaction.
  auto first = store->AcquireLease(study, Lease{"a", "host-a", 11, now + 60});
  REQUIRE(first.ok());
  CHECK(!first.value());
  auto denied = store->AcquireLease(study, Lease{"b", "host-b", 22, now + 60});
  REQUIRE(denied.ok());
  REQUIRE(denied.value());
  CHECK(denied.value()->holder == "a");
  CHECK(denied.value()->host == "host-a");
  CHECK(denied.value()->pid == 11);
  CHECK(denied.value()->expires == now + 60);
  auto mine = store->AcquireLease(study, Lease{"a", "host-a", 11, now + 120});  // renews
  REQUIRE(mine.ok());
  CHECK(!mine.value());
  REQUIRE(store->RenewLease(study, "a", now + 180).ok());
  auto live = store->LiveLease(study);
  REQUIRE(live.ok());
  REQUIRE(live.value());
  CHECK(live.value()->expires == now + 180);
  // Inside the coordinator's transaction: the same calls, no nesting error.
  REQUIRE(store->Begin().ok());
  REQUIRE(store->RenewLease(study, "a", now - 1).ok());  // expired from here on
  auto taken = store->AcquireLease(study, Lease{"b", "host-b", 22, now + 60});
  REQUIRE(taken.ok());
  CHECK(!taken.value());
  REQUIRE(store->Commit().ok());
  // a lost it: renewing is an error that says who holds it now.
  Status lost = store->RenewLease(study, "a", now + 240);
  REQUIRE(!lost.ok());
  CHECK(lost.message() ==
        dir / "s.db" +
            ": renew lease: a no longer holds the study's lease: taken by b on host-b pid 22");
  // Another connection (a `masktune status`) sees b's lease.
  auto reader = Store::OpenReadOnly(dir / "s.db");
  REQUIRE(reader.ok());
  auto seen = reader->LiveLease(study);
  REQUIRE(seen.ok());
  REQUIRE(seen.value());
  CHECK(seen.value()->holder == "b");
  // Releasing someone else's lease does nothing; releasing one's own frees it.
  REQUIRE(store->ReleaseLease(study, "a").ok());
  CHECK(reader->LiveLease(study).value().has_value());
  REQUIRE(store->ReleaseLease(study, "b").ok());
  CHECK(!reader->LiveLease(study).value().has_value());
  CHECK(!store->RenewLease(study, "b", now + 60).ok());
  // An expired lease is not live.
  REQUIRE(!store->AcquireLease(study, Lease{"c", "h", 3, now - 5}).value());
  CHECK(!reader->LiveLease(study).value().has_value());
}

TEST_CASE("storage: processes racing for one study's lease: exactly one wins") {
  testing::TempDir dir;
  const std::string db = dir / "s.db";
  int64_t study = 0;
  {
    auto store = Store::Open(db);
    REQUIRE(store.ok());
    study = store->CreateStudy("c", "c.yaml", "study: c").value();
  }
  for (int round = 0; round < 8; ++round) {
    CAPTURE(round);
    {
      auto store = Store::Open(db);
      REQUIRE(store.ok());
      // Free, or held by a coordinator whose lease ran out.
      Exec(db, "DELETE FROM leases");
      if (round % 2)
        REQUIRE(!store->AcquireLease(study, Lease{"old", "h", 1, UnixNow() - 1}).value());
    }
    int go[2];
    REQUIRE(pipe(go) == 0);
    std::vector<pid_t> children;
    for (int i = 0; i < 6; ++i) {
      const pid_t pid = fork();
      REQUIRE(pid >= 0);
      if (pid == 0) {
        close(go[1]);
        auto store = Store::Open(db);
        if (!store.ok()) _exit(3);
        char c;
        (void)!read(go[0], &c, 1);  // all start together: the parent closes the pipe
        auto r = store->AcquireLease(study,
                                     Lease{"w" + std::to_string(i), "h", getpid(), UnixNow() + 60});
        _exit(!r.ok() ? 2 : r.value() ? 1 : 0);
      }
      children.push_back(pid);
    }
    close(go[0]);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // let them open
    close(go[1]);
    int winners = 0, losers = 0;
    for (pid_t pid : children) {
      int status = 0;
      waitpid(pid, &status, 0);
      REQUIRE(WIFEXITED(status));
      const int code = WEXITSTATUS(status);
      CHECK(code <= 1);
      winners += code == 0;
      losers += code == 1;
    }
    CHECK(winners == 1);
    CHECK(losers == 5);
    auto store = Store::OpenReadOnly(db);
    REQUIRE(store.ok());
    auto live = store->LiveLease(study);
    REQUIRE(live.ok());
    REQUIRE(live.value());
    CHECK(live.value()->holder.rfind("w", 0) == 0);
  }
}

TEST_CASE("storage: status tells finished, running (who holds the lease) and interrupted") {
  testing::TempDir dir;
  const std::string db = MakeStudy(dir, 5);
  const Run finished = Masktune("status c --db " + db);
  CHECK(finished.code == 0);
  CHECK(finished.output == "study c (finished): 5 trials: 5 done, 0 failed, 0 running, 0 queued\n");
  int64_t study = 0;
  {  // as after a crash: the study says running, nobody holds it
    auto store = Store::Open(db);
    REQUIRE(store.ok());
    study = store->FindStudy("c")->value().id;
    REQUIRE(store->SetStudyStatus(study, "running").ok());
  }
  const Run interrupted = Masktune("status c --db " + db);
  CHECK(interrupted.code == 0);
  CHECK(interrupted.output ==
        "study c (interrupted): 5 trials: 5 done, 0 failed, 0 running, 0 queued\n"
        "  no live coordinator: resume with `masktune resume c --db " +
            db + "`\n");
  {
    auto store = Store::Open(db);
    REQUIRE(store.ok());
    REQUIRE(!store->AcquireLease(study, Lease{"coord-7", "node-3", 4242, 4102444800.0}).value());
  }
  const Run running = Masktune("status c --db " + db);
  CHECK(running.code == 0);
  CHECK(running.output ==
        "study c (running): 5 trials: 5 done, 0 failed, 0 running, 0 queued\n"
        "  held by coord-7 on node-3 pid 4242 (lease until 2100-01-01 00:00:00 UTC)\n");
  {  // the lease ran out: interrupted again
    auto store = Store::Open(db);
    REQUIRE(store.ok());
    REQUIRE(store->RenewLease(study, "coord-7", UnixNow() - 1).ok());
  }
  CHECK(Contains(Masktune("status c --db " + db).output, "(interrupted)"));
  // Killed on this host with its lease still running: no need to wait for it.
  const pid_t dead = fork();
  REQUIRE(dead >= 0);
  if (dead == 0) _exit(0);
  REQUIRE(waitpid(dead, nullptr, 0) == dead);
  {
    char host[256] = {};
    REQUIRE(gethostname(host, sizeof host - 1) == 0);
    auto store = Store::Open(db);
    REQUIRE(store.ok());
    REQUIRE(!store->AcquireLease(study, Lease{"coord-9", host, dead, UnixNow() + 600}).value());
  }
  const Run gone = Masktune("status c --db " + db);
  CHECK(gone.output ==
        "study c (interrupted): 5 trials: 5 done, 0 failed, 0 running, 0 queued\n"
        "  no live coordinator: coord-9 (pid " +
            std::to_string(dead) + " on this host) is gone; resume with `masktune resume c --db " +
            db + "`\n");
  const Run nope = Masktune("status nope --db " + db);
  CHECK(nope.code == 2);
  CHECK(nope.output == "masktune status: no study 'nope' in " + db + "\n");
}

}  // namespace
}  // namespace masktune
