// File: configs/sweep.h
//
// The sweep file: one YAML document that names a study, where its results
// go, the benchmark a trial runs, the objective, the search algorithm, and
// the masker stacks to tune with a search space per field (../shared/
// DESIGN.md, "Sweep file"). Parsing validates everything against the masker
// schemas before anything is created: side files (masker path fields,
// benchmark.model) must exist and parse, and the plan must stay under a trial
// cap. Every error reads `FILE:LINE:COLUMN: message` and names the field, what
// was expected and what was found; all of a file's errors are reported, one
// per line, in file order. Relative paths resolve against the sweep file's
// folder and are stored absolute, so a study resumes from any folder.
// Thread-safety: plain values.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "engine/masker.h"
#include "engine/registry.h"
#include "engine/status.h"

namespace masktune::configs {

struct Location {
  std::string file;
  int line = 0, column = 0;      // 1-based
  std::string ToString() const;  // "sweep.yaml:12:5"
};

// A field's value in the sweep: a constant or a search space (Ray Tune's vocabulary).
struct ParamSpace {
  enum class Kind { kConstant, kGridSearch, kChoice, kUniform, kLogUniform, kRandInt, kQUniform };
  Kind kind = Kind::kConstant;
  std::vector<FieldValue> values;  // kConstant: one; kGridSearch, kChoice: the options
  double lo = 0, hi = 0, q = 0;    // kUniform, kLogUniform, kQUniform: [lo, hi]; kRandInt: [lo, hi)
  Location where;

  bool searched() const { return kind != Kind::kConstant; }
  std::string ToString() const;  // "grid_search [4, 8]", "uniform [0.01, 0.2]", "128"
};

const char* SpaceName(ParamSpace::Kind kind);

struct MaskerEntry {
  std::string type;
  std::map<std::string, ParamSpace> fields;  // every field of the schema after defaults
  Location where;
};

struct StackSpec {
  std::string name;
  std::vector<MaskerEntry> maskers;  // empty (`name: []`): dense attention, a baseline
  Location where;
};

struct SyntheticSpec {
  int64_t keys = 4096, heads = 8, kv_heads = 2, head_dim = 64, queries = 1, samples = 8;
  int64_t seed = 0;
};

// ruler_niah: a Llama-family GGUF model on RULER needle-in-a-haystack tasks.
struct RulerSpec {
  std::string model;  // empty: the default model (models/SmolLM2-135M-Instruct.Q4_1.gguf)
  std::vector<std::string> tasks = {"niah_single_1"};
  int64_t context_tokens = 2048, samples = 4, seed = 0, max_new_tokens = 32;
  std::string setup = "B";            // A: whole prompt dense; B: context dense, question sparse
  std::vector<int64_t> dense_layers;  // layers that always attend densely
  std::string prefill_cache;          // folder for dense prefills (safetensors); empty: memory only
};

struct BenchmarkSpec {
  std::string name;       // attention_error | ruler_niah | noop
  bool synthetic = true;  // attention_error: generated inputs, else `folder`
  SyntheticSpec data;
  std::string folder;    // safetensors files with q, k, v (one per layer or sample)
  int64_t sleep_ms = 0;  // noop, per step
  int64_t steps = 1;     // noop: steps reported per trial
  RulerSpec ruler;       // ruler_niah

  // The spec workers build the benchmark from (engine/benchmarks/benchmark.h).
  nlohmann::json ToJson() const;
  // One line for `masktune validate`.
  std::string Describe() const;
};

struct ObjectiveSpec {
  // "default", "sparsity_5" .. "sparsity_25", or metrics with modes.
  std::string name;
  std::vector<std::pair<std::string, bool>> metrics;  // (metric, minimise?)
  bool multi() const { return metrics.size() > 1; }
};

// An early-stopping scheduler (search/scheduler.h), in Ray Tune's vocabulary.
// Time is the benchmark's samples (BenchmarkSteps); the metric and mode are
// the objective's (a Pareto objective is refused).
struct SchedulerSpec {
  std::string type;   // "" (none) | asha | hyperband | median
  int64_t max_t = 0;  // 0: the benchmark's sample count
  int64_t grace_period = 1;
  int64_t reduction_factor = 4;      // asha, hyperband
  int64_t brackets = 0;              // asha, hyperband; 0: asha 1, hyperband all
  int64_t min_samples_required = 3;  // median
  Location where, max_t_at, grace_at, brackets_at;
  bool enabled() const { return !type.empty(); }
};

struct SearchSpec {
  std::string algorithm = "random";  // grid | random | tpe
  int64_t num_samples = 1;
  int64_t seed = 0;
  int64_t max_concurrent_trials = 0;  // 0: as many as workers take
  int64_t n_startup_trials = 10;      // tpe
  int64_t max_failures = 3;
  SchedulerSpec scheduler;
};

// What one trial takes of a worker, as Ray Tune's resources_per_trial: a
// worker announces its GPUs and cores (READY) and gets a trial only when it
// has them (a worker drives at most one GPU: DESIGN.md, "Multi-GPU nodes").
struct ResourcesSpec {
  double gpus_per_trial = 0.0;  // 0..1
  int64_t cpus_per_trial = 1;
  Location gpus_at, cpus_at;  // where the file set them; line 0: not set
  // Trials a worker with `gpus` GPUs and `cores` cores could run at once (0:
  // none fits); cores 0 means not announced and does not limit.
  int64_t SlotsOn(int64_t gpus, int64_t cores) const;
  // Why such a worker gets no trial ("" when one fits).
  std::string Misfit(int64_t gpus, int64_t cores) const;
  // Trials such a worker runs at once: SlotsOn when the file asks for
  // resources (gpus_per_trial > 0 or cpus_per_trial written), else 1, the
  // whole worker per trial (masktune's trials are multi-threaded, unlike Ray
  // Tune's default of one core each); 0 when none fits; at most
  // protocol::kMaxSlots, and 1 when the worker announced no cores.
  int64_t Concurrency(int64_t gpus, int64_t cores) const;
  // OpenMP threads per trial on such a worker: cpus_per_trial when written,
  // else its cores shared among Concurrency()'s trials (0: not announced,
  // the OpenMP default).
  int64_t ThreadsPerTrial(int64_t gpus, int64_t cores) const;
  // How long queued trials wait while workers are connected but none fits,
  // before they fail naming the resources and the workers seen.
  int64_t no_fit_timeout_s = 600;
  Location no_fit_at;
};

struct SweepConfig {
  std::string path;  // the file it was read from, absolute
  std::string study;
  std::string storage =
      "masktune.db";  // written relative to the sweep file's folder; held absolute
  BenchmarkSpec benchmark;
  ObjectiveSpec objective;
  SearchSpec search;
  std::vector<StackSpec> stacks;  // in file order
  ResourcesSpec resources;
  int64_t workers = 0;  // 0: the core count
};

// Plans of more trials than this (every stack together) are refused unless
// the caller raises the cap (`--max-trials N`).
inline constexpr int64_t kDefaultMaxTrials = 1000000;

struct ParseOptions {
  // The most trials the plan may hold, every stack together (CheckTrialCap).
  int64_t max_trials = kDefaultMaxTrials;
  // Side files are checked at parse time: masker path fields (exists, a
  // regular readable file, and a cheap parse: a JSON object for
  // sorted_channel_file, a consistent safetensors header for hat_weight_file
  // and projections_file), benchmark.model (GGUF magic), benchmark.data.folder.
  // Off only for re-reading a stored study's sweep to query its results.
  bool check_files = true;
};

// Parses and validates `text` as read from `path` (used in messages; its
// folder, made absolute, resolves relative paths). Every error found is
// returned, one `FILE:LINE:COLUMN: message` per line in file order (at most
// 100, then a line saying how many more).
Result<SweepConfig> ParseSweep(const std::string& text, const std::string& path,
                               const MaskerRegistry& registry, const ParseOptions& options = {});
// Reads the file, then ParseSweep.
Result<SweepConfig> LoadSweep(const std::string& path, const MaskerRegistry& registry,
                              const ParseOptions& options = {});

// Trials the search plans for `stack`: the grid_search sizes crossed, times
// num_samples (tpe: num_samples). A stack that searches nothing (a dense
// baseline `name: []`, or constants only) runs one trial under every
// algorithm: more would repeat the same measurement. Saturates at INT64_MAX;
// `exact`, when given, receives the exact count in decimal.
int64_t StackTrials(const StackSpec& stack, const SearchSpec& search, std::string* exact = nullptr);

// OK when the plan's trials, every stack together, are at most `max_trials`;
// else `FILE:LINE:COLUMN: ...` at the largest stack, naming the count, the
// stacks' counts and the --max-trials flag. ParseSweep applies it.
Status CheckTrialCap(const SweepConfig& sweep, int64_t max_trials);

// The parts of a sweep that define its plan, as canonical JSON text (sorted
// keys): the benchmark spec (without prefill_cache), the objective, the
// search (algorithm, num_samples, seed, n_startup_trials) and the stacks in
// file order with every masker field's value or space (paths absolute). Equal
// texts plan the same trials; study, storage, resources, workers,
// max_concurrent_trials and max_failures do not change it.
std::string PlanFingerprintText(const SweepConfig& sweep);

// The steps a trial of `b` reports (schedulers' time): attention_error's
// samples (synthetic count, or the folder's .safetensors files; 0 when the
// folder cannot be read), ruler_niah's tasks x samples, noop's steps.
int64_t BenchmarkSteps(const BenchmarkSpec& b);

// Objective names the reference defines.
bool IsReferenceObjective(const std::string& name);

}  // namespace masktune::configs
