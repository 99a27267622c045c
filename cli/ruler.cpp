// masktune ruler: one RULER needle-in-a-haystack evaluation of one masker
// stack on a real model (the ruler_niah benchmark a sweep runs, from the
// command line): a table per task, then one JSON line.
#include <unistd.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli/commands.h"
#include "cli/masker_list.h"
#include "engine/benchmarks/benchmark.h"
#include "engine/registry.h"

namespace masktune::cli {
namespace {

using json = nlohmann::json;

struct RulerOptions {
  std::string model, tasks = "niah_single_1", maskers = "[]", setup = "B", dense_layers,
                     prefill_cache;
  int64_t length = 4096, samples = 20, seed = 0, max_new_tokens = 32;
};

int Fail(const std::string& message) {
  std::fprintf(stderr, "masktune ruler: %s\n", message.c_str());
  return kExitBadInput;
}

std::vector<std::string> SplitCommas(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

int RunRuler(const RulerOptions& o) {
  const std::vector<std::string> tasks = SplitCommas(o.tasks);
  if (tasks.empty()) return Fail("--task: expected one or more task names, comma-separated");
  std::vector<int64_t> dense_layers;
  for (const std::string& l : SplitCommas(o.dense_layers)) {
    size_t used = 0;
    int64_t v = -1;
    try {
      v = std::stoll(l, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != l.size() || v < 0)
      return Fail("--dense-layers: expected layer numbers like 0,16, found '" + l + "'");
    dense_layers.push_back(v);
  }
  const MaskerRegistry registry = MaskerRegistry::WithBuiltins();
  auto text = MaskerListText(o.maskers);
  if (!text.ok()) return Fail(text.status().message());
  auto configs = registry.ParseJsonList(text.value(), "");
  if (!configs.ok()) return Fail("--maskers: " + configs.status().message());

  const json spec = {{"name", "ruler_niah"},
                     {"model", o.model},
                     {"tasks", tasks},
                     {"context_tokens", o.length},
                     {"samples", o.samples},
                     {"seed", o.seed},
                     {"setup", o.setup},
                     {"max_new_tokens", o.max_new_tokens},
                     {"dense_layers", dense_layers},
                     {"prefill_cache", o.prefill_cache}};
  // A progress line per sample on a terminal (stderr, so stdout stays the table and the JSON).
  const bool terminal = isatty(STDERR_FILENO);
  int64_t right = 0, scored = 0;
  auto progress = [&](const RulerProgress& p) {
    if (!terminal) return;
    if (p.phase == "sample") {
      ++scored;
      right += p.correct;
    }
    std::fprintf(
        stderr, "\r%s %lld/%lld (%s)%s\033[K", p.phase == "prefill" ? "dense prefill" : "scoring",
        static_cast<long long>(p.index), static_cast<long long>(p.total), p.task.c_str(),
        p.phase == "sample"
            ? (", " + std::to_string(right) + "/" + std::to_string(scored) + " right").c_str()
            : "");
    std::fflush(stderr);
  };
  auto benchmark = CreateRulerNiahBenchmark(spec, progress);
  if (!benchmark.ok()) return Fail(benchmark.status().message());
  auto metrics = benchmark.value()->Run(registry, configs.value());
  if (terminal) std::fprintf(stderr, "\r\033[K");
  if (!metrics.ok()) {
    std::fprintf(stderr, "masktune ruler: %s\n", metrics.status().message().c_str());
    return kExitFailure;
  }
  const Metrics& m = metrics.value();
  std::printf("%-18s %9s %9s %16s %8s\n", "task", "accuracy", "density", "decode tokens/s",
              "samples");
  json line = {{"accuracy", m.at("accuracy")},
               {"density", m.at("density")},
               {"tokens_per_s", m.at("tokens_per_second")},
               {"samples", o.samples * static_cast<int64_t>(tasks.size())},
               {"length", o.length},
               {"setup", o.setup},
               {"tasks", json::object()}};
  for (const std::string& t : tasks) {
    const double acc = m.at(t + ".accuracy"), den = m.at(t + ".density"),
                 tps = m.at(t + ".tokens_per_second");
    std::printf("%-18s %9.4f %9.4f %16.1f %8lld\n", t.c_str(), acc, den, tps,
                static_cast<long long>(o.samples));
    line["tasks"][t] = {
        {"accuracy", acc}, {"density", den}, {"tokens_per_s", tps}, {"samples", o.samples}};
  }
  if (tasks.size() > 1)
    std::printf("%-18s %9.4f %9.4f %16.1f %8lld\n", "all", m.at("accuracy"), m.at("density"),
                m.at("tokens_per_second"),
                static_cast<long long>(o.samples * static_cast<int64_t>(tasks.size())));
  std::printf("%s\n", line.dump().c_str());
  return kExitOk;
}

}  // namespace

Action AddRulerCommand(CLI::App& app) {
  auto o = std::make_shared<RulerOptions>();
  CLI::App* cmd = app.add_subcommand(
      "ruler",
      "Score one masker stack on RULER needle-in-a-haystack tasks with a real model\n"
      "(the ruler_niah benchmark of a sweep, run once).");
  cmd->add_option(
      "--model", o->model,
      "a Llama-family GGUF file (default: $MASKTUNE_MODEL, else the SmolLM2 model setup fetched)");
  cmd->add_option("--task", o->tasks,
                  "tasks, comma-separated: niah_single_1..3, niah_multikey_1..3, niah_multivalue, "
                  "niah_multiquery (default niah_single_1)");
  cmd->add_option("--length", o->length, "context tokens per sample (default 4096)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--samples", o->samples, "samples per task (default 20)")
      ->check(CLI::Range(1, 100000));
  cmd->add_option("--maskers", o->maskers,
                  "masker list as JSON or @FILE, the form attend and `export --format json` use "
                  "(default [] = dense)");
  cmd->add_option("--setup", o->setup,
                  "A: the whole prompt dense; B: the context dense, question and answer "
                  "with the stack (default B)")
      ->check(CLI::IsMember({"A", "B"}));
  cmd->add_option("--dense-layers", o->dense_layers,
                  "layers that always attend densely, e.g. 0,16");
  cmd->add_option("--seed", o->seed, "the samples' seed (default 0)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--max-new-tokens", o->max_new_tokens, "answer length cap (default 32)")
      ->check(CLI::Range(1, 4096));
  cmd->add_option("--prefill-cache", o->prefill_cache,
                  "keep dense prefills here (safetensors) across runs");
  cmd->footer(
      "Prints a table (task, accuracy, density, decode tokens/s, samples), then one JSON line:\n"
      "  {\"accuracy\", \"density\", \"tokens_per_s\", \"samples\", \"length\", \"setup\",\n"
      "   \"tasks\": {TASK: {\"accuracy\", \"density\", \"tokens_per_s\", \"samples\"}}}\n"
      "On a terminal, a progress line per sample on stderr.\n"
      "Exit codes: 0 done; 2 bad input (unknown task, a length beyond the model's context,\n"
      "a bad masker list, no model file); 1 the model failed while running.");
  return [o] { return RunRuler(*o); };
}

}  // namespace masktune::cli
