// The masktune binary as a user runs it: output, files written, and one-line
// errors with exit code 2 for bad input.
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "engine/cuda/cuda_attention.h"
#include "engine/safetensors.h"
#include "tests/helpers.h"
#include "tests/process_helpers.h"

namespace masktune {
namespace {

using testing::CheckBadInput;
using testing::Masktune;
using testing::Run;

std::string Golden(const std::string& name) {
  const char* env = std::getenv("MASKTUNE_GOLDEN_DIR");
  return std::string(env ? env : MASKTUNE_GOLDEN_DIR) + "/" + name;
}

TEST_CASE("attend prints density and error, and writes mask and out") {
  testing::TempDir dir;
  const Run r = Masktune("attend --input " + Golden("oracle_topk_s0.safetensors") + " --out " +
                         dir / "o.safetensors");
  REQUIRE(r.code == 0);
  const auto line = nlohmann::json::parse(r.output);
  CHECK(line["density"].get<double>() == doctest::Approx(0.123046875));
  CHECK(line["error"].get<double>() == doctest::Approx(0.026713902).epsilon(1e-4));
  auto out = SafetensorsFile::Read(dir / "o.safetensors");
  REQUIRE(out.ok());
  CHECK(out->Get("mask").value()->shape() == Shape{1, 4, 1, 512});
  CHECK(out->Get("out").value()->shape() == Shape{1, 4, 1, 64});
  auto golden = SafetensorsFile::Read(Golden("oracle_topk_s0.safetensors"));
  REQUIRE(golden.ok());
  CHECK(out->Get("mask").value()->vec() == golden->Get("expected_mask").value()->vec());
}

TEST_CASE("attend with an explicit list, @FILE, [] and --repeat") {
  testing::TempDir dir;
  const std::string input = " --input " + Golden("sink_local_s1.safetensors");
  const Run inline_list =
      Masktune("attend" + input +
               R"( --maskers '[{"type":"sink","sink_size":4},{"type":"local","window_size":16}]')");
  REQUIRE(inline_list.code == 0);
  CHECK(nlohmann::json::parse(inline_list.output)["density"].get<double>() ==
        doctest::Approx(0.02574002556502819));
  std::ofstream(dir / "stack.json") << R"([{"type":"oracle_top_k","heavy_size":1.0}])";
  const Run from_file = Masktune("attend" + input + " --maskers @" + dir / "stack.json");
  REQUIRE(from_file.code == 0);
  CHECK(nlohmann::json::parse(from_file.output)["density"].get<double>() == 1.0);
  CHECK(nlohmann::json::parse(from_file.output)["error"].get<double>() == 0.0);
  const Run dense = Masktune("attend" + input + " --maskers '[]' --repeat 3");
  REQUIRE(dense.code == 0);
  const auto line = nlohmann::json::parse(dense.output);
  CHECK(line["error"].get<double>() == 0.0);
  for (const char* key : {"mask_s", "attention_s", "dense_s"}) {
    CAPTURE(key);
    CHECK(line[key].get<double>() > 0.0);
  }
}

TEST_CASE("attend --seed sets the seed of the sampling maskers") {
  const std::string input = "attend --input " + Golden("sink_local_s0.safetensors") +
                            R"( --maskers '[{"type":"random_sampling","sampling_rate":0.2}]')";
  testing::TempDir dir;
  auto mask_of = [&](const std::string& extra, const std::string& out) {
    const Run r = Masktune(input + extra + " --out " + dir / out);
    REQUIRE(r.code == 0);
    auto f = SafetensorsFile::Read(dir / out);
    REQUIRE(f.ok());
    return f->Get("mask").value()->vec();
  };
  const auto a = mask_of(" --seed 1", "a.safetensors");
  CHECK(mask_of(" --seed 1", "b.safetensors") == a);
  CHECK(mask_of(" --seed 2", "c.safetensors") != a);
}

TEST_CASE("attend --device: cpu always; cuda where a GPU is, else a clear error") {
  const std::string input = " --input " + Golden("oracle_topk_s0.safetensors");
  const Run cpu = Masktune("attend" + input + " --device cpu");
  CHECK(cpu.code == 0);
  CHECK(cpu.output.find("\"device\":\"cpu\"") != std::string::npos);
  const Run gpu = Masktune("attend" + input + " --device cuda");
  if (cuda::Available()) {
    CHECK(gpu.code == 0);
    // Same density, same error to float rounding.
    const auto a = nlohmann::json::parse(cpu.output), b = nlohmann::json::parse(gpu.output);
    CHECK(a["density"] == b["density"]);
    CHECK(b["error"].get<double>() == doctest::Approx(a["error"].get<double>()).epsilon(1e-3));
  } else {
    CHECK(gpu.code == 2);
    CHECK(gpu.output.find("--device cuda:") != std::string::npos);
  }
  CHECK(Masktune("attend" + input + " --device tpu").code != 0);
}

TEST_CASE("launch slurm and k8s --dry-run: the script and manifests carry what matters") {
  testing::TempDir dir;
  const std::string examples = std::string(MASKTUNE_SOURCE_DIR) + "/configs/examples/";
  std::filesystem::copy_file(examples + "quickstart.yaml", dir / "q.yaml");
  const Run slurm = Masktune(
      "launch slurm " + dir / "q.yaml" +
      " --nodes 2 --gpus-per-node 4 --partition gpu --account lab --time 01:30:00 --dry-run");
  REQUIRE(slurm.code == 0);
  for (const char* want :
       {"#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4",
        "#SBATCH --partition=gpu", "#SBATCH --account=lab", "#SBATCH --time=01:30:00",
        "scontrol show hostnames", "coordinator \"$SWEEP\" --bind \"tcp://0.0.0.0:5555\"",
        "--gpus-per-task=1", "CUDA_VISIBLE_DEVICES", "worker --connect \"$1\" --keys"})
    CHECK_MESSAGE(slurm.output.find(want) != std::string::npos, want);
  // Keys were made beside the database, secrets readable by their owner only.
  CHECK(std::filesystem::exists(dir / "keys/authorized_workers"));
  CHECK((std::filesystem::status(dir / "keys/worker.key").permissions() &
         std::filesystem::perms::group_read) == std::filesystem::perms::none);
  // The script is valid bash.
  CHECK(std::system(("bash -n " + dir / "masktune-quickstart.sbatch").c_str()) == 0);
  // Workers only, for a coordinator that runs elsewhere: a job array.
  const Run array =
      Masktune("launch slurm " + dir / "q.yaml" +
               " --nodes 3 --gpus-per-node 2 --coordinator tcp://head:7000 --dry-run");
  REQUIRE(array.code == 0);
  CHECK(array.output.find("#SBATCH --array=0-5") != std::string::npos);
  CHECK(array.output.find("ENDPOINT='tcp://head:7000'") != std::string::npos);
  CHECK(array.output.find(" coordinator ") == std::string::npos);

  const Run k8s =
      Masktune("launch k8s " + dir / "q.yaml" + " --workers 3 --gpus-per-node 1 --dry-run");
  REQUIRE(k8s.code == 0);
  const auto docs = YAML::LoadAll(k8s.output);
  REQUIRE(docs.size() == 5);
  std::map<std::string, YAML::Node> by_kind;
  for (const auto& d : docs) by_kind[d["kind"].as<std::string>()] = d;
  const YAML::Node job = by_kind.at("Job");
  CHECK(job["spec"]["parallelism"].as<int>() == 3);
  const YAML::Node worker = job["spec"]["template"]["spec"]["containers"][0];
  CHECK(worker["resources"]["limits"]["nvidia.com/gpu"].as<int>() == 1);
  CHECK(worker["command"][3].as<std::string>() == "tcp://masktune-quickstart-coordinator:5555");
  const YAML::Node coordinator =
      by_kind.at("Deployment")["spec"]["template"]["spec"]["containers"][0];
  CHECK(coordinator["command"][1].as<std::string>() == "coordinator");
  CHECK(by_kind.at("Service")["spec"]["ports"][0]["port"].as<int>() == 5555);
  const YAML::Node secret = by_kind.at("Secret")["stringData"];
  for (const char* key : {"coordinator.key", "coordinator.pub", "worker.key", "authorized_workers"})
    CHECK(secret[key].IsDefined());
  CHECK(Masktune("launch pbs " + dir / "q.yaml").code != 0);
}

TEST_CASE("attend rejects bad input with one line and exit code 2") {
  testing::TempDir dir;
  const std::string stack = R"( --maskers '[{"type":"sink","sink_size":4}]')";
  CheckBadInput(Masktune("attend --input " + dir / "missing.safetensors" + stack),
                "missing.safetensors: cannot open file");

  // Truncated: a golden case cut in half.
  std::filesystem::copy_file(Golden("sink_local_s0.safetensors"), dir / "cut.safetensors");
  std::filesystem::resize_file(dir / "cut.safetensors",
                               std::filesystem::file_size(dir / "cut.safetensors") / 2);
  CheckBadInput(Masktune("attend --input " + dir / "cut.safetensors" + stack), "truncated");

  // q and k disagree on head_dim.
  Tensor q({1, 2, 1, 8}), k({1, 1, 16, 4});
  REQUIRE(WriteSafetensors(dir / "shape.safetensors", {{"q", &q}, {"k", &k}, {"v", &k}}).ok());
  CheckBadInput(Masktune("attend --input " + dir / "shape.safetensors" + stack),
                "q and k disagree on head_dim: q (1, 2, 1, 8), k (1, 1, 16, 4)");

  // A missing tensor and a NaN.
  REQUIRE(WriteSafetensors(dir / "nov.safetensors", {{"q", &q}, {"k", &q}}).ok());
  CheckBadInput(Masktune("attend --input " + dir / "nov.safetensors" + stack),
                "missing tensor 'v'");
  Tensor nan_q({1, 2, 1, 8});
  nan_q.data()[3] = std::nanf("");
  Tensor kv({1, 1, 16, 8});
  REQUIRE(WriteSafetensors(dir / "nan.safetensors", {{"q", &nan_q}, {"k", &kv}, {"v", &kv}}).ok());
  CheckBadInput(Masktune("attend --input " + dir / "nan.safetensors" + stack),
                "tensor 'q' holds a non-finite value (nan) at flat index 3");

  const std::string input = "attend --input " + Golden("sink_local_s0.safetensors");
  CheckBadInput(Masktune(input + R"( --maskers '[{"type":"top_k","heavy_size":4}]')"),
                "--maskers: maskers[0] (top_k): unknown masker type 'top_k'");
  CheckBadInput(Masktune(input + R"( --maskers '[{"type":"oracle_top_k","heavy_size":-3}]')"),
                "--maskers: maskers[0] (oracle_top_k): field 'heavy_size': expected an integer "
                "count > 0, found -3");
  CheckBadInput(Masktune(input + R"( --maskers '[{"type":"sink","sink_size":4,"size":1}]')"),
                "unknown field 'size'");
  CheckBadInput(Masktune(input + " --maskers '[{'"), "masker list is not valid JSON");
  CheckBadInput(Masktune(input + " --maskers @" + dir / "none.json"), "cannot open");
  CheckBadInput(
      Masktune(
          input +
          R"( --maskers '[{"type":"double_sparsity_top_k","heavy_size":4,"sorted_channel_file":"double_sparsity_s0.channels.json"}]' --layer 5)"),
      "key 'model.layers.5.self_attn.qk_proj': missing");
  CheckBadInput(Masktune(input + " --repeat 0"), "--repeat");
  CheckBadInput(Masktune("attend"), "--input is required");
  REQUIRE(WriteSafetensors(dir / "plain.safetensors", {{"q", &q}, {"k", &kv}, {"v", &kv}}).ok());
  CheckBadInput(Masktune("attend --input " + dir / "plain.safetensors"),
                "carries no case metadata");
}

TEST_CASE("validate prints the plan, or the error with its place and exit code 2") {
  const std::string examples = std::string(MASKTUNE_SOURCE_DIR) + "/configs/examples/";
  const Run ok = Masktune("validate " + examples + "quickstart.yaml");
  CAPTURE(ok.output);
  CHECK(ok.code == 0);
  CHECK(ok.output.find("study quickstart: 3 stacks, 48 trials") != std::string::npos);
  CHECK(ok.output.find("searched oracle_top_k.heavy_size: uniform [0.01, 0.15]") !=
        std::string::npos);
  testing::TempDir dir;
  std::ofstream(dir / "bad.yaml") << "study: s\nbenchmark: {name: noop}\nattention:\n  a:\n"
                                     "    - local: {window_size: -4}\n";
  CheckBadInput(Masktune("validate " + dir / "bad.yaml"),
                dir / "bad.yaml" +
                    ":5:28: attention.a[0] (local): field 'window_size': expected "
                    "an integer count > 0, found -4");
  CheckBadInput(Masktune("validate " + dir / "none.yaml"), "cannot open the sweep file");

  // A scheduler is part of the plan.
  const Run asha = Masktune("validate " + examples + "asha.yaml");
  CHECK(asha.code == 0);
  CHECK(asha.output.find("scheduler asha: max_t 16 samples, grace_period 1, reduction_factor 4, "
                         "brackets 1\n") != std::string::npos);
  // --device: whether the workers' device can run the benchmark; this machine need not have it.
  CHECK(Masktune("validate " + examples + "quickstart.yaml --device cuda:1").code == 0);
  CheckBadInput(Masktune("validate " + examples + "quickstart.yaml --device tpu"),
                "quickstart.yaml: --device tpu: ");
  if (std::filesystem::exists(std::string(MASKTUNE_SOURCE_DIR) +
                              "/models/SmolLM2-135M-Instruct.Q4_1.gguf")) {
    CHECK(Masktune("validate " + examples + "ruler_magic_pig.yaml --device cpu").code == 0);
    CheckBadInput(Masktune("validate " + examples + "ruler_magic_pig.yaml --device cuda"),
                  "ruler_niah: runs on the CPU only");
  }
}

TEST_CASE("run, then best, trials, status and export on its database") {
  testing::TempDir dir;
  std::ofstream(dir / "s.yaml") << "study: cli\nstorage: s.db\nbenchmark: {name: noop}\n"
                                   "search: {algorithm: random, num_samples: 5, seed: 2}\n"
                                   "attention:\n  a:\n    - sink: {sink_size: 4}\n"
                                   "    - oracle_top_k: {heavy_size: {uniform: [0.05, 0.5]}}\n";
  const Run run = Masktune("run " + dir / "s.yaml" + " --workers 2 --heartbeat-ms 50");
  CAPTURE(run.output);
  REQUIRE(run.code == 0);
  CHECK(run.output.find("5/5 done, 0 running, 0 failed") != std::string::npos);
  CHECK(run.output.find("best a: trial") != std::string::npos);
  const std::string db = " --db " + dir / "s.db";  // the file's storage, next to it
  const Run best = Masktune("best cli" + db);
  CHECK(best.code == 0);
  CHECK(best.output.find("best a: trial") != std::string::npos);
  const Run csv = Masktune("trials cli" + db + " --csv --sort objective");
  CHECK(csv.code == 0);
  CHECK(csv.output.rfind("trial_id,stack,number,status,attempts,objective,oracle_top_k.heavy_size,",
                         0) == 0);
  CHECK(std::count(csv.output.begin(), csv.output.end(), '\n') == 6);
  // The best row comes first and is the one best printed.
  const std::string first = csv.output.substr(csv.output.find('\n') + 1);
  CHECK(best.output.find("trial " + first.substr(0, first.find(','))) != std::string::npos);
  const Run status = Masktune("status cli" + db);
  CHECK(status.output == "study cli (finished): 5 trials: 5 done, 0 failed, 0 running, 0 queued\n");
  const Run exported = Masktune("export cli" + db + " --format sah --out " + dir / "out");
  CHECK(exported.code == 0);
  std::ifstream f(dir / "out/a.json");
  const auto sah = nlohmann::json::parse(f);
  // The shape the reference's run_config_dir.py loads.
  const auto& config = sah["sparse_config"];
  CHECK(config["type"] == "ResearchAttentionConfig");
  CHECK(config["masker_configs"][0]["type"] == "SinkMaskerConfig");
  CHECK(config["masker_configs"][0]["params"]["sink_size"] == 4);
  CHECK(config["masker_configs"][1]["type"] == "OracleTopKConfig");
  // Bad input: exit 2, one line.
  CheckBadInput(Masktune("best nope" + db), "no study 'nope' in");
  CheckBadInput(Masktune("status cli --db " + dir / "none.db"), "none.db: no such database");
  CheckBadInput(Masktune("trials cli" + db + " --status finished"),
                "--status: expected queued, running, done or failed");
  CheckBadInput(Masktune("export cli" + db + " --format csv --out " + dir / "o2"),
                "--format: expected json or sah");
  std::ofstream(dir / "bad.yaml")
      << "study: s\nbenchmark: {name: noop}\nattention: {a: [{sink: {}}]}\n";
  CheckBadInput(Masktune("run " + dir / "bad.yaml"),
                "bad.yaml:3:17: attention.a[0] (sink): missing required field 'sink_size'");
}

TEST_CASE("every subcommand answers --help") {
  const Run top = Masktune("--help");
  CHECK(top.code == 0);
  CHECK(top.output.find("attend") != std::string::npos);
  const Run attend = Masktune("attend --help");
  CHECK(attend.code == 0);
  CHECK(attend.output.find("--maskers") != std::string::npos);
  CHECK(attend.output.find("Exit codes") != std::string::npos);
  for (const char* sub : {"run", "resume", "coordinator", "worker", "best", "trials", "status",
                          "check", "export", "attend", "keys", "keys new", "launch"}) {
    CAPTURE(sub);
    const Run help = Masktune(std::string(sub) + " --help");
    CHECK(help.code == 0);
    CHECK(help.output.find("Usage:") != std::string::npos);
  }
  const Run validate = Masktune("validate --help");
  CHECK(validate.code == 0);
  CHECK(validate.output.find("FILE:LINE:COLUMN") != std::string::npos);
  const Run none = Masktune("");
  CHECK(none.code == 2);
}

}  // namespace
}  // namespace masktune
