// masktune run / resume / coordinator / worker: the sweep runtime.
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>
#include <zmq.hpp>

#include "cli/commands.h"
#include "cli/report.h"
#include "local/local.h"
#include "engine/cuda/cuda_attention.h"
#include "storage/store.h"
#include "worker/worker.h"

namespace masktune::cli {
namespace {

int Fail(const std::string& command, const std::string& message) {
  std::fprintf(stderr, "masktune %s: %s\n", command.c_str(), message.c_str());
  return kExitBadInput;
}

std::string ReadFile(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

struct RunOptions {
  std::string file, db, bind;
  std::string keys;       // CURVE key folder (masktune keys new)
  bool insecure = false;  // plain tcp, on purpose
  int workers = 0;
  int64_t heartbeat_ms = 1000;
};

void AddSecurityFlags(CLI::App* cmd, std::string& keys, bool& insecure, const std::string& help) {
  auto* k = cmd->add_option("--keys", keys, help);
  cmd->add_flag("--insecure", insecure, "plain tcp without CURVE (trusted networks only)")->excludes(k);
}

// tcp needs CURVE keys or an explicit --insecure; inproc is plain.
Status CheckSecurity(const std::string& endpoint, const std::string& keys, bool insecure) {
  if (endpoint.rfind("tcp://", 0) == 0 && keys.empty() && !insecure)
    return Status::Error(endpoint + ": tcp needs --keys DIR (make them with `masktune keys new DIR`) "
                         "or --insecure");
  return Status::Ok();
}

// Coordinator plus local workers (inproc), or the coordinator alone (bind).
int RunStudy(const std::string& command, const std::string& sweep_path,
             const std::string& sweep_text, RunOptions o) {
  const MaskerRegistry registry = MaskerRegistry::WithBuiltins();
  auto sweep = configs::ParseSweep(sweep_text, sweep_path, registry);
  if (!sweep.ok()) {
    std::fprintf(stderr, "%s\n", sweep.status().message().c_str());
    return kExitBadInput;
  }
  const std::string db = o.db.empty() ? sweep->storage : o.db;
  auto store = storage::Store::Open(db);
  if (!store.ok()) return Fail(command, store.status().message());
  auto study = PrepareStudy(store.value(), sweep.value(), sweep_text);
  if (!study.ok()) return Fail(command, study.status().message());

  const bool local = o.bind.empty();
  const int n = o.workers > 0 ? o.workers
                : sweep->workers > 0 ? static_cast<int>(sweep->workers)
                                     : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  CoordinatorOptions copt;
  copt.bind = local ? "inproc://masktune-" + std::to_string(::getpid()) : o.bind;
  if (!o.keys.empty()) {
    auto keys = security::LoadServerKeys(o.keys);
    if (!keys.ok()) return Fail(command, keys.status().message());
    copt.curve = std::make_shared<security::ServerKeys>(std::move(keys).value());
  }
  copt.heartbeat_interval_ms = o.heartbeat_ms;
  ProgressPrinter progress(isatty(STDOUT_FILENO));
  copt.on_progress = [&](const storage::Progress& p) { progress.Update(p, store.value(), study.value()); };
  LocalRun workers;
  workers.workers = local ? n : 0;  // `coordinator`: the workers are other processes
  // Local workers share the cores: each trial's OpenMP team gets its part.
  workers.threads_per_worker = std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / n);
  zmq::context_t context;
  auto stats = RunWithLocalWorkers(context, store.value(), study.value(), sweep.value(), registry, copt, workers);
  progress.Finish();
  if (!stats.ok()) return Fail(command, stats.status().message());
  return PrintBest(store.value(), study.value(), sweep.value(), "");
}

}  // namespace

Action AddRunCommand(CLI::App& app) {
  auto o = std::make_shared<RunOptions>();
  CLI::App* cmd = app.add_subcommand(
      "run", "Run a sweep: the coordinator and N local workers in one process (inproc://).\n"
             "A study that exists in the database continues where it stopped.");
  cmd->add_option("FILE", o->file, "the sweep file (YAML)")->required();
  cmd->add_option("--workers", o->workers, "local workers (default: the file's, else the core count)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--db", o->db, "SQLite database (default: the file's storage)");
  cmd->add_option("--heartbeat-ms", o->heartbeat_ms, "heartbeat interval")->check(CLI::Range(10, 60000));
  cmd->footer("Prints the best configuration per stack at the end. Exit codes: 0 done, 2 bad input.");
  return [o] {
    std::ifstream f(o->file);
    if (!f) return Fail("run", o->file + ": cannot open the sweep file");
    return RunStudy("run", o->file, ReadFile(o->file), *o);
  };
}

Action AddCoordinatorCommand(CLI::App& app) {
  auto o = std::make_shared<RunOptions>();
  CLI::App* cmd = app.add_subcommand(
      "coordinator", "Run a sweep's coordinator alone; workers join with `masktune worker`.");
  cmd->add_option("FILE", o->file, "the sweep file (YAML)")->required();
  cmd->add_option("--bind", o->bind, "endpoint to bind, tcp://HOST:PORT")->required();
  cmd->add_option("--db", o->db, "SQLite database (default: the file's storage)");
  cmd->add_option("--heartbeat-ms", o->heartbeat_ms, "heartbeat interval")->check(CLI::Range(10, 60000));
  AddSecurityFlags(cmd, o->keys, o->insecure,
                   "CURVE key folder (masktune keys new): coordinator.key, authorized_workers");
  return [o] {
    if (Status s = CheckSecurity(o->bind, o->keys, o->insecure); !s.ok())
      return Fail("coordinator", s.message());
    std::ifstream f(o->file);
    if (!f) return Fail("coordinator", o->file + ": cannot open the sweep file");
    return RunStudy("coordinator", o->file, ReadFile(o->file), *o);
  };
}

Action AddWorkerCommand(CLI::App& app) {
  auto o = std::make_shared<WorkerOptions>();
  o->name = "worker-" + std::to_string(::getpid());
  CLI::App* cmd = app.add_subcommand(
      "worker", "Join a coordinator and run trials until the study is over.");
  cmd->add_option("--connect", o->connect, "the coordinator's endpoint, tcp://HOST:PORT")->required();
  cmd->add_option("--name", o->name, "this worker's name (default worker-PID)");
  cmd->add_option("--heartbeat-ms", o->heartbeat_interval_ms, "heartbeat interval")
      ->check(CLI::Range(10, 60000));
  auto keys = std::make_shared<std::string>();
  auto insecure = std::make_shared<bool>(false);
  AddSecurityFlags(cmd, *keys, *insecure,
                   "CURVE key folder (masktune keys new): worker.key, coordinator.pub");
  cmd->add_option("--device", o->device,
                  "where trials' attention runs: cpu or cuda (default: cuda when a GPU is present)")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  o->device.clear();
  return [o, keys, insecure] {
    if (Status s = CheckSecurity(o->connect, *keys, *insecure); !s.ok()) return Fail("worker", s.message());
    if (o->device.empty()) o->device = cuda::Available() ? "cuda" : "cpu";
    if (o->device == "cuda" && !cuda::Available()) return Fail("worker", "--device cuda: no CUDA device");
    if (!keys->empty()) {
      auto k = security::LoadClientKeys(*keys);
      if (!k.ok()) return Fail("worker", k.status().message());
      o->curve = std::make_shared<security::ClientKeys>(std::move(k).value());
    }
    zmq::context_t context;
    const MaskerRegistry registry = MaskerRegistry::WithBuiltins();
    auto stats = RunWorker(context, registry, *o);
    if (!stats.ok()) return Fail("worker", stats.status().message());
    return kExitOk;
  };
}

Action AddResumeCommand(CLI::App& app) {
  auto o = std::make_shared<RunOptions>();
  auto study = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand(
      "resume", "Continue an interrupted study from its database: finished trials are kept,\n"
                "running ones requeued, and the rest run as planned.");
  cmd->add_option("STUDY", *study, "the study's name")->required();
  cmd->add_option("--db", o->db, "SQLite database")->required();
  cmd->add_option("--workers", o->workers, "local workers")->check(CLI::PositiveNumber);
  cmd->add_option("--heartbeat-ms", o->heartbeat_ms, "heartbeat interval")->check(CLI::Range(10, 60000));
  return [o, study] {
    if (!std::ifstream(o->db)) return Fail("resume", o->db + ": no such database");
    auto store = storage::Store::Open(o->db);
    if (!store.ok()) return Fail("resume", store.status().message());
    auto row = store->FindStudy(*study);
    if (!row.ok()) return Fail("resume", row.status().message());
    if (!row.value()) return Fail("resume", "no study '" + *study + "' in " + o->db);
    const std::string path = row.value()->sweep_path, text = row.value()->sweep_text;
    return RunStudy("resume", path, text, *o);
  };
}

}  // namespace masktune::cli
