// masktune run / resume / coordinator / worker: the sweep runtime.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>
#include <zmq.hpp>

#include "cli/commands.h"
#include "cli/report.h"
#include "engine/device.h"
#include "local/local.h"
#include "search/plan.h"
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
  bool extend = false;    // an existing study takes the edited sweep file's plan
  int64_t max_trials = configs::kDefaultMaxTrials;  // resume: none (the plan was accepted once)
  int workers = 0;
  int64_t heartbeat_ms = 1000;
  std::string device = "cpu";  // --device of the local workers
};

constexpr const char* kDeviceHelp =
    "where trials run: cpu, cuda (= cuda:0) or cuda:N (GPU N of those visible); a benchmark\n"
    "that cannot run there is refused (exit 2)";

// --device, parsed once, checked against the benchmark (when known) and made
// this process's (engine/device.h).
Result<Device> ChooseDevice(const std::string& flag, const std::string& benchmark) {
  MT_ASSIGN_OR_RETURN(Device device, Device::Parse(flag));
  if (!benchmark.empty()) MT_RETURN_IF_ERROR(CheckBenchmarkDevice(benchmark, device));
  MT_RETURN_IF_ERROR(Activate(device));
  return device;
}

// SIGINT / SIGTERM: the coordinator's loop sees the signal number at its next
// turn (its poll returns on EINTR), commits and returns.
std::atomic<int> g_interrupt{0};
std::atomic<bool> g_stop{false};  // the same, for a worker's loop

void OnSignal(int signal) {
  g_interrupt.store(signal);
  g_stop.store(true);
}

// No SA_RESTART: a blocking poll returns at once with EINTR.
void CatchStopSignals() {
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

// 128 + signal, the shell's convention for "stopped by a signal".
int InterruptedExit(const std::string& command, int signal, const std::string& study,
                    const std::string& db) {
  std::fprintf(stderr,
               "masktune %s: interrupted by %s: state committed, running trials requeued; "
               "continue with `masktune resume %s --db %s`\n",
               command.c_str(),
               signal == SIGINT    ? "SIGINT"
               : signal == SIGTERM ? "SIGTERM"
                                   : "a signal",
               study.c_str(), db.c_str());
  return 128 + signal;
}

void AddSecurityFlags(CLI::App* cmd, std::string& keys, bool& insecure, const std::string& help) {
  auto* k = cmd->add_option("--keys", keys, help);
  cmd->add_flag("--insecure", insecure, "plain tcp without CURVE (trusted networks only)")
      ->excludes(k);
}

// tcp needs CURVE keys or an explicit --insecure; inproc is plain.
Status CheckSecurity(const std::string& endpoint, const std::string& keys, bool insecure) {
  if (endpoint.rfind("tcp://", 0) == 0 && keys.empty() && !insecure)
    return Status::Error(endpoint +
                         ": tcp needs --keys DIR (make them with `masktune keys new DIR`) "
                         "or --insecure");
  return Status::Ok();
}

// Coordinator plus local workers (inproc), or the coordinator alone (bind).
int RunStudy(const std::string& command, const std::string& sweep_path,
             const std::string& sweep_text, RunOptions o) {
  const MaskerRegistry registry = MaskerRegistry::WithBuiltins();
  configs::ParseOptions parse;
  parse.max_trials = o.max_trials;
  auto sweep = configs::ParseSweep(sweep_text, sweep_path, registry, parse);
  if (!sweep.ok()) {
    std::fprintf(stderr, "%s\n", sweep.status().message().c_str());
    return kExitBadInput;
  }
  // The device before anything is written: a benchmark it cannot run is bad input.
  Device device;
  if (o.bind.empty()) {
    auto chosen = ChooseDevice(o.device, sweep->benchmark.name);
    if (!chosen.ok())
      return Fail(command, "--device " + o.device + ": " + chosen.status().message());
    device = chosen.value();
    // The local workers are known: resources none of them has are bad input.
    const configs::ResourcesSpec& r = sweep->resources;
    const int64_t cores = std::max(1u, std::thread::hardware_concurrency());
    if (std::string misfit = r.Misfit(device.cuda() ? 1 : 0, cores); !misfit.empty()) {
      const configs::Location& at = r.gpus_per_trial > 0 && !device.cuda() ? r.gpus_at : r.cpus_at;
      std::fprintf(stderr, "%s: resources: %s (the local workers of --device %s)\n",
                   at.ToString().c_str(), misfit.c_str(), device.ToString().c_str());
      return kExitBadInput;
    }
  }
  const std::string db = o.db.empty() ? sweep->storage : o.db;
  auto store = storage::Store::Open(db);
  if (!store.ok()) {
    std::fprintf(stderr, "masktune %s: %s\n", command.c_str(), store.status().message().c_str());
    return kExitFailure;
  }
  // A second coordinator of the same study, or an edited plan, is refused here.
  PrepareOptions prepare;
  prepare.extend = o.extend;
  prepare.lease = ThisProcessLease(o.heartbeat_ms);
  {
    auto existing = store->FindStudy(sweep->study);
    if (existing.ok() && existing.value()) {
      if (Status same = CheckSamePlan(existing.value()->fingerprint,
                                      configs::PlanFingerprintText(sweep.value()));
          !same.ok() && !o.extend)
        return Fail(command, db + ": study '" + sweep->study + "': " + same.message());
    }
  }
  CatchStopSignals();
  // Something on a terminal at once: queueing a large plan takes a while.
  const bool terminal = isatty(STDOUT_FILENO);
  ProgressPrinter progress(terminal);
  if (terminal) {
    int64_t planned = 0;
    for (const auto& plan : search::PlanSweep(sweep.value())) planned += plan.trials;
    progress.Start(planned, 0, "study " + sweep->study + ": queueing its trials in " + db);
  }
  auto study = PrepareStudy(store.value(), sweep.value(), sweep_text, prepare);
  if (!study.ok()) {
    std::fprintf(stderr, "masktune %s: %s\n", command.c_str(), study.status().message().c_str());
    return kExitFailure;
  }

  const bool local = o.bind.empty();
  // Without resources, one local worker per core, each trial on its own
  // core; with resources, one worker holding every core (and the GPU), which
  // runs as many trials at once as they allow (ResourcesSpec::Concurrency).
  const bool resources = sweep->resources.gpus_per_trial > 0 || sweep->resources.cpus_at.line > 0;
  const int n = o.workers > 0        ? o.workers
                : sweep->workers > 0 ? static_cast<int>(sweep->workers)
                : resources          ? 1
                            : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  CoordinatorOptions copt;
  copt.bind = local ? "inproc://masktune-" + std::to_string(::getpid()) : o.bind;
  if (!o.keys.empty()) {
    auto keys = security::LoadServerKeys(o.keys);
    if (!keys.ok()) return Fail(command, keys.status().message());
    copt.curve = std::make_shared<security::ServerKeys>(std::move(keys).value());
  }
  copt.heartbeat_interval_ms = o.heartbeat_ms;
  copt.interrupt = &g_interrupt;
  copt.lease = prepare.lease;
  progress.SetObjective(sweep->objective);
  if (auto p0 = store->GetProgress(study.value());
      p0.ok())  // a line at once, before any trial is done
    progress.Start(p0->total, p0->settled(),
                   local ? std::to_string(n) + " local workers" : "workers on " + copt.bind);
  copt.on_progress = [&](const storage::Progress& p) {
    progress.Update(p, store.value(), study.value());
  };
  LocalRun workers;
  workers.workers = local ? n : 0;  // `coordinator`: the workers are other processes
  workers.device = device;
  // Local workers share the cores: each trial's OpenMP team gets its part.
  workers.threads_per_worker =
      std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / n);
  workers.on_interrupted = [&](const CoordinatorStats& s) {
    progress.Finish();
    std::fflush(stdout);
    // The local workers' trials in flight are abandoned (requeued, attempt refunded).
    std::_Exit(InterruptedExit(command, s.interrupted_by, sweep->study, db));
  };
  zmq::context_t context;
  auto stats = RunWithLocalWorkers(context, store.value(), study.value(), sweep.value(), registry,
                                   copt, workers);
  progress.Finish();
  if (!stats.ok()) {
    std::fprintf(stderr, "masktune %s: %s\n", command.c_str(), stats.status().message().c_str());
    return kExitFailure;
  }
  if (stats->interrupted_by)
    return InterruptedExit(command, stats->interrupted_by, sweep->study, db);
  return PrintBest(store.value(), study.value(), sweep.value(), "");
}

void AddMaxTrialsFlag(CLI::App* cmd, int64_t& max_trials) {
  cmd->add_option(
         "--max-trials", max_trials,
         "refuse plans of more trials than this (default 1000000; the count is checked for "
         "overflow)")
      ->check(CLI::PositiveNumber);
}

void AddExtendFlag(CLI::App* cmd, bool& extend) {
  cmd->add_flag(
      "--extend", extend,
      "the study exists and the sweep file changed (benchmark, objective, search or stacks): "
      "continue it with the new plan, keeping its trials (without this flag: an error)");
}

constexpr const char* kRunFooter =
    "One live coordinator per study: a second one on the same study and database is refused,\n"
    "naming the live one. SIGINT/SIGTERM stop cleanly: state committed, running trials requeued\n"
    "(their attempt not counted), then `masktune resume`.\n"
    "Prints the best configuration per stack at the end.\n"
    "Exit codes: 0 done; 1 storage, socket or trial failures (a stack none of whose trials\n"
    "finished); 2 bad input; 130/143 interrupted by SIGINT/SIGTERM.";

}  // namespace

Action AddRunCommand(CLI::App& app) {
  auto o = std::make_shared<RunOptions>();
  CLI::App* cmd = app.add_subcommand(
      "run",
      "Run a sweep: the coordinator and N local workers in one process (inproc://).\n"
      "A study that exists in the database continues where it stopped.");
  cmd->add_option("FILE", o->file, "the sweep file (YAML)")->required();
  cmd->add_option("--workers", o->workers,
                  "local workers (default: the file's, else the core count)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--db", o->db, "SQLite database (default: the file's storage)");
  cmd->add_option("--heartbeat-ms", o->heartbeat_ms, "heartbeat interval")
      ->check(CLI::Range(10, 60000));
  AddExtendFlag(cmd, o->extend);
  AddMaxTrialsFlag(cmd, o->max_trials);
  cmd->add_option("--device", o->device, std::string(kDeviceHelp) + " (default cpu)");
  cmd->footer(kRunFooter);
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
  cmd->add_option("--heartbeat-ms", o->heartbeat_ms, "heartbeat interval")
      ->check(CLI::Range(10, 60000));
  AddSecurityFlags(cmd, o->keys, o->insecure,
                   "CURVE key folder (masktune keys new): coordinator.key, authorized_workers");
  AddExtendFlag(cmd, o->extend);
  AddMaxTrialsFlag(cmd, o->max_trials);
  cmd->footer(kRunFooter);
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
  o->name = DefaultWorkerName("worker");
  auto give_up_s = std::make_shared<int64_t>(o->give_up_after_ms / 1000);
  auto welcome_s = std::make_shared<int64_t>(o->welcome_timeout_ms / 1000);
  CLI::App* cmd =
      app.add_subcommand("worker", "Join a coordinator and run trials until the study is over.");
  cmd->add_option("--connect", o->connect, "the coordinator's endpoint, tcp://HOST:PORT")
      ->required();
  cmd->add_option("--name", o->name,
                  "this worker's name, unique per worker (default worker@HOST:PID)");
  cmd->add_option(
         "--give-up-after", *give_up_s,
         "seconds without a word from the coordinator after which the worker exits 1 (default 600)")
      ->check(CLI::Range(1, 7 * 24 * 3600));
  cmd->add_option(
         "--welcome-timeout", *welcome_s,
         "seconds without an answer after which the worker says why it may not be getting in "
         "(default 10)")
      ->check(CLI::Range(1, 3600));
  cmd->footer(
      "Says why it cannot get in (no answer in 10 s, key refused, plain against CURVE), keeps\n"
      "retrying, and rejoins a restarted coordinator by itself. SIGINT/SIGTERM: exits at once,\n"
      "abandoning a trial in flight (the coordinator requeues it). Exit codes: 0 the study is\n"
      "over (DONE) or SIGINT/SIGTERM; 1 the coordinator stayed silent for --give-up-after; 2 bad "
      "input.");
  cmd->add_option("--heartbeat-ms", o->heartbeat_interval_ms, "heartbeat interval")
      ->check(CLI::Range(10, 60000));
  auto keys = std::make_shared<std::string>();
  auto insecure = std::make_shared<bool>(false);
  AddSecurityFlags(cmd, *keys, *insecure,
                   "CURVE key folder (masktune keys new): worker.key, coordinator.pub");
  auto device = std::make_shared<std::string>();
  cmd->add_option("--device", *device,
                  std::string(kDeviceHelp) +
                      " when the coordinator's WELCOME names it (default: cuda:0 when a\n"
                      "GPU is present, else cpu; a CPU-only benchmark then runs on the CPU)");
  cmd->add_option("--cores", o->announce_cores,
                  "the cores this worker offers to the sweep's resources.cpus_per_trial (default: "
                  "the cores the process may run on, as sched_getaffinity says)")
      ->check(CLI::Range(1, 1 << 20));
  // Test-only: the GPUs READY announces, so resources can be tested on CPUs.
  cmd->add_option("--announce-gpus", o->announce_gpus)->check(CLI::Range(0, 1 << 20))->group("");
  return [o, keys, insecure, give_up_s, welcome_s, device] {
    if (Status s = CheckSecurity(o->connect, *keys, *insecure); !s.ok())
      return Fail("worker", s.message());
    o->give_up_after_ms = *give_up_s * 1000;
    o->welcome_timeout_ms = *welcome_s * 1000;
    o->stop = &g_stop;
    // SIGINT/SIGTERM mid-trial: leave now rather than after the trial (exit 0).
    o->on_stop_busy = [] {
      std::fflush(stderr);
      std::_Exit(kExitOk);
    };
    o->device_given = !device->empty();
    auto chosen = o->device_given ? ChooseDevice(*device, "") : Result<Device>(DefaultDevice());
    if (!chosen.ok())
      return Fail("worker", "--device " + *device + ": " + chosen.status().message());
    o->device = chosen.value();
    if (!keys->empty()) {
      auto k = security::LoadClientKeys(*keys);
      if (!k.ok()) return Fail("worker", k.status().message());
      o->curve = std::make_shared<security::ClientKeys>(std::move(k).value());
    }
    zmq::context_t context;
    const MaskerRegistry registry = MaskerRegistry::WithBuiltins();
    CatchStopSignals();
    auto stats = RunWorker(context, registry, *o);
    if (!stats.ok()) {
      std::fprintf(stderr, "masktune worker: %s\n", stats.status().message().c_str());
      return kExitFailure;
    }
    if (!stats->refused.empty())
      return Fail("worker", "--device " + o->device.ToString() + ": " + stats->refused);
    return kExitOk;
  };
}

Action AddResumeCommand(CLI::App& app) {
  auto o = std::make_shared<RunOptions>();
  auto study = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand(
      "resume",
      "Continue an interrupted study from its database: finished trials are kept,\n"
      "running ones requeued, and the rest run as planned.");
  cmd->add_option("STUDY", *study, "the study's name")->required();
  cmd->add_option("--db", o->db, "SQLite database")->required();
  cmd->add_option("--workers", o->workers, "local workers")->check(CLI::PositiveNumber);
  cmd->add_option("--heartbeat-ms", o->heartbeat_ms, "heartbeat interval")
      ->check(CLI::Range(10, 60000));
  cmd->add_option("--device", o->device, std::string(kDeviceHelp) + " (default cpu)");
  cmd->footer(kRunFooter);
  return [o, study] {
    if (!std::ifstream(o->db)) return Fail("resume", o->db + ": no such database");
    auto store = storage::Store::Open(o->db);
    auto storage_error = [&](const Status& s) {
      std::fprintf(stderr, "masktune resume: %s\n", s.message().c_str());
      return kExitFailure;
    };
    if (!store.ok()) return storage_error(store.status());
    auto row = store->FindStudy(*study);
    if (!row.ok()) return storage_error(row.status());
    if (!row.value()) return Fail("resume", "no study '" + *study + "' in " + o->db);
    const std::string path = row.value()->sweep_path, text = row.value()->sweep_text;
    o->max_trials =
        std::numeric_limits<int64_t>::max();  // its plan was accepted when it was created
    return RunStudy("resume", path, text, *o);
  };
}

}  // namespace masktune::cli
