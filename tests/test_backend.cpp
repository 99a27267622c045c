// The device, chosen once (engine/device.h) and honoured or refused by every
// benchmark and command; the backend interface (engine/backend.h).
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <thread>
#include <zmq.hpp>

#include "configs/sweep.h"
#include "engine/attention.h"
#include "engine/backend.h"
#include "engine/benchmarks/benchmark.h"
#include "engine/cuda/cuda_attention.h"
#include "engine/device.h"
#include "tests/helpers.h"
#include "tests/process_helpers.h"
#include "worker/worker.h"

namespace masktune {
namespace {

using namespace masktune::testing;

constexpr const char* kRulerRefusal =
    "ruler_niah: runs on the CPU only; --device cuda is not supported yet";

std::string GoldenFile(const std::string& name) {
  const char* env = std::getenv("MASKTUNE_GOLDEN_DIR");
  return std::string(env ? env : MASKTUNE_GOLDEN_DIR) + "/" + name;
}

// A ruler_niah sweep whose model passes the sweep's check (the GGUF magic);
// nothing here ever loads it.
std::string RulerSweep(const TempDir& dir, const std::string& study) {
  std::ofstream(dir / "model.gguf") << "GGUF-not-really-a-model";
  std::ofstream(dir / "r.yaml") << "study: " << study
                                << "\nbenchmark: {name: ruler_niah, model: " << dir / "model.gguf"
                                << ", samples: 1}\nattention: {a: [causal]}\nstorage: "
                                << dir / "r.db"
                                << "\n";
  return dir / "r.yaml";
}

TEST_CASE("device: cpu, cuda and cuda:N parse; anything else is an error quoting it") {
  CHECK(Device::Parse("cpu").value() == Device::Cpu());
  CHECK(Device::Parse("cuda").value() == Device::Cuda(0));
  CHECK(Device::Parse("cuda:3").value() == Device::Cuda(3));
  CHECK(Device::Parse("cuda:3").value().ToString() == "cuda:3");
  CHECK(Device::Parse("cpu").value().ToString() == "cpu");
  for (const char* bad :
       {"", "gpu", "cuda:", "cuda:x", "cuda:-1", "cuda:1024", "CUDA", "cuda:1 "}) {
    CAPTURE(bad);
    auto d = Device::Parse(bad);
    REQUIRE(!d.ok());
    CHECK(d.status().message() == "device '" + std::string(bad) +
                                      "': expected cpu, cuda or cuda:N (N a GPU index, 0..1023)");
  }
  CHECK(Activate(Device::Cpu()).ok());
#ifndef MASKTUNE_HAVE_CUDA
  CHECK(Activate(Device::Cuda(0)).message() ==
        "masktune was built without CUDA (cmake -DMASKTUNE_CUDA=ON)");
#endif
}

TEST_CASE("device: every benchmark honours the device or refuses it, naming itself") {
  CHECK(CheckBenchmarkDevice("ruler_niah", Device::Cpu()).ok());
  CHECK(CheckBenchmarkDevice("attention_error", Device::Cuda(0)).ok());
  CHECK(CheckBenchmarkDevice("noop", Device::Cuda(1)).ok());
  const Status ruler = CheckBenchmarkDevice("ruler_niah", Device::Cuda(0));
  REQUIRE(!ruler.ok());
  CHECK(ruler.message().rfind(kRulerRefusal, 0) == 0);
  // Refused before anything is loaded: the model does not exist.
  auto created =
      CreateBenchmark({{"name", "ruler_niah"}, {"model", "/nonexistent/m.gguf"}}, Device::Cuda(0));
  REQUIRE(!created.ok());
  CHECK(created.status().message().rfind(kRulerRefusal, 0) == 0);
  // The spec's own "device" field no longer chooses anything.
  auto noop = CreateBenchmark({{"name", "noop"}, {"device", "cuda"}}, Device::Cpu());
  CHECK(noop.ok());
  if (!cuda::Available()) {
    auto ae = CreateBenchmark({{"name", "attention_error"},
                               {"synthetic",
                                {{"keys", 64},
                                 {"heads", 1},
                                 {"kv_heads", 1},
                                 {"head_dim", 8},
                                 {"queries", 1},
                                 {"samples", 1}}}},
                              Device::Cuda(0));
    REQUIRE(!ae.ok());
    CHECK(ae.status().message() == "attention_error: device cuda:0: no CUDA device on this worker");
  }
}

TEST_CASE("device: attend --device takes cuda:N; without CUDA it is refused with exit 2") {
  const std::string input = " --input " + GoldenFile("oracle_topk_s0.safetensors");
  CheckBadInput(Masktune("attend" + input + " --device gpu"),
                "masktune attend: --device: device 'gpu': expected cpu, cuda or cuda:N");
  const Run cpu = Masktune("attend" + input + " --device cpu");
  CHECK(cpu.code == 0);
  CHECK(cpu.output.find("\"device\":\"cpu\"") != std::string::npos);
  if (!cuda::Available()) {
#ifndef MASKTUNE_HAVE_CUDA
    CheckBadInput(Masktune("attend" + input + " --device cuda:1"),
                  "masktune attend: --device cuda:1: masktune was built without CUDA");
#else
    CheckBadInput(Masktune("attend" + input + " --device cuda:1"),
                  "masktune attend: --device cuda:1: no CUDA device 1");
#endif
  }
}

TEST_CASE("device: run --device cuda refuses ruler_niah (exit 2) before touching the database") {
  TempDir dir;
  const std::string sweep = RulerSweep(dir, "ruler_on_cuda");
  const Run r = Masktune("run " + sweep + " --device cuda --workers 1", "", 60);
  CheckBadInput(r, std::string("masktune run: --device cuda: ") + kRulerRefusal);
  CHECK(!std::filesystem::exists(dir / "r.db"));
  CheckBadInput(Masktune("run " + sweep + " --device tpu", "", 60),
                "masktune run: --device tpu: device 'tpu': expected cpu, cuda or cuda:N");
}

TEST_CASE("device: run --device reaches the local workers; cuda without CUDA is exit 2") {
  TempDir dir;
  std::ofstream(dir / "n.yaml") << "study: noop_device\nbenchmark: {name: noop}\n"
                                << "attention: {a: [causal]}\nstorage: " << dir / "n.db"
                                << "\n";
  const Run cpu = Masktune("run " + dir / "n.yaml" + " --device cpu --workers 1", "", 60);
  CAPTURE(cpu.output);
  CHECK(cpu.code == 0);
  if (!cuda::Available()) {
    const Run gpu = Masktune("run " + dir / "n.yaml" + " --device cuda --workers 1", "", 60);
#ifndef MASKTUNE_HAVE_CUDA
    CheckBadInput(gpu, "masktune run: --device cuda: masktune was built without CUDA");
#else
    CheckBadInput(gpu, "masktune run: --device cuda: no CUDA device 0");
#endif
    CheckBadInput(Masktune("worker --connect tcp://127.0.0.1:1 --insecure --device cuda", "", 30),
                  "masktune worker: --device cuda: ");
  }
}

// A coordinator process for the sweep file `yaml` on a free tcp port
// (plain, 50 ms heartbeats), logging to dir/coordinator.log; db "": the
// file's storage.
struct Served {
  pid_t pid;
  std::string endpoint;
};
Served SpawnCoordinator(const TempDir& dir, const std::string& yaml, const std::string& db = "") {
  const std::string endpoint = "tcp://127.0.0.1:" + std::to_string(FreePort());
  std::vector<std::string> args = {MASKTUNE_BINARY, "coordinator",    yaml, "--bind", endpoint,
                                   "--insecure",    "--heartbeat-ms", "50"};
  if (!db.empty()) args.insert(args.end(), {"--db", db});
  return {Spawn(args, dir / "coordinator.log"), endpoint};
}

// An in-process worker on the device `device` (not activated: nothing here
// needs a GPU), `given` as if by --device; its log lines into `lines`.
Result<WorkerStats> RunDeviceWorker(const std::string& endpoint, const std::string& name,
                                    const Device& device, bool given,
                                    std::vector<std::string>& lines) {
  zmq::context_t context;
  const MaskerRegistry registry = MaskerRegistry::WithBuiltins();
  WorkerOptions o;
  o.connect = endpoint;
  o.name = name;
  o.heartbeat_interval_ms = 50;
  o.give_up_after_ms = 20000;
  o.device = device;
  o.device_given = given;
  o.log = [&](const std::string& l) { lines.push_back(l); };
  return RunWorker(context, registry, o);
}

// A CPU worker process named `name`, with `extra` arguments.
pid_t SpawnWorker(const std::string& endpoint, const std::string& name,
                  std::vector<std::string> extra = {}) {
  std::vector<std::string> args = {
      MASKTUNE_BINARY, "worker",         "--connect", endpoint,   "--name", name,
      "--insecure",    "--heartbeat-ms", "50",        "--device", "cpu"};
  args.insert(args.end(), extra.begin(), extra.end());
  return Spawn(args);
}

// A worker whose --device the study's benchmark cannot use leaves at
// WELCOME, before any trial, saying why; with a defaulted device it runs the
// benchmark on the CPU instead.
TEST_CASE("device: a worker given --device cuda leaves a ruler_niah study at WELCOME") {
  TempDir dir;
  const std::string sweep = RulerSweep(dir, "ruler_worker");
  const auto [coordinator, endpoint] = SpawnCoordinator(dir, sweep);
  std::vector<std::string> lines;
  // Not activated: the refusal needs no GPU.
  auto stats = RunDeviceWorker(endpoint, "gpu-worker", Device::Cuda(0), true, lines);
  kill(coordinator, SIGTERM);
  waitpid(coordinator, nullptr, 0);
  REQUIRE(stats.ok());
  CHECK(stats->trials == 0);
  CHECK(stats->refused.rfind(kRulerRefusal, 0) == 0);
  // No trial was taken, so none ran anywhere: every trial is still queued.
  for (const auto& row : AllTrials(dir / "r.db", "ruler_worker")) CHECK(row.status == "queued");
}

// q, k, v of one decode-shaped call (2 kv heads of 2 query heads each).
struct Inputs {
  Tensor q = RandomTensor({1, 4, 3, 16}, 1), k = RandomTensor({1, 2, 200, 16}, 2),
         v = RandomTensor({1, 2, 200, 16}, 3);
  AttentionInputs in() const {
    AttentionInputs a;
    a.queries = &q;
    a.keys = &k;
    a.values = &v;
    a.scaling = 0.25f;
    return a;
  }
};

Result<MaskerStack> Stack(const MaskerRegistry& registry) {
  MT_ASSIGN_OR_RETURN(auto configs, registry.ParseJsonList(
                                        R"([{"type": "sink", "sink_size": 4},
                                            {"type": "local", "window_size": 16},
                                            {"type": "oracle_top_k", "heavy_size": 0.1}])",
                                        ""));
  return MaskerStack::Build(registry, configs);
}

// Without --device (cuda by default on a GPU node), a CPU-only benchmark
// runs on the CPU, and the worker says so.
TEST_CASE("device: a worker whose device was defaulted runs a ruler_niah study on the CPU") {
  TempDir dir;
  const std::string sweep = RulerSweep(dir, "ruler_default");
  std::ofstream(sweep, std::ios::app) << "search: {max_failures: 1}\n";
  const auto [coordinator, endpoint] = SpawnCoordinator(dir, sweep);
  std::vector<std::string> lines;
  // What DefaultDevice() gives on a GPU node.
  auto stats = RunDeviceWorker(endpoint, "default-worker", Device::Cuda(0), false, lines);
  CHECK(WaitExit(coordinator, 30) == 1);  // its one trial failed
  REQUIRE(stats.ok());
  CHECK(stats->refused.empty());
  CHECK(stats->done);
  CHECK(std::find(lines.begin(), lines.end(),
                  "no --device given: ruler_niah: runs on the CPU only, so its trials run on "
                  "the CPU") != lines.end());
  // It ran on the CPU: the trial got as far as loading the (fake) model.
  const auto rows = AllTrials(dir / "r.db", "ruler_default");
  REQUIRE(rows.size() == 1);
  CHECK(rows[0].status == "failed");
  CHECK(rows[0].error.find("model.gguf") != std::string::npos);
}

TEST_CASE("backend: the CPU backend computes what the CPU engine computes, bit for bit") {
  const Inputs x;
  const MaskerRegistry registry = MaskerRegistry::WithBuiltins();
  auto stack = Stack(registry);
  REQUIRE(stack.ok());
  auto backend = CreateBackend(Device::Cpu());
  REQUIRE(backend.ok());
  CHECK((*backend)->device() == Device::Cpu());
  auto resident = (*backend)->Upload(x.in());
  REQUIRE(resident.ok());
  StackState a, b;
  auto mask = (*backend)->BuildMask(stack.value(), **resident, a);
  auto direct = stack->ComputeMask(x.in(), b);
  REQUIRE(mask.ok());
  REQUIRE(direct.ok());
  CHECK(mask->AttendedDensity() == direct->AttendedDensity());
  CHECK(mask->AttendedDensity() < 0.5);
  CHECK(MaxAbsDiff(mask->ToDense(), direct->ToDense()) == 0.0f);
  auto masked = (*backend)->MaskedAttention(**resident, mask.value());
  REQUIRE(masked.ok());
  CHECK(MaxAbsDiff(masked.value(), MaskedAttention(x.in(), direct.value())) == 0.0f);
  auto dense = (*backend)->DenseAttention(**resident);
  REQUIRE(dense.ok());
  CHECK(MaxAbsDiff(dense.value(), DenseAttention(x.in())) == 0.0f);
  CHECK(RelativeL2Error(masked.value(), dense.value()) > 0.0);
  // A mask of another shape is an error, not a read out of bounds.
  const Inputs y;
  AttentionInputs other = y.in();
  other.used_keys = 100;
  StackState c;
  auto small = stack->ComputeMask(other, c);
  REQUIRE(small.ok());
  CHECK(!(*backend)->MaskedAttention(**resident, small.value()).ok());
  // Inputs that fail CheckAttentionInputs are refused at upload.
  AttentionInputs bad = x.in();
  bad.values = &x.q;
  CHECK(!(*backend)->Upload(bad).ok());
}

TEST_CASE("backend: the CUDA backend exists only where a GPU is; else the error names the device") {
  auto backend = CreateBackend(Device::Cuda(0));
  if (!cuda::Available()) {
    REQUIRE(!backend.ok());
#ifndef MASKTUNE_HAVE_CUDA
    CHECK(backend.status().message() == "device cuda:0: masktune was built without CUDA");
#else
    CHECK(backend.status().message() == "device cuda:0: no CUDA device");
#endif
  }
}

// On a GPU (scripts/gpu_check.sh runs '*device*'): the same mask through
// both backends gives the same outputs to float rounding.
TEST_CASE("device: the CUDA backend matches the CPU backend" * doctest::skip(!cuda::Available())) {
  const Inputs x;
  const MaskerRegistry registry = MaskerRegistry::WithBuiltins();
  auto stack = Stack(registry);
  REQUIRE(stack.ok());
  auto cpu = CreateBackend(Device::Cpu());
  auto gpu = CreateBackend(Device::Cuda(0));
  REQUIRE(cpu.ok());
  REQUIRE(gpu.ok());
  auto rc = (*cpu)->Upload(x.in());
  auto rg = (*gpu)->Upload(x.in());
  REQUIRE(rc.ok());
  REQUIRE(rg.ok());
  StackState s;
  auto mask = (*cpu)->BuildMask(stack.value(), **rc, s);
  REQUIRE(mask.ok());
  for (int repeat = 0; repeat < 2; ++repeat) {  // the resident inputs serve many calls
    auto mc = (*cpu)->MaskedAttention(**rc, mask.value());
    auto mg = (*gpu)->MaskedAttention(**rg, mask.value());
    REQUIRE(mc.ok());
    REQUIRE(mg.ok());
    CHECK(MaxAbsDiff(mc.value(), mg.value()) < 1e-4f);
    auto dc = (*cpu)->DenseAttention(**rc);
    auto dg = (*gpu)->DenseAttention(**rg);
    REQUIRE(dc.ok());
    REQUIRE(dg.ok());
    CHECK(MaxAbsDiff(dc.value(), dg.value()) < 1e-4f);
  }
}

TEST_CASE("resources: slots per worker as Ray Tune counts them") {
  configs::ResourcesSpec r;
  r.gpus_per_trial = 0.25;
  r.cpus_per_trial = 1;
  CHECK(r.SlotsOn(1, 8) == 4);  // four per GPU at 0.25
  CHECK(r.SlotsOn(1, 2) == 2);  // never more than its cores
  CHECK(r.SlotsOn(1, 0) == 4);  // cores not announced: no limit from them
  CHECK(r.SlotsOn(0, 64) == 0);
  CHECK(r.Misfit(1, 2).empty());
  CHECK(r.Misfit(0, 64) ==
        "a trial asks for 0.25 GPU and 1 cores (resources), and the worker has 0 GPU and 64 "
        "cores");
  r.gpus_per_trial = 1.0 / 3;
  CHECK(r.SlotsOn(1, 8) == 3);
  r.gpus_per_trial = 0;
  r.cpus_per_trial = 4;
  CHECK(r.SlotsOn(0, 8) == 2);
  CHECK(r.SlotsOn(0, 2) == 0);
}

TEST_CASE("resources: trials at once per worker and threads per trial") {
  configs::ResourcesSpec r;  // none asked for: the whole worker per trial
  CHECK(r.Concurrency(0, 16) == 1);
  CHECK(r.ThreadsPerTrial(0, 16) == 16);
  CHECK(r.ThreadsPerTrial(0, 0) == 0);  // cores not announced: the OpenMP default
  r.gpus_per_trial = 0.25;              // cpus_per_trial not written
  CHECK(r.Concurrency(1, 16) == 4);
  CHECK(r.ThreadsPerTrial(1, 16) == 4);  // the cores shared among the four
  CHECK(r.Concurrency(1, 2) == 2);       // never more than its cores
  CHECK(r.ThreadsPerTrial(1, 2) == 1);
  CHECK(r.Concurrency(0, 16) == 0);  // no GPU: none fits
  CHECK(r.Concurrency(1, 0) == 1);   // cores not announced: one at a time
  r.gpus_per_trial = 0;
  r.cpus_per_trial = 2;
  r.cpus_at.line = 3;  // written in the file
  CHECK(r.Concurrency(0, 8) == 4);
  CHECK(r.ThreadsPerTrial(0, 8) == 2);
  CHECK(r.Concurrency(0, 1) == 0);
  r.cpus_per_trial = 1;
  CHECK(r.Concurrency(0, 100000) == 1024);  // protocol::kMaxSlots
}

TEST_CASE("resources: more than any worker has is refused at validate and run (FILE:LINE:COL)") {
  TempDir dir;
  std::ofstream(dir / "two.yaml") << "study: two\nbenchmark: {name: noop}\n"
                                  << "resources: {gpus_per_trial: 2}\nattention: {a: [causal]}\n";
  CheckBadInput(Masktune("validate " + dir / "two.yaml"),
                dir / "two.yaml" +
                    ":3:29: resources.gpus_per_trial: 2 GPUs per trial, more than any worker "
                    "has: each worker drives one GPU");
  // `run`'s local workers are known: --device cpu ones have no GPU.
  std::ofstream(dir / "q.yaml") << "study: quarter\nbenchmark: {name: noop}\n"
                                << "resources: {gpus_per_trial: 0.25}\nattention: {a: [causal]}\n"
                                << "storage: " << dir / "q.db"
                                << "\n";
  CheckBadInput(Masktune("run " + dir / "q.yaml" + " --device cpu --workers 1", "", 60),
                dir / "q.yaml" + ":3:29: resources: a trial asks for 0.25 GPU and 1 cores");
  CHECK(!std::filesystem::exists(dir / "q.db"));
  std::ofstream(dir / "c.yaml") << "study: cores\nbenchmark: {name: noop}\n"
                                << "resources: {cpus_per_trial: 1024}\nattention: {a: [causal]}\n"
                                << "storage: " << dir / "c.db"
                                << "\n";
  CheckBadInput(Masktune("run " + dir / "c.yaml" + " --workers 1", "", 60),
                dir / "c.yaml" + ":3:29: resources: a trial asks for 0 GPU and 1024 cores");
}

// Workers announce their GPUs (here through the test-only --announce-gpus):
// a trial that needs a GPU goes only to a worker that has one; the other is
// told why in the coordinator's log and still ends with the study.
TEST_CASE("resources: gpus_per_trial trials go only to workers that announce a GPU") {
  TempDir dir;
  std::ofstream(dir / "g.yaml") << "study: gpu_only\nbenchmark: {name: noop, sleep_ms: 20}\n"
                                << "resources: {gpus_per_trial: 0.5, cpus_per_trial: 1}\n"
                                << "search: {algorithm: random, num_samples: 12}\n"
                                << "attention: {a: [{sink: {sink_size: {randint: [1, 64]}}}]}\n";
  const std::string db = dir / "g.db";
  const auto [coordinator, endpoint] = SpawnCoordinator(dir, dir / "g.yaml", db);
  const pid_t cpu = SpawnWorker(endpoint, "cpu-only");
  // The GPU worker joins once the coordinator has turned the other away (it
  // would otherwise finish the study before the CPU worker got in).
  const std::string refused =
      "worker cpu-only gets no trials: a trial asks for 0.5 GPU and 1 cores (resources), and the "
      "worker has 0 GPU";
  for (int i = 0; i < 1000 && Slurp(dir / "coordinator.log").find(refused) == std::string::npos;
       ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  const pid_t gpu = SpawnWorker(endpoint, "one-gpu", {"--announce-gpus", "1"});
  CHECK(WaitExit(coordinator, 60) == 0);
  CHECK(WaitExit(gpu, 20) == 0);
  CHECK(WaitExit(cpu, 20) == 0);  // told the study is over, though it ran nothing
  const auto rows = AllTrials(db, "gpu_only");
  CHECK(rows.size() == 12);
  for (const auto& r : rows) {
    CHECK(r.status == "done");
    CHECK(r.worker == "one-gpu");
  }
  CHECK(Slurp(dir / "coordinator.log").find(refused) != std::string::npos);
}

// gpus_per_trial 0.25 on a worker announcing one GPU and 8 cores: four
// trials run at once (their running intervals overlap four deep, never
// five) with 2 OpenMP threads each (noop reports them).
TEST_CASE("resources: gpus_per_trial 0.25 runs four trials at once on one GPU worker") {
  TempDir dir;
  std::ofstream(dir / "q.yaml") << "study: quarter\nbenchmark: {name: noop, sleep_ms: 300}\n"
                                << "resources: {gpus_per_trial: 0.25}\n"
                                << "search: {algorithm: random, num_samples: 8}\n"
                                << "attention: {a: [{sink: {sink_size: {randint: [1, 64]}}}]}\n";
  const std::string db = dir / "q.db";
  const auto [coordinator, endpoint] = SpawnCoordinator(dir, dir / "q.yaml", db);
  const pid_t gpu = SpawnWorker(endpoint, "one-gpu", {"--announce-gpus", "1", "--cores", "8"});
  CHECK(WaitExit(coordinator, 60) == 0);
  CHECK(WaitExit(gpu, 20) == 0);
  const auto rows = AllTrials(db, "quarter");
  REQUIRE(rows.size() == 8);
  int deepest = 0;
  for (const auto& r : rows) {
    CHECK(r.status == "done");
    CHECK(r.metrics.at("omp_threads") == 2);  // 8 cores / 4 trials
    int depth = 0;                            // trials running at the moment r started
    for (const auto& o : rows) depth += o.started <= r.started && r.started < o.finished;
    deepest = std::max(deepest, depth);
  }
  CHECK(deepest == 4);
}

// A GPU sweep whose only worker has no GPU: after no_fit_timeout_s the
// queued trials fail for good, naming the resources and the worker, and the
// study ends instead of waiting forever.
TEST_CASE("resources: with no fitting worker the trials fail after no_fit_timeout_s") {
  TempDir dir;
  std::ofstream(dir / "g.yaml") << "study: nofit\nbenchmark: {name: noop}\n"
                                << "resources: {gpus_per_trial: 0.5, no_fit_timeout_s: 1}\n"
                                << "search: {algorithm: random, num_samples: 3}\n"
                                << "attention: {a: [{sink: {sink_size: {randint: [1, 64]}}}]}\n";
  const std::string db = dir / "g.db";
  const auto [coordinator, endpoint] = SpawnCoordinator(dir, dir / "g.yaml", db);
  const pid_t cpu = SpawnWorker(endpoint, "cpu-only", {"--cores", "4"});
  const int rc = WaitExit(coordinator, 60);
  CHECK(rc >= 0);  // it ended by itself
  CHECK(WaitExit(cpu, 20) == 0);
  const auto rows = AllTrials(db, "nofit");
  REQUIRE(rows.size() == 3);
  for (const auto& r : rows) {
    CHECK(r.status == "failed");
    CHECK(r.error ==
          "no worker fits the sweep's resources after 1 s (resources.no_fit_timeout_s): "
          "cpu-only: a trial asks for 0.5 GPU and 1 cores (resources), and the worker has 0 GPU "
          "and 4 cores");
  }
  CHECK(Slurp(dir / "coordinator.log").find("failing the queued trials") != std::string::npos);
}

}  // namespace
}  // namespace masktune
