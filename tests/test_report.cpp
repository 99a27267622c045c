// `masktune report` and `masktune dashboard` on real study databases (made
// through the Store API, as coordinators record trials, or by `masktune
// run`): the HTML is well-formed XML (a strict parser below), each chart has
// one point per finished trial, the Pareto front is exactly the non-dominated
// trials, parameter importance finds the parameter that matters; the
// dashboard serves concurrent requests while a sweep writes the database,
// answers 404 to bad paths and never writes the file.
#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cli/html_report.h"
#include "configs/sweep.h"
#include "search/objective.h"
#include "storage/store.h"
#include "tests/helpers.h"
#include "tests/process_helpers.h"

namespace masktune {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;
using testing::CheckBadInput;
using testing::Masktune;
using testing::Slurp;

// --- a strict XML parser: well-formedness or an error with its offset --------

struct Node {
  std::string name;
  std::map<std::string, std::string> attrs;
  std::vector<Node> children;
  std::string text;  // the direct text, entities decoded
};

class XmlParser {
 public:
  explicit XmlParser(const std::string& s) : s_(s) {}

  // The root element; error() says why it failed (empty when well-formed).
  Node Parse() {
    Node root;
    SkipMisc();
    if (!Fail() && Element(root)) SkipMisc();
    if (error_.empty() && i_ != s_.size()) Err("content after the root element");
    return root;
  }
  const std::string& error() const { return error_; }

 private:
  bool Fail() const { return !error_.empty(); }
  void Err(const std::string& m) {
    if (error_.empty())
      error_ = m + " at offset " + std::to_string(i_) + ": '" + s_.substr(i_, 40) + "'";
  }
  bool At(const std::string& t) const { return s_.compare(i_, t.size(), t) == 0; }
  void Ws() {
    while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
  }
  bool SkipTo(const std::string& end) {
    const size_t p = s_.find(end, i_);
    if (p == std::string::npos) return Err("unterminated " + end), false;
    i_ = p + end.size();
    return true;
  }
  void SkipMisc() {
    for (;;) {
      Ws();
      if (At("<?")) {
        if (!SkipTo("?>")) return;
      } else if (At("<!DOCTYPE")) {
        if (!SkipTo(">")) return;
      } else if (At("<!--")) {
        if (!SkipTo("-->")) return;
      } else {
        return;
      }
    }
  }
  std::string Name() {
    const size_t b = i_;
    while (i_ < s_.size() && (std::isalnum(static_cast<unsigned char>(s_[i_])) || s_[i_] == '-' ||
                              s_[i_] == '_' || s_[i_] == ':' || s_[i_] == '.'))
      ++i_;
    if (b == i_) Err("expected a name");
    return s_.substr(b, i_ - b);
  }
  // After '&': one of the five XML entities or a character reference.
  bool Entity(std::string& out) {
    const size_t semi = s_.find(';', i_);
    if (semi == std::string::npos || semi - i_ > 10) return Err("bad entity"), false;
    const std::string e = s_.substr(i_, semi - i_);
    static const std::map<std::string, std::string> kNamed = {
        {"amp", "&"}, {"lt", "<"}, {"gt", ">"}, {"quot", "\""}, {"apos", "'"}};
    if (auto it = kNamed.find(e); it != kNamed.end()) {
      out += it->second;
    } else if (e.size() > 1 && e[0] == '#') {
      const bool hex = e[1] == 'x';
      const std::string digits = e.substr(hex ? 2 : 1);
      if (digits.empty() || digits.find_first_not_of(hex ? "0123456789abcdefABCDEF"
                                                         : "0123456789") != std::string::npos)
        return Err("bad character reference &" + e + ";"), false;
      out += "?";  // the character itself does not matter to the tests
    } else {
      return Err("undefined entity &" + e + ";"), false;
    }
    i_ = semi + 1;
    return true;
  }
  bool Element(Node& n) {
    if (!At("<")) return Err("expected '<'"), false;
    ++i_;
    n.name = Name();
    if (Fail()) return false;
    for (;;) {
      const size_t before = i_;
      Ws();
      if (At("/>")) return i_ += 2, true;
      if (At(">")) {
        ++i_;
        break;
      }
      if (i_ == before) return Err("expected whitespace before an attribute"), false;
      const std::string key = Name();
      if (Fail()) return false;
      Ws();
      if (!At("=")) return Err("attribute without '='"), false;
      ++i_;
      Ws();
      if (i_ >= s_.size() || (s_[i_] != '"' && s_[i_] != '\''))
        return Err("unquoted attribute"), false;
      const char q = s_[i_++];
      std::string value;
      while (i_ < s_.size() && s_[i_] != q) {
        if (s_[i_] == '<') return Err("'<' in an attribute"), false;
        if (s_[i_] == '&') {
          ++i_;
          if (!Entity(value)) return false;
        } else {
          value += s_[i_++];
        }
      }
      if (i_ >= s_.size()) return Err("unterminated attribute"), false;
      ++i_;
      if (!n.attrs.emplace(key, value).second) return Err("repeated attribute " + key), false;
    }
    for (;;) {
      if (i_ >= s_.size()) return Err("unclosed <" + n.name + ">"), false;
      if (At("</")) {
        i_ += 2;
        const std::string end = Name();
        if (end != n.name) return Err("</" + end + "> closes <" + n.name + ">"), false;
        Ws();
        if (!At(">")) return Err("expected '>'"), false;
        ++i_;
        return true;
      }
      if (At("<!--")) {
        if (!SkipTo("-->")) return false;
      } else if (At("<![CDATA[")) {
        i_ += 9;
        const size_t end = s_.find("]]>", i_);
        if (end == std::string::npos) return Err("unterminated CDATA"), false;
        n.text += s_.substr(i_, end - i_);
        i_ = end + 3;
      } else if (At("<")) {
        n.children.emplace_back();
        if (!Element(n.children.back())) return false;
      } else if (s_[i_] == '&') {
        ++i_;
        if (!Entity(n.text)) return false;
      } else {
        n.text += s_[i_++];
      }
    }
  }

  const std::string& s_;
  size_t i_ = 0;
  std::string error_;
};

template <typename F>
void Walk(const Node& n, F&& f) {
  f(n);
  for (const Node& c : n.children) Walk(c, f);
}

std::string Attr(const Node& n, const std::string& k) {
  auto it = n.attrs.find(k);
  return it == n.attrs.end() ? "" : it->second;
}

bool HasClass(const Node& n, const std::string& cls) {
  const std::string c = " " + Attr(n, "class") + " ";
  return c.find(" " + cls + " ") != std::string::npos;
}

std::vector<const Node*> All(const Node& root, const std::string& name) {
  std::vector<const Node*> out;
  Walk(root, [&](const Node& n) {
    if (n.name == name) out.push_back(&n);
  });
  return out;
}

std::string AllText(const Node& n) {
  std::string t = n.text;
  for (const Node& c : n.children) t += " " + AllText(c);
  return t;
}

// A parsed page: the tree, or a failed CHECK naming where it is malformed.
struct Page {
  Node root;
  std::string error;
  explicit Page(const std::string& html) {
    XmlParser p(html);
    root = p.Parse();
    error = p.error();
  }
  // The chart figures of one kind, for one stack ("" = every stack together).
  std::vector<const Node*> Charts(const std::string& kind, const std::string& stack) const {
    std::vector<const Node*> out;
    for (const Node* f : All(root, "figure"))
      if (Attr(*f, "data-kind") == kind && Attr(*f, "data-stack") == stack) out.push_back(f);
    return out;
  }
  // Trial ids of the chart's points (one <circle> each), and of those on the front.
  static std::vector<int64_t> Points(const Node& chart, bool front_only = false) {
    std::vector<int64_t> ids;
    for (const Node* c : All(chart, "circle"))
      if (!front_only || HasClass(*c, "front")) ids.push_back(std::stoll(Attr(*c, "data-trial")));
    return ids;
  }
};

// --- studies written through the Store API -----------------------------------

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
  void Queue(const std::string& stack, const std::string& params) {
    REQUIRE(store.AddTrial(stacks.at(stack), numbers[stack]++, params).ok());
  }
  storage::TrialRow Start(const std::string& stack, const std::string& params) {
    Queue(stack, params);
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
  void Finish() { REQUIRE(store.SetStudyStatus(id, "finished").ok()); }
};

std::string HeavyParams(double heavy) { return json{{"oracle_top_k.heavy_size", heavy}}.dump(); }

// Runs `report` and parses what it wrote.
std::string Report(const testing::TempDir& dir, const std::string& study, const std::string& db) {
  const std::string out = dir / (study + ".html");
  const testing::Run r = Masktune("report " + study + " --db " + db + " --out " + out);
  CAPTURE(r.output);
  CHECK(r.code == 0);
  CHECK(r.output.find("report: " + out) != std::string::npos);
  return Slurp(out);
}

void CheckOffline(const std::string& html) {
  // Nothing fetched, nothing run: no script, no external reference.
  CHECK(html.find("<script") == std::string::npos);
  CHECK(html.find("src=") == std::string::npos);
  CHECK(html.find("@import") == std::string::npos);
  CHECK(html.find("url(") == std::string::npos);
  CHECK(html.find("href=\"http") == std::string::npos);
}

const char* kTwoStacks =
    "study: q\nbenchmark: {name: noop}\n"
    "objective: {metric: error, mode: min}\n"
    "search: {algorithm: random, num_samples: 6}\n"
    "attention:\n  a:\n    - sink: {sink_size: 4}\n"
    "    - oracle_top_k: {heavy_size: {uniform: [0.05, 0.5]}}\n"
    "  b:\n    - oracle_top_k: {heavy_size: {uniform: [0.05, 0.5]}}\n";

TEST_CASE(
    "report: a finished study with failures: strict XHTML, a point per done trial, "
    "best marked, failures whole") {
  testing::TempDir dir;
  const std::string error = "sample 0: maskers[1] <oracle_top_k> & \"quotes\": out of memory";
  int64_t best_a = 0, failed = 0, pruned = 0;
  {
    Study s = Study::Make(dir / "s.db", dir / "s.yaml", kTwoStacks);
    s.Done("a", HeavyParams(0.1), {{"density", 0.1}, {"error", 0.3}, {"recall", 0.8}});
    best_a = s.Done("a", HeavyParams(0.3), {{"density", 0.3}, {"error", 0.05}, {"recall", 0.9}});
    s.Done("a", HeavyParams(0.4), {{"density", 0.4}, {"error", 0.2}, {"recall", 0.85}});
    s.Done("a", HeavyParams(0.2), {{"density", 0.2}, {"error", 0.25}, {"recall", 0.8}});
    failed = s.Failed("a", HeavyParams(0.45), error);
    {
      // Stopped by a scheduler after 2 samples: listed, not a point.
      const storage::TrialRow t = s.Start("a", HeavyParams(0.5));
      const Metrics m = {{"density", 0.5}, {"error", 0.6}};
      REQUIRE(s.store.RecordPruned(t.id, t.attempts, 2, m, 0.6).ok());
      pruned = t.id;
    }
    s.Done("b", HeavyParams(0.2), {{"density", 0.2}, {"error", 0.2}, {"recall", 0.7}});
    s.Done("b", HeavyParams(0.1), {{"density", 0.1}, {"error", 0.4}, {"recall", 0.6}});
    s.Finish();
  }
  const std::string html = Report(dir, "q", dir / "s.db");
  const Page page(html);
  REQUIRE_MESSAGE(page.error.empty(), page.error);
  CheckOffline(html);
  CHECK(page.root.name == "html");
  // One density chart and one history chart per section, a point per done trial.
  for (const auto& [stack, points] : std::map<std::string, size_t>{{"", 6}, {"a", 4}, {"b", 2}}) {
    CAPTURE(stack);
    for (const char* kind : {"density", "history"}) {
      CAPTURE(kind);
      const auto charts = page.Charts(kind, stack);
      REQUIRE(charts.size() == 1);
      CHECK(Page::Points(*charts[0]).size() == points);
      CHECK(Attr(*charts[0], "data-points") == std::to_string(points));
    }
    // Every point carries its trial's parameters as a title.
    for (const Node* c : All(*page.Charts("density", stack)[0], "circle")) {
      REQUIRE(c->children.size() == 1);
      CHECK(c->children[0].name == "title");
      CHECK(c->children[0].text.find("oracle_top_k.heavy_size = ") != std::string::npos);
    }
  }
  // A slice plot per searched parameter of each stack; importance needs 4 trials.
  CHECK(page.Charts("slice", "a").size() == 1);
  CHECK(Page::Points(*page.Charts("slice", "a")[0]).size() == 4);
  CHECK(Attr(*page.Charts("slice", "a")[0], "data-param") == "oracle_top_k.heavy_size");
  CHECK(page.Charts("slice", "b").size() == 1);
  CHECK(page.Charts("importance", "a").size() == 1);
  CHECK(page.Charts("importance", "b").empty());  // 2 trials: a note instead
  // The best trial (lowest error) is marked in its stack's chart.
  std::string best_marks;
  for (const Node* p : All(*page.Charts("density", "a")[0], "path"))
    if (HasClass(*p, "best")) best_marks += Attr(*p, "data-trial") + ";";
  CHECK(best_marks == std::to_string(best_a) + ";");
  // Header: counts by status; the stored sweep as stored.
  const std::string text = AllText(page.root);
  CHECK(text.find("6 done") != std::string::npos);
  CHECK(text.find("1 failed") != std::string::npos);
  CHECK(text.find("1 pruned") != std::string::npos);
  CHECK(text.find("oracle_top_k: {heavy_size: {uniform: [0.05, 0.5]}}") != std::string::npos);
  // The failed trial with its whole message (escaped in the file, intact once parsed).
  bool found = false;
  for (const Node* tr : All(page.root, "tr"))
    if (Attr(*tr, "data-trial") == std::to_string(failed)) {
      found = true;
      CHECK(AllText(*tr).find(error) != std::string::npos);
    }
  CHECK(found);
  found = false;
  for (const Node* tr : All(page.root, "tr"))
    if (Attr(*tr, "data-trial") == std::to_string(pruned)) {
      found = true;
      CHECK(AllText(*tr).find("stopped after 2 samples; error 0.6 there") != std::string::npos);
      CHECK(AllText(*tr).find("pruned") != std::string::npos);
    }
  CHECK(found);
  // The best configuration as export writes it: the masker list and the reference's JSON.
  std::vector<json> configs;
  for (const Node* pre : All(page.root, "pre"))
    if (HasClass(*pre, "config")) configs.push_back(json::parse(pre->text));
  REQUIRE(configs.size() == 4);  // two stacks x (masker list, reference)
  CHECK(configs[0] == json::parse(R"([{"type":"sink","sink_size":4},
                                      {"type":"oracle_top_k","heavy_size":0.3}])"));
  CHECK(configs[1]["sparse_config"]["masker_configs"][1]["type"] == "OracleTopKConfig");
  CHECK(configs[1]["sparse_config"]["masker_configs"][1]["params"]["heavy_size"] == 0.3);
  CHECK(configs[2] == json::parse(R"([{"type":"oracle_top_k","heavy_size":0.2}])"));
}

// Non-dominated on (density min, recall max), computed here from the definition.
std::set<int64_t> NonDominated(const std::vector<std::tuple<int64_t, double, double>>& trials) {
  std::set<int64_t> out;
  for (const auto& [id, d, r] : trials) {
    bool dominated = false;
    for (const auto& [id2, d2, r2] : trials) dominated |= d2 <= d && r2 >= r && (d2 < d || r2 > r);
    if (!dominated) out.insert(id);
  }
  return out;
}

TEST_CASE("report: a Pareto objective: the front holds exactly the non-dominated trials") {
  testing::TempDir dir;
  const std::string sweep =
      "study: p\nbenchmark: {name: noop}\n"
      "objective:\n  - {metric: recall, mode: max}\n  - {metric: density, mode: min}\n"
      "search: {algorithm: random, num_samples: 12}\n"
      "attention:\n  a:\n    - oracle_top_k: {heavy_size: {uniform: [0.05, 0.5]}}\n"
      "  b:\n    - oracle_top_k: {heavy_size: {uniform: [0.05, 0.5]}}\n";
  std::vector<std::tuple<int64_t, double, double>> a, all;  // (trial, density, recall)
  {
    Study s = Study::Make(dir / "p.db", dir / "p.yaml", sweep);
    std::mt19937 gen(5);
    std::uniform_real_distribution<double> u(0.05, 0.5);
    for (int i = 0; i < 12; ++i) {
      const std::string stack = i % 3 == 2 ? "b" : "a";
      const double d = u(gen);
      // Recall grows with density, with scatter, so some trials are dominated.
      const double r = std::min(1.0, 0.5 + d + (u(gen) - 0.27) * 0.6);
      const int64_t id =
          s.Done(stack, HeavyParams(d), {{"density", d}, {"recall", r}, {"error", 1 - r}});
      all.push_back({id, d, r});
      if (stack == "a") a.push_back({id, d, r});
    }
    // A tie: the same point twice; neither dominates the other.
    const int64_t t1 = s.Done("a", HeavyParams(0.01), {{"density", 0.01}, {"recall", 0.2}});
    const int64_t t2 = s.Done("a", HeavyParams(0.01), {{"density", 0.01}, {"recall", 0.2}});
    a.push_back({t1, 0.01, 0.2}), a.push_back({t2, 0.01, 0.2});
    all.push_back({t1, 0.01, 0.2}), all.push_back({t2, 0.01, 0.2});
    s.Finish();
  }
  const std::string html = Report(dir, "p", dir / "p.db");
  const Page page(html);
  REQUIRE_MESSAGE(page.error.empty(), page.error);
  for (const auto& [stack, trials] :
       std::vector<std::pair<std::string, std::vector<std::tuple<int64_t, double, double>>>>{
           {"a", a}, {"", all}}) {
    CAPTURE(stack);
    const auto charts = page.Charts("density", stack);
    REQUIRE(charts.size() == 1);
    CHECK(Page::Points(*charts[0]).size() == trials.size());
    const std::vector<int64_t> front = Page::Points(*charts[0], true);
    const std::set<int64_t> expected = NonDominated(trials);
    CHECK(std::set<int64_t>(front.begin(), front.end()) == expected);
    CHECK(front.size() == expected.size());
    CHECK(expected.size() >= 3);
    CHECK(expected.size() < trials.size());  // the data has dominated trials
    // The step line through them.
    int lines = 0;
    for (const Node* p : All(*charts[0], "path")) lines += HasClass(*p, "front");
    CHECK(lines == 1);
  }
  // The objective's own front (search::ParetoFront) is the same set for stack a.
  std::vector<Metrics> pts;
  for (const auto& [id, d, r] : a) pts.push_back({{"density", d}, {"recall", r}});
  configs::ObjectiveSpec objective{"pareto", {{"recall", false}, {"density", true}}};
  std::set<int64_t> theirs;
  for (size_t i : search::ParetoFront(objective, pts)) theirs.insert(std::get<0>(a[i]));
  CHECK(theirs == NonDominated(a));
  // The table under the best configuration lists the same trials.
  std::set<int64_t> table;
  for (const Node* t : All(page.root, "table"))
    if (HasClass(*t, "front") && !t->children.empty())
      for (const Node& tr : t->children)
        if (!Attr(tr, "data-trial").empty()) table.insert(std::stoll(Attr(tr, "data-trial")));
  std::set<int64_t> fronts = NonDominated(a);
  std::vector<std::tuple<int64_t, double, double>> b;
  for (const auto& t : all)
    if (std::find(a.begin(), a.end(), t) == a.end()) b.push_back(t);
  for (int64_t id : NonDominated(b)) fronts.insert(id);
  CHECK(table == fronts);
}

TEST_CASE("report: one trial, zero done trials, a running study") {
  testing::TempDir dir;
  SUBCASE("one trial") {
    int64_t only = 0;
    {
      Study s = Study::Make(dir / "o.db", dir / "o.yaml", kTwoStacks);
      only = s.Done("a", HeavyParams(0.2), {{"density", 0.2}, {"error", 0.1}});
      s.Finish();
    }
    const Page page(Report(dir, "q", dir / "o.db"));
    REQUIRE_MESSAGE(page.error.empty(), page.error);
    CHECK(Page::Points(*page.Charts("density", "")[0]).size() == 1);
    CHECK(Page::Points(*page.Charts("density", "a")[0], true) == std::vector<int64_t>{only});
    CHECK(Page::Points(*page.Charts("density", "b")[0]).empty());
    CHECK(Page::Points(*page.Charts("history", "a")[0]).size() == 1);
    CHECK(page.Charts("importance", "a").empty());
    CHECK(AllText(page.root).find("at least 4 finished trials") != std::string::npos);
  }
  SUBCASE("zero done trials") {
    {
      Study s = Study::Make(dir / "z.db", dir / "z.yaml", kTwoStacks);
      s.Failed("a", HeavyParams(0.2), "boom");
      s.Failed("b", HeavyParams(0.3), "bang");
      s.Finish();
    }
    const std::string html = Report(dir, "q", dir / "z.db");
    const Page page(html);
    REQUIRE_MESSAGE(page.error.empty(), page.error);
    for (const std::string stack : {"", "a", "b"}) {
      REQUIRE(page.Charts("density", stack).size() == 1);
      CHECK(Page::Points(*page.Charts("density", stack)[0]).empty());
      CHECK(Page::Points(*page.Charts("history", stack)[0]).empty());
    }
    const std::string text = AllText(page.root);
    CHECK(text.find("no finished trial yet") != std::string::npos);
    CHECK(text.find("No finished trial yet.") != std::string::npos);
    CHECK(text.find("boom") != std::string::npos);
    CHECK(text.find("bang") != std::string::npos);
  }
  SUBCASE("a running study, held by a live coordinator") {
    {
      Study s = Study::Make(dir / "r.db", dir / "r.yaml", kTwoStacks);
      s.Done("a", HeavyParams(0.2), {{"density", 0.2}, {"error", 0.1}});
      s.Start("a", HeavyParams(0.3));
      s.Queue("b", HeavyParams(0.4));
      storage::Lease mine{"coordinator-test", storage::ThisHost(), ::getpid(), 4e9};
      auto got = s.store.AcquireLease(s.id, mine);
      REQUIRE(got.ok());
      REQUIRE(!got.value());
    }
    const std::string html = Report(dir, "q", dir / "r.db");
    const Page page(html);
    REQUIRE_MESSAGE(page.error.empty(), page.error);
    CheckOffline(html);
    const std::string text = AllText(page.root);
    CHECK(text.find("(coordinator coordinator-test on ") != std::string::npos);
    CHECK(text.find("1 of 3 trials settled") != std::string::npos);
    CHECK(text.find("1 running") != std::string::npos);
    CHECK(text.find("1 queued") != std::string::npos);
    CHECK(Page::Points(*page.Charts("density", "")[0]).size() == 1);
  }
}

TEST_CASE("report: parameter importance: the parameter that matters ranks first") {
  std::mt19937 gen(11);
  std::uniform_real_distribution<double> u(0, 1);
  SUBCASE("MainEffectImportance on synthetic data") {
    cli::ImportanceColumn matters{"matters", {}, false}, noise{"noise", {}, false},
        category{"category", {}, true};
    std::vector<double> y;
    for (int i = 0; i < 60; ++i) {
      matters.values.push_back(u(gen));
      noise.values.push_back(u(gen));
      category.values.push_back(static_cast<double>(i % 3));
      y.push_back(std::pow(matters.values.back() - 0.3, 2) + 0.002 * u(gen));
    }
    const std::vector<double> share = cli::MainEffectImportance({matters, noise, category}, y);
    REQUIRE(share.size() == 3);
    CAPTURE(share[0]);
    CAPTURE(share[1]);
    CAPTURE(share[2]);
    CHECK(share[0] > 0.6);
    CHECK(share[1] < 0.15);
    CHECK(share[2] < 0.15);
    // Too few trials: no estimate.
    const std::vector<double> few =
        cli::MainEffectImportance({{"x", {0.1, 0.2, 0.3}, false}}, {1, 2, 3});
    CHECK(std::isnan(few[0]));
  }
  SUBCASE("in the report of a study where heavy_size matters and sink_size does not") {
    testing::TempDir dir;
    const std::string sweep =
        "study: imp\nbenchmark: {name: noop}\n"
        "objective: {metric: error, mode: min}\n"
        "search: {algorithm: random, num_samples: 40}\n"
        "attention:\n  a:\n    - sink: {sink_size: {randint: [1, 100]}}\n"
        "    - oracle_top_k: {heavy_size: {loguniform: [0.01, 0.5]}}\n";
    {
      Study s = Study::Make(dir / "i.db", dir / "i.yaml", sweep);
      for (int i = 0; i < 40; ++i) {
        const double heavy = 0.01 * std::pow(50.0, u(gen));
        const int64_t sink = 1 + static_cast<int64_t>(u(gen) * 99);
        const json params = {{"sink.sink_size", sink}, {"oracle_top_k.heavy_size", heavy}};
        s.Done("a", params.dump(),
               {{"density", heavy}, {"error", 0.5 / (1 + 40 * heavy) + 0.001 * u(gen)}});
      }
      s.Finish();
    }
    const Page page(Report(dir, "imp", dir / "i.db"));
    REQUIRE_MESSAGE(page.error.empty(), page.error);
    const auto charts = page.Charts("importance", "a");
    REQUIRE(charts.size() == 1);
    std::vector<std::pair<std::string, double>> bars;
    for (const Node* r : All(*charts[0], "rect"))
      if (HasClass(*r, "bar"))
        bars.push_back({Attr(*r, "data-label"), std::stod(Attr(*r, "data-value"))});
    REQUIRE(bars.size() == 2);
    CAPTURE(bars[0].second);
    CAPTURE(bars[1].second);
    CHECK(bars[0].first == "oracle_top_k.heavy_size");
    CHECK(bars[0].second > 0.6);
    CHECK(bars[1].first == "sink.sink_size");
    CHECK(bars[1].second < 0.15);
    // Slices: one per searched parameter, log axis for the loguniform one.
    const auto heavy = page.Charts("slice", "a");
    REQUIRE(heavy.size() == 2);
    for (const Node* c : heavy) {
      CHECK(Page::Points(*c).size() == 40);
      const bool log = AllText(*c).find("log scale") != std::string::npos;
      CHECK(log == (Attr(*c, "data-param") == "oracle_top_k.heavy_size"));
    }
  }
}

TEST_CASE("report and dashboard: bad input exits 2 with one line naming it") {
  testing::TempDir dir;
  {
    Study s = Study::Make(dir / "s.db", dir / "s.yaml", kTwoStacks);
    s.Done("a", HeavyParams(0.2), {{"density", 0.2}, {"error", 0.1}});
  }
  const std::string db = dir / "s.db";
  CheckBadInput(Masktune("report nope --db " + db), "no study 'nope' in " + db);
  CheckBadInput(Masktune("report q --db " + dir / "missing.db"), "missing.db: no such database");
  std::ofstream(dir / "file") << "x";
  CheckBadInput(Masktune("report q --db " + db + " --out " + dir / "file/r.html"),
                "--out: " + dir / "file/r.html" + ": cannot write");
  CheckBadInput(Masktune("report q"), "--db is required");
  CheckBadInput(Masktune("dashboard --db " + dir / "missing.db"), "missing.db: no such database");
  for (const std::string bind : {"nonsense", "127.0.0.1:99999", "1.2.3:80", "127.0.0.1:", ":80",
                                 "example.com:80", "127.0.0.1:-1"})
    CheckBadInput(Masktune("dashboard --db " + db + " --bind " + bind, "", 10), "--bind: ");
  CHECK(Masktune("report --help").code == 0);
  CHECK(Masktune("dashboard --help").output.find("--bind") != std::string::npos);
}

// --- HTTP, with plain sockets ---------------------------------------------------

struct Response {
  int status = 0;
  std::string headers, body;
};

// One request on a fresh connection; status 0 when no answer came.
Response Http(int port, const std::string& path, const std::string& method = "GET") {
  Response r;
  const int s = socket(AF_INET, SOCK_STREAM, 0);
  if (s < 0) return r;
  timeval timeout{20, 0};
  setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    close(s);
    return r;
  }
  const std::string req =
      method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
  if (send(s, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
    close(s);
    return r;
  }
  std::string all;
  char buf[65536];
  ssize_t n;
  while ((n = recv(s, buf, sizeof buf, 0)) > 0) all.append(buf, static_cast<size_t>(n));
  close(s);
  const size_t end = all.find("\r\n\r\n");
  if (all.rfind("HTTP/1.1 ", 0) != 0 || end == std::string::npos) return r;
  r.status = std::stoi(all.substr(9, 3));
  r.headers = all.substr(0, end);
  r.body = all.substr(end + 4);
  return r;
}

// A dashboard on a free port, stopped with SIGTERM (exit 0) at scope exit.
struct Dashboard {
  pid_t pid = -1;
  int port = 0;
  std::string log;
  Dashboard(const std::string& db, const std::string& log_path) : log(log_path) {
    port = testing::FreePort();
    pid = testing::Spawn(
        {MASKTUNE_BINARY, "dashboard", "--db", db, "--bind", "127.0.0.1:" + std::to_string(port)},
        log);
    for (int i = 0; i < 1000 && Http(port, "/api/studies").status != 200; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  int Stop() {
    kill(pid, SIGTERM);
    return testing::WaitExit(pid, 10);
  }
};

struct FileState {
  std::string bytes;
  int64_t mtime_ns = 0;
  bool operator==(const FileState&) const = default;
};
FileState StateOf(const std::string& path) {
  struct stat st {};
  REQUIRE(stat(path.c_str(), &st) == 0);
  return {Slurp(path), static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec};
}

TEST_CASE(
    "dashboard: studies, reports and JSON; 404 for bad paths; the database is never "
    "written") {
  testing::TempDir dir;
  int64_t failed = 0;
  {
    Study s = Study::Make(dir / "d.db", dir / "d.yaml", kTwoStacks);
    s.Done("a", HeavyParams(0.1), {{"density", 0.1}, {"error", 0.3}});
    s.Done("a", HeavyParams(0.3), {{"density", 0.3}, {"error", 0.05}});
    s.Done("b", HeavyParams(0.2), {{"density", 0.2}, {"error", 0.2}});
    failed = s.Failed("b", HeavyParams(0.4), "worker lost");
    s.Finish();
  }
  const std::string db = dir / "d.db";
  const FileState before = StateOf(db);
  Dashboard d(db, dir / "dashboard.log");
  REQUIRE(Http(d.port, "/").status == 200);
  CHECK(Slurp(d.log).find("dashboard: http://127.0.0.1:" + std::to_string(d.port) + "/") !=
        std::string::npos);

  const Response index = Http(d.port, "/");
  const Page index_page(index.body);
  REQUIRE_MESSAGE(index_page.error.empty(), index_page.error);
  std::vector<std::string> links;
  for (const Node* a : All(index_page.root, "a")) links.push_back(Attr(*a, "href"));
  CHECK(std::find(links.begin(), links.end(), "/study/q") != links.end());

  const Response report = Http(d.port, "/study/q");
  CHECK(report.status == 200);
  CHECK(report.headers.find("Content-Type: text/html; charset=utf-8") != std::string::npos);
  const Page page(report.body);
  REQUIRE_MESSAGE(page.error.empty(), page.error);
  CHECK(Page::Points(*page.Charts("density", "")[0]).size() == 3);
  CHECK(Page::Points(*page.Charts("density", "a")[0]).size() == 2);
  CHECK(All(page.root, "script").size() == 1);  // live: polls the JSON endpoint
  CHECK(Attr(*All(page.root, "body")[0], "data-api") == "/api/study/q");
  bool listed = false;
  for (const Node* tr : All(page.root, "tr"))
    listed |= Attr(*tr, "data-trial") == std::to_string(failed);
  CHECK(listed);

  const Response api = Http(d.port, "/api/study/q");
  CHECK(api.status == 200);
  const json j = json::parse(api.body);
  CHECK(j["state"] == "finished");
  CHECK(j["total"] == 4);
  CHECK(j["settled"] == 4);
  CHECK(j["counts"]["done"] == 3);
  CHECK(j["counts"]["failed"] == 1);
  const json list = json::parse(Http(d.port, "/api/studies").body);
  REQUIRE(list.size() == 1);
  CHECK(list[0]["study"] == "q");

  // Bad paths: 404, and the server goes on serving.
  for (const std::string bad : {"/nope", "/study/unknown", "/api/study/unknown", "/study/%ZZ",
                                "/../../etc/passwd", "/study/"})
    CHECK_MESSAGE(Http(d.port, bad).status == 404, bad);
  CHECK(Http(d.port, "/", "POST").status == 405);
  // A second dashboard on the same port: bad input, said at once.
  CheckBadInput(
      Masktune("dashboard --db " + db + " --bind 127.0.0.1:" + std::to_string(d.port), "", 10),
      "--bind: cannot listen on 127.0.0.1:" + std::to_string(d.port));
  CHECK(Http(d.port, "/study/q", "HEAD").status == 200);
  CHECK(Http(d.port, "/study/q").status == 200);

  CHECK(d.Stop() == 0);
  CHECK(StateOf(db) == before);
}

TEST_CASE("dashboard: 8 clients x 20 requests while a sweep writes the same database") {
  testing::TempDir dir;
  const std::string yaml = dir / "w.yaml", db = dir / "w.db";
  std::ofstream(yaml) << "study: w\nbenchmark: {name: noop, sleep_ms: 30}\n"
                         "search: {algorithm: random, num_samples: 300, seed: 3}\n"
                         "attention:\n  a:\n    - sink: {sink_size: 4}\n"
                         "    - oracle_top_k: {heavy_size: {uniform: [0.05, 0.5]}}\n";
  const pid_t run =
      testing::Spawn({MASKTUNE_BINARY, "run", yaml, "--workers", "2", "--db", db}, dir / "run.log");
  REQUIRE(testing::WaitFor(db, "w", testing::DoneAtLeast(1)));
  Dashboard d(db, dir / "dashboard.log");
  REQUIRE(Http(d.port, "/api/study/w").status == 200);

  std::atomic<int> ok{0}, malformed{0};
  std::mutex mu;
  std::set<int64_t> settled_seen;
  std::vector<std::string> failures;
  std::vector<std::thread> clients;
  for (int c = 0; c < 8; ++c)
    clients.emplace_back([&, c] {
      for (int i = 0; i < 20; ++i) {
        const std::string path = (i + c) % 3 == 0   ? "/study/w"
                                 : (i + c) % 3 == 1 ? "/api/study/w"
                                                    : "/";
        const Response r = Http(d.port, path);
        if (r.status != 200) {
          std::lock_guard<std::mutex> lock(mu);
          failures.push_back(path + ": " + std::to_string(r.status));
          continue;
        }
        ++ok;
        if (path == "/api/study/w") {
          const json j = json::parse(r.body, nullptr, false);
          std::lock_guard<std::mutex> lock(mu);
          if (j.is_object()) settled_seen.insert(j.value("settled", -1));
        } else if (!Page(r.body).error.empty()) {
          ++malformed;
        }
      }
    });
  for (auto& t : clients) t.join();
  CAPTURE(failures.size());
  CHECK(failures.empty());
  CHECK(ok == 160);
  CHECK(malformed == 0);
  // The sweep progressed while the clients read.
  CHECK(settled_seen.size() >= 2);
  CHECK(testing::WaitExit(run, 120) == 0);
  const auto trials = testing::AllTrials(db, "w");
  CHECK(trials.size() == 300);
  CHECK(std::all_of(trials.begin(), trials.end(),
                    [](const storage::TrialRow& t) { return t.status == "done"; }));
  // Still serving, now the finished study.
  const json j = json::parse(Http(d.port, "/api/study/w").body);
  CHECK(j["state"] == "finished");
  CHECK(j["settled"] == 300);
  CHECK(d.Stop() == 0);
}

}  // namespace
}  // namespace masktune
