#include "configs/sweep.h"

#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cfloat>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include "engine/benchmarks/ruler_tasks.h"

namespace masktune::configs {
namespace {

namespace fs = std::filesystem;

// An error and its place. Parsing collects them: a problem ends the part of
// the file it is in (a field, a masker, a key), and the rest is still read.
struct SweepError {
  SweepError(Location w, std::string m) : where(std::move(w)), message(std::move(m)) {}
  Location where;
  std::string message;
};

constexpr size_t kMaxReported = 100;  // errors listed; the rest are counted
constexpr size_t kMaxQuoted = 80;     // characters of user text quoted in a message
constexpr size_t kMaxMessage = 1000;  // characters of one message

// User text in a message: long scalars (50,000 characters) are cut.
std::string Clip(const std::string& s, size_t max = kMaxQuoted) {
  if (s.size() <= max) return s;
  return s.substr(0, max) + "... (" + std::to_string(s.size()) + " characters)";
}

// The reference's lexical rule for a plain scalar, by a linear scan (no
// std::regex on user input: its recursion overflows the stack on long
// scalars). kInt: [-+]?[0-9]+. kFloat: [-+]?(\.[0-9]+ | [0-9]+\.[0-9]* |
// [0-9]+(\.[0-9]*)?[eE][-+]?[0-9]+). Anything else is text.
enum class Lexeme { kInt, kFloat, kText };
Lexeme Classify(const std::string& s) {
  const size_t n = s.size();
  size_t i = 0;
  auto digits = [&] {
    const size_t b = i;
    while (i < n && s[i] >= '0' && s[i] <= '9') ++i;
    return i - b;
  };
  if (i < n && (s[i] == '+' || s[i] == '-')) ++i;
  const size_t whole = digits();
  if (i == n) return whole > 0 ? Lexeme::kInt : Lexeme::kText;
  if (s[i] == '.') {
    ++i;
    const size_t fraction = digits();
    if (i == n) return whole > 0 || fraction > 0 ? Lexeme::kFloat : Lexeme::kText;
  }
  if ((s[i] == 'e' || s[i] == 'E') && whole > 0) {
    ++i;
    if (i < n && (s[i] == '+' || s[i] == '-')) ++i;
    if (digits() == 0) return Lexeme::kText;
    return i == n ? Lexeme::kFloat : Lexeme::kText;
  }
  return Lexeme::kText;
}

// Kinds of side file a masker path field names, by field name; a path field
// not listed is checked for being a readable regular file only.
enum class SideFormat { kAny, kJsonObject, kSafetensors };
SideFormat FormatOf(const std::string& field) {
  static const std::map<std::string, SideFormat> kFormats = {
      {"sorted_channel_file", SideFormat::kJsonObject},  // double_sparsity_top_k
      {"hat_weight_file", SideFormat::kSafetensors},     // hash_attention_top_k
      {"projections_file", SideFormat::kSafetensors},    // magic_pig
  };
  auto it = kFormats.find(field);
  return it == kFormats.end() ? SideFormat::kAny : it->second;
}

constexpr uintmax_t kMaxParsedJson = 64u << 20;  // larger channel files are not parsed here

// "" when `path` is a readable regular file; else what is wrong with it.
std::string CheckReadable(const std::string& path, std::ifstream& f) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (ec || !fs::exists(st)) return "no such file '" + path + "'";
  if (fs::is_directory(st)) return "'" + path + "' is a folder, not a file";
  if (!fs::is_regular_file(st)) return "'" + path + "' is not a regular file";
  f.open(path, std::ios::binary);
  if (!f) return "cannot read '" + path + "' (permissions?)";
  return "";
}

// "" when `path` holds what `format` says, checked cheaply (headers, small
// JSON); else what is wrong.
std::string CheckSideFile(const std::string& path, SideFormat format) {
  std::ifstream f;
  if (std::string e = CheckReadable(path, f); !e.empty()) return e;
  std::error_code ec;
  const uintmax_t size = fs::file_size(path, ec);
  if (ec) return "cannot read '" + path + "': " + ec.message();
  if (format == SideFormat::kJsonObject) {
    if (size > kMaxParsedJson) return "";
    std::stringstream text;
    text << f.rdbuf();
    // The checks the masker makes when it reads the file (nesting, numbers, repeated keys).
    if (Status checked = CheckJsonText(text.str(), ""); !checked.ok())
      return "'" + path + "': " + checked.message();
    const nlohmann::json j = nlohmann::json::parse(text.str(), nullptr, false);
    if (j.is_discarded()) return "'" + path + "' is not valid JSON";
    if (!j.is_object())
      return "'" + path +
             "' is not a JSON object (the Double Sparsity channel format: "
             "{\"model.layers.L.self_attn.qk_proj\": [[channel, ...], ...]})";
    return "";
  }
  if (format == SideFormat::kSafetensors) {
    const std::string what = "'" + path + "' is not a safetensors file: ";
    unsigned char len[8];
    if (size < 8 || !f.read(reinterpret_cast<char*>(len), 8))
      return what + "shorter than its 8-byte header length";
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | len[i];
    if (n > size - 8 || n > (100u << 20))
      return what + "a header of " + std::to_string(n) + " bytes in a file of " +
             std::to_string(size) + " bytes";
    std::string header(static_cast<size_t>(n), '\0');
    if (!f.read(header.data(), static_cast<std::streamsize>(n)))
      return what + "cannot read the header";
    if (Status checked = CheckJsonText(header, "header"); !checked.ok())
      return what + checked.message();
    const nlohmann::json j = nlohmann::json::parse(header, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return what + "the header is not a JSON object";
    const uint64_t data = size - 8 - n;
    for (const auto& [name, t] : j.items()) {
      if (name == "__metadata__") continue;
      const auto* offsets =
          t.is_object() && t.contains("data_offsets") ? &t["data_offsets"] : nullptr;
      if (!offsets || !offsets->is_array() || offsets->size() != 2 ||
          !(*offsets)[0].is_number_unsigned() || !(*offsets)[1].is_number_unsigned() ||
          (*offsets)[0].get<uint64_t>() > (*offsets)[1].get<uint64_t>() ||
          (*offsets)[1].get<uint64_t>() > data)
        return what + "tensor '" + Clip(name) + "' does not lie inside the file";
    }
    return "";
  }
  return "";
}

// Exact trial counts: a decimal number of base-1e9 limbs (the product of a
// few grids passes int64 quickly).
class BigCount {
 public:
  explicit BigCount(uint64_t x = 0) { Set(x); }
  void Mul(uint64_t x) {
    unsigned __int128 carry = 0;
    for (uint32_t& limb : limbs_) {
      const unsigned __int128 v = static_cast<unsigned __int128>(limb) * x + carry;
      limb = static_cast<uint32_t>(v % kBase);
      carry = v / kBase;
    }
    while (carry) {
      limbs_.push_back(static_cast<uint32_t>(carry % kBase));
      carry /= kBase;
    }
    Trim();
  }
  void Add(const BigCount& o) {
    uint64_t carry = 0;
    for (size_t i = 0; i < std::max(limbs_.size(), o.limbs_.size()) || carry; ++i) {
      if (i == limbs_.size()) limbs_.push_back(0);
      const uint64_t v = limbs_[i] + carry + (i < o.limbs_.size() ? o.limbs_[i] : 0);
      limbs_[i] = static_cast<uint32_t>(v % kBase);
      carry = v / kBase;
    }
  }
  bool FitsInt64() const {
    return Saturated() < INT64_MAX || ToString() == std::to_string(INT64_MAX);
  }
  // The value, or INT64_MAX when it does not fit.
  int64_t Saturated() const {
    unsigned __int128 v = 0;
    for (size_t i = limbs_.size(); i-- > 0;) {
      v = v * kBase + limbs_[i];
      if (v > static_cast<unsigned __int128>(INT64_MAX)) return INT64_MAX;
    }
    return static_cast<int64_t>(v);
  }
  std::string ToString() const {
    std::string out = std::to_string(limbs_.back());
    for (size_t i = limbs_.size() - 1; i-- > 0;) {
      std::string part = std::to_string(limbs_[i]);
      out += std::string(9 - part.size(), '0') + part;
    }
    return out;
  }

 private:
  static constexpr uint64_t kBase = 1000000000;
  void Set(uint64_t x) {
    limbs_.clear();
    do {
      limbs_.push_back(static_cast<uint32_t>(x % kBase));
      x /= kBase;
    } while (x);
  }
  void Trim() {
    while (limbs_.size() > 1 && limbs_.back() == 0) limbs_.pop_back();
  }
  std::vector<uint32_t> limbs_;
};

BigCount ExactTrials(const StackSpec& stack, const SearchSpec& search) {
  bool searched = false;
  BigCount grid(1);
  for (const MaskerEntry& m : stack.maskers)
    for (const auto& [field, space] : m.fields) {
      searched = searched || space.searched();
      if (space.kind == ParamSpace::Kind::kGridSearch) grid.Mul(space.values.size());
    }
  if (!searched) return BigCount(1);
  if (search.algorithm == "tpe") return BigCount(static_cast<uint64_t>(search.num_samples));
  grid.Mul(static_cast<uint64_t>(search.num_samples));
  return grid;
}

// What a scheduler's max_t counts, for messages.
std::string BenchmarkStepsText(const BenchmarkSpec& b) {
  if (b.name == "noop") return "noop's steps";
  if (b.name == "ruler_niah")
    return std::to_string(b.ruler.tasks.size()) + " tasks x " + std::to_string(b.ruler.samples) +
           " samples";
  return b.synthetic ? "benchmark.data.synthetic.samples" : "the folder's .safetensors files";
}

class Parser {
 public:
  Parser(std::string path, const MaskerRegistry& registry, const ParseOptions& options)
      : path_(std::move(path)), registry_(registry), options_(options) {
    std::error_code ec;
    fs::path abs = fs::absolute(path_, ec);
    if (ec) abs = fs::path(path_);
    abs_path_ = abs.lexically_normal().string();
    dir_ = abs.lexically_normal().parent_path().string();
  }

  // Every error found, in file order; the config is meaningful when there are none.
  SweepConfig Parse(const YAML::Node& root);
  const std::vector<SweepError>& errors() const { return errors_; }

 private:
  Location At(const YAML::Node& n) const {
    const YAML::Mark m = n.Mark();
    return {path_, m.line + 1, m.column + 1};
  }
  [[noreturn]] void Fail(const YAML::Node& n, const std::string& message) const {
    throw SweepError{At(n), message};
  }
  void Report(const YAML::Node& n, const std::string& message) const {
    errors_.emplace_back(At(n), message);
  }
  // Runs `f`; an error it throws is recorded and parsing goes on. False on error.
  template <class F>
  bool Try(F&& f) const {
    try {
      f();
      return true;
    } catch (const SweepError& e) {
      errors_.push_back(e);
    } catch (const YAML::Exception& e) {
      errors_.emplace_back(Location{path_, e.mark.line + 1, e.mark.column + 1}, e.msg);
    }
    return false;
  }
  // Reports every key of map `n` not among `allowed`; `where` names the map in messages.
  void CheckKeys(const YAML::Node& n, const std::string& where,
                 const std::set<std::string>& allowed) const;
  YAML::Node Map(const YAML::Node& n, const std::string& where) const {
    if (!n.IsMap()) Fail(n, where + ": expected a mapping, found " + Describe(n));
    return n;
  }
  std::string String(const YAML::Node& n, const std::string& where) const;
  int64_t Int(const YAML::Node& n, const std::string& where, int64_t lo, int64_t hi) const;
  double Number(const YAML::Node& n, const std::string& where) const;
  // A plain scalar's value by the lexical rule; out-of-range numbers are errors naming `where`.
  FieldValue Scalar(const YAML::Node& n, const std::string& where) const;
  static std::string Describe(const YAML::Node& n);
  // `p` against the sweep file's folder, absolute.
  std::string Resolve(const std::string& p) const {
    const fs::path path(p);
    return (path.is_relative() ? fs::path(dir_) / path : path).lexically_normal().string();
  }
  static bool IsName(const std::string& s) {
    return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
      return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
             c == '_' || c == '.' || c == '-';
    });
  }

  void ParseBenchmark(const YAML::Node& n, BenchmarkSpec& b) const;
  void ParseRuler(const YAML::Node& n, RulerSpec& r) const;
  void ParseObjective(const YAML::Node& n, const BenchmarkSpec* benchmark, ObjectiveSpec& o) const;
  void ParseSearch(const YAML::Node& n, SearchSpec& s) const;
  void ParseScheduler(const YAML::Node& n, SchedulerSpec& s) const;
  void CheckScheduler(SweepConfig& c, bool benchmark_ok) const;
  StackSpec ParseStack(const std::string& name, const YAML::Node& n) const;
  ParamSpace ParseSpace(const YAML::Node& n, const FieldSpec& spec, const std::string& where) const;

  std::string path_;  // as given: in messages
  const MaskerRegistry& registry_;
  ParseOptions options_;
  std::string abs_path_;  // absolute: SweepConfig::path
  std::string dir_;       // absolute: relative paths resolve here
  mutable std::vector<SweepError> errors_;
};

std::string Parser::Describe(const YAML::Node& n) {
  if (n.IsNull()) return "nothing";
  if (n.IsSequence()) return n.size() == 0 ? "an empty list" : "a list";
  if (n.IsMap()) return "a mapping";
  return "'" + Clip(n.Scalar()) + "'";
}

void Parser::CheckKeys(const YAML::Node& n, const std::string& where,
                       const std::set<std::string>& allowed) const {
  for (const auto& kv : n) {
    const std::string key = kv.first.IsScalar() ? kv.first.Scalar() : "";
    if (!allowed.count(key)) {
      std::string list;
      for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
      Report(kv.first, (where.empty() ? "" : where + ": ") + "unknown key " +
                           (kv.first.IsScalar() ? "'" + Clip(key) + "'" : Describe(kv.first)) +
                           " (expected one of: " + list + ")");
    }
  }
}

std::string Parser::String(const YAML::Node& n, const std::string& where) const {
  if (!n.IsScalar() || n.Scalar().empty())
    Fail(n, where + ": expected a string, found " + Describe(n));
  return n.Scalar();
}

FieldValue Parser::Scalar(const YAML::Node& n, const std::string& where) const {
  // The lexical rule of the reference: 0.1 and 1.0 are floats, 32 is an integer.
  const std::string& s = n.Scalar();
  if (n.Tag() == "!") return s;  // quoted: always a string
  const std::string w = where.empty() ? "" : where + ": ";
  switch (Classify(s)) {
    case Lexeme::kInt: {
      errno = 0;
      char* end = nullptr;
      const long long x = std::strtoll(s.c_str(), &end, 10);
      if (errno == ERANGE || end != s.c_str() + s.size())
        Fail(n, w + "integer " + Clip(s) + " is out of range (integers are 64-bit: from " +
                    std::to_string(INT64_MIN) + " to " + std::to_string(INT64_MAX) + ")");
      return static_cast<int64_t>(x);
    }
    case Lexeme::kFloat: {
      errno = 0;
      char* end = nullptr;
      const double x = std::strtod(s.c_str(), &end);
      // Overflow (1e309) and underflow to 0 or to a subnormal (1e-320) alike.
      if (errno == ERANGE || end != s.c_str() + s.size() || !std::isfinite(x) ||
          (x != 0 && std::fabs(x) < DBL_MIN))
        Fail(n, w + "number " + Clip(s) +
                    " is out of range (floats are doubles: magnitudes "
                    "from 2.2e-308 to 1.8e308, or 0)");
      return x;
    }
    case Lexeme::kText:
      break;
  }
  if (s == "true" || s == "True" || s == "TRUE") return true;
  if (s == "false" || s == "False" || s == "FALSE") return false;
  return s;
}

int64_t Parser::Int(const YAML::Node& n, const std::string& where, int64_t lo, int64_t hi) const {
  if (!n.IsScalar()) Fail(n, where + ": expected an integer, found " + Describe(n));
  const FieldValue v = Scalar(n, where);
  if (!std::holds_alternative<int64_t>(v))
    Fail(n, where + ": expected an integer, found " + Describe(n));
  const int64_t x = std::get<int64_t>(v);
  if (x < lo || x > hi)
    Fail(n, where + ": expected an integer in [" + std::to_string(lo) + ", " +
                (hi == INT64_MAX ? "inf" : std::to_string(hi)) + "], found " + std::to_string(x));
  return x;
}

double Parser::Number(const YAML::Node& n, const std::string& where) const {
  if (n.IsScalar()) {
    const FieldValue v = Scalar(n, where);
    if (auto* i = std::get_if<int64_t>(&v)) return static_cast<double>(*i);
    if (auto* d = std::get_if<double>(&v)) return *d;
  }
  Fail(n, where + ": expected a number, found " + Describe(n));
}

void Parser::ParseBenchmark(const YAML::Node& n, BenchmarkSpec& b) const {
  Map(n, "benchmark");
  if (!n["name"]) Fail(n, "benchmark: missing 'name' (attention_error, ruler_niah or noop)");
  const std::string name = String(n["name"], "benchmark.name");
  if (name != "attention_error" && name != "noop" && name != "ruler_niah")
    Fail(n["name"], "benchmark.name: expected attention_error, ruler_niah or noop, found '" +
                        Clip(name) + "'");
  b.name = name;
  if (b.name == "ruler_niah") return ParseRuler(n, b.ruler);
  CheckKeys(n, "benchmark", {"name", "data", "sleep_ms", "steps"});
  if (b.name == "noop") {
    if (n["data"]) Report(n["data"], "benchmark.data: the noop benchmark takes no data");
    if (n["sleep_ms"])
      Try([&] { b.sleep_ms = Int(n["sleep_ms"], "benchmark.sleep_ms", 0, 3600000); });
    if (n["steps"]) Try([&] { b.steps = Int(n["steps"], "benchmark.steps", 1, 1 << 20); });
    return;
  }
  if (n["steps"]) Report(n["steps"], "benchmark.steps: only the noop benchmark takes steps");
  if (n["sleep_ms"]) Report(n["sleep_ms"], "benchmark.sleep_ms: only the noop benchmark sleeps");
  if (!n["data"]) return;  // the synthetic defaults
  const YAML::Node data = Map(n["data"], "benchmark.data");
  CheckKeys(data, "benchmark.data", {"synthetic", "folder"});
  if (data["synthetic"] && data["folder"])
    Fail(data, "benchmark.data: give either synthetic or folder, not both");
  if (data["folder"]) {
    b.synthetic = false;
    b.folder = Resolve(String(data["folder"], "benchmark.data.folder"));
    if (options_.check_files && !fs::is_directory(b.folder))
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
  const size_t before = errors_.size();
  auto field = [&](const char* key, int64_t& out, int64_t lo, int64_t hi) {
    if (s[key]) Try([&] { out = Int(s[key], w + key, lo, hi); });
  };
  field("keys", d.keys, 1, 1 << 24);
  field("heads", d.heads, 1, 1024);
  field("kv_heads", d.kv_heads, 1, 1024);
  field("head_dim", d.head_dim, 1, 4096);
  field("queries", d.queries, 1, 1 << 20);
  field("samples", d.samples, 1, 1 << 20);
  field("seed", d.seed, 0, INT64_MAX);
  if (errors_.size() != before) return;  // the checks across fields would mislead
  if (d.heads % d.kv_heads != 0)
    Report(s["kv_heads"] ? s["kv_heads"] : s, w + "kv_heads: heads (" + std::to_string(d.heads) +
                                                  ") must be a multiple of kv_heads (" +
                                                  std::to_string(d.kv_heads) + ")");
  if (d.queries > d.keys)
    Report(s["queries"], w + "queries: more queries than keys (" + std::to_string(d.keys) + ")");
}

void Parser::ParseRuler(const YAML::Node& n, RulerSpec& r) const {
  CheckKeys(n, "benchmark",
            {"name", "model", "tasks", "context_tokens", "samples", "seed", "setup",
             "max_new_tokens", "dense_layers", "prefill_cache"});
  const std::string w = "benchmark.";
  if (n["model"])
    Try([&] {
      r.model = Resolve(String(n["model"], w + "model"));
      if (!options_.check_files) return;
      std::ifstream f;
      if (std::string e = CheckReadable(r.model, f); !e.empty())
        Fail(n["model"], w + "model: " + e);
      char magic[4] = {};
      if (!f.read(magic, 4) || std::string(magic, 4) != "GGUF")
        Fail(n["model"], w + "model: '" + r.model + "' is not a GGUF file (no GGUF magic)");
    });
  if (n["tasks"])
    Try([&] {
      const YAML::Node t = n["tasks"];
      if (!t.IsSequence() || t.size() == 0) Fail(t, w + "tasks: expected a list of task names");
      r.tasks.clear();
      const auto& known = ruler::TaskNames();
      for (size_t i = 0; i < t.size(); ++i) {
        const std::string where = w + "tasks[" + std::to_string(i) + "]";
        Try([&] {
          const std::string name = String(t[i], where);
          if (std::find(known.begin(), known.end(), name) == known.end()) {
            std::string list;
            for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
            Fail(t[i],
                 where + ": unknown task '" + Clip(name) + "' (expected one of: " + list + ")");
          }
          if (std::find(r.tasks.begin(), r.tasks.end(), name) != r.tasks.end())
            Fail(t[i], where + ": '" + name + "' is listed twice");
          r.tasks.push_back(name);
        });
      }
    });
  if (n["context_tokens"])
    Try([&] { r.context_tokens = Int(n["context_tokens"], w + "context_tokens", 64, 1 << 20); });
  if (n["samples"]) Try([&] { r.samples = Int(n["samples"], w + "samples", 1, 100000); });
  if (n["seed"]) Try([&] { r.seed = Int(n["seed"], w + "seed", 0, INT64_MAX); });
  if (n["max_new_tokens"])
    Try([&] { r.max_new_tokens = Int(n["max_new_tokens"], w + "max_new_tokens", 1, 4096); });
  if (n["setup"])
    Try([&] {
      r.setup = String(n["setup"], w + "setup");
      if (r.setup != "A" && r.setup != "B")
        Fail(n["setup"],
             w +
                 "setup: expected A (whole prompt dense, decoding sparse) or B (context "
                 "dense, question and decoding sparse), found '" +
                 Clip(r.setup) + "'");
    });
  if (n["dense_layers"])
    Try([&] {
      const YAML::Node d = n["dense_layers"];
      if (!d.IsSequence()) Fail(d, w + "dense_layers: expected a list of layer indices");
      for (size_t i = 0; i < d.size(); ++i)
        Try([&] {
          r.dense_layers.push_back(
              Int(d[i], w + "dense_layers[" + std::to_string(i) + "]", 0, 100000));
        });
    });
  if (n["prefill_cache"])
    Try([&] { r.prefill_cache = Resolve(String(n["prefill_cache"], w + "prefill_cache")); });
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

// `benchmark` is null when it did not parse: metric names are then not checked.
void Parser::ParseObjective(const YAML::Node& n, const BenchmarkSpec* benchmark,
                            ObjectiveSpec& o) const {
  if (n.IsScalar()) {
    if (!IsReferenceObjective(n.Scalar()))
      Fail(n,
           "objective: expected default, sparsity_5, sparsity_10, sparsity_15, sparsity_20, "
           "sparsity_25 or {metric: NAME, mode: min|max}, found '" +
               Clip(n.Scalar()) + "'");
    o.name = n.Scalar();
    return;
  }
  std::vector<YAML::Node> items;
  if (n.IsMap())
    items.push_back(n);
  else if (n.IsSequence() && n.size() > 0)
    for (const auto& item : n) items.push_back(item);
  else
    Fail(n, "objective: expected a name, {metric: NAME, mode: min|max} or a list of those, found " +
                Describe(n));
  for (size_t i = 0; i < items.size(); ++i)
    Try([&] {
      const std::string w = items.size() > 1 ? "objective[" + std::to_string(i) + "]" : "objective";
      const YAML::Node item = Map(items[i], w);
      CheckKeys(item, w, {"metric", "mode"});
      if (!item["metric"]) Fail(item, w + ": missing 'metric'");
      const std::string metric = String(item["metric"], w + ".metric");
      if (benchmark) {
        const auto known = MetricsOf(*benchmark);
        if (std::find(known.begin(), known.end(), metric) == known.end()) {
          std::string list;
          for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
          Fail(item["metric"],
               w + ".metric: expected one of " + list + ", found '" + Clip(metric) + "'");
        }
      }
      std::string mode = item["mode"] ? String(item["mode"], w + ".mode") : "min";
      if (mode != "min" && mode != "max")
        Fail(item["mode"], w + ".mode: expected min or max, found '" + Clip(mode) + "'");
      for (const auto& [m, unused] : o.metrics)
        if (m == metric)
          Fail(item["metric"], w + ".metric: '" + Clip(metric) + "' is listed twice");
      o.metrics.emplace_back(metric, mode == "min");
    });
  o.name = o.metrics.size() == 1 ? o.metrics[0].first : "pareto";
}

void Parser::ParseSearch(const YAML::Node& n, SearchSpec& s) const {
  Map(n, "search");
  CheckKeys(n, "search",
            {"algorithm", "num_samples", "seed", "max_concurrent_trials", "n_startup_trials",
             "max_failures", "scheduler"});
  if (n["algorithm"])
    Try([&] {
      const std::string a = String(n["algorithm"], "search.algorithm");
      if (a != "grid" && a != "random" && a != "tpe")
        Fail(n["algorithm"],
             "search.algorithm: expected grid, random or tpe, found '" + Clip(a) + "'");
      s.algorithm = a;
    });
  if (n["num_samples"])
    Try([&] { s.num_samples = Int(n["num_samples"], "search.num_samples", 1, 1 << 30); });
  if (n["seed"]) Try([&] { s.seed = Int(n["seed"], "search.seed", 0, INT64_MAX); });
  if (n["max_concurrent_trials"])
    Try([&] {
      s.max_concurrent_trials =
          Int(n["max_concurrent_trials"], "search.max_concurrent_trials", 0, 1 << 20);
    });
  if (n["n_startup_trials"])
    Try([&] {
      s.n_startup_trials = Int(n["n_startup_trials"], "search.n_startup_trials", 1, 1 << 20);
    });
  if (n["max_failures"])
    Try([&] { s.max_failures = Int(n["max_failures"], "search.max_failures", 1, 1000); });
  if (n["scheduler"]) Try([&] { ParseScheduler(n["scheduler"], s.scheduler); });
}

// search.scheduler: {type: asha|hyperband|median, ...}. What needs the
// benchmark and the objective (max_t against the samples, a Pareto
// objective) is checked by CheckScheduler once the whole file is read.
void Parser::ParseScheduler(const YAML::Node& n, SchedulerSpec& s) const {
  const std::string w = "search.scheduler";
  Map(n, w);
  s.where = At(n);
  if (!n["type"]) Fail(n, w + ": missing 'type' (asha, hyperband or median)");
  const std::string type = String(n["type"], w + ".type");
  if (type != "asha" && type != "hyperband" && type != "median")
    Fail(n["type"], w + ".type: expected asha, hyperband or median, found '" + Clip(type) + "'");
  s.type = type;
  if (type == "median")
    CheckKeys(n, w + " (median)", {"type", "max_t", "grace_period", "min_samples_required"});
  else
    CheckKeys(n, w + " (" + type + ")",
              {"type", "max_t", "grace_period", "reduction_factor", "brackets"});
  if (n["max_t"])
    Try([&] {
      s.max_t_at = At(n["max_t"]);
      s.max_t = Int(n["max_t"], w + ".max_t", 1, 1 << 30);
    });
  if (n["grace_period"])
    Try([&] {
      s.grace_at = At(n["grace_period"]);
      s.grace_period = Int(n["grace_period"], w + ".grace_period", 1, 1 << 30);
    });
  if (n["reduction_factor"])
    Try([&] {
      s.reduction_factor = Int(n["reduction_factor"], w + ".reduction_factor", 2, 1 << 20);
    });
  if (n["brackets"])
    Try([&] {
      s.brackets_at = At(n["brackets"]);
      s.brackets = Int(n["brackets"], w + ".brackets", 1, 64);
    });
  if (n["min_samples_required"])
    Try([&] {
      s.min_samples_required =
          Int(n["min_samples_required"], w + ".min_samples_required", 1, 1 << 20);
    });
}

// The scheduler against the benchmark (max_t in its samples) and the
// objective; fills in max_t and brackets when they were left out.
void Parser::CheckScheduler(SweepConfig& c, bool benchmark_ok) const {
  SchedulerSpec& s = c.search.scheduler;
  if (!s.enabled()) return;
  const std::string w = "search.scheduler";
  if (c.objective.multi()) {
    std::string names;
    for (const auto& [m, minimise] : c.objective.metrics) names += (names.empty() ? "" : ", ") + m;
    errors_.emplace_back(s.where, w +
                                      ": a scheduler ranks trials on one number, and the "
                                      "objective is a Pareto front of " +
                                      std::to_string(c.objective.metrics.size()) + " metrics (" +
                                      names +
                                      "): give one metric ({metric: NAME, mode: min|max}) or a "
                                      "reference objective, or drop the scheduler");
    return;
  }
  const int64_t steps = benchmark_ok ? BenchmarkSteps(c.benchmark) : 0;
  // A folder that was not read (reading commands) has no known count: not checked.
  const bool known = steps > 0 && (c.benchmark.synthetic || options_.check_files ||
                                   c.benchmark.name != "attention_error");
  if (s.max_t == 0) s.max_t = known ? steps : 0;
  if (known && s.max_t > steps) {
    errors_.emplace_back(
        s.max_t_at, w + ".max_t: " + std::to_string(s.max_t) + " is more than the benchmark's " +
                        std::to_string(steps) +
                        " samples (max_t counts samples: " + BenchmarkStepsText(c.benchmark) + ")");
    return;
  }
  if (s.max_t > 0 && s.grace_period > s.max_t) {
    errors_.emplace_back(s.grace_at.line ? s.grace_at : s.where,
                         w + ".grace_period: " + std::to_string(s.grace_period) +
                             " is more than max_t (" + std::to_string(s.max_t) + ")");
    return;
  }
  if (s.type == "median" || s.max_t == 0) return;
  // Brackets s = 0.. have rungs at grace_period * rf^(k + s) <= max_t: at most
  // floor(log_rf(max_t / grace_period)) + 1 of them have a rung.
  int64_t possible = 0;
  for (int64_t m = s.grace_period; m <= s.max_t; m *= s.reduction_factor) ++possible;
  if (s.brackets == 0) s.brackets = s.type == "hyperband" ? possible : 1;
  if (s.brackets > possible)
    errors_.emplace_back(s.brackets_at.line ? s.brackets_at : s.where,
                         w + ".brackets: " + std::to_string(s.brackets) +
                             " brackets need rungs up to " + "grace_period x reduction_factor^" +
                             std::to_string(s.brackets - 1) + ", beyond max_t " +
                             std::to_string(s.max_t) + " (at most " + std::to_string(possible) +
                             " here)");
}

ParamSpace Parser::ParseSpace(const YAML::Node& n, const FieldSpec& spec,
                              const std::string& where) const {
  ParamSpace space;
  space.where = At(n);
  const std::string field = "field '" + spec.name + "'";
  auto check = [&](const YAML::Node& at, const FieldValue& v) {
    Status st = CheckFieldValue(spec, v);
    if (st.ok()) return;
    // The registry quotes the value: a long string is quoted clipped.
    if (const auto* text = std::get_if<std::string>(&v); text && text->size() > kMaxQuoted)
      if (Status clipped = CheckFieldValue(spec, Clip(*text)); !clipped.ok()) st = clipped;
    Fail(at, where + st.message());
  };
  // Paths resolve against the sweep file's folder; the file must be there now.
  auto resolve = [&](const YAML::Node& at, FieldValue v, const std::string& context) {
    if (spec.type == FieldType::kPath && !std::get<std::string>(v).empty()) {
      v = Resolve(std::get<std::string>(v));
      if (options_.check_files) {
        const std::string e = CheckSideFile(std::get<std::string>(v), FormatOf(spec.name));
        if (!e.empty()) Fail(at, context + ": " + e);
      }
    }
    return v;
  };
  if (n.IsScalar()) {
    const FieldValue v = Scalar(n, where + field);
    check(n, v);
    space.values.push_back(resolve(n, v, where + field));
    return space;
  }
  if (n.IsSequence())
    Fail(n, where + field + ": a list is not a value; write grid_search: [...] or choice: [...]");
  if (!n.IsMap() || n.size() != 1)
    Fail(n, where + field +
                ": expected a value or one of grid_search, choice, uniform, "
                "loguniform, randint, quniform, found " +
                Describe(n));
  const YAML::Node key = n.begin()->first;
  const std::string kind = key.IsScalar() ? key.Scalar() : "";
  const YAML::Node arg = n.begin()->second;
  const std::string w = where + field + ": " + Clip(kind);
  static const std::map<std::string, ParamSpace::Kind> kKinds = {
      {"grid_search", ParamSpace::Kind::kGridSearch}, {"choice", ParamSpace::Kind::kChoice},
      {"uniform", ParamSpace::Kind::kUniform},        {"loguniform", ParamSpace::Kind::kLogUniform},
      {"randint", ParamSpace::Kind::kRandInt},        {"quniform", ParamSpace::Kind::kQUniform}};
  auto it = kKinds.find(kind);
  if (it == kKinds.end())
    Fail(key, where + field + ": unknown search space " +
                  (key.IsScalar() ? "'" + Clip(kind) + "'" : Describe(key)) +
                  " (expected grid_search, choice, uniform, loguniform, randint or quniform)");
  space.kind = it->second;
  if (!arg.IsSequence() || arg.size() == 0)
    Fail(arg, w + ": expected a non-empty list, found " + Describe(arg));
  if (space.kind == ParamSpace::Kind::kGridSearch || space.kind == ParamSpace::Kind::kChoice) {
    for (const auto& item : arg) {
      if (!item.IsScalar()) Fail(item, w + ": expected values, found " + Describe(item));
      const FieldValue v = Scalar(item, w);
      check(item, v);
      space.values.push_back(resolve(item, v, w));
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
    Fail(key, w + ": not a space for " +
                  std::string(spec.type == FieldType::kInt
                                  ? "an integer field (use randint or grid_search)"
                                  : "this field (use grid_search or choice)"));
  space.lo = Number(arg[0], w + " lower bound");
  space.hi = Number(arg[1], w + " upper bound");
  if (!(space.lo < space.hi)) Fail(arg, w + ": lower bound must be below the upper bound");
  if (ints) {
    for (int i = 0; i < 2; ++i)
      if (!std::holds_alternative<int64_t>(Scalar(arg[i], w)))
        Fail(arg[i], w + ": bounds must be integers");
    // randint's upper bound is exclusive, as in Ray Tune.
    check(arg[0], std::get<int64_t>(Scalar(arg[0], w)));
    check(arg[1], std::get<int64_t>(Scalar(arg[1], w)) - 1);
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
  // An empty list is a stack without maskers: dense attention, a baseline.
  if (!n.IsSequence())
    Fail(n, ws +
                ": expected a list of maskers (- type: {field: value}; [] for dense "
                "attention), found " +
                Describe(n));
  int sampling = -1;
  std::string sampling_type;
  for (size_t i = 0; i < n.size(); ++i)
    Try([&] {
      const YAML::Node item = n[i];
      const std::string wi = ws + "[" + std::to_string(i) + "]";
      MaskerEntry entry;
      entry.where = At(item);
      // Nodes are references: assigning to a node that holds one overwrites the
      // tree, so each is bound once.
      const bool one_map = item.IsMap() && item.size() == 1 && item.begin()->first.IsScalar();
      const YAML::Node type_node = one_map ? item.begin()->first : item;
      YAML::Node fields;
      if (item.IsScalar()) {
        entry.type = item.Scalar();
      } else if (one_map) {
        entry.type = type_node.Scalar();
        fields = item.begin()->second;
      } else {
        Fail(item,
             wi + ": expected one masker, '- type: {field: value, ...}', found " + Describe(item));
      }
      const MaskerSchema* schema = registry_.Find(entry.type);
      if (!schema) {
        std::string known;
        for (const auto& t : registry_.Types()) known += (known.empty() ? "" : ", ") + t;
        Fail(type_node,
             wi + ": unknown masker type '" + Clip(entry.type) + "' (known: " + known + ")");
      }
      const std::string where = wi + " (" + entry.type + "): ";
      if (schema->sampling) {
        if (sampling >= 0)
          Report(item, where + "a stack holds at most one sampling masker; " + ws + "[" +
                           std::to_string(sampling) + "] (" + sampling_type + ") is one already");
        else {
          sampling = static_cast<int>(i);
          sampling_type = entry.type;
        }
      }
      if (fields && !fields.IsNull() && !fields.IsMap())
        Fail(fields, where + "expected a mapping of fields, found " + Describe(fields));
      bool ok = true;
      if (fields && fields.IsMap()) {
        for (const auto& kv : fields) {
          ok &= Try([&] {
            const std::string key = kv.first.IsScalar() ? kv.first.Scalar() : "";
            const FieldSpec* spec = schema->Find(key);
            if (!spec) {
              std::string list;
              for (const auto& f : schema->fields) list += (list.empty() ? "" : ", ") + f.name;
              Fail(kv.first,
                   where + "unknown field " +
                       (kv.first.IsScalar() ? "'" + Clip(key) + "'" : Describe(kv.first)) + " (" +
                       entry.type + " has: " + (list.empty() ? "no fields" : list) + ")");
            }
            if (entry.fields.count(key))
              Fail(kv.first, where + "field '" + key + "' is given twice");
            entry.fields[key] = ParseSpace(kv.second, *spec, where);
          });
        }
      }
      for (const FieldSpec& spec : schema->fields) {
        if (entry.fields.count(spec.name)) continue;
        if (!spec.default_value) {
          if (ok) Report(item, where + "missing required field '" + spec.name + "'");
          continue;
        }
        ParamSpace def;
        def.values.push_back(*spec.default_value);
        def.where = entry.where;
        entry.fields[spec.name] = def;
      }
      stack.maskers.push_back(std::move(entry));
    });
  return stack;
}

SweepConfig Parser::Parse(const YAML::Node& root) {
  SweepConfig c;
  c.path = abs_path_;
  if (!root || root.IsNull()) {
    errors_.emplace_back(Location{path_, 1, 1}, "the sweep file is empty");
    return c;
  }
  if (!Try([&] { Map(root, "sweep file"); })) return c;
  CheckKeys(root, "",
            {"study", "storage", "benchmark", "objective", "search", "attention", "resources",
             "workers"});
  if (!root["study"])
    Report(root, "missing 'study' (the study's name)");
  else
    Try([&] {
      c.study = String(root["study"], "study");
      if (!IsName(c.study))
        Fail(root["study"], "study: expected a name of letters, digits, '_', '-' and '.', found '" +
                                Clip(c.study) + "'");
    });
  if (root["storage"]) Try([&] { c.storage = String(root["storage"], "storage"); });
  c.storage = Resolve(c.storage);
  bool benchmark_ok = false;
  if (!root["benchmark"])
    Report(root,
           "missing 'benchmark' ({name: attention_error}, {name: ruler_niah} or {name: noop})");
  else {
    const size_t before = errors_.size();
    benchmark_ok =
        Try([&] { ParseBenchmark(root["benchmark"], c.benchmark); }) && errors_.size() == before;
  }
  c.objective.name = "default";
  if (root["objective"])
    Try([&] {
      ParseObjective(root["objective"], benchmark_ok ? &c.benchmark : nullptr, c.objective);
    });
  if (root["search"]) Try([&] { ParseSearch(root["search"], c.search); });
  if (root["resources"])
    Try([&] {
      const YAML::Node r = Map(root["resources"], "resources");
      CheckKeys(r, "resources", {"gpus_per_trial", "cpus_per_trial", "no_fit_timeout_s"});
      if (r["gpus_per_trial"])
        Try([&] {
          const double g = Number(r["gpus_per_trial"], "resources.gpus_per_trial");
          if (g < 0 || g > 64)
            Fail(r["gpus_per_trial"], "resources.gpus_per_trial: expected a number in [0, 64]");
          // No worker has more: each drives one GPU (one worker process per GPU).
          if (g > 1)
            Fail(r["gpus_per_trial"],
                 "resources.gpus_per_trial: " + r["gpus_per_trial"].Scalar() +
                     " GPUs per trial, more than any worker has: each worker drives one GPU "
                     "(one worker process per GPU); expected a number in [0, 1]");
          c.resources.gpus_per_trial = g;
          c.resources.gpus_at = At(r["gpus_per_trial"]);
        });
      if (r["cpus_per_trial"])
        Try([&] {
          c.resources.cpus_per_trial =
              Int(r["cpus_per_trial"], "resources.cpus_per_trial", 1, 1024);
          c.resources.cpus_at = At(r["cpus_per_trial"]);
        });
      if (r["no_fit_timeout_s"])
        Try([&] {
          c.resources.no_fit_timeout_s =
              Int(r["no_fit_timeout_s"], "resources.no_fit_timeout_s", 1, 7 * 24 * 3600);
          c.resources.no_fit_at = At(r["no_fit_timeout_s"]);
        });
    });
  if (root["workers"]) Try([&] { c.workers = Int(root["workers"], "workers", 0, 4096); });
  if (!root["attention"]) {
    Report(root, "missing 'attention' (the masker stacks to tune)");
  } else {
    Try([&] {
      const YAML::Node att = Map(root["attention"], "attention");
      if (att.size() == 0) Fail(att, "attention: no stacks");
      std::set<std::string> names;
      for (const auto& kv : att)
        Try([&] {
          const std::string name = kv.first.IsScalar() ? kv.first.Scalar() : "";
          if (!IsName(name))
            Fail(kv.first, "attention: stack name " +
                               (kv.first.IsScalar() ? "'" + Clip(name) + "'" : Describe(kv.first)) +
                               " must be letters, digits, '_', '-', '.'");
          if (!names.insert(name).second)
            Fail(kv.first, "attention: stack '" + name + "' is given twice");
          c.stacks.push_back(ParseStack(name, kv.second));
        });
    });
  }
  if (c.search.algorithm == "grid") {
    for (const StackSpec& s : c.stacks)
      for (const MaskerEntry& m : s.maskers)
        for (const auto& [field, space] : m.fields)
          if (space.searched() && space.kind != ParamSpace::Kind::kGridSearch &&
              space.kind != ParamSpace::Kind::kChoice)
            errors_.emplace_back(space.where, "attention." + s.name + " (" + m.type + "): field '" +
                                                  field +
                                                  "': search.algorithm grid enumerates "
                                                  "grid_search and choice only, found " +
                                                  SpaceName(space.kind) + " (use random or tpe)");
  }
  if (errors_.empty() || benchmark_ok) CheckScheduler(c, benchmark_ok);
  // The cap needs the whole plan: only for a file without other errors.
  if (errors_.empty()) {
    Status cap = CheckTrialCap(c, options_.max_trials);
    if (!cap.ok()) {
      // CheckTrialCap's message starts with the stack's place; keep it whole.
      errors_.emplace_back(Location{}, cap.message());
    }
  }
  return c;
}

// The errors as one message: `FILE:LINE:COLUMN: message` lines in file order.
std::string JoinErrors(std::vector<SweepError> errors, const std::string& path) {
  std::stable_sort(errors.begin(), errors.end(), [](const SweepError& a, const SweepError& b) {
    return std::pair(a.where.line, a.where.column) < std::pair(b.where.line, b.where.column);
  });
  std::string out;
  for (size_t i = 0; i < errors.size() && i < kMaxReported; ++i) {
    std::string m = errors[i].message;
    if (m.size() > kMaxMessage) m = m.substr(0, kMaxMessage) + "...";
    for (char& ch : m)
      if (ch == '\n' || ch == '\r') ch = ' ';
    if (!out.empty()) out += '\n';
    out += errors[i].where.file.empty() ? m : errors[i].where.ToString() + ": " + m;
  }
  if (errors.size() > kMaxReported)
    out += "\n" + path + ": " + std::to_string(errors.size() - kMaxReported) +
           " more errors not shown (" + std::to_string(errors.size()) + " in all)";
  return out;
}

}  // namespace

int64_t ResourcesSpec::SlotsOn(int64_t gpus, int64_t cores) const {
  int64_t slots = cores > 0 ? cores / std::max<int64_t>(1, cpus_per_trial)
                            : std::numeric_limits<int64_t>::max();
  // A small tolerance, so 3 x 0.333.. fits in one GPU.
  if (gpus_per_trial > 0)
    slots =
        std::min(slots, static_cast<int64_t>(static_cast<double>(gpus) / gpus_per_trial + 1e-9));
  return slots;
}

int64_t ResourcesSpec::Concurrency(int64_t gpus, int64_t cores) const {
  const int64_t fit = SlotsOn(gpus, cores);
  if (fit < 1) return 0;
  if ((gpus_per_trial <= 0 && cpus_at.line == 0) || cores <= 0) return 1;
  return std::min<int64_t>(fit, 1024);  // protocol::kMaxSlots
}

int64_t ResourcesSpec::ThreadsPerTrial(int64_t gpus, int64_t cores) const {
  if (cpus_at.line > 0) return cpus_per_trial;
  const int64_t slots = Concurrency(gpus, cores);
  return cores > 0 && slots > 0 ? std::max<int64_t>(1, cores / slots) : 0;
}

std::string ResourcesSpec::Misfit(int64_t gpus, int64_t cores) const {
  if (SlotsOn(gpus, cores) > 0) return "";
  std::ostringstream s;
  s << "a trial asks for " << gpus_per_trial << " GPU and " << cpus_per_trial
    << " cores (resources), and the worker has " << gpus << " GPU and " << cores << " cores";
  return s.str();
}

std::string Location::ToString() const {
  return file + ":" + std::to_string(line) + ":" + std::to_string(column);
}

const char* SpaceName(ParamSpace::Kind kind) {
  switch (kind) {
    case ParamSpace::Kind::kConstant:
      return "constant";
    case ParamSpace::Kind::kGridSearch:
      return "grid_search";
    case ParamSpace::Kind::kChoice:
      return "choice";
    case ParamSpace::Kind::kUniform:
      return "uniform";
    case ParamSpace::Kind::kLogUniform:
      return "loguniform";
    case ParamSpace::Kind::kRandInt:
      return "randint";
    case ParamSpace::Kind::kQUniform:
      return "quniform";
  }
  return "?";
}

std::string ParamSpace::ToString() const {
  auto num = [](double x) { return FieldValueToString(x); };
  std::string list;
  for (const FieldValue& v : values) list += (list.empty() ? "" : ", ") + FieldValueToString(v);
  switch (kind) {
    case Kind::kConstant:
      return list;
    case Kind::kGridSearch:
    case Kind::kChoice:
      return std::string(SpaceName(kind)) + " [" + list + "]";
    case Kind::kRandInt:
      return "randint [" + std::to_string(static_cast<int64_t>(lo)) + ", " +
             std::to_string(static_cast<int64_t>(hi)) + ")";
    case Kind::kQUniform:
      return "quniform [" + num(lo) + ", " + num(hi) + ", " + num(q) + "]";
    default:
      return std::string(SpaceName(kind)) + " [" + num(lo) + ", " + num(hi) + "]";
  }
}

bool IsReferenceObjective(const std::string& name) {
  static const std::set<std::string> kNames = {"default",     "sparsity_5",  "sparsity_10",
                                               "sparsity_15", "sparsity_20", "sparsity_25"};
  return kNames.count(name) != 0;
}

Result<SweepConfig> ParseSweep(const std::string& text, const std::string& path,
                               const MaskerRegistry& registry, const ParseOptions& options) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::DeepRecursion& e) {
    return Status::Error(path + ":" + std::to_string(e.mark.line + 1) + ":" +
                         std::to_string(e.mark.column + 1) +
                         ": YAML syntax error: nested too deep (yaml-cpp stops at 500 levels)");
  } catch (const YAML::Exception& e) {
    return Status::Error(path + ":" + std::to_string(e.mark.line + 1) + ":" +
                         std::to_string(e.mark.column + 1) + ": YAML syntax error: " + e.msg);
  }
  Parser parser(path, registry, options);
  SweepConfig c;
  try {
    c = parser.Parse(root);
  } catch (const YAML::Exception& e) {  // outside every Try: should not happen, never a crash
    return Status::Error(path + ":" + std::to_string(e.mark.line + 1) + ":" +
                         std::to_string(e.mark.column + 1) + ": " + e.msg);
  }
  if (!parser.errors().empty()) return Status::Error(JoinErrors(parser.errors(), path));
  return c;
}

Result<SweepConfig> LoadSweep(const std::string& path, const MaskerRegistry& registry,
                              const ParseOptions& options) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) return Status::Error(path + ": a folder, not a sweep file");
  std::ifstream f(path);
  if (!f) return Status::Error(path + ": cannot open the sweep file");
  std::stringstream text;
  text << f.rdbuf();
  return ParseSweep(text.str(), path, registry, options);
}

int64_t StackTrials(const StackSpec& stack, const SearchSpec& search, std::string* exact) {
  const BigCount n = ExactTrials(stack, search);
  if (exact) *exact = n.ToString();
  return n.Saturated();
}

Status CheckTrialCap(const SweepConfig& sweep, int64_t max_trials) {
  BigCount total(0);
  std::string per_stack;
  const StackSpec* largest = nullptr;
  int64_t largest_n = -1;
  for (const StackSpec& s : sweep.stacks) {
    const BigCount n = ExactTrials(s, sweep.search);
    total.Add(n);
    if (n.Saturated() > largest_n) {
      largest = &s;
      largest_n = n.Saturated();
    }
    per_stack += (per_stack.empty() ? "" : ", ") + s.name + " " + n.ToString();
  }
  // A plan whose count does not fit in 64 bits is over every cap.
  if ((total.FitsInt64() && total.Saturated() <= max_trials) || !largest) return Status::Ok();
  return Status::Error(
      largest->where.ToString() + ": attention." + largest->name + ": the plan has " +
      total.ToString() + " trials (" + Clip(per_stack, 400) + "), more than the cap of " +
      std::to_string(max_trials) +
      "; shrink the grid_search lists or search.num_samples, or raise the cap with "
      "--max-trials N");
}

namespace {

nlohmann::json SpaceJson(const ParamSpace& s) {
  nlohmann::json j = {{"kind", SpaceName(s.kind)}};
  if (s.kind == ParamSpace::Kind::kConstant || s.kind == ParamSpace::Kind::kGridSearch ||
      s.kind == ParamSpace::Kind::kChoice) {
    nlohmann::json values = nlohmann::json::array();
    for (const FieldValue& v : s.values) values.push_back(FieldValueToJson(v));
    j["values"] = values;
  } else {
    j["lo"] = s.lo;
    j["hi"] = s.hi;
    if (s.kind == ParamSpace::Kind::kQUniform) j["q"] = s.q;
  }
  return j;
}

}  // namespace

std::string PlanFingerprintText(const SweepConfig& sweep) {
  nlohmann::json benchmark = sweep.benchmark.ToJson();
  benchmark.erase("prefill_cache");  // where dense prefills are cached, not what is measured
  nlohmann::json objective = {{"name", sweep.objective.name}};
  nlohmann::json metrics = nlohmann::json::array();
  for (const auto& [metric, minimise] : sweep.objective.metrics)
    metrics.push_back({{"metric", metric}, {"mode", minimise ? "min" : "max"}});
  objective["metrics"] = metrics;
  const SearchSpec& s = sweep.search;
  nlohmann::json search = {{"algorithm", s.algorithm},
                           {"num_samples", s.num_samples},
                           {"seed", s.seed},
                           {"n_startup_trials", s.n_startup_trials}};
  if (s.scheduler.enabled())  // (absent without one: older studies keep their fingerprint)
    search["scheduler"] = {{"type", s.scheduler.type},
                           {"max_t", s.scheduler.max_t},
                           {"grace_period", s.scheduler.grace_period},
                           {"reduction_factor", s.scheduler.reduction_factor},
                           {"brackets", s.scheduler.brackets},
                           {"min_samples_required", s.scheduler.min_samples_required}};
  nlohmann::json stacks = nlohmann::json::array();
  for (const StackSpec& stack : sweep.stacks) {
    nlohmann::json maskers = nlohmann::json::array();
    for (const MaskerEntry& m : stack.maskers) {
      nlohmann::json fields = nlohmann::json::object();
      for (const auto& [field, space] : m.fields) fields[field] = SpaceJson(space);
      maskers.push_back({{"type", m.type}, {"fields", fields}});
    }
    stacks.push_back({{"name", stack.name}, {"maskers", maskers}});
  }
  return nlohmann::json{
      {"benchmark", benchmark}, {"objective", objective}, {"search", search}, {"stacks", stacks}}
      .dump();
}

int64_t BenchmarkSteps(const BenchmarkSpec& b) {
  if (b.name == "noop") return b.steps;
  if (b.name == "ruler_niah") return static_cast<int64_t>(b.ruler.tasks.size()) * b.ruler.samples;
  if (b.synthetic) return b.data.samples;
  int64_t files = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(b.folder, ec))
    files += e.path().extension() == ".safetensors";
  return ec ? 0 : files;
}

nlohmann::json BenchmarkSpec::ToJson() const {
  if (name == "noop") {
    nlohmann::json j = {{"name", "noop"}, {"sleep_ms", sleep_ms}};
    if (steps != 1) j["steps"] = steps;  // (absent before steps existed: same fingerprint)
    return j;
  }
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
          {"synthetic",
           {{"keys", data.keys},
            {"heads", data.heads},
            {"kv_heads", data.kv_heads},
            {"head_dim", data.head_dim},
            {"queries", data.queries},
            {"samples", data.samples},
            {"seed", data.seed}}}};
}

std::string BenchmarkSpec::Describe() const {
  auto n = [](int64_t x) { return std::to_string(x); };
  if (name == "noop")
    return "benchmark noop (sleep_ms " + n(sleep_ms) + (steps != 1 ? ", steps " + n(steps) : "") +
           ")";
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
  return "benchmark attention_error (synthetic: keys " + n(data.keys) + ", heads " + n(data.heads) +
         ", kv_heads " + n(data.kv_heads) + ", head_dim " + n(data.head_dim) + ", queries " +
         n(data.queries) + ", samples " + n(data.samples) + ", seed " + n(data.seed) + ")";
}

}  // namespace masktune::configs
