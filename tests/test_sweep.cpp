// Sweep files: real YAML, parsed and validated against the masker schemas;
// every malformed file fails with FILE:LINE:COLUMN and the field named.
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "configs/sweep.h"
#include "coordinator/coordinator.h"
#include "search/plan.h"
#include "storage/store.h"
#include "tests/helpers.h"
#include "tests/process_helpers.h"

namespace masktune::configs {
namespace {

namespace fs = std::filesystem;

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
  CHECK(Error("storage: x.db\n") ==
        "sweep.yaml:1:1: missing 'study' (the study's name)\n"
        "sweep.yaml:1:1: missing 'benchmark' ({name: attention_error}, {name: ruler_niah} or "
        "{name: noop})\n"
        "sweep.yaml:1:1: missing 'attention' (the masker stacks to tune)");
  CHECK(Error("study: s\nbenchmark: {name: noop}\n") ==
        "sweep.yaml:1:1: missing 'attention' (the masker stacks to tune)");
  CHECK(Error("") == "sweep.yaml:1:1: the sweep file is empty");
  // Unknown keys are errors, not ignored.
  CHECK(Error("study: s\nbenchmark: {name: noop}\nsearh: {}\nattention: {a: [causal]}\n") ==
        "sweep.yaml:3:1: unknown key 'searh' (expected one of: attention, benchmark, objective, "
        "resources, search, storage, study, workers)");
  const std::string head = "study: s\nbenchmark: {name: noop}\nattention:\n  a:\n";
  // Unknown masker, unknown field.
  CHECK(Error(head + "    - sinc: {sink_size: 4}\n")
            .rfind("sweep.yaml:5:7: attention.a[0]: unknown masker type 'sinc' (known: "
                   "adaptive_sampling, causal,",
                   0) == 0);
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
  CHECK(Error("study: s\nbenchmark: {name: noop}\nobjective: sparsity_30\nattention: {a: "
              "[causal]}\n") ==
        "sweep.yaml:3:12: objective: expected default, sparsity_5, sparsity_10, sparsity_15, "
        "sparsity_20, sparsity_25 or {metric: NAME, mode: min|max}, found 'sparsity_30'");
  CHECK(Error("study: s\nbenchmark: {name: noop}\nsearch: {num_samples: 0}\nattention: {a: "
              "[causal]}\n") ==
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
  auto two =
      ParseSweep("study: s\nobjective: [{metric: error}, {metric: recall, mode: max}]\n" + rest,
                 "f.yaml", MaskerRegistry::WithBuiltins());
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

// The masktune binary run by the shell in folder `cwd`, as a user runs it.
using testing::Run;
Run Masktune(const std::string& cwd, const std::string& args) {
  return testing::Masktune(args, cwd);
}

size_t Lines(const std::string& s) {
  return static_cast<size_t>(std::count(s.begin(), s.end(), '\n'));
}

// The current folder for one scope.
struct InFolder {
  fs::path old = fs::current_path();
  explicit InFolder(const fs::path& dir) { fs::current_path(dir); }
  ~InFolder() { fs::current_path(old); }
};

std::string Examples() { return (fs::path(MASKTUNE_SOURCE_DIR) / "configs" / "examples").string(); }

TEST_CASE(
    "out-of-range numbers are FILE:LINE:COLUMN errors with exit code 2, not internal errors") {
  const std::string yaml = R"(study: s
benchmark: {name: noop, sleep_ms: -99999999999999999999}
search: {seed: 99999999999999999999}
resources: {gpus_per_trial: 1e400}
attention:
  a:
    - oracle_top_k: {heavy_size: {uniform: [0.01, 1e309]}}
  b:
    - oracle_top_k: {heavy_size: -1e309}
    - oracle_top_p: {top_p: 1e-320}
  c:
    - quest_top_k: {heavy_size: {grid_search: [8, 1e309]}, page_size: 8}
)";
  const std::string ints =
      " is out of range (integers are 64-bit: from -9223372036854775808 to "
      "9223372036854775807)";
  const std::string floats =
      " is out of range (floats are doubles: magnitudes from 2.2e-308 to "
      "1.8e308, or 0)";
  const std::string expected =
      "sweep.yaml:2:35: benchmark.sleep_ms: integer -99999999999999999999" + ints + "\n" +
      "sweep.yaml:3:16: search.seed: integer 99999999999999999999" + ints + "\n" +
      "sweep.yaml:4:29: resources.gpus_per_trial: number 1e400" + floats + "\n" +
      "sweep.yaml:7:51: attention.a[0] (oracle_top_k): field 'heavy_size': uniform upper bound: "
      "number 1e309" +
      floats + "\n" +
      "sweep.yaml:9:34: attention.b[0] (oracle_top_k): field 'heavy_size': number -1e309" + floats +
      "\n" + "sweep.yaml:10:29: attention.b[1] (oracle_top_p): field 'top_p': number 1e-320" +
      floats + "\n" +
      "sweep.yaml:12:51: attention.c[0] (quest_top_k): field 'heavy_size': grid_search: "
      "number 1e309" +
      floats;
  CHECK(Error(yaml) == expected);
  // In range at the edges: the largest double, the smallest normal one, zero written small.
  CHECK(
      Error("study: s\nbenchmark: {name: noop}\nresources: {gpus_per_trial: 0e-999}\n"
            "attention:\n  a:\n    - oracle_top_k: {heavy_size: {uniform: [2.3e-308, 1.7e308]}}\n")
          .find("heavy_size") != std::string::npos);  // out of the field's range, not of double's
  CHECK(Error("study: s\nbenchmark: {name: noop}\nresources: {gpus_per_trial: 0e-999}\n"
              "attention:\n  a:\n    - oracle_top_p: {top_p: {uniform: [2.3e-308, 0.5]}}\n") == "");

  // Both commands that read sweep files: one line per error, exit code 2.
  testing::TempDir dir;
  std::ofstream(dir / "sweep.yaml") << yaml;
  for (const char* command : {"validate", "run"}) {
    CAPTURE(command);
    const Run r = Masktune(dir.path.string(), std::string(command) + " sweep.yaml");
    CAPTURE(r.output);
    CHECK(r.code == 2);
    CHECK(r.output == expected + "\n");
  }
  CHECK_FALSE(fs::exists(dir.path / "masktune.db"));  // refused before any database
}

TEST_CASE("long scalars and 200,000-digit numbers are read without recursion: no crash") {
  testing::TempDir dir;
  const std::string head = "study: s\nbenchmark: {name: noop}\nattention:\n  a:\n";
  // A 50,000-digit fraction is a fine float (0.111...).
  std::ofstream(dir / "fraction.yaml")
      << head << "    - oracle_top_k: {heavy_size: 0." << std::string(50000, '1') << "}\n";
  const Run fraction = Masktune(dir.path.string(), "validate fraction.yaml");
  CAPTURE(fraction.output.substr(0, 300));
  CHECK(fraction.code == 0);
  CHECK(fraction.output.find("oracle_top_k: heavy_size 0.111111") != std::string::npos);
  // A 200,000-digit integer is out of range, quoted clipped.
  std::ofstream(dir / "digits.yaml")
      << head << "    - sink: {sink_size: " << std::string(200000, '7') << "}\n";
  const Run digits = Masktune(dir.path.string(), "validate digits.yaml");
  CHECK(digits.code == 2);
  CHECK(digits.output == "digits.yaml:5:25: attention.a[0] (sink): field 'sink_size': integer " +
                             std::string(80, '7') +
                             "... (200000 characters) is out of range "
                             "(integers are 64-bit: from -9223372036854775808 to "
                             "9223372036854775807)\n");
  // A 200,000-digit float whose value overflows.
  std::ofstream(dir / "float.yaml")
      << head << "    - oracle_top_k: {heavy_size: " << std::string(200000, '3') << ".5}\n";
  const Run big = Masktune(dir.path.string(), "validate float.yaml");
  CHECK(big.code == 2);
  CHECK(
      big.output.find("float.yaml:5:34: attention.a[0] (oracle_top_k): field 'heavy_size': number "
                      "3333") != std::string::npos);
  // 50,000 characters of text where a name or a size goes: quoted clipped.
  std::ofstream(dir / "text.yaml")
      << "study: my " << std::string(50000, 'x') << "\nbenchmark: {name: noop}\n"
      << "attention:\n  a:\n    - sink: {sink_size: " << std::string(50000, 'y') << "}\n";
  const Run text = Masktune(dir.path.string(), "validate text.yaml");
  CHECK(text.code == 2);
  CHECK(text.output ==
        "text.yaml:1:8: study: expected a name of letters, digits, '_', '-' and '.', found 'my " +
            std::string(77, 'x') + "... (50003 characters)'\n" +
            "text.yaml:5:25: attention.a[0] (sink): field 'sink_size': expected a size (integer "
            "count or float fraction of the keys), found \"" +
            std::string(80, 'y') + "... (50000 characters)\"\n");
}

// A grid of 10^`powers` trials: `powers` maskers with 10 values each.
std::string Grid(int powers) {
  std::string yaml =
      "study: g\nbenchmark: {name: noop}\nsearch: {algorithm: grid}\nattention:\n  big:\n";
  for (int i = 0; i < powers; ++i)
    yaml += "    - sink: {sink_size: {grid_search: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}}\n";
  return yaml + "  small:\n    - sink: {sink_size: {grid_search: [1, 2]}}\n";
}

TEST_CASE(
    "trial counts are overflow-checked and plans over the cap are refused, --max-trials raises "
    "it") {
  const MaskerRegistry registry = MaskerRegistry::WithBuiltins();
  ParseOptions uncapped;
  uncapped.max_trials = INT64_MAX;
  auto ten = ParseSweep(Grid(10), "g.yaml", registry, uncapped);
  REQUIRE_MESSAGE(ten.ok(), ten.status().message());
  std::string exact;
  CHECK(StackTrials(ten->stacks[0], ten->search, &exact) == 10000000000);
  CHECK(exact == "10000000000");
  auto twenty = ParseSweep(Grid(20), "g.yaml", registry, uncapped);
  REQUIRE(!twenty.ok());  // 10^20 + 2 passes INT64_MAX: over any cap
  CHECK(twenty.status().message() ==
        "g.yaml:6:5: attention.big: the plan has 100000000000000000002 trials (big "
        "100000000000000000000, small 2), more than the cap of 9223372036854775807; shrink the "
        "grid_search lists or search.num_samples, or raise the cap with --max-trials N");
  SweepConfig c = ten.value();
  const std::vector<MaskerEntry> copy = c.stacks[0].maskers;
  c.stacks[0].maskers.insert(c.stacks[0].maskers.end(), copy.begin(), copy.end());
  CHECK(StackTrials(c.stacks[0], c.search, &exact) == INT64_MAX);  // saturates, never wraps
  CHECK(exact == "100000000000000000000");
  CHECK(search::PlanSweep(c)[0].trials == INT64_MAX);

  // The default cap, 10^6.
  CHECK(Error(Grid(7)) ==
        "sweep.yaml:6:5: attention.big: the plan has 10000002 trials (big 10000000, small 2), more "
        "than the cap of 1000000; shrink the grid_search lists or search.num_samples, or raise the "
        "cap with --max-trials N");
  CHECK(Error(Grid(5)) == "");
  ParseOptions lower;
  lower.max_trials = 99;
  auto cut = ParseSweep(Grid(2), "g.yaml", registry, lower);
  REQUIRE(!cut.ok());
  CHECK(cut.status().message().find(
            "the plan has 102 trials (big 100, small 2), more than the cap of 99") !=
        std::string::npos);
  CHECK(CheckTrialCap(ten.value(), 10000000002).ok());
  CHECK_FALSE(CheckTrialCap(ten.value(), 10000000001).ok());

  testing::TempDir dir;
  std::ofstream(dir / "g10.yaml") << Grid(10);
  std::ofstream(dir / "g20.yaml") << Grid(20);
  const Run refused = Masktune(dir.path.string(), "validate g10.yaml");
  CHECK(refused.code == 2);
  CHECK(refused.output.find("the plan has 10000000002 trials") != std::string::npos);
  CHECK(refused.output.find("--max-trials N") != std::string::npos);
  const Run raised = Masktune(dir.path.string(), "validate g10.yaml --max-trials 10000000002");
  CAPTURE(raised.output);
  CHECK(raised.code == 0);
  CHECK(raised.output.find("study g: 2 stacks, 10000000002 trials") != std::string::npos);
  const Run huge =
      Masktune(dir.path.string(), "validate g20.yaml --max-trials 9223372036854775807");
  CHECK(huge.code == 2);
  CHECK(huge.output.find("100000000000000000002 trials") != std::string::npos);
  const Run run = Masktune(dir.path.string(), "run g10.yaml --workers 1");
  CHECK(run.code == 2);
  CHECK_FALSE(fs::exists(dir.path / "masktune.db"));  // no trial queued, no disk filled
}

TEST_CASE(
    "side files get the masker's own JSON checks at parse time: nesting, 1e999, repeated keys") {
  testing::TempDir dir;
  const std::string yaml =
      "study: s\nbenchmark: {name: noop}\nattention: {a: [{double_sparsity_top_k: "
      "{heavy_size: 8, sorted_channel_file: c.json}}]}\n";
  auto error = [&](const std::string& contents) {
    std::ofstream(dir / "c.json") << contents;
    auto r = ParseSweep(yaml, dir / "s.yaml", MaskerRegistry::WithBuiltins());
    return r.ok() ? std::string() : r.status().message();
  };
  std::string deep;
  for (int i = 0; i < 100000; ++i) deep += "{\"a\":";
  deep += "1";
  for (int i = 0; i < 100000; ++i) deep += "}";
  CHECK(error(deep).find("c.json': a.a.a.a.a.a.a.a...: nested deeper than 64 levels") !=
        std::string::npos);
  CHECK(error(R"({"a": 1e999})").find("c.json': a: number 1e999 is beyond the range of a double") !=
        std::string::npos);
  CHECK(error(R"({"a": [[1]], "a": [[2]]})").find("duplicate key 'a'") != std::string::npos);
  CHECK(error(R"({"model.layers.0.self_attn.qk_proj": [[1, 0]]})") == "");
}

TEST_CASE("side files are checked when the sweep is parsed: exists, a readable file, parses") {
  testing::TempDir dir;
  const MaskerRegistry registry = MaskerRegistry::WithBuiltins();
  fs::copy_file(Examples() + "/data/double_sparsity.channels.json", dir / "ch.json");
  fs::copy_file(Examples() + "/data/hash_attention.safetensors", dir / "w.safetensors");
  std::ofstream(dir / "garbage.json") << "{not json";
  std::ofstream(dir / "list.json") << "[1, 2]";
  fs::create_directories(dir.path / "folder.json");
  std::ofstream(dir / "short.safetensors") << "abc";
  {
    std::ofstream f(dir / "header.safetensors", std::ios::binary);
    const uint64_t n = 1000000;  // more header than file
    f.write(reinterpret_cast<const char*>(&n), 8);
    f << "{}";
  }
  {
    std::ofstream f(dir / "offsets.safetensors", std::ios::binary);
    const std::string header =
        R"({"layer0.projections":{"dtype":"F32","shape":[1],"data_offsets":[0,400]}})";
    const uint64_t n = header.size();
    f.write(reinterpret_cast<const char*>(&n), 8);
    f << header << "1234";
  }
  std::ofstream(dir / "model.gguf") << "GGUX and more";
  const std::string ds = "    - double_sparsity_top_k: {heavy_size: 8, sorted_channel_file: ";
  const std::string yaml =
      "study: s\nbenchmark: {name: noop}\nattention:\n  ok:\n" + ds + "ch.json}\n" +
      "    - hash_attention_top_k: {heavy_size: 8, hat_bits: 16, hat_mlp_layers: 3, "
      "hat_mlp_hidden_size: 32, hat_mlp_activation: silu, hat_weight_file: w.safetensors}\n" +
      "  bad:\n" + ds + "missing.json}\n" + ds + "folder.json}\n" + ds + "garbage.json}\n" + ds +
      "list.json}\n" + ds + "{grid_search: [ch.json, gone.json]}}\n" +
      "  p1:\n    - magic_pig: {lsh_k: 4, lsh_l: 8, projections_file: short.safetensors}\n" +
      "  p2:\n    - magic_pig: {lsh_k: 4, lsh_l: 8, projections_file: header.safetensors}\n" +
      "  p3:\n    - magic_pig: {lsh_k: 4, lsh_l: 8, projections_file: offsets.safetensors}\n";
  auto r = ParseSweep(yaml, (dir.path / "s.yaml").string(), registry);
  REQUIRE(!r.ok());
  const std::string d = dir.path.string() + "/";
  const std::string w = d + "s.yaml:";
  std::vector<std::string> lines;
  std::stringstream ss(r.status().message());
  for (std::string line; std::getline(ss, line);) lines.push_back(line);
  CAPTURE(r.status().message());
  REQUIRE(lines.size() == 8);
  CHECK(lines[0] == w +
                        "8:67: attention.bad[0] (double_sparsity_top_k): field "
                        "'sorted_channel_file': no such file '" +
                        d + "missing.json'");
  CHECK(lines[1] == w +
                        "9:67: attention.bad[1] (double_sparsity_top_k): field "
                        "'sorted_channel_file': '" +
                        d + "folder.json' is a folder, not a file");
  CHECK(lines[2] == w +
                        "10:67: attention.bad[2] (double_sparsity_top_k): field "
                        "'sorted_channel_file': '" +
                        d + "garbage.json' is not valid JSON");
  CHECK(lines[3].rfind(w +
                           "11:67: attention.bad[3] (double_sparsity_top_k): field "
                           "'sorted_channel_file': '" +
                           d + "list.json' is not a JSON object",
                       0) == 0);
  CHECK(lines[4] == w +
                        "12:91: attention.bad[4] (double_sparsity_top_k): field "
                        "'sorted_channel_file': grid_search: no such file '" +
                        d + "gone.json'");
  CHECK(lines[5] == w + "14:57: attention.p1[0] (magic_pig): field 'projections_file': '" + d +
                        "short.safetensors' is not a safetensors file: shorter than its 8-byte "
                        "header length");
  CHECK(lines[6] == w + "16:57: attention.p2[0] (magic_pig): field 'projections_file': '" + d +
                        "header.safetensors' is not a safetensors file: a header of 1000000 bytes "
                        "in a file of 10 bytes");
  CHECK(lines[7] == w + "18:57: attention.p3[0] (magic_pig): field 'projections_file': '" + d +
                        "offsets.safetensors' is not a safetensors file: tensor "
                        "'layer0.projections' does not lie inside the file");
  // The model of ruler_niah, by its magic.
  auto model = ParseSweep(
      "study: s\nbenchmark: {name: ruler_niah, model: model.gguf}\n"
      "attention: {a: [causal]}\n",
      (dir.path / "m.yaml").string(), registry);
  REQUIRE(!model.ok());
  CHECK(model.status().message() == d + "m.yaml:2:38: benchmark.model: '" + d +
                                        "model.gguf' is not a GGUF file (no GGUF magic)");
  // Off for re-reading a stored study's sweep (its files may be gone since).
  ParseOptions stored;
  stored.check_files = false;
  CHECK(ParseSweep(yaml, (dir.path / "s.yaml").string(), registry, stored).ok());

  // `run` refuses it before any trial: no database, exit 2 (it used to fail
  // every trial max_failures times and exit 0).
  std::ofstream(dir / "run.yaml")
      << "study: r\nstorage: r.db\nbenchmark: {name: attention_error, data: "
         "{synthetic: {keys: 64, heads: 4, kv_heads: 4, head_dim: 64, "
         "samples: 1}}}\nattention:\n  a:\n" +
             ds + "missing.json}\n";
  const Run run = Masktune(dir.path.string(), "run run.yaml --workers 1");
  CHECK(run.code == 2);
  CHECK(run.output ==
        "run.yaml:6:67: attention.a[0] (double_sparsity_top_k): field "
        "'sorted_channel_file': no such file '" +
            d + "missing.json'\n");
  CHECK_FALSE(fs::exists(dir.path / "r.db"));
}

TEST_CASE(
    "paths resolve against the sweep file's folder, stored absolute: resume works from any "
    "folder") {
  testing::TempDir dir;
  fs::create_directories(dir.path / "sub");
  fs::create_directories(dir.path / "x");
  fs::create_directories(dir.path / "y");
  fs::copy_file(Examples() + "/data/double_sparsity.channels.json", dir / "sub/ch.json");
  const std::string yaml =
      "study: moved\nstorage: r.db\nbenchmark: {name: attention_error, data: {synthetic: {keys: "
      "256, "
      "heads: 4, kv_heads: 4, head_dim: 64, samples: 1, seed: 2}}}\n"
      "search: {algorithm: grid}\nattention:\n  ds:\n"
      "    - double_sparsity_top_k: {heavy_size: {grid_search: [16, 32, 64]}, "
      "sorted_channel_file: ch.json}\n";
  std::ofstream(dir / "sub/s.yaml") << yaml;
  const std::string sub = (dir.path / "sub").string();
  int64_t study = 0;
  {
    // From folder x, the file named relatively, as `cd x && masktune run ../sub/s.yaml`.
    InFolder in_x(dir.path / "x");
    auto r = ParseSweep(yaml, "../sub/s.yaml", MaskerRegistry::WithBuiltins());
    REQUIRE_MESSAGE(r.ok(), r.status().message());
    CHECK(r->path == sub + "/s.yaml");
    CHECK(r->storage == sub + "/r.db");
    CHECK(r->stacks[0].maskers[0].fields.at("sorted_channel_file").values[0] ==
          FieldValue{sub + "/ch.json"});
    // Messages keep the name the user gave.
    CHECK(r->stacks[0].where.file == "../sub/s.yaml");
    // The study as `run` leaves it when stopped before its first trial.
    auto store = storage::Store::Open(r->storage);
    REQUIRE(store.ok());
    auto id = PrepareStudy(store.value(), r.value(), yaml);
    REQUIRE_MESSAGE(id.ok(), id.status().message());
    study = id.value();
    auto row = store->FindStudy("moved");
    REQUIRE(row.ok());
    REQUIRE(row.value());
    CHECK(row.value()->sweep_path == sub + "/s.yaml");
  }
  // Resumed from folder y: the stored sweep is re-read with its stored path.
  const Run resume =
      Masktune((dir.path / "y").string(), "resume moved --db ../sub/r.db --workers 1");
  CAPTURE(resume.output);
  CHECK(resume.code == 0);
  auto store = storage::Store::Open(sub + "/r.db");
  REQUIRE(store.ok());
  auto trials = store->Trials(study);
  REQUIRE(trials.ok());
  REQUIRE(trials->size() == 3);
  for (const auto& t : trials.value()) {
    CAPTURE(t.error);
    CHECK(t.status == "done");
  }
}

TEST_CASE("validate reports every error of the file, each on its own line, in file order") {
  testing::TempDir dir;
  std::ofstream(dir / "bad.yaml")
      << "study: s\nbenchmark: {name: noop}\nsearh: {}\n"
         "search: {algorithm: grids, num_samples: 0}\nattention:\n  a:\n"
         "    - sink: {sink_size: -1}\n    - sinc\n"
         "    - local: {window_size: 4, windw: 2}\n  b: [oracle_top_p]\n";
  const Run r = Masktune(dir.path.string(), "validate bad.yaml");
  CAPTURE(r.output);
  CHECK(r.code == 2);
  CHECK(Lines(r.output) == 7);
  std::stringstream ss(r.output);
  std::vector<std::string> lines;
  for (std::string line; std::getline(ss, line);) lines.push_back(line);
  REQUIRE(lines.size() == 7);
  CHECK(lines[0] ==
        "bad.yaml:3:1: unknown key 'searh' (expected one of: attention, benchmark, "
        "objective, resources, search, storage, study, workers)");
  CHECK(lines[1] == "bad.yaml:4:21: search.algorithm: expected grid, random or tpe, found 'grids'");
  CHECK(lines[2] ==
        "bad.yaml:4:41: search.num_samples: expected an integer in [1, 1073741824], found 0");
  CHECK(lines[3] ==
        "bad.yaml:7:25: attention.a[0] (sink): field 'sink_size': expected an integer "
        "count > 0, found -1");
  CHECK(lines[4].rfind("bad.yaml:8:7: attention.a[1]: unknown masker type 'sinc' (known: ", 0) ==
        0);
  CHECK(lines[5] ==
        "bad.yaml:9:31: attention.a[2] (local): unknown field 'windw' (local has: "
        "window_size)");
  CHECK(lines[6] == "bad.yaml:10:7: attention.b[0] (oracle_top_p): missing required field 'top_p'");
  // ParseSweep's Result holds the same lines.
  auto parsed = LoadSweep(dir / "bad.yaml", MaskerRegistry::WithBuiltins());
  REQUIRE(!parsed.ok());
  CHECK(Lines(parsed.status().message()) == 6);
}

TEST_CASE(
    "the shipped examples need nothing outside configs/examples and validate from any folder") {
  testing::TempDir elsewhere;
  const MaskerRegistry registry = MaskerRegistry::WithBuiltins();
  int n = 0;
  for (const auto& entry : fs::directory_iterator(Examples())) {
    if (entry.path().extension() != ".yaml") continue;
    CAPTURE(entry.path().string());
    const Run r = Masktune(elsewhere.path.string(), "validate " + entry.path().string());
    CHECK(r.code == 0);
    auto sweep = LoadSweep(entry.path().string(), registry);
    REQUIRE_MESSAGE(sweep.ok(), sweep.status().message());
    // Every path a masker field names lies under configs/examples.
    for (const StackSpec& s : sweep->stacks)
      for (const MaskerEntry& m : s.maskers) {
        const MaskerSchema* schema = registry.Find(m.type);
        for (const FieldSpec& f : schema->fields) {
          if (f.type != FieldType::kPath) continue;
          for (const FieldValue& v : m.fields.at(f.name).values) {
            const std::string path = std::get<std::string>(v);
            CAPTURE(path);
            if (path.empty()) continue;
            CHECK(path.rfind(fs::canonical(Examples()).string() + "/", 0) == 0);
          }
        }
      }
    ++n;
  }
  CHECK(n >= 10);
}

TEST_CASE(
    "a dense baseline: an empty masker list is dense attention, one trial under every algorithm") {
  const MaskerRegistry registry = MaskerRegistry::WithBuiltins();
  for (const char* algorithm : {"grid", "random", "tpe"}) {
    CAPTURE(algorithm);
    const std::string yaml =
        std::string("study: d\nbenchmark: {name: noop}\nsearch: {algorithm: ") + algorithm +
        ", num_samples: 5}\nattention:\n  dense: []\n"
        "  fixed: [{sink: {sink_size: 4}}]\n"
        "  topk: [{oracle_top_k: {heavy_size: {grid_search: [0.1, 0.2]}}}]\n";
    auto r = ParseSweep(yaml, "d.yaml", registry);
    REQUIRE_MESSAGE(r.ok(), r.status().message());
    REQUIRE(r->stacks.size() == 3);
    CHECK(r->stacks[0].maskers.empty());
    const auto plans = search::PlanSweep(r.value());
    CHECK(plans[0].trials == 1);  // nothing searched: one trial
    CHECK(plans[1].trials == 1);
    CHECK(plans[2].trials == (std::string(algorithm) == "tpe" ? 5 : 10));
    auto configs =
        search::Materialize(registry, plans[0], search::SampleBasic(r.value(), plans[0], 0));
    REQUIRE(configs.ok());
    CHECK(configs->empty());
    CHECK(MaskerStack::Build(registry, configs.value()).ok());
  }
  CHECK(Error("study: d\nbenchmark: {name: noop}\nattention:\n  dense:\n") ==
        "sweep.yaml:5:1: attention.dense: expected a list of maskers (- type: {field: value}; [] "
        "for dense attention), found nothing");

  // End to end on real attention: the dense stack's one trial is done, error 0.
  testing::TempDir dir;
  std::ofstream(dir / "d.yaml")
      << "study: d\nstorage: d.db\nbenchmark: {name: attention_error, data: "
         "{synthetic: {keys: 256, heads: 4, kv_heads: 2, head_dim: 16, "
         "samples: 1}}}\nobjective: {metric: error, mode: min}\n"
         "search: {algorithm: random, num_samples: 3, seed: 1}\n"
         "attention:\n  dense: []\n"
         "  topk: [{oracle_top_k: {heavy_size: {uniform: [0.05, 0.2]}}}]\n";
  const Run v = Masktune(dir.path.string(), "validate d.yaml");
  CHECK(v.output.find("stack dense: 0 maskers (dense attention), 1 trials") != std::string::npos);
  const Run run = Masktune(dir.path.string(), "run d.yaml --workers 1");
  CAPTURE(run.output);
  REQUIRE(run.code == 0);
  auto store = storage::Store::Open(dir / "d.db");
  REQUIRE(store.ok());
  auto row = store->FindStudy("d");
  REQUIRE((row.ok() && row.value()));
  auto trials = store->Trials(row.value()->id);
  REQUIRE(trials.ok());
  REQUIRE(trials->size() == 4);
  int dense = 0;
  for (const auto& t : trials.value())
    if (t.stack == "dense") {
      ++dense;
      CHECK(t.status == "done");
      REQUIRE(t.objective);
      CHECK(*t.objective == 0.0);  // dense attention against itself
    }
  CHECK(dense == 1);
}

TEST_CASE("PlanFingerprintText: the plan's parts, not the study's name, storage or resources") {
  auto text = [](const std::string& yaml) {
    auto r = ParseSweep(yaml, "f.yaml", MaskerRegistry::WithBuiltins());
    REQUIRE_MESSAGE(r.ok(), r.status().message());
    return PlanFingerprintText(r.value());
  };
  const std::string base = std::string(kGood);
  const std::string fp = text(base);
  CHECK(nlohmann::json::parse(fp)["search"] ==
        nlohmann::json{
            {"algorithm", "random"}, {"num_samples", 4}, {"seed", 9}, {"n_startup_trials", 10}});
  CHECK(nlohmann::json::parse(fp)["stacks"][0]["maskers"][2]["fields"]["heavy_size"] ==
        nlohmann::json{{"kind", "uniform"}, {"lo", 0.01}, {"hi", 0.2}});
  auto edit = [&](const std::string& from, const std::string& to) {
    std::string y = base;
    const size_t at = y.find(from);
    REQUIRE(at != std::string::npos);
    return y.replace(at, from.size(), to);
  };
  CHECK(text(edit("study: s1", "study: other")) == fp);
  CHECK(text(edit("storage: results.db", "storage: elsewhere.db")) == fp);
  CHECK(text(edit("resources: {gpus_per_trial: 0.5}", "resources: {gpus_per_trial: 1}")) == fp);
  CHECK(text(edit("max_concurrent_trials: 2", "max_concurrent_trials: 3")) == fp);
  CHECK(text(edit("uniform: [0.01, 0.2]", "uniform: [0.01, 0.3]")) != fp);
  CHECK(text(edit("seed: 9", "seed: 8")) != fp);
  CHECK(text(edit("objective: sparsity_10", "objective: sparsity_20")) != fp);
  CHECK(text(edit("samples: 2, seed: 3", "samples: 3, seed: 3")) != fp);
  CHECK(text(edit("grid_search: [32, 64]", "grid_search: [64, 32]")) != fp);
}

TEST_CASE("fuzz: mutated example sweeps never crash or hang validate (scripts/fuzz_sweep.py)") {
  const Run fuzz =
      testing::Shell(std::string("python3 ") + MASKTUNE_SOURCE_DIR +
                     "/scripts/fuzz_sweep.py --count 60 --seed 7 --binary " + MASKTUNE_BINARY);
  const std::string& output = fuzz.output;
  CAPTURE(output);
  CHECK(fuzz.code == 0);
  CHECK(output.find("fuzz_sweep: 60 cases, seed 7:") != std::string::npos);
}

}  // namespace
}  // namespace masktune::configs
