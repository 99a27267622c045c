// File: engine/benchmarks/benchmark.h
//
// What a trial runs: a benchmark takes a masker stack and reports metrics.
// A benchmark is created once per worker from its JSON spec and reused for
// every trial, so that work shared by all trials (inputs, dense outputs) is
// done once. Specs:
//   {"name": "attention_error", "synthetic": {"keys": .., "heads": .., "kv_heads": ..,
//        "head_dim": .., "queries": .., "samples": .., "seed": ..}}
//   {"name": "attention_error", "folder": "/path"}   (safetensors files with q, k, v)
//   {"name": "noop", "sleep_ms": N}
// Thread-safety: Run may be called from one thread at a time.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/masker.h"
#include "engine/registry.h"
#include "engine/status.h"

namespace masktune {

using Metrics = std::map<std::string, double>;  // "density", "error", ...

class Benchmark {
 public:
  virtual ~Benchmark() = default;
  // Runs the stack built from `configs`; fails on a bad side input.
  virtual Result<Metrics> Run(const MaskerRegistry& registry,
                              const std::vector<MaskerConfig>& configs) = 0;
};

Result<std::unique_ptr<Benchmark>> CreateBenchmark(const nlohmann::json& spec);

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
