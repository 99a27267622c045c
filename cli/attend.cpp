// masktune attend: one masker stack on attention tensors from a file.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli/commands.h"
#include "cli/masker_list.h"
#include "engine/attention.h"
#include "engine/backend.h"
#include "engine/device.h"
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
  double scaling = 1.0;
  bool scaling_given = false;  // --scaling was on the command line
  int64_t seed = -1;           // >= 0: the seed of every masker that draws
  std::string device;          // cpu | cuda; empty: cuda when a GPU is present
};

// One line on stderr: control characters that names or values from the input
// may carry (a tensor named "q\nx") are escaped.
int Fail(const std::string& message) {
  std::string line;
  for (unsigned char c : message) {
    if (c < 0x20 || c == 0x7F) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02X", c);
      line += buf;
    } else {
      line += static_cast<char>(c);
    }
  }
  std::fprintf(stderr, "masktune attend: %s\n", line.c_str());
  return kExitBadInput;
}

// The input's `case` metadata as JSON: null when there is none.
Result<nlohmann::json> CaseMetadata(const AttendOptions& o, const SafetensorsFile& file) {
  auto it = file.metadata().find("case");
  if (it == file.metadata().end()) return nlohmann::json();
  const std::string where = o.input + ": case metadata: ";
  if (Status s = CheckJsonText(it->second, ""); !s.ok()) return s.WithContext(where);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(it->second);
  } catch (const std::exception& e) {
    return Status::Error(where + "not valid JSON: " + e.what());
  }
  if (!j.is_object()) return Status::Error(where + "not a JSON object");
  return j;
}

// The masker list text: inline JSON, @FILE, or the `case` metadata of the input.
Result<std::string> MaskerText(const AttendOptions& o, const nlohmann::json& meta) {
  if (!o.maskers.empty()) return MaskerListText(o.maskers);
  if (meta.is_null())
    return Status::Error("--maskers is required: " + o.input + " carries no case metadata");
  if (!meta.contains("maskers"))
    return Status::Error(o.input + ": case metadata has no masker list ('maskers')");
  return meta["maskers"].dump();
}

// --scaling, else the case metadata's scaling, else 1 / sqrt(head_dim). Any
// finite value within float range: 0 and negative scalings are defined by the
// formula s_j = scaling * <q, k_j> + attention_mask_j.
Result<float> Scaling(const AttendOptions& o, const nlohmann::json& meta, int64_t head_dim) {
  auto check = [](double x, const std::string& what) -> Result<float> {
    if (!std::isfinite(x) || std::fabs(x) > std::numeric_limits<float>::max()) {
      const std::string found = std::isnan(x)   ? "nan"
                                : std::isinf(x) ? (x > 0 ? "inf" : "-inf")
                                                : nlohmann::json(x).dump();
      return Status::Error(what + ": expected a finite number within float range, found " + found);
    }
    return static_cast<float>(x);
  };
  if (o.scaling_given) return check(o.scaling, "--scaling");
  if (meta.is_object() && meta.contains("scaling")) {
    const std::string what = o.input + ": case metadata: field 'scaling'";
    if (!meta["scaling"].is_number())
      return Status::Error(what + ": expected a number, found " + meta["scaling"].dump());
    return check(meta["scaling"].get<double>(), what);
  }
  return static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim)));
}

// Beyond what the attention code can index (int64 entries, int32 keys), or a
// dense mask for --out that would not fit in this machine's memory.
Status CheckMaskSize(const AttentionInputs& in, bool dense) {
  const MaskShape m = in.mask_shape();
  int64_t rows = 0, entries = 0;
  const std::string shape = "(" + std::to_string(m.batch) + ", " + std::to_string(m.heads) + ", " +
                            std::to_string(m.queries) + ", " + std::to_string(m.keys) + ")";
  if (m.keys > std::numeric_limits<int32_t>::max())
    return Status::Error("mask " + shape + ": more keys than 2^31 - 1");
  if (__builtin_mul_overflow(m.batch, m.heads, &rows) ||
      __builtin_mul_overflow(rows, m.queries, &rows) ||
      __builtin_mul_overflow(rows, m.keys, &entries) || entries > (int64_t{1} << 61))
    return Status::Error("mask " + shape + ": more entries than a 64-bit count holds");
  const double bytes = 4.0 * static_cast<double>(entries);
  const double memory = static_cast<double>(sysconf(_SC_PHYS_PAGES)) * sysconf(_SC_PAGE_SIZE);
  if (dense && memory > 0 && bytes > memory) {
    char buf[160];
    std::snprintf(buf, sizeof buf,
                  ": %.1f GiB as a dense mask (--out), more than this machine's "
                  "%.1f GiB of memory",
                  bytes / (1 << 30), memory / (1 << 30));
    return Status::Error("mask " + shape + buf);
  }
  return Status::Ok();
}

// OK when attention's outputs and the error between them are finite. Scores
// were checked before; what is left to overflow is the weighted sum of v.
Status CheckOutputs(const AttentionInputs& in, const Tensor& out, const Tensor& dense,
                    double error) {
  for (const auto& [t, name] : {std::pair{&dense, "dense attention"}, {&out, "masked attention"}}) {
    if (Status s = CheckFinite(*t, "out"); !s.ok()) {
      float vmax = 0.0f;
      for (float x : in.values->vec()) vmax = std::max(vmax, std::fabs(x));
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.3g", static_cast<double>(vmax));
      return Status::Error(std::string(name) + " output overflows: " + s.message() +
                           "; tensor 'v' holds values up to " + buf +
                           (t == &out ? ", weighed by 1/p of the mask's kept keys" : ""));
    }
  }
  if (!std::isfinite(error))
    return Status::Error(
        "the error is undefined: dense attention's output is all zeros while "
        "the masked output is not");
  return Status::Ok();
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
  auto meta = CaseMetadata(o, file);
  if (!meta.ok()) return Fail(meta.status().message());
  auto scaling = Scaling(o, meta.value(), in.queries->dim(3));
  if (!scaling.ok()) return Fail(scaling.status().message());
  in.scaling = scaling.value();
  if (Status s = CheckAttentionInputs(in); !s.ok()) return Fail(o.input + ": " + s.message());
  if (Status s = CheckScoreRange(in); !s.ok()) return Fail(o.input + ": " + s.message());
  if (Status s = CheckMaskSize(in, !o.out.empty()); !s.ok())
    return Fail(o.input + ": " + s.message());

  auto text = MaskerText(o, meta.value());
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

  // The device, chosen once; masks are built on the CPU, attention runs there.
  Device device = DefaultDevice();
  if (!o.device.empty()) {
    auto parsed = Device::Parse(o.device);
    if (!parsed.ok()) return Fail("--device: " + parsed.status().message());
    device = parsed.value();
    if (Status s = Activate(device); !s.ok())
      return Fail("--device " + o.device + ": " + s.message());
  }
  auto backend = CreateBackend(device);
  if (!backend.ok()) return Fail("--device: " + backend.status().message());
  auto resident_or = (*backend)->Upload(in);
  if (!resident_or.ok()) return Fail(o.input + ": " + resident_or.status().message());
  BackendInputs& resident = *resident_or.value();
  auto masked = [&](const Mask& m) { return (*backend)->MaskedAttention(resident, m); };
  auto dense_attention = [&] { return (*backend)->DenseAttention(resident); };

  StackState state;
  auto mask = (*backend)->BuildMask(stack.value(), resident, state);
  if (!mask.ok()) return Fail(mask.status().message());
  auto out_or = masked(mask.value());
  if (!out_or.ok()) return Fail(out_or.status().message());
  auto dense_or = dense_attention();
  if (!dense_or.ok()) return Fail(dense_or.status().message());
  const Tensor& out = out_or.value();
  const Tensor& dense = dense_or.value();

  const double error = RelativeL2Error(out, dense);
  if (Status s = CheckOutputs(in, out, dense, error); !s.ok())
    return Fail(o.input + ": " + s.message());

  nlohmann::json line;
  line["density"] = mask->AttendedDensity();  // `--maskers '[]'`: dense, 1
  line["error"] = error;
  line["device"] = device.cuda() ? "cuda" : "cpu";  // the kind; cuda:N's N is the caller's
  if (o.repeat > 0) {
    // Each mask timing starts from a fresh layer state, as a first call does.
    line["mask_s"] = TimeCalls(o.repeat, [&] {
                       StackState fresh;
                       (void)(*backend)->BuildMask(stack.value(), resident, fresh);
                     }).median;
    line["attention_s"] = TimeCalls(o.repeat, [&] { (void)masked(mask.value()); }).median;
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
                  "where attention runs: cpu, cuda (= cuda:0) or cuda:N (default: cuda:0 when a\n"
                  "GPU is present); masks are built on the CPU");
  cmd->add_option("--scaling", opts->scaling,
                  "score scaling: a finite number (0 and negatives allowed; nan, inf and\n"
                  "values beyond float range are errors); default: the case metadata's,\n"
                  "else 1/sqrt(head_dim)")
      ->each([opts](const std::string&) { opts->scaling_given = true; });
  cmd->footer(
      "Example:\n  masktune attend --input ../shared/golden/oracle_topk_s0.safetensors \\\n"
      "    --maskers '[{\"type\":\"sink\",\"sink_size\":4},{\"type\":\"oracle_top_k\","
      "\"heavy_size\":0.1}]'\n\n"
      "Input limits (each an error, exit 2): --input must be a regular safetensors file\n"
      "(not a folder or device) whose header length fits the file (at most 100 MiB) and\n"
      "whose tensors, F32/F16/BF16, tile its data section without overlap or gap; JSON\n"
      "(--maskers, the header, case metadata) nests at most 64 levels, holds no number\n"
      "beyond double range (1e999) and no repeated key; a --maskers @FILE is at most\n"
      "16 MiB; q, k, v must be finite and every score scaling * <q, k> + attention_mask\n"
      "within float range (\"scores overflow\"), as must the outputs.\n"
      "Exit codes: 0 success, 2 bad input (one line on stderr).");
  return [opts] { return RunAttend(*opts); };
}

}  // namespace masktune::cli
