// Test helpers for real processes: run a command line and capture what it
// prints, spawn the masktune binary, wait for its exit, find a free port,
// poll a study's database while it runs.
#pragma once

#include <doctest/doctest.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include "storage/store.h"

extern char** environ;

namespace masktune::testing {

// What a command line printed (stdout and stderr together) and its exit
// code (128 + n when signal n ended it).
struct Run {
  int code = -1;
  std::string output;
};

// Runs `command` with /bin/sh, as a user types it ("cd DIR && ...").
inline Run Shell(const std::string& command) {
  Run r;
  FILE* p = popen((command + " 2>&1").c_str(), "r");
  REQUIRE(p != nullptr);
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  const int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

// The masktune binary with `args` (shell words), in folder `cwd` when given,
// killed after `timeout_s` seconds when given (an endless read then fails the
// test instead of hanging it).
inline Run Masktune(const std::string& args, const std::string& cwd = "", int timeout_s = 0) {
  std::string command = cwd.empty() ? "" : "cd '" + cwd + "' && ";
  if (timeout_s > 0) command += "timeout -s KILL " + std::to_string(timeout_s) + " ";
  return Shell(command + MASKTUNE_BINARY + " " + args);
}

// Bad input as the CLI promises it: exit 2 and one line naming `part`.
inline void CheckBadInput(const Run& r, const std::string& part) {
  CAPTURE(r.output);
  CHECK(r.code == 2);
  CHECK(r.output.find(part) != std::string::npos);
  CHECK(std::count(r.output.begin(), r.output.end(), '\n') == 1);
}

// Starts `args`; stdout and stderr go to `log` (default: nowhere).
inline pid_t Spawn(const std::vector<std::string>& args, const std::string& log = "/dev/null") {
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

inline int WaitExit(pid_t pid, int seconds) {
  for (int i = 0; i < seconds * 100; ++i) {
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  return -2;  // timed out
}

inline int FreePort() {
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
inline auto DoneAtLeast(int n) {
  return [n](const std::vector<storage::TrialRow>& rows) {
    int done = 0;
    for (const auto& r : rows) done += r.status == "done";
    return done >= n;
  };
}

inline std::vector<storage::TrialRow> AllTrials(const std::string& db, const std::string& study) {
  auto store = storage::Store::Open(db);
  REQUIRE(store.ok());
  auto row = store->FindStudy(study);
  REQUIRE(row.ok());
  REQUIRE(row.value());
  auto trials = store->Trials(row.value()->id);
  REQUIRE(trials.ok());
  return trials.value();
}

// The whole file (a log, typically).
inline std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace masktune::testing
