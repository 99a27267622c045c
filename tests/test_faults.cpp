// Faults with real processes: the masktune binary as coordinator and
// workers over tcp on 127.0.0.1, killed with SIGKILL mid-sweep.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <thread>

#include "protocol/security.h"
#include "storage/store.h"
#include "tests/helpers.h"
#include "tests/process_helpers.h"

namespace masktune {
namespace {

using namespace masktune::testing;

TEST_CASE("a worker process killed mid-trial: its trial is requeued and done by another") {
  testing::TempDir dir;
  std::ofstream(dir / "s.yaml") << "study: kill_worker\nbenchmark: {name: noop, sleep_ms: 400}\n"
                                   "search: {algorithm: random, num_samples: 4, seed: 1}\n"
                                   "attention: {a: [{sink: {sink_size: {randint: [1, 50]}}}]}\n";
  const std::string endpoint = "tcp://127.0.0.1:" + std::to_string(FreePort());
  const std::string db = dir / "s.db";
  // Over CURVE, as on a cluster: the keys from `masktune keys new`.
  REQUIRE(security::WriteKeyDir(dir / "keys").ok());
  const std::string keys = dir / "keys";
  const pid_t coordinator = Spawn({MASKTUNE_BINARY, "coordinator", dir / "s.yaml", "--bind",
                                   endpoint, "--db", db, "--heartbeat-ms", "50", "--keys", keys});
  const pid_t doomed = Spawn({MASKTUNE_BINARY, "worker", "--connect", endpoint, "--name", "doomed",
                              "--heartbeat-ms", "50", "--keys", keys});
  REQUIRE(WaitFor(db, "kill_worker", [](const auto& rows) {
    for (const auto& r : rows)
      if (r.status == "running" && r.worker == "doomed") return true;
    return false;
  }));
  kill(doomed, SIGKILL);
  waitpid(doomed, nullptr, 0);
  const pid_t good = Spawn({MASKTUNE_BINARY, "worker", "--connect", endpoint, "--name", "good",
                            "--heartbeat-ms", "50", "--keys", keys});
  CHECK(WaitExit(coordinator, 30) == 0);
  CHECK(WaitExit(good, 10) == 0);  // told the study is over
  const auto rows = AllTrials(db, "kill_worker");
  REQUIRE(rows.size() == 4);
  int retried = 0;
  for (const auto& r : rows) {
    CHECK(r.status == "done");
    CHECK(r.worker == "good");
    retried += r.attempts == 2;
  }
  CHECK(retried == 1);
}

// Ctrl-C or scancel on a worker in the middle of a long trial: it leaves at
// once (exit 0, saying which trial it abandons) instead of finishing the
// trial first, and the coordinator requeues that trial.
TEST_CASE("a worker SIGTERMed mid-trial exits at once; its trial goes back to the queue") {
  testing::TempDir dir;
  std::ofstream(dir / "s.yaml") << "study: term_worker\nbenchmark: {name: noop, sleep_ms: 60000}\n"
                                   "search: {algorithm: random, num_samples: 1, seed: 1}\n"
                                   "attention: {a: [{sink: {sink_size: {randint: [1, 50]}}}]}\n";
  const std::string endpoint = "tcp://127.0.0.1:" + std::to_string(FreePort());
  const std::string db = dir / "s.db";
  const pid_t coordinator = Spawn({MASKTUNE_BINARY, "coordinator", dir / "s.yaml", "--bind",
                                   endpoint, "--db", db, "--heartbeat-ms", "50", "--insecure"});
  const pid_t worker = Spawn({MASKTUNE_BINARY, "worker", "--connect", endpoint, "--name", "leaving",
                              "--heartbeat-ms", "50", "--insecure"},
                             dir / "worker.log");
  REQUIRE(WaitFor(db, "term_worker", [](const auto& rows) {
    return rows.size() == 1 && rows[0].status == "running";
  }));
  kill(worker, SIGTERM);
  CHECK(WaitExit(worker, 10) == 0);  // not after the trial's 60 s
  CHECK(Slurp(dir / "worker.log").find("stopped with trial 1 in flight: abandoned") !=
        std::string::npos);
  CHECK(WaitFor(db, "term_worker", [](const auto& rows) {
    return rows.size() == 1 && rows[0].status == "queued" && rows[0].attempts == 1;
  }));
  kill(coordinator, SIGTERM);
  CHECK(WaitExit(coordinator, 10) == 143);
}

TEST_CASE("the coordinator killed mid-sweep, then resume: the plan completes, nothing twice") {
  testing::TempDir dir;
  std::ofstream(dir / "s.yaml")
      << "study: kill_coordinator\nbenchmark: {name: noop, sleep_ms: 20}\n"
         "search: {algorithm: random, num_samples: 60, seed: 3}\n"
         "attention: {a: [{sink: {sink_size: {randint: [1, 50]}}}],\n"
         "            b: [{local: {window_size: {uniform: [0.01, 0.5]}}}]}\n";
  const std::string db = dir / "s.db";
  const pid_t run = Spawn({MASKTUNE_BINARY, "run", dir / "s.yaml", "--db", db, "--workers", "2",
                           "--heartbeat-ms", "50"});
  REQUIRE(WaitFor(db, "kill_coordinator", DoneAtLeast(20)));
  kill(run, SIGKILL);
  waitpid(run, nullptr, 0);
  const auto mid = AllTrials(db, "kill_coordinator");
  int done_before = 0;
  std::map<int64_t, double> objective_before;
  for (const auto& r : mid)
    if (r.status == "done") ++done_before, objective_before[r.id] = *r.objective;
  CHECK(done_before >= 20);
  CHECK(done_before < 120);
  const pid_t resume = Spawn({MASKTUNE_BINARY, "resume", "kill_coordinator", "--db", db,
                              "--workers", "2", "--heartbeat-ms", "50"});
  CHECK(WaitExit(resume, 60) == 0);
  const auto rows = AllTrials(db, "kill_coordinator");
  CHECK(rows.size() == 120);
  std::set<std::pair<std::string, int64_t>> seen;
  for (const auto& r : rows) {
    CHECK(r.status == "done");
    CHECK(seen.insert({r.stack, r.number}).second);
    if (objective_before.count(r.id)) CHECK(*r.objective == objective_before[r.id]);  // kept
  }
}

TEST_CASE("a worker outlives its coordinator: it reconnects to the restarted one and finishes") {
  testing::TempDir dir;
  std::ofstream(dir / "s.yaml") << "study: reconnect\nbenchmark: {name: noop, sleep_ms: 30}\n"
                                   "search: {algorithm: random, num_samples: 40, seed: 3}\n"
                                   "attention: {a: [{sink: {sink_size: {randint: [1, 50]}}}]}\n";
  const std::string endpoint = "tcp://127.0.0.1:" + std::to_string(FreePort());
  const std::string db = dir / "s.db";
  const std::vector<std::string> coordinator_args = {
      MASKTUNE_BINARY,  "coordinator", dir / "s.yaml", "--bind", endpoint, "--db", db,
      "--heartbeat-ms", "50",          "--insecure"};
  const pid_t first = Spawn(coordinator_args, dir / "coordinator.log");
  const pid_t worker = Spawn({MASKTUNE_BINARY, "worker", "--connect", endpoint, "--name",
                              "survivor", "--heartbeat-ms", "50", "--insecure"},
                             dir / "worker.log");
  const bool started = WaitFor(db, "reconnect", DoneAtLeast(5));
  if (!started) {  // say why before failing: the processes' own words
    auto slurp = [](const std::string& path) {
      std::ifstream in(path);
      return std::string(std::istreambuf_iterator<char>(in), {});
    };
    int status = 0;
    const bool coordinator_exited = waitpid(first, &status, WNOHANG) == first;
    MESSAGE("coordinator " << (coordinator_exited ? "exited " + std::to_string(WEXITSTATUS(status))
                                                  : "running")
                           << "; its log:\n"
                           << slurp(dir / "coordinator.log") << "\nworker log:\n"
                           << slurp(dir / "worker.log"));
    kill(first, SIGKILL);
    kill(worker, SIGKILL);
  }
  REQUIRE(started);
  kill(first, SIGKILL);
  waitpid(first, nullptr, 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the worker notices the silence
  const pid_t second = Spawn(coordinator_args);  // resumes the study from the database
  CHECK(WaitExit(second, 60) == 0);
  CHECK(WaitExit(worker, 10) == 0);  // the same worker process finished the study
  const auto rows = AllTrials(db, "reconnect");
  CHECK(rows.size() == 40);
  for (const auto& r : rows) {
    CHECK(r.status == "done");
    CHECK(r.worker == "survivor");
  }
}

// Every (stack, number) once, every trial done, and how many attempts each took.
std::map<int64_t, int64_t> CheckAllDoneOnce(const std::string& db, const std::string& study,
                                            size_t n) {
  const auto rows = AllTrials(db, study);
  CHECK(rows.size() == n);
  std::set<std::pair<std::string, int64_t>> seen;
  std::map<int64_t, int64_t> attempts;
  for (const auto& r : rows) {
    CHECK(r.status == "done");
    CHECK(seen.insert({r.stack, r.number}).second);
    attempts[r.id] = r.attempts;
  }
  return attempts;
}

TEST_CASE(
    "the coordinator SIGKILLed 1 s into a 200-trial tcp sweep and restarted 50 ms later: the "
    "workers rejoin") {
  testing::TempDir dir;
  std::ofstream(dir / "s.yaml") << "study: fast_restart\nbenchmark: {name: noop, sleep_ms: 15}\n"
                                   "search: {algorithm: random, num_samples: 200, seed: 5}\n"
                                   "attention: {a: [{sink: {sink_size: {randint: [1, 500]}}}]}\n";
  const std::string endpoint = "tcp://127.0.0.1:" + std::to_string(FreePort());
  const std::string db = dir / "s.db";
  const std::vector<std::string> coordinator_args = {
      MASKTUNE_BINARY,  "coordinator", dir / "s.yaml", "--bind", endpoint, "--db", db,
      "--heartbeat-ms", "200",         "--insecure"};
  const pid_t first = Spawn(coordinator_args, dir / "c1.log");
  std::vector<pid_t> workers;
  for (int i = 0; i < 3; ++i)
    workers.push_back(Spawn(
        {MASKTUNE_BINARY, "worker", "--connect", endpoint, "--heartbeat-ms", "200", "--insecure"},
        dir / ("w" + std::to_string(i) + ".log")));
  std::this_thread::sleep_for(std::chrono::seconds(1));
  kill(first, SIGKILL);
  waitpid(first, nullptr, 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const pid_t second = Spawn(coordinator_args, dir / "c2.log");
  const int rc = WaitExit(second, 60);
  CHECK_MESSAGE(rc == 0, Slurp(dir / "c2.log"));
  for (size_t i = 0; i < workers.size(); ++i)  // DONE reached every worker
    CHECK_MESSAGE(WaitExit(workers[i], 10) == 0, Slurp(dir / ("w" + std::to_string(i) + ".log")));
  CheckAllDoneOnce(db, "fast_restart", 200);
}

TEST_CASE(
    "a worker SIGSTOPped past the heartbeat timeout and resumed rejoins and runs trials again") {
  testing::TempDir dir;
  std::ofstream(dir / "s.yaml") << "study: paused\nbenchmark: {name: noop, sleep_ms: 30}\n"
                                   "search: {algorithm: random, num_samples: 150, seed: 6}\n"
                                   "attention: {a: [{sink: {sink_size: {randint: [1, 500]}}}]}\n";
  const std::string endpoint = "tcp://127.0.0.1:" + std::to_string(FreePort());
  const std::string db = dir / "s.db";
  const pid_t coordinator = Spawn({MASKTUNE_BINARY, "coordinator", dir / "s.yaml", "--bind",
                                   endpoint, "--db", db, "--heartbeat-ms", "100", "--insecure"});
  const pid_t sleeper = Spawn({MASKTUNE_BINARY, "worker", "--connect", endpoint, "--name",
                               "sleeper", "--heartbeat-ms", "100", "--insecure"},
                              dir / "sleeper.log");
  const pid_t steady = Spawn({MASKTUNE_BINARY, "worker", "--connect", endpoint, "--name", "steady",
                              "--heartbeat-ms", "100", "--insecure"});
  REQUIRE(WaitFor(db, "paused", DoneAtLeast(10)));
  kill(sleeper, SIGSTOP);
  std::this_thread::sleep_for(
      std::chrono::milliseconds(700));  // > 3 heartbeats: the coordinator gives it up
  auto by_sleeper = [&] {
    int n = 0;
    for (const auto& r : AllTrials(db, "paused")) n += r.status == "done" && r.worker == "sleeper";
    return n;
  };
  const int before = by_sleeper();
  kill(sleeper, SIGCONT);
  CHECK(WaitExit(coordinator, 60) == 0);
  CHECK_MESSAGE(WaitExit(sleeper, 10) == 0, Slurp(dir / "sleeper.log"));
  CHECK(WaitExit(steady, 10) == 0);
  CHECK(by_sleeper() > before);  // it ran trials again after SIGCONT
  CheckAllDoneOnce(db, "paused", 150);
}

TEST_CASE(
    "two `run`s on one study and database: the second is refused, naming the live one; nothing "
    "runs twice") {
  testing::TempDir dir;
  std::ofstream(dir / "s.yaml") << "study: twice\nbenchmark: {name: noop, sleep_ms: 40}\n"
                                   "search: {algorithm: random, num_samples: 40, seed: 7}\n"
                                   "attention: {a: [{sink: {sink_size: {randint: [1, 500]}}}]}\n";
  const std::string db = dir / "s.db";
  const pid_t first =
      Spawn({MASKTUNE_BINARY, "run", dir / "s.yaml", "--db", db, "--workers", "2"}, dir / "1.log");
  REQUIRE(WaitFor(db, "twice", DoneAtLeast(2)));
  const pid_t second =
      Spawn({MASKTUNE_BINARY, "run", dir / "s.yaml", "--db", db, "--workers", "2"}, dir / "2.log");
  CHECK(WaitExit(second, 20) == 1);
  const std::string refused = Slurp(dir / "2.log");
  CHECK_MESSAGE(
      refused.find("study 'twice' is being run by another coordinator: ") != std::string::npos,
      refused);
  CHECK_MESSAGE(refused.find("pid " + std::to_string(first)) != std::string::npos, refused);
  CHECK_MESSAGE(WaitExit(first, 60) == 0, Slurp(dir / "1.log"));
  std::set<std::string> names;
  for (const auto& [id, attempts] : CheckAllDoneOnce(db, "twice", 40)) CHECK(attempts == 1);
  for (const auto& r : AllTrials(db, "twice")) names.insert(r.worker);
  for (const auto& n : names)  // unique per process and host
    CHECK(n.find(":" + std::to_string(first)) != std::string::npos);
}

TEST_CASE(
    "SIGTERM and SIGINT stop `run` cleanly: exit 128+signal, state committed, no attempt burnt, "
    "resume ends it") {
  for (const int signal : {SIGTERM, SIGINT}) {
    CAPTURE(signal);
    testing::TempDir dir;
    std::ofstream(dir / "s.yaml") << "study: stopped\nbenchmark: {name: noop, sleep_ms: 150}\n"
                                     "search: {algorithm: random, num_samples: 30, seed: 8}\n"
                                     "attention: {a: [{sink: {sink_size: {randint: [1, 500]}}}]}\n";
    const std::string db = dir / "s.db";
    const pid_t run = Spawn({MASKTUNE_BINARY, "run", dir / "s.yaml", "--db", db, "--workers", "2"},
                            dir / "run.log");
    REQUIRE(WaitFor(db, "stopped", DoneAtLeast(3)));
    kill(run, signal);
    CHECK(WaitExit(run, 10) == 128 + signal);
    const std::string log = Slurp(dir / "run.log");
    CHECK_MESSAGE(log.find("interrupted by SIG") != std::string::npos, log);
    CHECK_MESSAGE(log.find("masktune resume stopped --db " + db) != std::string::npos, log);
    int done = 0;
    for (const auto& r : AllTrials(db, "stopped")) {
      CHECK(r.status != "running");
      CHECK(r.attempts == (r.status == "done" ? 1 : 0));  // the interrupted ones were refunded
      done += r.status == "done";
    }
    CHECK(done < 30);
    const pid_t resume =
        Spawn({MASKTUNE_BINARY, "resume", "stopped", "--db", db, "--workers", "2"});
    CHECK(WaitExit(resume, 60) == 0);
    for (const auto& [id, attempts] : CheckAllDoneOnce(db, "stopped", 30)) CHECK(attempts == 1);
  }
}

TEST_CASE("a coordinator that cannot bind exits 1, and `status` says interrupted, not running") {
  testing::TempDir dir;
  std::ofstream(dir / "s.yaml") << "study: unbound\nbenchmark: {name: noop}\n"
                                   "search: {algorithm: random, num_samples: 2, seed: 1}\n"
                                   "attention: {a: [{sink: {sink_size: {randint: [1, 9]}}}]}\n";
  // The port is taken by a listener of our own.
  int s = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  REQUIRE(listen(s, 1) == 0);
  socklen_t len = sizeof a;
  getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
  const std::string endpoint = "tcp://127.0.0.1:" + std::to_string(ntohs(a.sin_port));
  const std::string db = dir / "s.db";
  const pid_t coordinator = Spawn({MASKTUNE_BINARY, "coordinator", dir / "s.yaml", "--bind",
                                   endpoint, "--db", db, "--insecure"},
                                  dir / "c.log");
  CHECK(WaitExit(coordinator, 10) == 1);
  close(s);
  CHECK_MESSAGE(Slurp(dir / "c.log").find("cannot bind " + endpoint) != std::string::npos,
                Slurp(dir / "c.log"));
  const pid_t status =
      Spawn({MASKTUNE_BINARY, "status", "unbound", "--db", db}, dir / "status.log");
  CHECK(WaitExit(status, 10) == 0);
  const std::string out = Slurp(dir / "status.log");
  CHECK_MESSAGE(
      out.rfind("study unbound (interrupted): 2 trials: 0 done, 0 failed, 0 running, 2 queued\n",
                0) == 0,
      out);
}

TEST_CASE(
    "an edited sweep file against an existing study: an error naming what changed, unless "
    "--extend") {
  testing::TempDir dir;
  const std::string head = "study: edited\nbenchmark: {name: noop}\n";
  const std::string stacks = "attention: {a: [{sink: {sink_size: {randint: [1, 50]}}}]}\n";
  std::ofstream(dir / "s.yaml") << head << "search: {algorithm: random, num_samples: 4, seed: 1}\n"
                                << stacks;
  const std::string db = dir / "s.db";
  auto run = [&](std::vector<std::string> extra, const std::string& log) {
    std::vector<std::string> args = {MASKTUNE_BINARY, "run", dir / "s.yaml", "--db", db,
                                     "--workers",     "1"};
    args.insert(args.end(), extra.begin(), extra.end());
    return WaitExit(Spawn(args, dir / log), 30);
  };
  REQUIRE(run({}, "1.log") == 0);
  // More samples and another stack: the plan is not the stored one.
  std::ofstream(dir / "s.yaml") << head << "search: {algorithm: random, num_samples: 6, seed: 1}\n"
                                << "attention: {a: [{sink: {sink_size: {randint: [1, 50]}}}],\n"
                                << "            b: [{local: {window_size: 8}}]}\n";
  CHECK(run({}, "2.log") == 2);
  const std::string refused = Slurp(dir / "2.log");
  CHECK_MESSAGE(
      refused.find("the sweep file changed since the study was created (search, stacks differ)") !=
          std::string::npos,
      refused);
  CHECK(AllTrials(db, "edited").size() == 4);  // nothing was added
  CHECK(run({"--extend"}, "3.log") == 0);
  const auto rows = AllTrials(db, "edited");
  CHECK(rows.size() == 7);  // a: 6 samples; b searches nothing: one trial
  for (const auto& r : rows) CHECK(r.status == "done");
  // From now on the new plan is the study's: running it again is a no-op, resume too.
  CHECK(run({}, "4.log") == 0);
  CHECK(WaitExit(Spawn({MASKTUNE_BINARY, "resume", "edited", "--db", db, "--workers", "1"}), 30) ==
        0);
  CHECK(AllTrials(db, "edited").size() == 7);
}

TEST_CASE("refused peers are told why, and the coordinator logs every kind of refused handshake") {
  testing::TempDir dir;
  REQUIRE(security::WriteKeyDir(dir / "keys").ok());
  REQUIRE(security::WriteKeyDir(dir / "other").ok());
  // A worker key the coordinator does not accept, with the right coordinator key pinned.
  std::filesystem::copy_file(dir / "keys/coordinator.pub", dir / "other/coordinator.pub",
                             std::filesystem::copy_options::overwrite_existing);
  std::ofstream(dir / "s.yaml") << "study: refused\nbenchmark: {name: noop}\n"
                                   "search: {algorithm: random, num_samples: 1, seed: 1}\n"
                                   "attention: {a: [{sink: {sink_size: 4}}]}\n";
  const std::string endpoint = "tcp://127.0.0.1:" + std::to_string(FreePort());
  const pid_t coordinator =
      Spawn({MASKTUNE_BINARY, "coordinator", dir / "s.yaml", "--bind", endpoint, "--db",
             dir / "s.db", "--heartbeat-ms", "100", "--keys", dir / "keys"},
            dir / "coordinator.log");
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const std::vector<std::string> common = {"--connect",         endpoint, "--heartbeat-ms",  "100",
                                           "--welcome-timeout", "1",      "--give-up-after", "3"};
  auto worker = [&](const std::vector<std::string>& extra, const std::string& log) {
    std::vector<std::string> args = {MASKTUNE_BINARY, "worker"};
    args.insert(args.end(), common.begin(), common.end());
    args.insert(args.end(), extra.begin(), extra.end());
    return Spawn(args, log);
  };
  const pid_t wrong_key = worker({"--keys", dir / "other"}, dir / "wrong.log");
  const pid_t plain = worker({"--insecure"}, dir / "plain.log");
  {  // HTTP on the port
    int s = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(std::stoi(endpoint.substr(endpoint.rfind(':') + 1))));
    REQUIRE(connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    const char http[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    CHECK(write(s, http, sizeof http - 1) > 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    close(s);
  }
  // Nobody listens here at all.
  const pid_t nobody = Spawn(
      {MASKTUNE_BINARY, "worker", "--connect", "tcp://127.0.0.1:" + std::to_string(FreePort()),
       "--insecure", "--welcome-timeout", "1", "--give-up-after", "2"},
      dir / "nobody.log");
  CHECK(WaitExit(wrong_key, 20) == 1);  // gave up after 3 s, having said why
  CHECK(WaitExit(plain, 20) == 1);
  CHECK(WaitExit(nobody, 20) == 1);
  kill(coordinator, SIGTERM);
  CHECK(WaitExit(coordinator, 10) == 128 + SIGTERM);
  const std::string wrong = Slurp(dir / "wrong.log"), plain_log = Slurp(dir / "plain.log");
  const std::string nobody_log = Slurp(dir / "nobody.log"),
                    coordinator_log = Slurp(dir / "coordinator.log");
  CHECK_MESSAGE(wrong.find("not in authorized_workers") != std::string::npos, wrong);
  CHECK_MESSAGE(wrong.find("giving up") != std::string::npos, wrong);
  CHECK_MESSAGE(plain_log.find("handshake failed") != std::string::npos, plain_log);
  CHECK_MESSAGE(nobody_log.find("no answer from tcp://127.0.0.1:") != std::string::npos,
                nobody_log);
  CHECK_MESSAGE(nobody_log.find("giving up") != std::string::npos, nobody_log);
  CHECK_MESSAGE(coordinator_log.find("refused a worker from 127.0.0.1") != std::string::npos,
                coordinator_log);
  CHECK_MESSAGE(coordinator_log.find("refused a connection on " + endpoint) != std::string::npos,
                coordinator_log);
}

}  // namespace
}  // namespace masktune

namespace masktune {
namespace {

using namespace masktune::testing;

const std::string kSlurmLocal = std::string(MASKTUNE_SOURCE_DIR) + "/scripts/slurm_local.sh";

// The one-node SLURM of scripts/slurm_local.sh for one test case. When the
// case ends, however it ends, its jobs are cancelled and `slurm_local.sh stop`
// ends the daemons that its start started (none when they ran before).
struct LocalSlurm {
  std::string owner = std::to_string(getpid());
  std::vector<int> jobs;
  std::pair<int, std::string> Start() {
    auto [rc, out] = Shell(kSlurmLocal + " start " + owner);
    std::fputs(out.c_str(), stderr);  // what it installed and started, if anything
    return {rc, out};
  }
  ~LocalSlurm() {
    for (int job : jobs) Shell("scancel " + std::to_string(job));
    std::fputs(Shell(kSlurmLocal + " stop " + owner).output.c_str(), stderr);
  }
};

TEST_CASE(
    "SLURM: a sweep launched through sbatch completes; after scancel, the same launch resumes it") {
  // A one-node SLURM on this machine (scripts/slurm_local.sh).
  if (!std::getenv("SLURM_CONF")) setenv("SLURM_CONF", "/tmp/masktune-slurm/slurm.conf", 1);
  LocalSlurm slurm;
  const auto [setup_rc, setup_out] = slurm.Start();
  if (setup_rc == 3) {
    MESSAGE("skipped: SLURM's daemons cannot start here: " << setup_out);
    return;
  }
  REQUIRE_MESSAGE(setup_rc == 0, setup_out);
  testing::TempDir dir;
  auto launch = [&](const std::string& name) {
    const auto [rc, out] = Shell(std::string(MASKTUNE_BINARY) + " launch slurm " + dir / name +
                                 " --gpus-per-node 0 --workers 2 --time 00:05:00 --port " +
                                 std::to_string(FreePort()));
    REQUIRE_MESSAGE(rc == 0, out);
    REQUIRE(out.rfind("submitted job ", 0) == 0);
    slurm.jobs.push_back(std::stoi(out.substr(14)));
    return slurm.jobs.back();
  };
  auto gone = [](int job) {
    for (int i = 0; i < 200; ++i) {
      if (Shell("squeue -h -j " + std::to_string(job)).output.find(std::to_string(job)) ==
          std::string::npos)
        return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  };

  // 1. To completion, with two workers started by srun.
  std::ofstream(dir / "a.yaml")
      << "study: slurm_a\nstorage: a.db\nbenchmark: {name: noop, sleep_ms: 40}\n"
         "search: {algorithm: random, num_samples: 30, seed: 1}\n"
         "attention: {a: [{sink: {sink_size: {randint: [1, 50]}}}]}\n";
  const int first = launch("a.yaml");
  REQUIRE(WaitFor(dir / "a.db", "slurm_a", DoneAtLeast(30)));
  CHECK(gone(first));  // the coordinator ended the job
  std::set<std::string> workers;
  for (const auto& r : AllTrials(dir / "a.db", "slurm_a")) workers.insert(r.worker);
  CHECK(workers.size() == 2);

  // 2. scancel mid-study, then the same launch command resumes it.
  std::ofstream(dir / "b.yaml")
      << "study: slurm_b\nstorage: b.db\nbenchmark: {name: noop, sleep_ms: 300}\n"
         "search: {algorithm: random, num_samples: 24, seed: 2}\n"
         "attention: {a: [{sink: {sink_size: {randint: [1, 50]}}}]}\n";
  const int job = launch("b.yaml");
  REQUIRE(WaitFor(dir / "b.db", "slurm_b", DoneAtLeast(4)));
  REQUIRE(Shell("scancel " + std::to_string(job)).code == 0);
  REQUIRE(gone(job));
  std::map<int64_t, std::string> before;  // finished trials and their workers
  for (const auto& r : AllTrials(dir / "b.db", "slurm_b"))
    if (r.status == "done") before[r.id] = r.worker;
  CHECK(before.size() < 24);
  const int again = launch("b.yaml");
  REQUIRE(WaitFor(dir / "b.db", "slurm_b", DoneAtLeast(24)));
  CHECK(gone(again));
  for (const auto& r : AllTrials(dir / "b.db", "slurm_b")) {
    CHECK(r.status == "done");
    if (before.count(r.id)) CHECK(r.worker == before[r.id]);  // kept, not rerun
  }
}

// Whether `pid` runs: /proc/PID/stat exists and its state is not Z (zombie).
bool Running(int pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  const auto paren = text.rfind(") ");
  return paren != std::string::npos && text.size() > paren + 2 && text[paren + 2] != 'Z';
}

TEST_CASE(
    "SLURM: slurm_local.sh stop ends only the daemons its start recorded, after the last owner") {
  // Stand-ins for the daemons: copies of sleep named as they are (stop checks
  // the name), started in the background of a shell that exits, as daemons are.
  testing::TempDir dir;
  for (const char* name : {"slurmd", "munged"})
    std::filesystem::copy_file("/bin/sleep", dir / name);
  auto background = [&](const std::string& program) {
    const auto [rc, out] = Shell(program + " 300 >/dev/null 2>&1 & echo $!");
    REQUIRE(rc == 0);
    return std::stoi(out);
  };
  const int ours = background(dir / "slurmd");    // started by `start`: in the record
  const int theirs = background(dir / "munged");  // ran before: not in the record
  const int reused = background("/bin/sleep");    // a pid in the record, now another program
  const int owner_a = background("/bin/sleep"), owner_b = background("/bin/sleep");
  // The state `start` leaves for two owners (their start times name them).
  std::filesystem::create_directories(dir / "users");
  for (int owner : {owner_a, owner_b})
    REQUIRE(Shell("sed -E 's/^.*\\) //' /proc/" + std::to_string(owner) +
                  "/stat | awk '{print $20}' > " + dir / "users" + "/" + std::to_string(owner))
                .code == 0);
  std::ofstream(dir / "started") << "munged " << reused << "\nslurmd " << ours << "\n";
  const std::string stop = "SLURM_LOCAL=" + dir.path.string() + " " + kSlurmLocal + " stop ";

  // Owner a leaves; b still uses the cluster: nothing stops.
  auto [rc, out] = Shell(stop + std::to_string(owner_a));
  CHECK_MESSAGE(rc == 0, out);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  CHECK(Running(ours));
  // The last owner leaves: what start recorded stops, and only that.
  const Run last = Shell(stop + std::to_string(owner_b));
  CHECK_MESSAGE(last.code == 0, last.output);
  CHECK(last.output == "slurm_local: stopped slurmd\n");
  CHECK_FALSE(Running(ours));
  CHECK(Running(theirs));
  CHECK(Running(reused));
  CHECK_FALSE(std::filesystem::exists(dir / "started"));
  for (int pid : {ours, theirs, reused, owner_a, owner_b}) kill(pid, SIGKILL);
}

}  // namespace
}  // namespace masktune
