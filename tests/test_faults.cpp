// Faults with real processes: the masktune binary as coordinator and
// workers over tcp on 127.0.0.1, killed with SIGKILL mid-sweep.
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <set>
#include <thread>

#include "storage/store.h"
#include "protocol/security.h"
#include "tests/helpers.h"

extern char** environ;

namespace masktune {
namespace {

// Starts `args`; stdout and stderr go to `log` (default: nowhere).
pid_t Spawn(const std::vector<std::string>& args, const std::string& log = "/dev/null") {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  pid_t pid = -1;
  REQUIRE(posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ) == 0);
  posix_spawn_file_actions_destroy(&fa);
  return pid;
}

int WaitExit(pid_t pid, int seconds) {
  for (int i = 0; i < seconds * 100; ++i) {
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  return -2;  // timed out
}

int FreePort() {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
  close(s);
  return ntohs(a.sin_port);
}

// Polls the database until `pred(progress, trials)` holds (or 20 s pass).
template <typename Pred>
bool WaitFor(const std::string& db, const std::string& study, Pred pred) {
  for (int i = 0; i < 2000; ++i) {
    if (std::ifstream(db)) {
      auto store = storage::Store::Open(db);
      if (store.ok()) {
        auto row = store->FindStudy(study);
        if (row.ok() && row.value()) {
          auto trials = store->Trials(row.value()->id);
          if (trials.ok() && pred(trials.value())) return true;
        }
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

// A WaitFor predicate: at least `n` trials are done.
auto DoneAtLeast(int n) {
  return [n](const std::vector<storage::TrialRow>& rows) {
    int done = 0;
    for (const auto& r : rows) done += r.status == "done";
    return done >= n;
  };
}

std::vector<storage::TrialRow> AllTrials(const std::string& db, const std::string& study) {
  auto store = storage::Store::Open(db);
  REQUIRE(store.ok());
  auto row = store->FindStudy(study);
  REQUIRE(row.ok());
  REQUIRE(row.value());
  auto trials = store->Trials(row.value()->id);
  REQUIRE(trials.ok());
  return trials.value();
}

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
  const pid_t coordinator = Spawn({MASKTUNE_BINARY, "coordinator", dir / "s.yaml", "--bind", endpoint,
                                   "--db", db, "--heartbeat-ms", "50", "--keys", keys});
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

TEST_CASE("the coordinator killed mid-sweep, then resume: the plan completes, nothing twice") {
  testing::TempDir dir;
  std::ofstream(dir / "s.yaml") << "study: kill_coordinator\nbenchmark: {name: noop, sleep_ms: 20}\n"
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
  const pid_t resume = Spawn({MASKTUNE_BINARY, "resume", "kill_coordinator", "--db", db, "--workers", "2",
                              "--heartbeat-ms", "50"});
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
      MASKTUNE_BINARY, "coordinator", dir / "s.yaml", "--bind", endpoint, "--db", db, "--heartbeat-ms", "50",
      "--insecure"};
  const pid_t first = Spawn(coordinator_args, dir / "coordinator.log");
  const pid_t worker = Spawn({MASKTUNE_BINARY, "worker", "--connect", endpoint, "--name", "survivor",
                              "--heartbeat-ms", "50", "--insecure"},
                             dir / "worker.log");
  const bool started = WaitFor(db, "reconnect", DoneAtLeast(5));
  if (!started) {  // say why before failing: the processes' own words
    auto slurp = [](const std::string& path) {
      std::ifstream in(path);
      return std::string(std::istreambuf_iterator<char>(in), {});
    };
    int status = 0;
    const bool coordinator_exited = waitpid(first, &status, WNOHANG) == first;
    MESSAGE("coordinator " << (coordinator_exited ? "exited " + std::to_string(WEXITSTATUS(status)) : "running")
                           << "; its log:\n" << slurp(dir / "coordinator.log") << "\nworker log:\n"
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

}  // namespace
}  // namespace masktune

namespace masktune {
namespace {

// Runs a shell command; its stdout (and stderr) and exit code.
std::pair<int, std::string> Shell(const std::string& command) {
  std::string out;
  FILE* p = popen((command + " 2>&1").c_str(), "r");
  if (!p) return {-1, ""};
  char buf[512];
  while (fgets(buf, sizeof buf, p)) out += buf;
  const int rc = pclose(p);
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, out};
}

TEST_CASE("SLURM: a sweep launched through sbatch completes; after scancel, the same launch resumes it") {
  // A one-node SLURM on this machine (scripts/slurm_local.sh).
  if (!std::getenv("SLURM_CONF")) setenv("SLURM_CONF", "/tmp/masktune-slurm/slurm.conf", 1);
  const auto [setup_rc, setup_out] = Shell(std::string(MASKTUNE_SOURCE_DIR) + "/scripts/slurm_local.sh");
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
    return std::stoi(out.substr(14));
  };
  auto gone = [](int job) {
    for (int i = 0; i < 200; ++i) {
      if (Shell("squeue -h -j " + std::to_string(job)).second.find(std::to_string(job)) ==
          std::string::npos)
        return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  };

  // 1. To completion, with two workers started by srun.
  std::ofstream(dir / "a.yaml") << "study: slurm_a\nstorage: a.db\nbenchmark: {name: noop, sleep_ms: 40}\n"
                                   "search: {algorithm: random, num_samples: 30, seed: 1}\n"
                                   "attention: {a: [{sink: {sink_size: {randint: [1, 50]}}}]}\n";
  const int first = launch("a.yaml");
  REQUIRE(WaitFor(dir / "a.db", "slurm_a", DoneAtLeast(30)));
  CHECK(gone(first));  // the coordinator ended the job
  std::set<std::string> workers;
  for (const auto& r : AllTrials(dir / "a.db", "slurm_a")) workers.insert(r.worker);
  CHECK(workers.size() == 2);

  // 2. scancel mid-study, then the same launch command resumes it.
  std::ofstream(dir / "b.yaml") << "study: slurm_b\nstorage: b.db\nbenchmark: {name: noop, sleep_ms: 300}\n"
                                   "search: {algorithm: random, num_samples: 24, seed: 2}\n"
                                   "attention: {a: [{sink: {sink_size: {randint: [1, 50]}}}]}\n";
  const int job = launch("b.yaml");
  REQUIRE(WaitFor(dir / "b.db", "slurm_b", DoneAtLeast(4)));
  REQUIRE(Shell("scancel " + std::to_string(job)).first == 0);
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

}  // namespace
}  // namespace masktune
