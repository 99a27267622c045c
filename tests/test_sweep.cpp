// Sweep files: real YAML, parsed and validated against the masker schemas;
// every malformed file fails with FILE:LINE:COLUMN and the field named.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>

#include "configs/sweep.h"
#include "tests/helpers.h"

namespace masktune::configs {
namespace {

const char* kGood = R"(study: s1
storage: results.db
benchmark:
  name: attention_error
  data: {synthetic: {keys: 512, heads: 4, kv_heads: 2, head_dim: 16, samples: 2, seed: 3}}
objective: sparsity_10
search: {algorithm: random, num_samples: 4, seed: 9, max_concurrent_trials: 2}
attention:
  topk:
    - sink: {sink_size: 16}
    - local: {window_size: 0.05}
    - oracle_top_k: {heavy_size: {uniform: [0.01, 0.2]}}
  quest:
    - quest_top_k: {heavy_size: {grid_search: [32, 64]}, page_size: {randint: [8, 33]}}
    - causal
resources: {gpus_per_trial: 0.5}
)";

std::string Error(const std::string& yaml) {
  auto r = ParseSweep(yaml, "sweep.yaml", MaskerRegistry::WithBuiltins());
  return r.ok() ? "" : r.status().message();
}

TEST_CASE("a valid sweep file parses into stacks with spaces and defaults") {
  testing::TempDir dir;
  { std::ofstream(dir / "sweep.yaml") << kGood; }
  auto r = LoadSweep(dir / "sweep.yaml", MaskerRegistry::WithBuiltins());
  REQUIRE_MESSAGE(r.ok(), r.status().message());
  const SweepConfig& c = r.value();
  CHECK(c.study == "s1");
  CHECK(c.storage == dir / "results.db");  // relative to the sweep file
  CHECK(c.benchmark.name == "attention_error");
  CHECK(c.benchmark.data.keys == 512);
  CHECK(c.benchmark.data.kv_heads == 2);
  CHECK(c.objective.name == "sparsity_10");
  CHECK(c.search.num_samples == 4);
  CHECK(c.search.seed == 9);
  CHECK(c.resources.gpus_per_trial == 0.5);
  REQUIRE(c.stacks.size() == 2);
  CHECK(c.stacks[0].name == "topk");
  CHECK(c.stacks[1].name == "quest");
  const MaskerEntry& topk = c.stacks[0].maskers[2];
  CHECK(topk.type == "oracle_top_k");
  CHECK(topk.fields.at("heavy_size").kind == ParamSpace::Kind::kUniform);
  CHECK(topk.fields.at("heavy_size").lo == 0.01);
  CHECK(topk.where.line == 12);
  // Lexical sizes: 0.05 is a fraction, 16 a count.
  CHECK(std::holds_alternative<double>(c.stacks[0].maskers[1].fields.at("window_size").values[0]));
  CHECK(std::holds_alternative<int64_t>(c.stacks[0].maskers[0].fields.at("sink_size").values[0]));
  const MaskerEntry& quest = c.stacks[1].maskers[0];
  CHECK(quest.fields.at("label_bits").values[0] == FieldValue{int64_t{16}});  // the default
  CHECK(quest.fields.at("page_size").kind == ParamSpace::Kind::kRandInt);
  CHECK(c.stacks[1].maskers[1].type == "causal");
}

TEST_CASE("malformed sweep files: each error names file, line, column and field") {
  // Syntax.
  CHECK(Error("study: [s1\n").rfind("sweep.yaml:2:1: YAML syntax error", 0) == 0);
  // Missing pieces.
  CHECK(Error("storage: x.db\n") == "sweep.yaml:1:1: missing 'study' (the study's name)");
  CHECK(Error("study: s\nbenchmark: {name: noop}\n") ==
        "sweep.yaml:1:1: missing 'attention' (the masker stacks to tune)");
  CHECK(Error("") == "sweep.yaml:1:1: the sweep file is empty");
  // Unknown keys are errors, not ignored.
  CHECK(Error("study: s\nbenchmark: {name: noop}\nsearh: {}\nattention: {a: [causal]}\n") ==
        "sweep.yaml:3:1: unknown key 'searh' (expected one of: attention, benchmark, objective, "
        "resources, search, storage, study, workers)");
  const std::string head = "study: s\nbenchmark: {name: noop}\nattention:\n  a:\n";
  // Unknown masker, unknown field.
  CHECK(Error(head + "    - sinc: {sink_size: 4}\n").rfind(
            "sweep.yaml:5:7: attention.a[0]: unknown masker type 'sinc' (known: adaptive_sampling, causal,", 0) == 0);
  CHECK(Error(head + "    - sink: {size: 4}\n") ==
        "sweep.yaml:5:14: attention.a[0] (sink): unknown field 'size' (sink has: sink_size)");
  // Wrong types and out-of-range values, constant and inside spaces.
  CHECK(Error(head + "    - sink: {sink_size: many}\n") ==
        "sweep.yaml:5:25: attention.a[0] (sink): field 'sink_size': expected a size (integer "
        "count or float fraction of the keys), found \"many\"");
  CHECK(Error(head + "    - oracle_top_p: {top_p: {uniform: [0.5, 1.5]}}\n") ==
        "sweep.yaml:5:45: attention.a[0] (oracle_top_p): field 'top_p': expected a number in "
        "[0, 1], found 1.5");
  CHECK(Error(head + "    - quest_top_k: {heavy_size: 8, page_size: {grid_search: [16, 0]}}\n") ==
        "sweep.yaml:5:66: attention.a[0] (quest_top_k): field 'page_size': expected an integer "
        "> 0, found 0");
  CHECK(Error(head + "    - quest_top_k: {heavy_size: 8, page_size: {uniform: [8, 64]}}\n") ==
        "sweep.yaml:5:48: attention.a[0] (quest_top_k): field 'page_size': uniform: not a space "
        "for an integer field (use randint or grid_search)");
  CHECK(Error(head + "    - quest_top_k: {heavy_size: 8, page_size: {randint: [0, 64]}}\n") ==
        "sweep.yaml:5:58: attention.a[0] (quest_top_k): field 'page_size': expected an integer "
        "> 0, found 0");
  CHECK(Error(head + "    - oracle_top_k: {heavy_size: {normal: [0, 1]}}\n") ==
        "sweep.yaml:5:35: attention.a[0] (oracle_top_k): field 'heavy_size': unknown search "
        "space 'normal' (expected grid_search, choice, uniform, loguniform, randint or quniform)");
  CHECK(Error(head + "    - oracle_top_k: {heavy_size: [1, 2]}\n") ==
        "sweep.yaml:5:34: attention.a[0] (oracle_top_k): field 'heavy_size': a list is not a "
        "value; write grid_search: [...] or choice: [...]");
  CHECK(Error(head + "    - oracle_top_k: {heavy_size: {uniform: [0.2, 0.1]}}\n") ==
        "sweep.yaml:5:44: attention.a[0] (oracle_top_k): field 'heavy_size': uniform: lower "
        "bound must be below the upper bound");
  CHECK(Error(head + "    - quest_top_k: {page_size: 8}\n") ==
        "sweep.yaml:5:7: attention.a[0] (quest_top_k): missing required field 'heavy_size'");
  // The rest of the file.
  CHECK(Error("study: s\nbenchmark: {name: attention_error, data: {synthetic: {heads: 6, "
              "kv_heads: 4}}}\nattention: {a: [causal]}\n") ==
        "sweep.yaml:2:75: benchmark.data.synthetic.kv_heads: heads (6) must be a multiple of "
        "kv_heads (4)");
  CHECK(Error("study: s\nbenchmark: {name: noop}\nobjective: sparsity_30\nattention: {a: [causal]}\n") ==
        "sweep.yaml:3:12: objective: expected default, sparsity_5, sparsity_10, sparsity_15, "
        "sparsity_20, sparsity_25 or {metric: NAME, mode: min|max}, found 'sparsity_30'");
  CHECK(Error("study: s\nbenchmark: {name: noop}\nsearch: {num_samples: 0}\nattention: {a: [causal]}\n") ==
        "sweep.yaml:3:23: search.num_samples: expected an integer in [1, 1073741824], found 0");
  CHECK(Error("study: s\nbenchmark: {name: noop}\nsearch: {algorithm: grid}\nattention:\n  a:\n"
              "    - oracle_top_k: {heavy_size: {uniform: [0.1, 0.2]}}\n") ==
        "sweep.yaml:6:34: attention.a (oracle_top_k): field 'heavy_size': search.algorithm grid "
        "enumerates grid_search and choice only, found uniform (use random or tpe)");
  CHECK(Error("study: my study\nbenchmark: {name: noop}\nattention: {a: [causal]}\n") ==
        "sweep.yaml:1:8: study: expected a name of letters, digits, '_', '-' and '.', found "
        "'my study'");
}

TEST_CASE("objectives: reference names, one metric, or a Pareto pair") {
  const std::string rest = "benchmark: {name: noop}\nattention: {a: [causal]}\n";
  auto one = ParseSweep("study: s\nobjective: {metric: error, mode: min}\n" + rest, "f.yaml",
                        MaskerRegistry::WithBuiltins());
  REQUIRE(one.ok());
  CHECK(one->objective.name == "error");
  CHECK_FALSE(one->objective.multi());
  auto two = ParseSweep(
      "study: s\nobjective: [{metric: error}, {metric: recall, mode: max}]\n" + rest, "f.yaml",
      MaskerRegistry::WithBuiltins());
  REQUIRE(two.ok());
  CHECK(two->objective.multi());
  CHECK(two->objective.metrics[1] == std::pair<std::string, bool>{"recall", false});
  CHECK(Error("study: s\nobjective: {metric: speed}\n" + rest) ==
        "sweep.yaml:2:21: objective.metric: expected one of density, error, error_max, "
        "density_max, recall, found 'speed'");
}

TEST_CASE("the shipped example sweeps are valid") {
  const auto dir = std::filesystem::path(MASKTUNE_SOURCE_DIR) / "configs" / "examples";
  int n = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() != ".yaml") continue;
    CAPTURE(entry.path().string());
    auto r = LoadSweep(entry.path().string(), MaskerRegistry::WithBuiltins());
    CHECK_MESSAGE(r.ok(), r.status().message());
    ++n;
  }
  CHECK(n >= 4);
}

}  // namespace
}  // namespace masktune::configs
