#include "configs/sweep.h"

#include "engine/benchmarks/ruler_tasks.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

namespace masktune::configs {
namespace {

// Errors carry their place; the first one ends parsing.
struct SweepError {
  Location where;
  std::string message;
};

class Parser {
 public:
  Parser(std::string path, const MaskerRegistry& registry)
      : path_(std::move(path)), registry_(registry),
        dir_(std::filesystem::path(path_).parent_path().string()) {}

  SweepConfig Parse(const YAML::Node& root);

 private:
  Location At(const YAML::Node& n) const {
    const YAML::Mark m = n.Mark();
    return {path_, m.line + 1, m.column + 1};
  }
  [[noreturn]] void Fail(const YAML::Node& n, const std::string& message) const {
    throw SweepError{At(n), message};
  }
  // Keys of map `n` must be among `allowed`; `where` names the map in messages.
  void CheckKeys(const YAML::Node& n, const std::string& where,
                 const std::set<std::string>& allowed) const;
  YAML::Node Map(const YAML::Node& n, const std::string& where) const {
    if (!n.IsMap()) Fail(n, where + ": expected a mapping, found " + Describe(n));
    return n;
  }
  std::string String(const YAML::Node& n, const std::string& where) const;
  int64_t Int(const YAML::Node& n, const std::string& where, int64_t lo, int64_t hi) const;
  double Number(const YAML::Node& n, const std::string& where) const;
  FieldValue Scalar(const YAML::Node& n) const;
  static std::string Describe(const YAML::Node& n);

  void ParseBenchmark(const YAML::Node& n, BenchmarkSpec& b) const;
  void ParseRuler(const YAML::Node& n, RulerSpec& r) const;
  void ParseObjective(const YAML::Node& n, const BenchmarkSpec& benchmark, ObjectiveSpec& o) const;
  void ParseSearch(const YAML::Node& n, SearchSpec& s) const;
  StackSpec ParseStack(const std::string& name, const YAML::Node& n) const;
  ParamSpace ParseSpace(const YAML::Node& n, const FieldSpec& spec, const std::string& where) const;

  std::string path_;
  const MaskerRegistry& registry_;
  std::string dir_;
};

std::string Parser::Describe(const YAML::Node& n) {
  if (n.IsNull()) return "nothing";
  if (n.IsSequence()) return "a list";
  if (n.IsMap()) return "a mapping";
  return "'" + n.Scalar() + "'";
}

void Parser::CheckKeys(const YAML::Node& n, const std::string& where,
                       const std::set<std::string>& allowed) const {
  for (const auto& kv : n) {
    const std::string key = kv.first.Scalar();
    if (!allowed.count(key)) {
      std::string list;
      for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
      Fail(kv.first, (where.empty() ? "" : where + ": ") + "unknown key '" + key +
                         "' (expected one of: " + list + ")");
    }
  }
}

std::string Parser::String(const YAML::Node& n, const std::string& where) const {
  if (!n.IsScalar() || n.Scalar().empty()) Fail(n, where + ": expected a string, found " + Describe(n));
  return n.Scalar();
}

FieldValue Parser::Scalar(const YAML::Node& n) const {
  // The lexical rule of the reference: 0.1 and 1.0 are floats, 32 is an integer.
  const std::string& s = n.Scalar();
  if (n.Tag() == "!") return s;  // quoted: always a string
  static const std::regex kInt(R"([-+]?[0-9]+)");
  static const std::regex kFloat(R"([-+]?(\.[0-9]+|[0-9]+\.[0-9]*|[0-9]+(\.[0-9]*)?[eE][-+]?[0-9]+))");
  if (std::regex_match(s, kInt)) {
    try {
      return static_cast<int64_t>(std::stoll(s));
    } catch (const std::out_of_range&) {
      Fail(n, "integer " + s + " is out of range");
    }
  }
  if (std::regex_match(s, kFloat)) return std::stod(s);
  if (s == "true" || s == "True" || s == "TRUE") return true;
  if (s == "false" || s == "False" || s == "FALSE") return false;
  return s;
}

int64_t Parser::Int(const YAML::Node& n, const std::string& where, int64_t lo, int64_t hi) const {
  if (!n.IsScalar()) Fail(n, where + ": expected an integer, found " + Describe(n));
  const FieldValue v = Scalar(n);
  if (!std::holds_alternative<int64_t>(v)) Fail(n, where + ": expected an integer, found " + Describe(n));
  const int64_t x = std::get<int64_t>(v);
  if (x < lo || x > hi)
    Fail(n, where + ": expected an integer in [" + std::to_string(lo) + ", " +
                (hi == INT64_MAX ? "inf" : std::to_string(hi)) + "], found " + std::to_string(x));
  return x;
}

double Parser::Number(const YAML::Node& n, const std::string& where) const {
  if (n.IsScalar()) {
    const FieldValue v = Scalar(n);
    if (auto* i = std::get_if<int64_t>(&v)) return static_cast<double>(*i);
    if (auto* d = std::get_if<double>(&v)) return *d;
  }
  Fail(n, where + ": expected a number, found " + Describe(n));
}

void Parser::ParseBenchmark(const YAML::Node& n, BenchmarkSpec& b) const {
  Map(n, "benchmark");
  if (!n["name"]) Fail(n, "benchmark: missing 'name' (attention_error, ruler_niah or noop)");
  b.name = String(n["name"], "benchmark.name");
  if (b.name != "attention_error" && b.name != "noop" && b.name != "ruler_niah")
    Fail(n["name"], "benchmark.name: expected attention_error, ruler_niah or noop, found '" +
                        b.name + "'");
  if (b.name == "ruler_niah") return ParseRuler(n, b.ruler);
  CheckKeys(n, "benchmark", {"name", "data", "sleep_ms"});
  if (b.name == "noop") {
    if (n["data"]) Fail(n["data"], "benchmark.data: the noop benchmark takes no data");
    if (n["sleep_ms"]) b.sleep_ms = Int(n["sleep_ms"], "benchmark.sleep_ms", 0, 3600000);
    return;
  }
  if (n["sleep_ms"]) Fail(n["sleep_ms"], "benchmark.sleep_ms: only the noop benchmark sleeps");
  if (!n["data"]) return;  // the synthetic defaults
  const YAML::Node data = Map(n["data"], "benchmark.data");
  CheckKeys(data, "benchmark.data", {"synthetic", "folder"});
  if (data["synthetic"] && data["folder"])
    Fail(data, "benchmark.data: give either synthetic or folder, not both");
  if (data["folder"]) {
    b.synthetic = false;
    std::filesystem::path p(String(data["folder"], "benchmark.data.folder"));
    b.folder = p.is_relative() ? (std::filesystem::path(dir_) / p).lexically_normal().string()
                               : p.string();
    if (!std::filesystem::is_directory(b.folder))
      Fail(data["folder"], "benchmark.data.folder: '" + b.folder + "' is not a folder");
    return;
  }
  const YAML::Node s = data["synthetic"];
  if (s.IsNull()) return;
  Map(s, "benchmark.data.synthetic");
  CheckKeys(s, "benchmark.data.synthetic",
            {"keys", "heads", "kv_heads", "head_dim", "queries", "samples", "seed"});
  SyntheticSpec& d = b.data;
  const std::string w = "benchmark.data.synthetic.";
  if (s["keys"]) d.keys = Int(s["keys"], w + "keys", 1, 1 << 24);
  if (s["heads"]) d.heads = Int(s["heads"], w + "heads", 1, 1024);
  if (s["kv_heads"]) d.kv_heads = Int(s["kv_heads"], w + "kv_heads", 1, 1024);
  if (s["head_dim"]) d.head_dim = Int(s["head_dim"], w + "head_dim", 1, 4096);
  if (s["queries"]) d.queries = Int(s["queries"], w + "queries", 1, 1 << 20);
  if (s["samples"]) d.samples = Int(s["samples"], w + "samples", 1, 1 << 20);
  if (s["seed"]) d.seed = Int(s["seed"], w + "seed", 0, INT64_MAX);
  if (d.heads % d.kv_heads != 0)
    Fail(s["kv_heads"] ? s["kv_heads"] : s, w + "kv_heads: heads (" + std::to_string(d.heads) +
                                                ") must be a multiple of kv_heads (" +
                                                std::to_string(d.kv_heads) + ")");
  if (d.queries > d.keys)
    Fail(s["queries"], w + "queries: more queries than keys (" + std::to_string(d.keys) + ")");
}

void Parser::ParseRuler(const YAML::Node& n, RulerSpec& r) const {
  CheckKeys(n, "benchmark", {"name", "model", "tasks", "context_tokens", "samples", "seed",
                             "setup", "max_new_tokens", "dense_layers", "prefill_cache"});
  const std::string w = "benchmark.";
  if (n["model"]) {
    std::filesystem::path p(String(n["model"], w + "model"));
    r.model = p.is_relative() ? (std::filesystem::path(dir_) / p).lexically_normal().string()
                              : p.string();
    if (!std::filesystem::is_regular_file(r.model))
      Fail(n["model"], w + "model: no file '" + r.model + "'");
  }
  if (n["tasks"]) {
    const YAML::Node t = n["tasks"];
    if (!t.IsSequence() || t.size() == 0) Fail(t, w + "tasks: expected a list of task names");
    r.tasks.clear();
    const auto& known = ruler::TaskNames();
    for (size_t i = 0; i < t.size(); ++i) {
      const std::string where = w + "tasks[" + std::to_string(i) + "]";
      const std::string name = String(t[i], where);
      if (std::find(known.begin(), known.end(), name) == known.end()) {
        std::string list;
        for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
        Fail(t[i], where + ": unknown task '" + name + "' (expected one of: " + list + ")");
      }
      if (std::find(r.tasks.begin(), r.tasks.end(), name) != r.tasks.end())
        Fail(t[i], where + ": '" + name + "' is listed twice");
      r.tasks.push_back(name);
    }
  }
  if (n["context_tokens"]) r.context_tokens = Int(n["context_tokens"], w + "context_tokens", 64, 1 << 20);
  if (n["samples"]) r.samples = Int(n["samples"], w + "samples", 1, 100000);
  if (n["seed"]) r.seed = Int(n["seed"], w + "seed", 0, INT64_MAX);
  if (n["max_new_tokens"]) r.max_new_tokens = Int(n["max_new_tokens"], w + "max_new_tokens", 1, 4096);
  if (n["setup"]) {
    r.setup = String(n["setup"], w + "setup");
    if (r.setup != "A" && r.setup != "B")
      Fail(n["setup"], w + "setup: expected A (whole prompt dense, decoding sparse) or B (context "
                           "dense, question and decoding sparse), found '" + r.setup + "'");
  }
  if (n["dense_layers"]) {
    const YAML::Node d = n["dense_layers"];
    if (!d.IsSequence()) Fail(d, w + "dense_layers: expected a list of layer indices");
    for (size_t i = 0; i < d.size(); ++i)
      r.dense_layers.push_back(Int(d[i], w + "dense_layers[" + std::to_string(i) + "]", 0, 100000));
  }
  if (n["prefill_cache"]) {
    std::filesystem::path p(String(n["prefill_cache"], w + "prefill_cache"));
    r.prefill_cache = p.is_relative() ? (std::filesystem::path(dir_) / p).lexically_normal().string()
                                      : p.string();
  }
}

// The metrics `b` reports (engine/benchmarks), for objectives to name.
std::vector<std::string> MetricsOf(const BenchmarkSpec& b) {
  if (b.name == "ruler_niah") {
    std::vector<std::string> m = {"accuracy", "error", "density", "tokens_per_second"};
    for (const auto& t : b.ruler.tasks)
      for (const char* x : {".accuracy", ".density", ".tokens_per_second"}) m.push_back(t + x);
    return m;
  }
  return {"density", "error", "error_max", "density_max", "recall"};
}

void Parser::ParseObjective(const YAML::Node& n, const BenchmarkSpec& benchmark,
                            ObjectiveSpec& o) const {
  if (n.IsScalar()) {
    o.name = n.Scalar();
    if (!IsReferenceObjective(o.name))
      Fail(n, "objective: expected default, sparsity_5, sparsity_10, sparsity_15, sparsity_20, "
              "sparsity_25 or {metric: NAME, mode: min|max}, found '" + o.name + "'");
    return;
  }
  std::vector<YAML::Node> items;
  if (n.IsMap()) items.push_back(n);
  else if (n.IsSequence() && n.size() > 0)
    for (const auto& item : n) items.push_back(item);
  else
    Fail(n, "objective: expected a name, {metric: NAME, mode: min|max} or a list of those, found " +
                Describe(n));
  for (size_t i = 0; i < items.size(); ++i) {
    const std::string w = items.size() > 1 ? "objective[" + std::to_string(i) + "]" : "objective";
    const YAML::Node item = Map(items[i], w);
    CheckKeys(item, w, {"metric", "mode"});
    if (!item["metric"]) Fail(item, w + ": missing 'metric'");
    const std::string metric = String(item["metric"], w + ".metric");
    const auto known = MetricsOf(benchmark);
    if (std::find(known.begin(), known.end(), metric) == known.end()) {
      std::string list;
      for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
      Fail(item["metric"], w + ".metric: expected one of " + list + ", found '" + metric + "'");
    }
    std::string mode = item["mode"] ? String(item["mode"], w + ".mode") : "min";
    if (mode != "min" && mode != "max")
      Fail(item["mode"], w + ".mode: expected min or max, found '" + mode + "'");
    for (const auto& [m, unused] : o.metrics)
      if (m == metric) Fail(item["metric"], w + ".metric: '" + metric + "' is listed twice");
    o.metrics.emplace_back(metric, mode == "min");
  }
  o.name = o.metrics.size() == 1 ? o.metrics[0].first : "pareto";
}

void Parser::ParseSearch(const YAML::Node& n, SearchSpec& s) const {
  Map(n, "search");
  CheckKeys(n, "search", {"algorithm", "num_samples", "seed", "max_concurrent_trials",
                          "n_startup_trials", "max_failures"});
  if (n["algorithm"]) {
    s.algorithm = String(n["algorithm"], "search.algorithm");
    if (s.algorithm != "grid" && s.algorithm != "random" && s.algorithm != "tpe")
      Fail(n["algorithm"], "search.algorithm: expected grid, random or tpe, found '" + s.algorithm + "'");
  }
  if (n["num_samples"]) s.num_samples = Int(n["num_samples"], "search.num_samples", 1, 1 << 30);
  if (n["seed"]) s.seed = Int(n["seed"], "search.seed", 0, INT64_MAX);
  if (n["max_concurrent_trials"])
    s.max_concurrent_trials = Int(n["max_concurrent_trials"], "search.max_concurrent_trials", 0, 1 << 20);
  if (n["n_startup_trials"])
    s.n_startup_trials = Int(n["n_startup_trials"], "search.n_startup_trials", 1, 1 << 20);
  if (n["max_failures"]) s.max_failures = Int(n["max_failures"], "search.max_failures", 1, 1000);
}

ParamSpace Parser::ParseSpace(const YAML::Node& n, const FieldSpec& spec,
                              const std::string& where) const {
  ParamSpace space;
  space.where = At(n);
  auto check = [&](const YAML::Node& at, const FieldValue& v) {
    Status st = CheckFieldValue(spec, v);
    if (!st.ok()) Fail(at, where + st.message());
  };
  auto resolve = [&](FieldValue v) {
    if (spec.type == FieldType::kPath) {
      std::filesystem::path p(std::get<std::string>(v));
      if (p.is_relative()) v = (std::filesystem::path(dir_) / p).lexically_normal().string();
    }
    return v;
  };
  if (n.IsScalar()) {
    const FieldValue v = Scalar(n);
    check(n, v);
    space.values.push_back(resolve(v));
    return space;
  }
  const std::string field = "field '" + spec.name + "'";
  if (n.IsSequence())
    Fail(n, where + field + ": a list is not a value; write grid_search: [...] or choice: [...]");
  if (!n.IsMap() || n.size() != 1)
    Fail(n, where + field + ": expected a value or one of grid_search, choice, uniform, "
                            "loguniform, randint, quniform, found " + Describe(n));
  const std::string kind = n.begin()->first.Scalar();
  const YAML::Node arg = n.begin()->second;
  const std::string w = where + field + ": " + kind;
  static const std::map<std::string, ParamSpace::Kind> kKinds = {
      {"grid_search", ParamSpace::Kind::kGridSearch}, {"choice", ParamSpace::Kind::kChoice},
      {"uniform", ParamSpace::Kind::kUniform},         {"loguniform", ParamSpace::Kind::kLogUniform},
      {"randint", ParamSpace::Kind::kRandInt},         {"quniform", ParamSpace::Kind::kQUniform}};
  auto it = kKinds.find(kind);
  if (it == kKinds.end())
    Fail(n.begin()->first, where + field + ": unknown search space '" + kind +
                               "' (expected grid_search, choice, uniform, loguniform, randint or "
                               "quniform)");
  space.kind = it->second;
  if (!arg.IsSequence() || arg.size() == 0)
    Fail(arg, w + ": expected a non-empty list, found " + Describe(arg));
  if (space.kind == ParamSpace::Kind::kGridSearch || space.kind == ParamSpace::Kind::kChoice) {
    for (const auto& item : arg) {
      if (!item.IsScalar()) Fail(item, w + ": expected values, found " + Describe(item));
      const FieldValue v = Scalar(item);
      check(item, v);
      space.values.push_back(resolve(v));
    }
    return space;
  }
  // Numeric ranges: the bounds must be valid values of the field.
  const bool is_q = space.kind == ParamSpace::Kind::kQUniform;
  if (arg.size() != (is_q ? 3u : 2u))
    Fail(arg, w + ": expected [" + std::string(is_q ? "lo, hi, q" : "lo, hi") + "], found " +
                  std::to_string(arg.size()) + " values");
  const bool ints = space.kind == ParamSpace::Kind::kRandInt;
  if (spec.type != FieldType::kFloat && spec.type != FieldType::kSize &&
      !(ints && spec.type == FieldType::kInt))
    Fail(n.begin()->first, w + ": not a space for " +
                               std::string(spec.type == FieldType::kInt
                                               ? "an integer field (use randint or grid_search)"
                                               : "this field (use grid_search or choice)"));
  space.lo = Number(arg[0], w + " lower bound");
  space.hi = Number(arg[1], w + " upper bound");
  if (!(space.lo < space.hi)) Fail(arg, w + ": lower bound must be below the upper bound");
  if (ints) {
    for (int i = 0; i < 2; ++i)
      if (!std::holds_alternative<int64_t>(Scalar(arg[i])))
        Fail(arg[i], w + ": bounds must be integers");
    // randint's upper bound is exclusive, as in Ray Tune.
    check(arg[0], static_cast<int64_t>(space.lo));
    check(arg[1], static_cast<int64_t>(space.hi) - 1);
    return space;
  }
  // Float spaces sample floats: for a size field, fractions of the key count.
  check(arg[0], space.lo);
  check(arg[1], space.hi);
  if (space.kind == ParamSpace::Kind::kLogUniform && space.lo <= 0)
    Fail(arg[0], w + ": loguniform needs a lower bound > 0");
  if (is_q) {
    space.q = Number(arg[2], w + " step");
    if (!(space.q > 0)) Fail(arg[2], w + ": the step q must be > 0");
  }
  return space;
}

StackSpec Parser::ParseStack(const std::string& name, const YAML::Node& n) const {
  StackSpec stack;
  stack.name = name;
  stack.where = At(n);
  const std::string ws = "attention." + name;
  if (!n.IsSequence() || n.size() == 0)
    Fail(n, ws + ": expected a list of maskers (- type: {field: value}), found " + Describe(n));
  int sampling = -1;
  for (size_t i = 0; i < n.size(); ++i) {
    const YAML::Node item = n[i];
    const std::string wi = ws + "[" + std::to_string(i) + "]";
    MaskerEntry entry;
    entry.where = At(item);
    YAML::Node fields;
    if (item.IsScalar()) {
      entry.type = item.Scalar();
    } else if (item.IsMap() && item.size() == 1) {
      entry.type = item.begin()->first.Scalar();
      fields = item.begin()->second;
    } else {
      Fail(item, wi + ": expected one masker, '- type: {field: value, ...}', found " + Describe(item));
    }
    const MaskerSchema* schema = registry_.Find(entry.type);
    if (!schema) {
      std::string known;
      for (const auto& t : registry_.Types()) known += (known.empty() ? "" : ", ") + t;
      Fail(item.IsMap() ? item.begin()->first : item,
           wi + ": unknown masker type '" + entry.type + "' (known: " + known + ")");
    }
    const std::string where = wi + " (" + entry.type + "): ";
    if (schema->sampling) {
      if (sampling >= 0)
        Fail(item, where + "a stack holds at most one sampling masker; " + ws + "[" +
                       std::to_string(sampling) + "] (" + stack.maskers[sampling].type +
                       ") is one already");
      sampling = static_cast<int>(i);
    }
    if (fields && !fields.IsNull() && !fields.IsMap())
      Fail(fields, where + "expected a mapping of fields, found " + Describe(fields));
    if (fields && fields.IsMap()) {
      for (const auto& kv : fields) {
        const std::string key = kv.first.Scalar();
        const FieldSpec* spec = schema->Find(key);
        if (!spec) {
          std::string list;
          for (const auto& f : schema->fields) list += (list.empty() ? "" : ", ") + f.name;
          Fail(kv.first, where + "unknown field '" + key + "' (" + entry.type + " has: " +
                             (list.empty() ? "no fields" : list) + ")");
        }
        entry.fields[key] = ParseSpace(kv.second, *spec, where);
      }
    }
    for (const FieldSpec& spec : schema->fields) {
      if (entry.fields.count(spec.name)) continue;
      if (!spec.default_value) Fail(item, where + "missing required field '" + spec.name + "'");
      ParamSpace def;
      def.values.push_back(*spec.default_value);
      def.where = entry.where;
      entry.fields[spec.name] = def;
    }
    stack.maskers.push_back(std::move(entry));
  }
  return stack;
}

SweepConfig Parser::Parse(const YAML::Node& root) {
  if (!root || root.IsNull()) throw SweepError{{path_, 1, 1}, "the sweep file is empty"};
  Map(root, "sweep file");
  CheckKeys(root, "", {"study", "storage", "benchmark", "objective", "search", "attention",
                       "resources", "workers"});
  SweepConfig c;
  c.path = path_;
  if (!root["study"]) Fail(root, "missing 'study' (the study's name)");
  c.study = String(root["study"], "study");
  static const std::regex kName(R"([A-Za-z0-9_.-]+)");
  if (!std::regex_match(c.study, kName))
    Fail(root["study"], "study: expected a name of letters, digits, '_', '-' and '.', found '" +
                            c.study + "'");
  if (root["storage"]) {
    std::filesystem::path p(String(root["storage"], "storage"));
    c.storage = p.string();
  }
  if (std::filesystem::path(c.storage).is_relative())
    c.storage = (std::filesystem::path(dir_) / c.storage).lexically_normal().string();
  if (!root["benchmark"])
    Fail(root, "missing 'benchmark' ({name: attention_error}, {name: ruler_niah} or {name: noop})");
  ParseBenchmark(root["benchmark"], c.benchmark);
  c.objective.name = "default";
  if (root["objective"]) ParseObjective(root["objective"], c.benchmark, c.objective);
  if (root["search"]) ParseSearch(root["search"], c.search);
  if (root["resources"]) {
    const YAML::Node r = Map(root["resources"], "resources");
    CheckKeys(r, "resources", {"gpus_per_trial", "cpus_per_trial"});
    if (r["gpus_per_trial"]) {
      c.resources.gpus_per_trial = Number(r["gpus_per_trial"], "resources.gpus_per_trial");
      if (c.resources.gpus_per_trial < 0 || c.resources.gpus_per_trial > 64)
        Fail(r["gpus_per_trial"], "resources.gpus_per_trial: expected a number in [0, 64]");
    }
    if (r["cpus_per_trial"])
      c.resources.cpus_per_trial = Int(r["cpus_per_trial"], "resources.cpus_per_trial", 1, 1024);
  }
  if (root["workers"]) c.workers = Int(root["workers"], "workers", 0, 4096);
  if (!root["attention"]) Fail(root, "missing 'attention' (the masker stacks to tune)");
  const YAML::Node att = Map(root["attention"], "attention");
  if (att.size() == 0) Fail(att, "attention: no stacks");
  for (const auto& kv : att) {
    const std::string name = kv.first.Scalar();
    if (!std::regex_match(name, kName))
      Fail(kv.first, "attention: stack name '" + name + "' must be letters, digits, '_', '-', '.'");
    c.stacks.push_back(ParseStack(name, kv.second));
  }
  if (c.search.algorithm == "grid") {
    for (const StackSpec& s : c.stacks)
      for (const MaskerEntry& m : s.maskers)
        for (const auto& [field, space] : m.fields)
          if (space.searched() && space.kind != ParamSpace::Kind::kGridSearch &&
              space.kind != ParamSpace::Kind::kChoice)
            throw SweepError{space.where, "attention." + s.name + " (" + m.type + "): field '" +
                                              field + "': search.algorithm grid enumerates "
                                              "grid_search and choice only, found " +
                                              SpaceName(space.kind) + " (use random or tpe)"};
  }
  return c;
}

}  // namespace

std::string Location::ToString() const {
  return file + ":" + std::to_string(line) + ":" + std::to_string(column);
}

const char* SpaceName(ParamSpace::Kind kind) {
  switch (kind) {
    case ParamSpace::Kind::kConstant: return "constant";
    case ParamSpace::Kind::kGridSearch: return "grid_search";
    case ParamSpace::Kind::kChoice: return "choice";
    case ParamSpace::Kind::kUniform: return "uniform";
    case ParamSpace::Kind::kLogUniform: return "loguniform";
    case ParamSpace::Kind::kRandInt: return "randint";
    case ParamSpace::Kind::kQUniform: return "quniform";
  }
  return "?";
}

std::string ParamSpace::ToString() const {
  auto num = [](double x) { return FieldValueToString(x); };
  std::string list;
  for (const FieldValue& v : values) list += (list.empty() ? "" : ", ") + FieldValueToString(v);
  switch (kind) {
    case Kind::kConstant: return list;
    case Kind::kGridSearch:
    case Kind::kChoice: return std::string(SpaceName(kind)) + " [" + list + "]";
    case Kind::kRandInt:
      return "randint [" + std::to_string(static_cast<int64_t>(lo)) + ", " +
             std::to_string(static_cast<int64_t>(hi)) + ")";
    case Kind::kQUniform: return "quniform [" + num(lo) + ", " + num(hi) + ", " + num(q) + "]";
    default: return std::string(SpaceName(kind)) + " [" + num(lo) + ", " + num(hi) + "]";
  }
}

bool IsReferenceObjective(const std::string& name) {
  static const std::set<std::string> kNames = {"default",     "sparsity_5",  "sparsity_10",
                                               "sparsity_15", "sparsity_20", "sparsity_25"};
  return kNames.count(name) != 0;
}

Result<SweepConfig> ParseSweep(const std::string& text, const std::string& path,
                               const MaskerRegistry& registry) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    return Status::Error(path + ":" + std::to_string(e.mark.line + 1) + ":" +
                         std::to_string(e.mark.column + 1) + ": YAML syntax error: " + e.msg);
  }
  try {
    return Parser(path, registry).Parse(root);
  } catch (const SweepError& e) {
    return Status::Error(e.where.ToString() + ": " + e.message);
  } catch (const YAML::Exception& e) {
    return Status::Error(path + ":" + std::to_string(e.mark.line + 1) + ":" +
                         std::to_string(e.mark.column + 1) + ": " + e.msg);
  }
}

Result<SweepConfig> LoadSweep(const std::string& path, const MaskerRegistry& registry) {
  std::ifstream f(path);
  if (!f) return Status::Error(path + ": cannot open the sweep file");
  std::stringstream text;
  text << f.rdbuf();
  return ParseSweep(text.str(), path, registry);
}

nlohmann::json BenchmarkSpec::ToJson() const {
  if (name == "noop") return {{"name", "noop"}, {"sleep_ms", sleep_ms}};
  if (name == "ruler_niah")
    return {{"name", name},
            {"model", ruler.model},
            {"tasks", ruler.tasks},
            {"context_tokens", ruler.context_tokens},
            {"samples", ruler.samples},
            {"seed", ruler.seed},
            {"setup", ruler.setup},
            {"max_new_tokens", ruler.max_new_tokens},
            {"dense_layers", ruler.dense_layers},
            {"prefill_cache", ruler.prefill_cache}};
  if (!synthetic) return {{"name", name}, {"folder", folder}};
  return {{"name", name},
          {"synthetic", {{"keys", data.keys}, {"heads", data.heads}, {"kv_heads", data.kv_heads},
                         {"head_dim", data.head_dim}, {"queries", data.queries},
                         {"samples", data.samples}, {"seed", data.seed}}}};
}

std::string BenchmarkSpec::Describe() const {
  auto n = [](int64_t x) { return std::to_string(x); };
  if (name == "noop") return "benchmark noop (sleep_ms " + n(sleep_ms) + ")";
  if (name == "ruler_niah") {
    std::string tasks, layers;
    for (const auto& t : ruler.tasks) tasks += (tasks.empty() ? "" : ", ") + t;
    for (int64_t l : ruler.dense_layers) layers += (layers.empty() ? "" : ", ") + n(l);
    return "benchmark ruler_niah (model " + (ruler.model.empty() ? "default" : ruler.model) +
           ", tasks " + tasks + ", context_tokens " + n(ruler.context_tokens) + ", samples " +
           n(ruler.samples) + ", seed " + n(ruler.seed) + ", setup " + ruler.setup +
           ", max_new_tokens " + n(ruler.max_new_tokens) + ", dense_layers [" + layers + "])";
  }
  if (!synthetic) return "benchmark attention_error (folder " + folder + ")";
  return "benchmark attention_error (synthetic: keys " + n(data.keys) + ", heads " +
         n(data.heads) + ", kv_heads " + n(data.kv_heads) + ", head_dim " + n(data.head_dim) +
         ", queries " + n(data.queries) + ", samples " + n(data.samples) + ", seed " +
         n(data.seed) + ")";
}

}  // namespace masktune::configs
