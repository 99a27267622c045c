// masktune attend: one masker stack on attention tensors from a file.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli/commands.h"
#include "engine/attention.h"
#include "engine/cuda/cuda_attention.h"
#include "engine/registry.h"
#include "engine/safetensors.h"
#include "engine/timing.h"

namespace masktune::cli {
namespace {

struct AttendOptions {
  std::string input;
  std::string maskers;  // JSON text or @FILE; empty: the file's case metadata
  int layer = 0;
  std::string out;
  int repeat = 0;
  double scaling = std::nan("");
  int64_t seed = -1;  // >= 0: the seed of every masker that draws
  std::string device;  // cpu | cuda; empty: cuda when a GPU is present
};

int Fail(const std::string& message) {
  std::fprintf(stderr, "masktune attend: %s\n", message.c_str());
  return kExitBadInput;
}

// The masker list text: inline JSON, @FILE, or the `case` metadata of the input.
Result<std::string> MaskerText(const AttendOptions& o, const SafetensorsFile& file) {
  if (!o.maskers.empty() && o.maskers[0] == '@') {
    const std::string path = o.maskers.substr(1);
    std::ifstream f(path);
    if (!f) return Status::Error("--maskers: cannot open '" + path + "'");
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
  }
  if (!o.maskers.empty()) return o.maskers;
  auto it = file.metadata().find("case");
  if (it == file.metadata().end())
    return Status::Error("--maskers is required: " + o.input + " carries no case metadata");
  try {
    return nlohmann::json::parse(it->second).at("maskers").dump();
  } catch (const std::exception& e) {
    return Status::Error(o.input + ": case metadata has no masker list: " + e.what());
  }
}

// --scaling, else the case metadata's scaling, else 1 / sqrt(head_dim).
double Scaling(const AttendOptions& o, const SafetensorsFile& file, int64_t head_dim) {
  if (!std::isnan(o.scaling)) return o.scaling;
  auto it = file.metadata().find("case");
  if (it != file.metadata().end()) {
    auto j = nlohmann::json::parse(it->second, nullptr, false);
    if (j.is_object() && j.contains("scaling") && j["scaling"].is_number())
      return j["scaling"].get<double>();
  }
  return 1.0 / std::sqrt(static_cast<double>(head_dim));
}

int RunAttend(const AttendOptions& o) {
  auto file_or = SafetensorsFile::Read(o.input);
  if (!file_or.ok()) return Fail(file_or.status().message());
  const SafetensorsFile& file = file_or.value();
  AttentionInputs in;
  for (auto [name, slot] : {std::pair{"q", &in.queries}, {"k", &in.keys}, {"v", &in.values}}) {
    auto t = file.Get(name, 4);
    if (!t.ok()) return Fail(t.status().message());
    if (Status s = CheckFinite(**t, name); !s.ok()) return Fail(o.input + ": " + s.message());
    *slot = t.value();
  }
  if (file.Has("attention_mask")) in.attention_mask = file.Get("attention_mask").value();
  in.layer = o.layer;
  in.scaling = static_cast<float>(Scaling(o, file, in.queries->dim(3)));
  if (Status s = CheckAttentionInputs(in); !s.ok()) return Fail(o.input + ": " + s.message());

  auto text = MaskerText(o, file);
  if (!text.ok()) return Fail(text.status().message());
  const MaskerRegistry registry = MaskerRegistry::WithBuiltins();
  const std::string base_dir = std::filesystem::path(o.input).parent_path().string();
  auto configs = registry.ParseJsonList(text.value(), base_dir);
  if (!configs.ok()) return Fail("--maskers: " + configs.status().message());
  if (o.seed >= 0)
    for (MaskerConfig& c : configs.value())
      if (c.values.count("seed")) c.values["seed"] = o.seed;
  auto stack = MaskerStack::Build(registry, configs.value());
  if (!stack.ok()) return Fail("--maskers: " + stack.status().message());

  const std::string device = o.device.empty() ? (cuda::Available() ? "cuda" : "cpu") : o.device;
  if (device == "cuda" && !cuda::Available())
#ifdef MASKTUNE_HAVE_CUDA
    return Fail("--device cuda: no CUDA device");
#else
    return Fail("--device cuda: masktune was built without CUDA");
#endif
  // Masks are built on the CPU; attention runs on `device`.
  auto masked = [&](const Mask& m) -> Result<Tensor> {
    if (device == "cuda") return cuda::MaskedAttention(in, m);
    return MaskedAttention(in, m);
  };
  auto dense_attention = [&]() -> Result<Tensor> {
    if (device == "cuda") return cuda::DenseAttention(in);
    return DenseAttention(in);
  };

  StackState state;
  auto mask = stack->ComputeMask(in, state);
  if (!mask.ok()) return Fail(mask.status().message());
  auto out_or = masked(mask.value());
  if (!out_or.ok()) return Fail(out_or.status().message());
  auto dense_or = dense_attention();
  if (!dense_or.ok()) return Fail(dense_or.status().message());
  const Tensor& out = out_or.value();
  const Tensor& dense = dense_or.value();

  nlohmann::json line;
  line["density"] = mask->Density();
  line["error"] = RelativeL2Error(out, dense);
  line["device"] = device;
  if (o.repeat > 0) {
    // Each mask timing starts from a fresh layer state, as a first call does.
    line["mask_s"] = TimeCalls(o.repeat, [&] {
      StackState fresh;
      (void)stack->ComputeMask(in, fresh);
    }).median;
    line["attention_s"] =
        TimeCalls(o.repeat, [&] { (void)masked(mask.value()); }).median;
    line["dense_s"] = TimeCalls(o.repeat, [&] { (void)dense_attention(); }).median;
  }
  if (!o.out.empty()) {
    const Tensor dense_mask = mask->ToDense();
    if (Status s = WriteSafetensors(o.out, {{"mask", &dense_mask}, {"out", &out}}); !s.ok())
      return Fail(s.message());
  }
  std::printf("%s\n", line.dump().c_str());
  return kExitOk;
}

}  // namespace

Action AddAttendCommand(CLI::App& app) {
  auto opts = std::make_shared<AttendOptions>();
  CLI::App* cmd = app.add_subcommand(
      "attend",
      "Run one masker stack on q, k, v (and attention_mask) from a safetensors file; print\n"
      "one JSON line with the mask's density and the output's relative L2 error against\n"
      "dense attention.");
  cmd->add_option("--input", opts->input, "safetensors file with q, k, v [, attention_mask]")
      ->required();
  cmd->add_option("--maskers", opts->maskers,
                  "masker list as JSON, [{\"type\": \"sink\", \"sink_size\": 4}, ...], or @FILE;\n"
                  "[] = dense attention; default: the list in the input's case metadata.\n"
                  "File paths inside are relative to the input's folder");
  cmd->add_option("--layer", opts->layer, "layer index for per-layer side inputs (default 0)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--out", opts->out, "write tensors mask and out (F32) to this safetensors file");
  cmd->add_option("--repeat", opts->repeat,
                  "time N calls; adds mask_s, attention_s, dense_s (median seconds)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--seed", opts->seed,
                  "seed of every sampling masker in the list (overrides their `seed` fields)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--device", opts->device,
                  "where attention runs: cpu or cuda (default: cuda when a GPU is present);\n"
                  "masks are built on the CPU")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  cmd->add_option("--scaling", opts->scaling,
                  "score scaling (default: the case metadata's, else 1/sqrt(head_dim))");
  cmd->footer(
      "Example:\n  masktune attend --input ../shared/golden/oracle_topk_s0.safetensors \\\n"
      "    --maskers '[{\"type\":\"sink\",\"sink_size\":4},{\"type\":\"oracle_top_k\","
      "\"heavy_size\":0.1}]'\n"
      "Exit codes: 0 success, 2 bad input (one line on stderr).");
  return [opts] { return RunAttend(*opts); };
}

}  // namespace masktune::cli
