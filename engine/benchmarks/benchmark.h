// File: engine/benchmarks/benchmark.h
//
// What a trial runs: a benchmark takes a masker stack and reports metrics.
// A benchmark is created once per worker from its JSON spec and reused for
// every trial, so that work shared by all trials (inputs, dense outputs) is
// done once. Specs:
//   {"name": "attention_error", "synthetic": {"keys": .., "heads": .., "kv_heads": ..,
//        "head_dim": .., "queries": .., "samples": .., "seed": ..}}
//   {"name": "attention_error", "folder": "/path"}   (safetensors files with q, k, v)
//   {"name": "noop", "sleep_ms": N, "steps": N}   (sleeps sleep_ms per step)
// Thread-safety: Run may be called from one thread at a time.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/device.h"
#include "engine/masker.h"
#include "engine/registry.h"
#include "engine/status.h"

namespace masktune {

using Metrics = std::map<std::string, double>;  // "density", "error", ...

// Per-sample reports for early stopping (search/scheduler.h): called after
// step `step` of Steps() with the metrics of the samples so far; false stops
// the run there.
using StepCallback = std::function<bool(int64_t step, const Metrics& so_far)>;

class Benchmark {
 public:
  virtual ~Benchmark() = default;
  // Runs the stack built from `configs`; fails on a bad side input.
  virtual Result<Metrics> Run(const MaskerRegistry& registry,
                              const std::vector<MaskerConfig>& configs) = 0;
  // The samples a run reports one by one (attention_error: its samples;
  // ruler_niah: tasks x samples, the tasks interleaved; noop: its steps).
  virtual int64_t Steps() const { return 1; }
  // Run, calling `on_step` after each sample; when it answers false the run
  // stops and returns the metrics of the samples so far. Without per-sample
  // reports: Run, then one call.
  virtual Result<Metrics> RunSteps(const MaskerRegistry& registry,
                                   const std::vector<MaskerConfig>& configs,
                                   const StepCallback& on_step) {
    MT_ASSIGN_OR_RETURN(Metrics m, Run(registry, configs));
    if (on_step) (void)on_step(1, m);
    return m;
  }
};

// Built for `device` (engine/device.h), which every benchmark honours or
// refuses (CheckBenchmarkDevice): a spec's own "device" field is ignored.
Result<std::unique_ptr<Benchmark>> CreateBenchmark(const nlohmann::json& spec,
                                                   const Device& device = Device::Cpu());
// OK when benchmark `name` can run on `device`; else an error naming the
// benchmark ("ruler_niah: runs on the CPU only; --device cuda is not supported
// yet ..."). Says nothing of whether the device is present (Activate does).
Status CheckBenchmarkDevice(const std::string& name, const Device& device);

// {"name": "ruler_niah", "model": FILE.gguf ("" = default), "tasks": [..],
//  "context_tokens": N, "samples": N, "seed": N, "setup": "A"|"B",
//  "max_new_tokens": N, "dense_layers": [..]} (engine/benchmarks/ruler_niah.cpp).
// Metrics: accuracy, error (1 - accuracy), density, tokens_per_second, and
// per task "<task>.accuracy", "<task>.density", "<task>.tokens_per_second".
// `progress`, when given, hears of each sample: once when its dense prefix
// is ready ("prefill", i of n) and once per Run when it is scored ("sample",
// i of n, with the task and whether the answer was right).
struct RulerProgress {
  std::string phase, task;
  int64_t index = 0, total = 0;  // 1-based
  bool correct = false;          // "sample" only
};
Result<std::unique_ptr<Benchmark>> CreateRulerNiahBenchmark(
    const nlohmann::json& spec, std::function<void(const RulerProgress&)> progress = {});

}  // namespace masktune
