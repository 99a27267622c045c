// masktune export: each stack's best configuration as files other tools load
// as written: json, the masker list `masktune attend --maskers @FILE` reads;
// sah, the file sparse-attention-hub's benchmark/raytune/run_config_dir.py
// loads (its deserialize_sparse_config builds each masker config class with
// exactly the fields written here).
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/study.h"
#include "search/plan.h"

namespace masktune::cli {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

// The reference's masker config classes (sparse-attention-hub at commit
// 1a048c9314b6b2cb7e8a7553f744c478b8abfef0, the dataclasses under
// sparse_attention_hub/sparse_attention/research_attention/maskers/; the
// fixture tests/data/sah_config_fields.json lists their fields) and the
// masktune fields each takes, under the same name. A masktune field outside
// the list has no place in the class: it is left out, and said on stderr when
// its value is not masktune's default. An empty class: the reference has no
// config class for the masker.
struct ReferenceClass {
  const char* type;
  const char* reference;
  std::vector<std::string> fields;
};

const std::vector<ReferenceClass>& ReferenceClasses() {
  static const std::vector<ReferenceClass> kClasses = {
      {"sink", "SinkMaskerConfig", {"sink_size"}},
      {"local", "LocalMaskerConfig", {"window_size"}},
      // The reference's CausalMasker takes the abstract FixedMaskerConfig,
      // which its loader does not discover.
      {"causal", "", {}},
      {"oracle_top_k", "OracleTopKConfig", {"heavy_size"}},
      {"oracle_top_p", "OracleTopPMaskerConfig", {"top_p"}},
      {"quest_top_k", "QuestTopKMaskerConfig", {"heavy_size", "page_size", "label_bits"}},
      {"pq_top_k", "PQCacheConfig", {"heavy_size", "pq_sub_dim", "pq_bits"}},
      {"double_sparsity_top_k",
       "DoubleSparsityTopKMaskerConfig",
       {"heavy_size", "sorted_channel_file", "group_factor", "label_bits", "channel_selection"}},
      {"hash_attention_top_k",
       "HashAttentionTopKMaskerConfig",
       {"heavy_size", "hat_bits", "hat_mlp_layers", "hat_mlp_hidden_size", "hat_mlp_activation",
        "hat_weight_file"}},
      {"random_sampling", "RandomSamplingMaskerConfig", {"sampling_rate"}},
      {"adaptive_sampling",
       "AdaptiveSamplingMaskerConfig",
       {"base_rate_sampling", "epsilon", "delta", "init_offset", "local_offset"}},
      {"magic_pig", "MagicPigConfig", {"lsh_l", "lsh_k", "center", "packing", "seed"}},
  };
  return kClasses;
}

const ReferenceClass* FindReference(const std::string& type) {
  for (const ReferenceClass& c : ReferenceClasses())
    if (c.type == type) return &c;
  return nullptr;
}

struct ExportOptions {
  std::string study, db, format, out, model, task;
};

void Note(const std::string& stack, const std::string& message) {
  std::fprintf(stderr, "masktune export: stack %s: %s\n", stack.c_str(), message.c_str());
}

// Path fields made absolute (against the working folder, as the study stored
// them), so the file works from wherever it is read; a path that does not
// exist from here is said on stderr.
void AbsolutePaths(const MaskerRegistry& registry, const std::string& stack, size_t i,
                   MaskerConfig& c) {
  const MaskerSchema* schema = registry.Find(c.type);
  for (auto& [field, value] : c.values) {
    const FieldSpec* spec = schema ? schema->Find(field) : nullptr;
    if (!spec || spec->type != FieldType::kPath) continue;
    const std::string* path = std::get_if<std::string>(&value);
    if (!path || path->empty()) continue;
    std::error_code ec;
    const fs::path abs = fs::absolute(*path, ec).lexically_normal();
    if (!ec) value = abs.string();
    if (!fs::exists(abs, ec))
      Note(stack, "maskers[" + std::to_string(i) + "] (" + c.type + ") " + field + ": " +
                      abs.string() + " does not exist from here");
  }
}

// The reference's masker_configs entry of `c`, or null when it has none.
json ReferenceEntry(const MaskerRegistry& registry, const std::string& stack, size_t i,
                    const MaskerConfig& c) {
  const std::string where = "maskers[" + std::to_string(i) + "] (" + c.type + ")";
  const ReferenceClass* ref = FindReference(c.type);
  if (!ref || !*ref->reference) {
    Note(stack, where + ": the reference has no config class for it; left out");
    return nullptr;
  }
  json params = json::object();
  const MaskerSchema* schema = registry.Find(c.type);
  for (const auto& [field, value] : c.values) {
    if (std::find(ref->fields.begin(), ref->fields.end(), field) != ref->fields.end()) {
      params[field] = FieldValueToJson(value);
      continue;
    }
    const FieldSpec* spec = schema ? schema->Find(field) : nullptr;
    if (spec && spec->default_value && *spec->default_value == value) continue;
    Note(stack, where + " " + field + " = " + FieldValueToString(value) + ": " + ref->reference +
                    " has no such field, so the reference cannot express it; left out");
  }
  if (c.type == "hash_attention_top_k")
    Note(stack, where +
                    " hat_weight_file: the reference reads a pickle (load_hat_weights), "
                    "masktune a safetensors file; convert it for the reference");
  return {{"type", ref->reference}, {"params", params}};
}

bool WriteJson(const fs::path& path, const json& j) {
  std::ofstream f(path);
  f << j.dump(2) << "\n";
  f.close();
  if (!f) {
    std::fprintf(stderr, "masktune export: %s: cannot write\n", path.string().c_str());
    return false;
  }
  return true;
}

// The model and task written in sah files: the flags, else what the study ran
// (said on stderr, since the reference wants a Hugging Face model and one of
// its benchmark tasks).
std::pair<std::string, std::string> ModelAndTask(const ExportOptions& o,
                                                 const configs::SweepConfig& sweep) {
  std::string model = o.model, task = o.task;
  const bool ruler = sweep.benchmark.name == "ruler_niah";
  if (model.empty()) {
    const std::string file = sweep.benchmark.ruler.model.empty() ? "SmolLM2-135M-Instruct.Q4_1.gguf"
                                                                 : sweep.benchmark.ruler.model;
    model = ruler ? fs::path(file).stem().string() : "unknown";
    std::fprintf(stderr,
                 "masktune export: model: wrote '%s'; pass --model with the Hugging Face name the "
                 "reference should load\n",
                 model.c_str());
  }
  if (task.empty()) {
    task = ruler ? "ruler/" + sweep.benchmark.ruler.tasks.front() : sweep.benchmark.name;
    std::fprintf(
        stderr, "masktune export: task: wrote '%s'%s; pass --task to choose\n", task.c_str(),
        ruler && sweep.benchmark.ruler.tasks.size() > 1 ? " (the first of the study's tasks)"
        : ruler                                         ? ""
                                                        : " (not a reference benchmark)");
  }
  return {model, task};
}

int RunExport(const ExportOptions& o) {
  if (o.format != "json" && o.format != "sah") {
    std::fprintf(stderr, "masktune export: --format: expected json or sah, found '%s'\n",
                 o.format.c_str());
    return kExitBadInput;
  }
  auto opened = OpenStudy("export", o.study, o.db);
  if (!opened) return opened.code;
  const configs::SweepConfig& sweep = opened->sweep;
  std::error_code ec;
  fs::create_directories(o.out, ec);
  if (ec) {
    std::fprintf(stderr, "masktune export: %s: %s\n", o.out.c_str(), ec.message().c_str());
    return kExitBadInput;
  }
  auto rows = opened->store.Trials(opened->study.id, "", "objective");
  if (!rows.ok()) {
    std::fprintf(stderr, "masktune export: %s\n", rows.status().message().c_str());
    return kExitFailure;
  }
  const MaskerRegistry registry = MaskerRegistry::WithBuiltins();
  std::pair<std::string, std::string> model_task;
  if (o.format == "sah") model_task = ModelAndTask(o, sweep);
  const auto plans = search::PlanSweep(sweep);
  for (const auto& plan : plans) {
    const std::string& stack = plan.stack->name;
    const storage::TrialRow* best = nullptr;  // rows are sorted by objective
    std::vector<const storage::TrialRow*> mine;
    for (const auto& r : rows.value()) {
      if (r.stack != stack) continue;
      mine.push_back(&r);
      if (!best && r.status == "done") best = &r;
    }
    if (!best) {
      std::fprintf(stderr, "masktune export: stack %s has no finished trial; skipped\n",
                   stack.c_str());
      continue;
    }
    auto params = search::ParamsFromJson(best->params);
    auto configs = params.ok() ? search::Materialize(registry, plan, params.value())
                               : Result<std::vector<MaskerConfig>>(params.status());
    if (!configs.ok()) {
      std::fprintf(stderr, "masktune export: stack %s: %s\n", stack.c_str(),
                   configs.status().message().c_str());
      return kExitFailure;
    }
    for (size_t i = 0; i < configs->size(); ++i) AbsolutePaths(registry, stack, i, (*configs)[i]);
    const json objective = best->objective ? json(*best->objective) : json(nullptr);
    const fs::path path = fs::path(o.out) / (stack + ".json");
    if (o.format == "json") {
      // The masker list as attend reads it; what it came from beside it.
      json list = json::array();
      for (const MaskerConfig& c : configs.value()) {
        json item = {{"type", c.type}};
        for (const auto& [f, v] : c.values) item[f] = FieldValueToJson(v);
        list.push_back(item);
      }
      const json meta = {{"study", opened->study.name},
                         {"stack", stack},
                         {"trial", best->id},
                         {"objective", {{"name", sweep.objective.name}, {"value", objective}}},
                         {"metrics", best->metrics},
                         {"params", json::parse(best->params)},
                         {"maskers", path.filename().string()}};
      if (!WriteJson(path, list) || !WriteJson(fs::path(o.out) / (stack + ".meta.json"), meta))
        return kExitFailure;
    } else {
      json entries = json::array(), classes = json::array();
      for (size_t i = 0; i < configs->size(); ++i) {
        json e = ReferenceEntry(registry, stack, i, (*configs)[i]);
        if (e.is_null()) continue;
        classes.push_back(e["type"]);
        entries.push_back(std::move(e));
      }
      double search_time = 0;
      json trials = json::array();
      for (const auto* r : mine) {
        if (r->started > 0 && r->finished > r->started) search_time += r->finished - r->started;
        trials.push_back({{"trial_id", std::to_string(r->id)},
                          {"config", json::parse(r->params)},
                          {"score", r->objective ? json(*r->objective) : json(nullptr)},
                          {"status", r->status},
                          {"metrics", r->metrics}});
      }
      const auto& [model, task] = model_task;
      // benchmark/raytune's OptimalConfig, field for field (run_config_dir.py
      // reads model, task, masker_name and sparse_config).
      const json file = {
          {"model", model},
          {"task", task},
          {"masker_name", stack},
          {"sparse_config", entries.empty() ? json(nullptr)
                                            : json{{"type", "ResearchAttentionConfig"},
                                                   {"masker_configs", entries}}},
          {"masker_classes", classes},
          {"hyperparams", json::parse(best->params)},
          {"score", objective},
          {"search_time", search_time},
          {"num_trials", mine.size()}};
      // The search's record beside it, named as the reference names its own
      // (run_config_dir.py skips *_trials.json), with masktune's study and metrics.
      const json record = {{"model", model},
                           {"task", task},
                           {"masker_name", stack},
                           {"objective_function", sweep.objective.name},
                           {"best_trial_id", std::to_string(best->id)},
                           {"trials", trials},
                           {"study", opened->study.name},
                           {"metrics", best->metrics}};
      if (!WriteJson(path, file) || !WriteJson(fs::path(o.out) / (stack + "_trials.json"), record))
        return kExitFailure;
    }
    std::printf("%s\n", path.string().c_str());
  }
  return kExitOk;
}

}  // namespace

Action AddExportCommand(CLI::App& app) {
  auto o = std::make_shared<ExportOptions>();
  CLI::App* cmd = app.add_subcommand(
      "export",
      "Write each stack's best configuration, one file per stack, loadable as written:\n"
      "json (the masker list `masktune attend --maskers @FILE` reads) or sah (the\n"
      "reference's run_config_dir.py file: model, task, masker_name, sparse_config).");
  cmd->add_option("STUDY", o->study, "the study's name")->required();
  cmd->add_option("--db", o->db, "SQLite database")->required();
  cmd->add_option("--format", o->format, "json or sah")->required();
  cmd->add_option("--out", o->out, "output folder")->required();
  cmd->add_option("--model", o->model,
                  "sah: the Hugging Face model the reference loads (default: from the study)");
  cmd->add_option("--task", o->task,
                  "sah: the reference's benchmark task, e.g. ruler/niah_single_1");
  cmd->footer(
      "json: OUT/STACK.json is a masker list with every field, side-file paths absolute;\n"
      "OUT/STACK.meta.json holds the study, trial, objective, metrics and parameters.\n"
      "sah: OUT/STACK.json carries exactly the fields each reference config class takes\n"
      "(a masktune-only field with a non-default value is said on stderr, one line each);\n"
      "OUT/STACK_trials.json is the search's record (skipped by run_config_dir.py).\n"
      "Prints each STACK.json written. Exit codes: 0 ok, 1 storage, 2 bad input.");
  return [o] { return RunExport(*o); };
}

}  // namespace masktune::cli
