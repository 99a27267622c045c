// Daily use of a study's database: `trials`, `best`, `export` as a user runs
// them (the real binary on studies made by `masktune run` or the Store API),
// and the progress line `run` prints (cli/report.cpp, with a test clock).
#include <doctest/doctest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "cli/report.h"
#include "configs/sweep.h"
#include "engine/safetensors.h"
#include "search/objective.h"
#include "search/plan.h"
#include "storage/store.h"
#include "tests/helpers.h"
#include "tests/process_helpers.h"

namespace masktune {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

using Ran = testing::Run;
using testing::Masktune;
using testing::Shell;

std::string Golden(const std::string& name) {
  const char* env = std::getenv("MASKTUNE_GOLDEN_DIR");
  return std::string(env ? env : MASKTUNE_GOLDEN_DIR) + "/" + name;
}

// Lines of `text` that contain `part`.
std::vector<std::string> LinesWith(const std::string& text, const std::string& part) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (line.find(part) != std::string::npos) out.push_back(line);
  return out;
}

// A study written through the Store API: trials settled with chosen metrics
// or errors, as coordinators record them.
struct Study {
  storage::Store store;
  configs::SweepConfig sweep;
  int64_t id = 0;
  std::map<std::string, int64_t> stacks, numbers;

  static Study Make(const std::string& db, const std::string& sweep_path, const std::string& text) {
    auto store = storage::Store::Open(db);
    REQUIRE(store.ok());
    auto sweep = configs::ParseSweep(text, sweep_path, MaskerRegistry::WithBuiltins());
    REQUIRE_MESSAGE(sweep.ok(), sweep.status().message());
    auto id = store->CreateStudy(sweep->study, sweep_path, text);
    REQUIRE(id.ok());
    Study s{std::move(store).value(), std::move(sweep).value(), id.value(), {}, {}};
    for (size_t i = 0; i < s.sweep.stacks.size(); ++i) {
      auto stack = s.store.AddStack(s.id, s.sweep.stacks[i].name, static_cast<int64_t>(i));
      REQUIRE(stack.ok());
      s.stacks[s.sweep.stacks[i].name] = stack.value();
    }
    return s;
  }
  storage::TrialRow Start(const std::string& stack, const std::string& params) {
    REQUIRE(store.AddTrial(stacks.at(stack), numbers[stack]++, params).ok());
    auto t = store.StartNext(id, "worker-1");
    REQUIRE(t.ok());
    REQUIRE(t.value().has_value());
    return *t.value();
  }
  int64_t Done(const std::string& stack, const std::string& params, const Metrics& m) {
    const storage::TrialRow t = Start(stack, params);
    REQUIRE(
        store.RecordResult(t.id, t.attempts, m, search::ObjectiveValue(sweep.objective, m)).ok());
    return t.id;
  }
  int64_t Failed(const std::string& stack, const std::string& params, const std::string& error) {
    const storage::TrialRow t = Start(stack, params);
    REQUIRE(store.RecordFailure(t.id, t.attempts, error, 1).ok());
    return t.id;
  }
};

const char* kNoopSweep =
    "study: q\nbenchmark: {name: noop}\n"
    "search: {algorithm: random, num_samples: 3}\n"
    "attention:\n  a:\n    - sink: {sink_size: 4}\n"
    "    - oracle_top_k: {heavy_size: {uniform: [0.05, 0.5]}}\n"
    "  b:\n    - oracle_top_k: {heavy_size: {uniform: [0.05, 0.5]}}\n";

const std::string kLongError =
    "sample 0: maskers[2] (double_sparsity_top_k): sorted_channel_file '/data/channels.json': "
    "key 'model.layers.0.self_attn.qk_proj' missing";

TEST_CASE("trials: a `failure` column, 6 significant digits, whole failure messages") {
  testing::TempDir dir;
  {
    Study s = Study::Make(dir / "s.db", dir / "s.yaml", kNoopSweep);
    s.Done("a", R"({"oracle_top_k.heavy_size":0.12345678901234568})",
           {{"density", 0.29370000000000002}, {"error", 0.012345678901234567}, {"recall", 0.5}});
    s.Failed("a", R"({"oracle_top_k.heavy_size":0.4})", kLongError);
  }
  const std::string db = " --db " + dir / "s.db";
  const Ran table = Masktune("trials q" + db);
  CAPTURE(table.output);
  REQUIRE(table.code == 0);
  const std::string header = table.output.substr(0, table.output.find('\n'));
  // One column per name: `error` is the metric, `failure` the message.
  CHECK(header.find(" failure") != std::string::npos);
  std::istringstream words(header);
  std::vector<std::string> names;
  for (std::string w; words >> w;) names.push_back(w);
  CHECK(std::count(names.begin(), names.end(), "error") == 1);
  CHECK(std::count(names.begin(), names.end(), "failure") == 1);
  CHECK(names.back() == "failure");
  CHECK(table.output.find("0.123457") != std::string::npos);
  CHECK(table.output.find("0.0123457") != std::string::npos);
  CHECK(table.output.find("0.2937 ") != std::string::npos);
  CHECK(table.output.find("0.12345678901234568") == std::string::npos);
  CHECK(table.output.find("0.2937000") == std::string::npos);
  // The whole message, under the table.
  const auto whole = LinesWith(table.output, kLongError);
  REQUIRE(whole.size() == 1);
  CHECK(whole[0] == "  trial 2: " + kLongError);
  CHECK(table.output.find("failures (whole messages):") != std::string::npos);

  // --wide: the whole message in its row.
  const Ran wide = Masktune("trials q" + db + " --wide");
  CHECK(wide.code == 0);
  const auto row = LinesWith(wide.output, kLongError);
  REQUIRE(row.size() == 1);
  CHECK(row[0].rfind("2 ", 0) == 0);

  // CSV: exact numbers (they read back as the stored doubles), the whole message.
  const Ran csv = Masktune("trials q" + db + " --csv");
  CHECK(csv.code == 0);
  CHECK(csv.output.rfind("trial_id,stack,number,status,attempts,objective,oracle_top_k.heavy_size,",
                         0) == 0);
  CHECK(csv.output.substr(0, csv.output.find('\n')).find(",worker,failure") != std::string::npos);
  CHECK(csv.output.find(",0.12345678901234568,") != std::string::npos);
  CHECK(csv.output.find(",0.012345678901234567,") != std::string::npos);
  CHECK(csv.output.find(kLongError) != std::string::npos);
}

// A sweep on tiny synthetic attention: stack `good` runs, every trial of
// `bad` fails (its channel file is a JSON object without the layer's key).
void WriteFailingSweep(const testing::TempDir& dir) {
  std::ofstream(dir / "channels.json") << "{}\n";
  std::ofstream(dir / "f.yaml")
      << "study: f\nstorage: f.db\n"
         "benchmark:\n  name: attention_error\n"
         "  data: {synthetic: {keys: 256, heads: 4, kv_heads: 4, head_dim: 64, samples: 1, seed: "
         "3}}\n"
         "search: {algorithm: grid, max_failures: 1}\n"
         "attention:\n"
         "  good:\n    - sink: {sink_size: 8}\n    - oracle_top_k: {heavy_size: 0.1}\n"
         "  bad:\n    - sink: {sink_size: 8}\n"
         "    - double_sparsity_top_k:\n        heavy_size: {grid_search: [0.05, 0.1, 0.2]}\n"
         "        sorted_channel_file: channels.json\n";
}

TEST_CASE("run and best: a stack whose trials all failed prints its most common failure, exit 1") {
  testing::TempDir dir;
  WriteFailingSweep(dir);
  const Ran run = Masktune("run " + dir / "f.yaml" + " --workers 1 --heartbeat-ms 50");
  CAPTURE(run.output);
  CHECK(run.code == 1);
  CHECK(run.output.find("best good: trial") != std::string::npos);
  const auto line =
      LinesWith(run.output, "stack bad: all 3 trials failed; most common failure (3 of 3): ");
  REQUIRE(line.size() == 1);
  CHECK(line[0].rfind("masktune: ", 0) == 0);
  CHECK(line[0].find("double_sparsity_top_k") != std::string::npos);
  CHECK(line[0].find("qk_proj") != std::string::npos);

  const Ran best = Masktune("best f --db " + dir / "f.db");
  CAPTURE(best.output);
  CHECK(best.code == 1);
  CHECK(LinesWith(best.output, "stack bad: all 3 trials failed; most common failure (3 of 3)")
            .size() == 1);
  const Ran good = Masktune("best f --db " + dir / "f.db" + " --stack good");
  CHECK(good.code == 0);
  const Ran other = Masktune("best f --db " + dir / "f.db" + " --objective sparsity_10");
  CHECK(other.code == 1);
  CHECK(other.output.find("best good: trial") != std::string::npos);
}

const char* kRecallSweep =
    "study: r\nbenchmark: {name: noop}\n"
    "objective: {metric: recall, mode: max}\n"
    "search: {algorithm: random, num_samples: 3}\n"
    "attention:\n  a:\n    - oracle_top_k: {heavy_size: {uniform: [0.05, 0.5]}}\n"
    "  b:\n    - oracle_top_k: {heavy_size: {uniform: [0.05, 0.5]}}\n";

TEST_CASE("best: one line per stack under --objective, maximised metrics real, Pareto as a table") {
  testing::TempDir dir;
  int64_t a1, a2, b1;
  {
    Study s = Study::Make(dir / "r.db", dir / "r.yaml", kRecallSweep);
    a1 = s.Done("a", R"({"oracle_top_k.heavy_size":0.1})",
                {{"density", 0.1}, {"error", 0.3}, {"recall", 0.8}});
    a2 = s.Done("a", R"({"oracle_top_k.heavy_size":0.3})",
                {{"density", 0.3}, {"error", 0.1}, {"recall", 0.9}});
    s.Done("a", R"({"oracle_top_k.heavy_size":0.5})",
           {{"density", 0.5}, {"error", 0.05}, {"recall", 0.85}});
    b1 = s.Done("b", R"({"oracle_top_k.heavy_size":0.2})",
                {{"density", 0.2}, {"error", 0.2}, {"recall", 0.7}});
  }
  const std::string db = " --db " + dir / "r.db";
  // The study's own objective: recall, maximised, shown as recall.
  const Ran best = Masktune("best r" + db);
  CAPTURE(best.output);
  CHECK(best.code == 0);
  CHECK(LinesWith(best.output, "best a: trial " + std::to_string(a2) + ", recall 0.9 (max); ")
            .size() == 1);
  CHECK(LinesWith(best.output, "best b: trial " + std::to_string(b1) + ", recall 0.7 (max); ")
            .size() == 1);
  CHECK(best.output.find("-0.9") == std::string::npos);
  CHECK(best.output.find("params oracle_top_k.heavy_size=0.3") != std::string::npos);

  // Another objective, no --stack: one line per stack.
  const Ran sparsity = Masktune("best r" + db + " --objective sparsity_10");
  CAPTURE(sparsity.output);
  CHECK(sparsity.code == 0);
  CHECK(LinesWith(sparsity.output, "best a: trial " + std::to_string(a1) + ", objective ").size() ==
        1);
  CHECK(LinesWith(sparsity.output, "best b: trial " + std::to_string(b1) + ", objective ").size() ==
        1);
  CHECK(LinesWith(sparsity.output, "(sparsity_10); density 0.1, error 0.3, recall 0.8;").size() ==
        1);
  const Ran recall = Masktune("best r" + db + " --objective recall:max");
  CHECK(LinesWith(recall.output, "best a: trial " + std::to_string(a2) + ", recall 0.9 (max)")
            .size() == 1);
  const Ran error = Masktune("best r" + db + " --objective error");
  CHECK(
      LinesWith(error.output, "best b: trial " + std::to_string(b1) + ", error 0.2 (min)").size() ==
      1);

  // A Pareto front: a table with the trial, the objective's metrics and the
  // params, best first on the first metric.
  const Ran front = Masktune("best r" + db + " --objective recall:max,density:min --stack a");
  CAPTURE(front.output);
  CHECK(front.code == 0);
  CHECK(front.output ==
        "stack a: Pareto front of 2 of 3 finished trials (recall max, density min)\n"
        "trial  recall  density  params\n" +
            std::to_string(a2) + "      0.9     0.3      oracle_top_k.heavy_size=0.3\n" +
            std::to_string(a1) + "      0.8     0.1      oracle_top_k.heavy_size=0.1\n");

  // Bad input: one line, exit 2.
  const Ran unknown = Masktune("best r" + db + " --objective accuracy:max");
  CHECK(unknown.code == 2);
  CHECK(unknown.output ==
        "masktune best: --objective: no trial of the study reports 'accuracy' (reported: density, "
        "error, recall)\n");
  const Ran mode = Masktune("best r" + db + " --objective recall:up");
  CHECK(mode.code == 2);
  CHECK(mode.output.find("--objective: expected default, sparsity_5..25, METRIC[:min|max]") !=
        std::string::npos);
}

// The progress line, read back from a temporary file; the clock is the test's.
struct Progress {
  std::FILE* file = std::tmpfile();
  double now = 100.0;
  cli::ProgressPrinter printer{false, file, [this] { return now; }};
  ~Progress() { std::fclose(file); }
  std::string Lines() {
    std::fflush(file);
    std::rewind(file);
    std::string out;
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, file)) > 0) out.append(buf, n);
    return out;
  }
  std::string Last() {
    const std::string all = Lines();
    const size_t end = all.find_last_of('\n');
    const size_t begin = all.find_last_of('\n', end - 1);
    return all.substr(begin == std::string::npos ? 0 : begin + 1,
                      end - (begin == std::string::npos ? 0 : begin + 1));
  }
};

storage::Progress P(int64_t total, int64_t done, int64_t running, int64_t failed = 0) {
  storage::Progress p;
  p.total = total, p.done = done, p.running = running, p.failed = failed;
  p.queued = total - done - running - failed;
  return p;
}

TEST_CASE(
    "progress: Start prints at once; ETA -- until a trial settles, then from the rate since "
    "Start") {
  Progress t;
  t.printer.Start(10, 0, "4 workers");
  CHECK(t.Lines() == "0/10 done, preparing 4 workers, ETA --\n");
  t.now += 5;  // trials running, none settled: no rate yet
  t.printer.Show(P(10, 0, 4), std::nullopt);
  CHECK(t.Last() == "0/10 done, 4 running, 0 failed, best --, ETA --");
  t.now += 5;  // 2 settled in 10 s: 8 left take 40 s
  t.printer.Show(P(10, 1, 4, 1), 0.25);
  CHECK(t.Last() == "1/10 done, 4 running, 1 failed, best 0.25, ETA 40s");
  t.now += 80;  // 9 settled in 90 s: 1 left takes 10 s
  t.printer.Show(P(10, 9, 1), 0.125);
  CHECK(t.Last() == "9/10 done, 1 running, 0 failed, best 0.125, ETA 10s");
  t.now += 10;
  t.printer.Show(P(10, 10, 0), 0.125);
  CHECK(t.Last() == "10/10 done, 0 running, 0 failed, best 0.125, took 1m40s");
  CHECK(t.Lines().find("ETA 0s") == std::string::npos);
}

TEST_CASE("progress: a resumed study counts only trials settled since Start; never ETA 0s") {
  Progress t;
  t.printer.Start(100, 60, "2 workers");
  CHECK(t.Lines() == "60/100 done, preparing 2 workers, ETA --\n");
  t.now += 2;  // the 60 from before are no rate
  t.printer.Show(P(100, 60, 2), 0.5);
  CHECK(t.Last() == "60/100 done, 2 running, 0 failed, best 0.5, ETA --");
  t.now += 18;  // 2 in 20 s: 38 left take 380 s
  t.printer.Show(P(100, 62, 2), 0.5);
  CHECK(t.Last() == "62/100 done, 2 running, 0 failed, best 0.5, ETA 6m20s");
  t.now += 1;  // 39 settled in 21 s: the last one is under a second away, not 0
  t.printer.Show(P(100, 99, 1), 0.5);
  CHECK(t.Last() == "99/100 done, 1 running, 0 failed, best 0.5, ETA <1s");
  // With an early-stopping scheduler the count is of settled trials.
  storage::Progress pruned = P(100, 40, 0);
  pruned.pruned = 60;
  pruned.queued = 0;
  t.now += 1;
  t.printer.Show(pruned, 0.5);
  CHECK(t.Last() ==
        "100/100 settled (40 done, 60 pruned), 0 running, 0 failed, best 0.5, took 22s");
  CHECK(cli::FormatDuration(0.2) == "<1s");
  CHECK(cli::FormatDuration(59.4) == "59s");
  CHECK(cli::FormatDuration(7322) == "2h02m");
  CHECK(cli::FormatDuration(3 * 86400 + 4 * 3600) == "3d04h");
}

TEST_CASE("progress: a maximised metric's best is its real value") {
  Progress t;
  configs::ObjectiveSpec objective{"accuracy", {{"accuracy", false}}};
  t.printer.SetObjective(objective);
  t.printer.Start(4, 0, "1 worker");
  t.now += 3;
  t.printer.Show(P(4, 1, 1), -0.75);  // stored negated: lower is better
  CHECK(t.Last() == "1/4 done, 1 running, 0 failed, best accuracy 0.75, ETA 9s");
}

TEST_CASE("export json: a masker list attend loads as written, side files absolute") {
  testing::TempDir dir;
  fs::create_directories(dir / "side");
  fs::copy_file(Golden("double_sparsity_s0.channels.json"), dir / "side/channels.json");
  std::ofstream(dir / "s.yaml")
      << "study: ds\nstorage: s.db\nbenchmark: {name: noop}\nsearch: {algorithm: grid}\n"
         "attention:\n  ds:\n    - sink: {sink_size: 8}\n    - local: {window_size: 8}\n"
         "    - double_sparsity_top_k:\n        heavy_size: {grid_search: [0.05, 0.1]}\n"
         "        sorted_channel_file: side/channels.json\n        label_bits: 16\n";
  // Run from the sweep's folder with a relative path, as a user would.
  const Ran run =
      Shell("cd " + dir.path.string() + " && " + MASKTUNE_BINARY + " run s.yaml --workers 1");
  CAPTURE(run.output);
  REQUIRE(run.code == 0);
  const Ran exported =
      Masktune("export ds --db " + dir / "s.db" + " --format json --out " + dir / "out");
  CAPTURE(exported.output);
  REQUIRE(exported.code == 0);
  CHECK(exported.output == dir / "out/ds.json" + "\n");
  std::ifstream f(dir / "out/ds.json");
  const json list = json::parse(f);
  REQUIRE(list.is_array());
  REQUIRE(list.size() == 3);
  CHECK(list[0] == json{{"type", "sink"}, {"sink_size", 8}});
  CHECK(list[2]["type"] == "double_sparsity_top_k");
  const std::string channels = list[2]["sorted_channel_file"];
  CHECK(fs::path(channels).is_absolute());
  CHECK(fs::equivalent(channels, dir / "side/channels.json"));
  std::ifstream m(dir / "out/ds.meta.json");
  const json meta = json::parse(m);
  CHECK(meta["study"] == "ds");
  CHECK(meta["stack"] == "ds");
  CHECK(meta["maskers"] == "ds.json");
  CHECK(meta["metrics"].contains("density"));
  CHECK(meta["trial"].is_number_integer());

  // attend reads it back, from another folder, on generated inputs.
  fs::create_directories(dir / "in");
  const Tensor q = testing::RandomTensor({1, 4, 2, 64}, 1),
               k = testing::RandomTensor({1, 4, 256, 64}, 2),
               v = testing::RandomTensor({1, 4, 256, 64}, 3);
  REQUIRE(WriteSafetensors(dir / "in/x.safetensors", {{"q", &q}, {"k", &k}, {"v", &v}}).ok());
  const Ran attend =
      Shell("cd / && " + std::string(MASKTUNE_BINARY) + " attend --device cpu --input " +
            dir / "in/x.safetensors" + " --maskers @" + dir / "out/ds.json");
  CAPTURE(attend.output);
  CHECK(attend.code == 0);
  const json line = json::parse(attend.output);
  CHECK(line["density"].get<double>() > 0.0);
  CHECK(line["density"].get<double>() < 1.0);
}

// Fields each reference config class accepts and requires (the fixture made
// from the reference's source; see its "reference" entry).
json ReferenceFields() {
  std::ifstream f(std::string(MASKTUNE_SOURCE_DIR) + "/tests/data/sah_config_fields.json");
  REQUIRE(f.good());
  return json::parse(f);
}

// Checks one exported sah file against the fixture; returns the classes seen.
std::set<std::string> CheckSahFile(const json& file, const json& reference,
                                   const std::string& stack) {
  CAPTURE(stack);
  std::set<std::string> seen;
  for (const char* key : {"model", "task", "masker_name"}) CHECK(file[key].is_string());
  CHECK(file["masker_name"] == stack);
  if (file["sparse_config"].is_null()) return seen;
  CHECK(file["sparse_config"]["type"] == "ResearchAttentionConfig");
  for (const json& m : file["sparse_config"]["masker_configs"]) {
    const std::string type = m["type"];
    CAPTURE(type);
    REQUIRE(reference["classes"].contains(type));
    const json& cls = reference["classes"][type];
    std::set<std::string> accepted;
    for (const auto& r : cls["required"]) accepted.insert(r.get<std::string>());
    for (auto& [name, unused] : cls["optional"].items()) accepted.insert(name);
    for (auto& [name, value] : m["params"].items()) {
      CAPTURE(name);
      CHECK(accepted.count(name) == 1);
      CHECK(!value.is_null());
    }
    for (const auto& r : cls["required"]) CHECK(m["params"].contains(r.get<std::string>()));
    seen.insert(type);
  }
  return seen;
}

TEST_CASE("export sah: every stack of the shipped examples loads in the reference as written") {
  const json reference = ReferenceFields();
  CHECK(reference["reference"]["commit"].get<std::string>().size() == 40);
  const MaskerRegistry registry = MaskerRegistry::WithBuiltins();
  std::set<std::string> classes;
  int files = 0;
  for (const auto& entry :
       fs::directory_iterator(std::string(MASKTUNE_SOURCE_DIR) + "/configs/examples")) {
    if (entry.path().extension() != ".yaml") continue;
    const std::string path = fs::absolute(entry.path()).lexically_normal().string();
    CAPTURE(path);
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    auto sweep = configs::ParseSweep(text.str(), path, registry);
    if (!sweep.ok() && sweep.status().message().find(".gguf") != std::string::npos) {
      MESSAGE("skipped (its model is not here): " << sweep.status().message());
      continue;
    }
    REQUIRE_MESSAGE(sweep.ok(), sweep.status().message());
    testing::TempDir dir;
    {
      Study s = Study::Make(dir / "e.db", path, text.str());
      for (const auto& plan : search::PlanSweep(s.sweep)) {
        const std::string params = search::ParamsToJson(search::SampleBasic(s.sweep, plan, 0));
        s.Done(plan.stack->name, params,
               {{"density", 0.1}, {"error", 0.2}, {"recall", 0.9}, {"accuracy", 0.5}});
      }
    }
    const Ran exported = Masktune("export " + sweep->study + " --db " + dir / "e.db" +
                                  " --format sah --out " + dir / "out");
    CAPTURE(exported.output);
    REQUIRE(exported.code == 0);
    for (const auto& stack : sweep->stacks) {
      std::ifstream f(dir / ("out/" + stack.name + ".json"));
      REQUIRE(f.good());
      const json file = json::parse(f);
      const auto seen = CheckSahFile(file, reference, stack.name);
      classes.insert(seen.begin(), seen.end());
      if (stack.maskers.empty())
        CHECK(file["sparse_config"].is_null());
      else
        CHECK(file["sparse_config"]["masker_configs"].size() == stack.maskers.size());
      ++files;
      std::ifstream t(dir / ("out/" + stack.name + "_trials.json"));
      REQUIRE(t.good());
      CHECK(json::parse(t)["study"] == sweep->study);
    }
  }
  CHECK(files >= 10);
  // The three that the reference used to drop are among them.
  for (const char* c : {"MagicPigConfig", "PQCacheConfig", "AdaptiveSamplingMaskerConfig"}) {
    CAPTURE(c);
    CHECK(classes.count(c) == 1);
  }
}

TEST_CASE("export sah: masktune-only fields are left out, one stderr line each when not default") {
  testing::TempDir dir;
  const std::string text =
      "study: x\nbenchmark: {name: noop}\nsearch: {algorithm: grid}\n"
      "attention:\n"
      "  pq:\n    - pq_top_k: {heavy_size: 0.1, pq_sub_dim: 8, pq_bits: 4, kmeans_iterations: 20, "
      "seed: 7}\n"
      "  pig:\n    - magic_pig: {lsh_k: 4, lsh_l: 8, seed: 3, transform: none}\n"
      "  vatt:\n    - adaptive_sampling: {base_rate_sampling: 0.05, epsilon: 0.2, delta: 0.2}\n"
      "  causal:\n    - causal: {}\n    - sink: {sink_size: 4}\n";
  {
    Study s = Study::Make(dir / "x.db", dir / "x.yaml", text);
    for (const char* stack : {"pq", "pig", "vatt", "causal"})
      s.Done(stack, "{}", {{"density", 0.1}, {"error", 0.2}});
  }
  const Ran exported = Masktune("export x --db " + dir / "x.db" +
                                " --format sah --model HuggingFaceTB/SmolLM2-135M-Instruct --task "
                                "ruler/niah_single_1 --out " +
                                dir / "out");
  CAPTURE(exported.output);
  REQUIRE(exported.code == 0);
  CHECK(LinesWith(exported.output,
                  "masktune export: stack pq: maskers[0] (pq_top_k) kmeans_iterations = 20: "
                  "PQCacheConfig has no such field")
            .size() == 1);
  CHECK(LinesWith(exported.output, "masktune export: stack pq: maskers[0] (pq_top_k) seed = 7: ")
            .size() == 1);
  CHECK(LinesWith(exported.output, "train_keys_per_centroid").empty());  // its default
  CHECK(LinesWith(exported.output, "stack pig: maskers[0] (magic_pig) transform = none: ").size() ==
        1);
  CHECK(LinesWith(exported.output, "projections_file").empty());
  CHECK(LinesWith(exported.output, "stack vatt").empty());  // seed 42, the default
  CHECK(LinesWith(exported.output,
                  "stack causal: maskers[0] (causal): the reference has no config class")
            .size() == 1);
  CHECK(LinesWith(exported.output, "model:").empty());  // given
  const json reference = ReferenceFields();
  auto read = [&](const std::string& stack) {
    std::ifstream f(dir / ("out/" + stack + ".json"));
    return json::parse(f);
  };
  const json pq = read("pq");
  CHECK(pq["model"] == "HuggingFaceTB/SmolLM2-135M-Instruct");
  CHECK(pq["task"] == "ruler/niah_single_1");
  CHECK(pq["sparse_config"]["masker_configs"][0] ==
        json{{"type", "PQCacheConfig"},
             {"params", {{"heavy_size", 0.1}, {"pq_sub_dim", 8}, {"pq_bits", 4}}}});
  CHECK(pq["masker_classes"] == json{"PQCacheConfig"});
  CHECK(pq["num_trials"] == 1);
  const json pig = read("pig")["sparse_config"]["masker_configs"][0];
  CHECK(pig ==
        json{{"type", "MagicPigConfig"},
             {"params",
              {{"lsh_k", 4}, {"lsh_l", 8}, {"center", true}, {"packing", "int64"}, {"seed", 3}}}});
  const json vatt = read("vatt")["sparse_config"]["masker_configs"][0]["params"];
  CHECK(!vatt.contains("seed"));
  CHECK(read("causal")["sparse_config"]["masker_configs"].size() == 1);
  for (const char* stack : {"pq", "pig", "vatt", "causal"})
    CheckSahFile(read(stack), reference, stack);
}

}  // namespace
}  // namespace masktune
