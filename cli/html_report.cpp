// masktune report: a study as one self-contained HTML file (cli/html_report.h).
#include "cli/html_report.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <set>
#include <sstream>

#include "cli/commands.h"
#include "cli/report.h"
#include "cli/svg.h"
#include "search/objective.h"
#include "search/plan.h"

extern char** environ;

namespace masktune::cli {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;
using svg::Escape;
using svg::Num;

double UnixNow() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string Utc(double unix_seconds) {
  if (unix_seconds <= 0) return "-";
  const std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

// --- a read-only SQLite connection for the rows the Store API does not expose

struct SqliteCloser {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
using RawDb = std::unique_ptr<sqlite3, SqliteCloser>;

std::string UriPath(const std::string& path) {
  std::string out = "file:";
  for (unsigned char c : fs::absolute(path).string()) {
    if (c == '?' || c == '#' || c == '%' || c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "%%%02X", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "?immutable=1";
}

// As Store::OpenReadOnly: read-only, and immutable when the folder cannot
// hold the -shm of a cleanly closed WAL file.
Result<RawDb> OpenRaw(const std::string& path) {
  auto open = [&](const std::string& name, int flags) -> Result<RawDb> {
    sqlite3* raw = nullptr;
    const int rc = sqlite3_open_v2(name.c_str(), &raw,
                                   SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX | flags, nullptr);
    RawDb db(raw);
    if (rc != SQLITE_OK)
      return Status::Error(path + ": cannot open database: " + sqlite3_errstr(rc));
    sqlite3_busy_timeout(raw, 10000);
    return db;
  };
  auto probe = [](sqlite3* db) {
    return sqlite3_exec(db, "SELECT COUNT(*) FROM sqlite_master", nullptr, nullptr, nullptr);
  };
  MT_ASSIGN_OR_RETURN(RawDb db, open(path, 0));
  if (probe(db.get()) != SQLITE_OK) {
    std::error_code ec;
    if (!fs::exists(path + "-wal", ec)) {
      MT_ASSIGN_OR_RETURN(db, open(UriPath(path), SQLITE_OPEN_URI));
      if (probe(db.get()) == SQLITE_OK) return db;
    }
    return Status::Error(path + ": cannot read database: " + sqlite3_errmsg(db.get()));
  }
  return db;
}

// Runs `sql` with integer parameters bound in order; `row` sees each row.
template <typename Row>
Status Query(sqlite3* db, const std::string& path, const std::string& sql,
             const std::vector<int64_t>& ints, Row row) {
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) != SQLITE_OK)
    return Status::Error(path + ": " + sqlite3_errmsg(db));
  std::unique_ptr<sqlite3_stmt, int (*)(sqlite3_stmt*)> guard(st, sqlite3_finalize);
  for (size_t i = 0; i < ints.size(); ++i) sqlite3_bind_int64(st, static_cast<int>(i + 1), ints[i]);
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) row(st);
  if (rc != SQLITE_DONE) return Status::Error(path + ": " + sqlite3_errmsg(db));
  return Status::Ok();
}

std::string ColumnText(sqlite3_stmt* st, int i) {
  const unsigned char* t = sqlite3_column_text(st, i);
  return t ? reinterpret_cast<const char*>(t) : "";
}

bool HasTable(sqlite3* db, const std::string& path, const std::string& name) {
  bool found = false;
  (void)Query(db, path, "SELECT name FROM sqlite_master WHERE type = 'table'", {},
              [&](sqlite3_stmt* st) { found |= ColumnText(st, 0) == name; });
  return found;
}

std::string State(const std::string& status, const std::optional<storage::Lease>& lease) {
  if (status == "finished") return "finished";
  if (lease && !storage::HolderGoneFromThisHost(*lease)) return "running";
  return "interrupted";
}

// --- objectives and metrics as the charts show them --------------------------

// A metric's axis label, with its unit.
std::string MetricLabel(const std::string& m) {
  static const std::map<std::string, std::string> kUnits = {
      {"density", "density (fraction of keys attended)"},
      {"density_max", "worst-case density (fraction of keys)"},
      {"error", "error (relative L2 vs dense)"},
      {"error_max", "worst-case error (relative L2)"},
      {"recall", "recall (fraction of top-mass keys)"},
      {"accuracy", "accuracy (fraction correct)"},
      {"tokens_per_second", "decode speed (tokens/s)"},
  };
  if (auto it = kUnits.find(m); it != kUnits.end()) return it->second;
  const size_t dot = m.rfind('.');
  const std::string tail = dot == std::string::npos ? m : m.substr(dot + 1);
  if (tail == "accuracy" || tail == "density") return m + " (fraction)";
  if (tail == "tokens_per_second") return m + " (tokens/s)";
  if (tail.size() > 2 && tail.substr(tail.size() - 2) == "_s") return m + " (s)";
  return m + " (as reported)";
}

struct ObjectiveView {
  std::string label;    // the y-axis label of the objective
  bool negate = false;  // a maximised metric: stored negated, shown real
  bool higher = false;  // higher is better, as shown
};

ObjectiveView ViewOf(const configs::ObjectiveSpec& o) {
  if (o.metrics.empty()) return {"objective " + o.name + " (unitless)", false, false};
  const auto& [m, minimise] = o.metrics.front();
  return {MetricLabel(m), !minimise, !minimise};
}

// The metric on the density chart's y axis: error under the reference's
// objectives, else the objective's first metric that is not density.
std::pair<std::string, bool> YMetric(const configs::ObjectiveSpec& o) {
  for (const auto& m : o.metrics)
    if (m.first != "density") return m;
  return {"error", true};
}

double Metric(const storage::TrialRow& r, const std::string& m) {
  auto it = r.metrics.find(m);
  return it == r.metrics.end() ? std::numeric_limits<double>::quiet_NaN() : it->second;
}

std::string ParamText(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_float()) return Num(v.get<double>());
  return v.dump();
}

std::string ParamsText(const std::string& params, const std::string& sep) {
  const json p = json::parse(params, nullptr, false);
  if (!p.is_object()) return params;
  std::string out;
  for (auto& [k, v] : p.items()) out += (out.empty() ? "" : sep) + k + " = " + ParamText(v);
  return out.empty() ? "(nothing searched)" : out;
}

// A done trial as the charts use it.
struct Done {
  const storage::TrialRow* row = nullptr;
  double stored = 0;  // ObjectiveValue: lower is better
  double shown = 0;   // as the reader sees it (a maximised metric real)
  size_t series = 0;  // its stack's colour
};

std::string Tooltip(const Done& d, const std::string& objective_name) {
  const storage::TrialRow& r = *d.row;
  std::string t = "trial " + std::to_string(r.id) + " (" + r.stack + " #" +
                  std::to_string(r.number) + ")\n" + ParamsText(r.params, "\n") + "\n";
  std::string metrics;
  for (const auto& [k, v] : r.metrics) metrics += (metrics.empty() ? "" : ", ") + k + " " + Num(v);
  return t + metrics + "\n" + objective_name + " " + Num(d.shown);
}

// Indices (into `pts`) of the points no other point dominates on (x min, y
// min): the Pareto front of the chart's two axes, sorted by x.
std::vector<size_t> Front2D(const std::vector<std::pair<double, double>>& pts) {
  std::vector<size_t> out;
  for (size_t i = 0; i < pts.size(); ++i) {
    bool dominated = false;
    for (size_t j = 0; j < pts.size() && !dominated; ++j)
      dominated = pts[j].first <= pts[i].first && pts[j].second <= pts[i].second &&
                  (pts[j].first < pts[i].first || pts[j].second < pts[i].second);
    if (!dominated) out.push_back(i);
  }
  std::sort(out.begin(), out.end(), [&](size_t a, size_t b) { return pts[a] < pts[b]; });
  return out;
}

struct ReportContext {
  const StudyReport& r;
  ObjectiveView view;
  std::string objective_short;  // tooltip name of the objective
  std::pair<std::string, bool> y;
  std::vector<std::string> stacks;
  std::map<std::string, size_t> series;
};

// Density (x) against the y metric: every done trial reporting both, the
// front of the two axes as a step line, `best` marked.
std::string DensityChart(const ReportContext& c, const std::vector<Done>& done,
                         const std::string& stack, const Done* best, std::string* front_table) {
  svg::Chart chart;
  chart.kind = "density";
  chart.stack = stack;
  chart.title = (stack.empty() ? "All stacks" : "Stack " + stack) + ": density against " +
                c.y.first + (c.y.second ? " (lower is better)" : " (higher is better)");
  chart.x.label = MetricLabel("density");
  chart.y.label = MetricLabel(c.y.first);
  chart.empty_note = "no finished trial yet";
  std::vector<std::pair<double, double>> pts;  // (density, y oriented: lower is better)
  std::vector<const Done*> used;
  for (const Done& d : done) {
    const double x = Metric(*d.row, "density"), y = Metric(*d.row, c.y.first);
    if (!std::isfinite(x) || !std::isfinite(y)) continue;
    pts.push_back({x, c.y.second ? y : -y});
    used.push_back(&d);
  }
  const std::vector<size_t> front = Front2D(pts);
  std::set<size_t> on_front(front.begin(), front.end());
  for (size_t i = 0; i < used.size(); ++i) {
    svg::Point p;
    p.x = pts[i].first;
    p.y = Metric(*used[i]->row, c.y.first);
    p.series = stack.empty() ? used[i]->series : 0;
    p.trial = used[i]->row->id;
    p.front = on_front.count(i) > 0;
    p.best = best && used[i]->row == best->row;
    p.title = Tooltip(*used[i], c.objective_short);
    chart.points.push_back(std::move(p));
  }
  svg::Line line;
  line.step = true;
  line.cls = "front";
  for (size_t i : front) line.points.push_back({pts[i].first, Metric(*used[i]->row, c.y.first)});
  if (!line.points.empty()) chart.lines.push_back(std::move(line));
  if (stack.empty())
    for (const std::string& s : c.stacks) chart.legend.push_back({s, c.series.at(s)});
  const size_t skipped = done.size() - used.size();
  chart.caption =
      std::to_string(used.size()) + " finished trial" + (used.size() == 1 ? "" : "s") + "; " +
      std::to_string(front.size()) +
      " on the Pareto front (no other trial is as sparse and as good, and better "
      "in one)" +
      (skipped ? "; " + std::to_string(skipped) + " without density or " + c.y.first : "") +
      ". Hover a point for its parameters.";
  if (front_table) {
    std::string t = "<table class=\"front\"><tr><th>trial</th><th>density</th><th>" +
                    Escape(c.y.first) + "</th><th>parameters</th></tr>";
    for (size_t i : front)
      t += "<tr data-trial=\"" + std::to_string(used[i]->row->id) + "\"><td class=\"num\">" +
           std::to_string(used[i]->row->id) + "</td><td class=\"num\">" + Num(pts[i].first) +
           "</td><td class=\"num\">" + Num(Metric(*used[i]->row, c.y.first)) + "</td><td>" +
           Escape(ParamsText(used[i]->row->params, ", ")) + "</td></tr>";
    *front_table = t + "</table>";
  }
  return svg::Render(chart);
}

// The objective against trial number, with the running best as a step line.
std::string HistoryChart(const ReportContext& c, const std::vector<Done>& done,
                         const std::string& stack) {
  svg::Chart chart;
  chart.kind = "history";
  chart.stack = stack;
  chart.title = (stack.empty() ? "All stacks" : "Stack " + stack) + ": optimisation history (" +
                (c.view.higher ? "higher" : "lower") + " is better)";
  chart.x.label = stack.empty() ? "trial id (the study's order)" : "trial number (in the stack)";
  chart.y.label = c.view.label;
  chart.empty_note = "no finished trial yet";
  std::vector<const Done*> order;
  for (const Done& d : done)
    if (std::isfinite(d.shown)) order.push_back(&d);
  auto x_of = [&](const Done* d) {
    return static_cast<double>(stack.empty() ? d->row->id : d->row->number);
  };
  std::stable_sort(order.begin(), order.end(),
                   [&](const Done* a, const Done* b) { return x_of(a) < x_of(b); });
  svg::Line best;
  best.step = true;
  best.cls = "best-so-far";
  best.series = 7;  // black
  double running = std::numeric_limits<double>::infinity();
  for (const Done* d : order) {
    svg::Point p;
    p.x = x_of(d);
    p.y = d->shown;
    p.series = stack.empty() ? d->series : 0;
    p.trial = d->row->id;
    p.title = Tooltip(*d, c.objective_short);
    chart.points.push_back(std::move(p));
    running = std::min(running, d->stored);
    best.points.push_back({x_of(d), c.view.negate ? -running : running});
  }
  if (!best.points.empty()) chart.lines.push_back(std::move(best));
  if (stack.empty())
    for (const std::string& s : c.stacks) chart.legend.push_back({s, c.series.at(s)});
  chart.line_legend = "best so far";
  chart.caption = std::to_string(order.size()) + " finished trial" +
                  (order.size() == 1 ? "" : "s") + ", in the order they were planned.";
  return svg::Render(chart);
}

// One searched parameter's values per done trial: numbers, or categories.
struct ParamColumn {
  std::string name;
  bool numeric = true, log = false;
  std::vector<std::string> categories;
  std::vector<double> values;  // per `done` entry; NaN when absent
};

ParamColumn Column(const search::SearchedParam& sp, const std::vector<Done>& done) {
  ParamColumn col;
  col.name = sp.name;
  std::vector<json> raw;
  for (const Done& d : done) {
    const json p = json::parse(d.row->params, nullptr, false);
    raw.push_back(p.is_object() && p.contains(sp.name) ? p[sp.name] : json());
  }
  for (const json& v : raw)
    if (!v.is_null() && !v.is_number()) col.numeric = false;
  using Kind = configs::ParamSpace::Kind;
  if (col.numeric) {
    col.log = sp.space && sp.space->kind == Kind::kLogUniform;
    for (const json& v : raw)
      col.values.push_back(v.is_number() ? v.get<double>()
                                         : std::numeric_limits<double>::quiet_NaN());
    return col;
  }
  if (sp.space)
    for (const FieldValue& v : sp.space->values) {
      const std::string s = ParamText(FieldValueToJson(v));
      if (std::find(col.categories.begin(), col.categories.end(), s) == col.categories.end())
        col.categories.push_back(s);
    }
  for (const json& v : raw) {
    if (v.is_null()) {
      col.values.push_back(std::numeric_limits<double>::quiet_NaN());
      continue;
    }
    const std::string s = ParamText(v);
    auto it = std::find(col.categories.begin(), col.categories.end(), s);
    if (it == col.categories.end()) it = col.categories.insert(col.categories.end(), s);
    col.values.push_back(static_cast<double>(it - col.categories.begin()));
  }
  return col;
}

std::string SliceChart(const ReportContext& c, const std::vector<Done>& done,
                       const std::string& stack, const ParamColumn& col) {
  svg::Chart chart;
  chart.kind = "slice";
  chart.stack = stack;
  chart.param = col.name;
  chart.width = 390;
  chart.height = 300;
  chart.title = col.name;
  chart.x.label = col.name;
  chart.x.log = col.log;
  chart.x.categories = col.numeric ? std::vector<std::string>{} : col.categories;
  chart.y.label = c.view.label;
  chart.empty_note = "no finished trial yet";
  for (size_t i = 0; i < done.size(); ++i) {
    if (std::isnan(col.values[i]) || !std::isfinite(done[i].shown)) continue;
    svg::Point p;
    p.x = col.values[i];
    p.y = done[i].shown;
    p.trial = done[i].row->id;
    p.title = Tooltip(done[i], c.objective_short);
    chart.points.push_back(std::move(p));
  }
  chart.caption = std::string("The objective (") + (c.view.higher ? "higher" : "lower") +
                  " is better) against " + col.name + (col.log ? " (log axis: a log space)" : "") +
                  "; every other parameter varies too.";
  return svg::Render(chart);
}

std::string ImportanceChart(const ReportContext& c, const std::vector<Done>& done,
                            const std::string& stack, const std::vector<ParamColumn>& cols) {
  (void)c;
  std::vector<ImportanceColumn> in;
  std::vector<double> y;
  std::vector<size_t> rows;
  for (size_t i = 0; i < done.size(); ++i)
    if (std::isfinite(done[i].stored)) rows.push_back(i);
  for (size_t i : rows) y.push_back(done[i].stored);
  for (const ParamColumn& col : cols) {
    ImportanceColumn ic{col.name, {}, !col.numeric};
    std::set<double> distinct;
    for (size_t i : rows) {
      ic.values.push_back(col.values[i]);
      distinct.insert(col.values[i]);
    }
    // A few repeated values (a grid, a choice, a small randint) are groups of
    // their own; values that barely repeat are binned.
    ic.discrete |= distinct.size() <= 10 && 2 * distinct.size() <= rows.size();
    in.push_back(std::move(ic));
  }
  const std::vector<double> share = MainEffectImportance(in, y);
  std::vector<svg::Bar> bars;
  for (size_t k = 0; k < cols.size(); ++k) {
    if (std::isnan(share[k])) continue;
    bars.push_back({cols[k].name, share[k],
                    cols[k].name + ": explains " + Num(100 * share[k]) +
                        "% of the variance of the objective's ranks on its own"});
  }
  if (bars.empty())
    return "<p class=\"note\" data-kind=\"importance\">Parameter importance needs at least 4 "
           "finished trials and more trials than distinct values (" +
           std::to_string(rows.size()) + " finished so far).</p>";
  std::stable_sort(bars.begin(), bars.end(),
                   [](const svg::Bar& a, const svg::Bar& b) { return a.value > b.value; });
  return svg::RenderBars(
      "importance", stack, "Stack " + stack + ": parameter importance",
      "share of the objective's rank variance explained (epsilon-squared, 0 to 1)", bars,
      "Main effect of each parameter on its own (one-way variance decomposition of the "
      "objective's ranks, bias-corrected); see \"How to read this report\". " +
          std::to_string(rows.size()) + " finished trials.");
}

// --- the best configurations, as `masktune export` writes them ---------------

struct Exported {
  std::map<std::string, std::string> files;  // stack -> STACK.json's text
  std::vector<std::string> notes;            // export's stderr lines
  std::string error;                         // export failed: why
};

std::string ReadAll(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

Exported RunExport(const std::string& exe, const std::string& db, const std::string& study,
                   const std::vector<std::string>& stacks, const std::string& format) {
  Exported e;
  std::string tmpl = (fs::temp_directory_path() / "masktune-report-XXXXXX").string();
  if (!mkdtemp(tmpl.data())) {
    e.error = "cannot make a temporary folder: " + std::string(std::strerror(errno));
    return e;
  }
  const fs::path dir = tmpl;
  const std::string out = (dir / "out").string(), log = (dir / "log").string();
  std::vector<std::string> args = {exe,        "export", study,   "--db", db,
                                   "--format", format,   "--out", out};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 2, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);  // the dashboard blocks its stop signals
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, exe.c_str(), &fa, &attr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  int status = 0;
  if (rc != 0) {
    e.error = exe + ": " + std::strerror(rc);
  } else {
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    std::istringstream lines(ReadAll(log));
    for (std::string line; std::getline(lines, line);)
      if (!line.empty()) e.notes.push_back(line);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
      e.error = "masktune export --format " + format + " failed" +
                (e.notes.empty() ? std::string() : ": " + e.notes.back());
    for (const std::string& s : stacks) {
      const fs::path f = fs::path(out) / (s + ".json");
      std::error_code ec;
      if (fs::exists(f, ec)) e.files[s] = ReadAll(f);
    }
  }
  std::error_code ec;
  fs::remove_all(dir, ec);
  return e;
}

std::string Pretty(const std::string& text) {
  const json j = json::parse(text, nullptr, false);
  return j.is_discarded() ? text : j.dump(2);
}

const char* kCss = R"(
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
 margin:0 auto;max-width:1300px;padding:12px 24px 40px;color:#1a1a1a;background:#fff;line-height:1.4}
h1{font-size:1.55em;margin:.3em 0 .1em}
h2{font-size:1.25em;border-bottom:2px solid #0072B2;padding-bottom:2px;margin:1.6em 0 .6em}
h3{font-size:1.05em;margin:1.1em 0 .4em}
p.sub{color:#444;margin:.1em 0 .6em}
nav.toc{font-size:.92em;margin:.4em 0 1em}
nav.toc a{margin-right:14px;color:#0072B2}
a{color:#0072B2}
table{border-collapse:collapse;font-size:.9em;margin:.3em 0}
th,td{border-bottom:1px solid #ddd;padding:3px 10px 3px 4px;text-align:left;vertical-align:top}
th{background:#f3f6f9}
table.kv th{background:none;color:#444;font-weight:600;white-space:nowrap}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.msg{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.92em;white-space:pre-wrap;
 word-break:break-word;max-width:700px}
pre{background:#f6f7f8;border:1px solid #ddd;border-radius:3px;padding:8px 10px;overflow:auto;
 font-size:.82em;max-height:340px;margin:.3em 0}
.charts{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start}
.cols{display:flex;flex-wrap:wrap;gap:20px;align-items:flex-start}
.cols > div{flex:1 1 420px;min-width:0}
figure.chart{margin:0;border:1px solid #ddd;border-radius:4px;padding:4px;background:#fff;
 max-width:100%}
figure.chart svg{max-width:100%;height:auto;display:block}
figcaption{font-size:.8em;color:#444;padding:2px 6px 4px}
svg text{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif}
.chart-title{font-size:14px;font-weight:600;fill:#1a1a1a}
.tick{font-size:11px;fill:#444}
.axis-label{font-size:12px;fill:#1a1a1a}
.legend-text{font-size:11px;fill:#1a1a1a}
.plot{fill:#fff;stroke:#999}
.grid{stroke:#e8e8e8;stroke-width:1}
.line{fill:none;stroke-width:1.6}
.front-line{stroke:#000;stroke-width:1.8}
.best-so-far{stroke-width:1.8;stroke-dasharray:5 3}
circle.pt{stroke:#fff;stroke-width:.8;fill-opacity:.92}
circle.pt:hover{stroke:#000;stroke-width:1.5}
.best,.best-mark{fill:none;stroke:#000;stroke-width:2}
.empty-note{font-size:13px;fill:#777}
.badge{display:inline-block;padding:0 8px;border-radius:9px;font-size:.85em;color:#fff;
 background:#CC79A7;margin-right:4px;white-space:nowrap}
.s-done{background:#009E73}.s-failed{background:#D55E00}.s-running{background:#0072B2}
.s-queued{background:#777}
.state{font-weight:600}
p.note{color:#555;font-style:italic}
#live{background:#eef5fb;border:1px solid #b9d3ea;border-radius:3px;padding:3px 8px;
 display:inline-block;font-size:.9em}
@media print{
 body{max-width:none;padding:0;font-size:10pt;color:#000}
 nav.toc,#live,.noprint{display:none}
 figure.chart{break-inside:avoid;border:none}
 pre{max-height:none;white-space:pre-wrap;word-break:break-all}
 h2{break-after:avoid}
 section.stack{break-before:page}
 a{color:#000;text-decoration:none}
}
)";

// Statuses in a stable order: done, running, queued, failed, then any other.
std::vector<std::pair<std::string, int64_t>> Ordered(const std::map<std::string, int64_t>& counts) {
  std::vector<std::pair<std::string, int64_t>> out;
  for (const char* s : {"done", "running", "queued", "failed"})
    if (auto it = counts.find(s); it != counts.end()) out.push_back(*it);
  for (const auto& kv : counts)
    if (kv.first != "done" && kv.first != "running" && kv.first != "queued" && kv.first != "failed")
      out.push_back(kv);
  return out;
}

std::string Badge(const std::string& status, const std::string& text) {
  return "<span class=\"badge s-" + Escape(status) + "\">" + Escape(text) + "</span>";
}

std::string Anchor(size_t i) { return "stack-" + std::to_string(i); }

}  // namespace

std::string StudyState(const StudyReport& r) { return State(r.study.status, r.lease); }

std::string UrlEncode(const std::string& text) {
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "%%%02X", c);
      out += buf;
    }
  }
  return out;
}

namespace {

std::string PageHead(const std::string& title) {
  return "<!DOCTYPE html>\n<html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\">\n<head>"
         "<meta charset=\"utf-8\"/><meta name=\"viewport\" content=\"width=device-width, "
         "initial-scale=1\"/><meta name=\"generator\" content=\"masktune\"/><title>" +
         Escape(title) + "</title><style>" + kCss + "</style></head>\n";
}

}  // namespace

std::string RenderStudyIndex(const std::string& db, const std::vector<StudySummary>& studies,
                             bool live) {
  std::string key;
  for (const StudySummary& s : studies)
    key += s.name + ":" + std::to_string(s.settled) + "/" + std::to_string(s.total) + "/" +
           s.state + ";";
  std::string h = PageHead("masktune dashboard: " + db);
  h += "<body data-key=\"" + Escape(key) +
       "\" data-api=\"/api/studies\">\n<header><h1>masktune "
       "dashboard</h1><p class=\"sub\">" +
       std::to_string(studies.size()) + " stud" + (studies.size() == 1 ? "y" : "ies") + " in " +
       Escape(db) + " (read-only)</p>";
  if (live) h += "<p id=\"live\">live: this page reloads when a study changes</p>";
  h += "</header>\n<section id=\"studies\"><h2>Studies</h2>";
  if (studies.empty()) {
    h += "<p class=\"note\">No study in this database yet.</p>";
  } else {
    h += "<table class=\"studies\"><tr><th>study</th><th>state</th><th>settled</th><th>trials"
         "</th></tr>";
    for (const StudySummary& s : studies) {
      std::string badges;
      for (const auto& [st, n] : Ordered(s.counts))
        badges += Badge(st, std::to_string(n) + " " + st);
      h += "<tr data-study=\"" + Escape(s.name) + "\"><td><a href=\"/study/" + UrlEncode(s.name) +
           "\">" + Escape(s.name) + "</a></td><td class=\"state\">" + Escape(s.state) +
           "</td><td class=\"num\">" + std::to_string(s.settled) + " of " +
           std::to_string(s.total) + "</td><td>" + badges + "</td></tr>";
    }
    h += "</table>";
  }
  h += "<p class=\"sub\">Each study's page is the report <code>masktune report</code> writes, "
       "refreshed while the study runs. JSON: <a href=\"/api/studies\">/api/studies</a>, "
       "/api/study/NAME.</p></section>\n";
  if (live)
    h += "<script>//<![CDATA[\n"
         "(function(){var b=document.body,el=document.getElementById('live');"
         "function tick(){fetch('/api/studies',{cache:'no-store'})"
         ".then(function(r){return r.json();}).then(function(list){"
         "var key=list.map(function(s){return s.study+':'+s.settled+'/'+s.total+'/'+s.state+';';})"
         ".join('');"
         "if(key!==b.getAttribute('data-key')){location.reload();return;}"
         "el.textContent='live: checked '+new Date().toLocaleTimeString();setTimeout(tick,3000);})"
         ".catch(function(){el.textContent='dashboard unreachable, retrying';"
         "setTimeout(tick,5000);});}"
         "setTimeout(tick,3000);})();\n//]]></script>\n";
  return h + "</body>\n</html>\n";
}

std::string RenderErrorPage(int status, const std::string& title, const std::string& detail) {
  return PageHead("masktune: " + std::to_string(status) + " " + title) + "<body><h1>" +
         std::to_string(status) + " " + Escape(title) + "</h1><p>" + Escape(detail) +
         "</p><p><a href=\"/\">all studies</a></p></body>\n</html>\n";
}

LoadedReport LoadStudyReport(const std::string& db, const std::string& study) {
  auto fail = [](int code, const std::string& m) { return LoadedReport{std::nullopt, code, m}; };
  std::error_code ec;
  if (!fs::exists(db, ec)) return fail(kExitBadInput, db + ": no such database");
  auto store = storage::Store::OpenReadOnly(db);
  if (!store.ok()) return fail(kExitFailure, store.status().message());
  auto row = store->FindStudy(study);
  if (!row.ok()) return fail(kExitFailure, row.status().message());
  if (!row.value()) return fail(kExitBadInput, "no study '" + study + "' in " + db);
  configs::ParseOptions parse;
  parse.max_trials = std::numeric_limits<int64_t>::max();
  parse.check_files = false;
  auto sweep = configs::ParseSweep(row.value()->sweep_text, row.value()->sweep_path,
                                   MaskerRegistry::WithBuiltins(), parse);
  if (!sweep.ok())
    return fail(kExitBadInput, db + ": study '" + study + "': its stored sweep no longer parses: " +
                                   sweep.status().message());
  StudyReport r;
  r.db = db;
  r.study = *row.value();
  r.sweep = std::move(sweep).value();
  r.now = UnixNow();
  auto trials = store->Trials(r.study.id);
  if (!trials.ok()) return fail(kExitFailure, trials.status().message());
  r.trials = std::move(trials).value();
  auto lease = store->LiveLease(r.study.id);
  if (!lease.ok()) return fail(kExitFailure, lease.status().message());
  r.lease = lease.value();
  auto raw = OpenRaw(db);
  if (!raw.ok()) return fail(kExitFailure, raw.status().message());
  Status s = Query(raw->get(), db, "SELECT created FROM studies WHERE id = ?", {r.study.id},
                   [&](sqlite3_stmt* st) { r.created = sqlite3_column_double(st, 0); });
  if (s.ok())
    s = Query(
        raw->get(), db,
        "SELECT name, COALESCE(info, ''), last_seen FROM workers WHERE study_id = ? "
        "ORDER BY last_seen DESC, name",
        {r.study.id}, [&](sqlite3_stmt* st) {
          r.workers.push_back({ColumnText(st, 0), ColumnText(st, 1), sqlite3_column_double(st, 2)});
        });
  if (!s.ok()) return fail(kExitFailure, s.message());
  return LoadedReport{std::move(r), kExitOk, ""};
}

Result<std::vector<StudySummary>> ListStudies(const std::string& db) {
  std::error_code ec;
  if (!fs::exists(db, ec)) return Status::Error(db + ": no such database");
  MT_ASSIGN_OR_RETURN(RawDb raw, OpenRaw(db));
  // Store::OpenReadOnly's schema checks, on this one connection.
  int64_t version = 0;
  MT_RETURN_IF_ERROR(Query(raw.get(), db, "PRAGMA user_version", {},
                           [&](sqlite3_stmt* st) { version = sqlite3_column_int64(st, 0); }));
  if (version < 1)
    return Status::Error(db + ": not a masktune database (no schema: user_version is 0)");
  if (version > storage::kSchemaVersion)
    return Status::Error(db + ": schema version " + std::to_string(version) +
                         " is newer than this masktune (" +
                         std::to_string(storage::kSchemaVersion) + ")");
  struct Row {
    int64_t id;
    std::string name, status;
  };
  std::vector<Row> rows;
  MT_RETURN_IF_ERROR(Query(
      raw.get(), db, "SELECT id, name, status FROM studies ORDER BY id", {}, [&](sqlite3_stmt* st) {
        rows.push_back({sqlite3_column_int64(st, 0), ColumnText(st, 1), ColumnText(st, 2)});
      }));
  const bool leases = HasTable(raw.get(), db, "leases");
  std::vector<StudySummary> out;
  for (const Row& row : rows) {
    StudySummary s;
    s.name = row.name;
    MT_RETURN_IF_ERROR(Query(raw.get(), db,
                             "SELECT status, COUNT(*) FROM trials WHERE study_id = ? GROUP BY "
                             "status",
                             {row.id}, [&](sqlite3_stmt* st) {
                               const int64_t n = sqlite3_column_int64(st, 1);
                               s.counts[ColumnText(st, 0)] = n;
                               s.total += n;
                             }));
    s.settled = s.total - (s.counts.count("queued") ? s.counts["queued"] : 0) -
                (s.counts.count("running") ? s.counts["running"] : 0);
    std::optional<storage::Lease> lease;
    if (leases)
      MT_RETURN_IF_ERROR(
          Query(raw.get(), db, "SELECT holder, host, pid, expires FROM leases WHERE study_id = ?",
                {row.id}, [&](sqlite3_stmt* st) {
                  storage::Lease l{ColumnText(st, 0), ColumnText(st, 1),
                                   sqlite3_column_int64(st, 2), sqlite3_column_double(st, 3)};
                  if (l.expires > UnixNow()) lease = l;
                }));
    s.state = State(row.status, lease);
    out.push_back(std::move(s));
  }
  return out;
}

std::string SummaryJson(const StudySummary& s) {
  json counts = json::object();
  for (const auto& [k, v] : s.counts) counts[k] = v;
  const int64_t running = s.counts.count("running") ? s.counts.at("running") : 0;
  return json{{"study", s.name},      {"state", s.state},   {"total", s.total},
              {"settled", s.settled}, {"running", running}, {"counts", counts}}
      .dump();
}

std::vector<double> MainEffectImportance(const std::vector<ImportanceColumn>& columns,
                                         const std::vector<double>& objective) {
  const size_t n = objective.size();
  // Average ranks of the objective (ties share their mean rank).
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return objective[a] < objective[b]; });
  std::vector<double> rank(n);
  for (size_t i = 0; i < n;) {
    size_t j = i;
    while (j + 1 < n && objective[order[j + 1]] == objective[order[i]]) ++j;
    for (size_t k = i; k <= j; ++k) rank[order[k]] = (static_cast<double>(i + j) / 2.0) + 1.0;
    i = j + 1;
  }
  std::vector<double> out;
  for (const ImportanceColumn& col : columns) {
    // Trials with a value for this parameter.
    std::vector<size_t> idx;
    for (size_t i = 0; i < n && i < col.values.size(); ++i)
      if (!std::isnan(col.values[i])) idx.push_back(i);
    const size_t m = idx.size();
    // Groups: each distinct value, or equal-count bins of the sorted values.
    std::vector<int> group(m);
    size_t k = 0;
    if (col.discrete) {
      std::map<double, int> ids;
      for (size_t a = 0; a < m; ++a) {
        auto [it, fresh] = ids.emplace(col.values[idx[a]], static_cast<int>(ids.size()));
        group[a] = it->second;
      }
      k = ids.size();
    } else {
      k = std::clamp<size_t>(static_cast<size_t>(std::floor(std::sqrt(static_cast<double>(m)))), 2,
                             10);
      std::vector<size_t> by_value(m);
      std::iota(by_value.begin(), by_value.end(), 0);
      std::stable_sort(by_value.begin(), by_value.end(),
                       [&](size_t a, size_t b) { return col.values[idx[a]] < col.values[idx[b]]; });
      for (size_t pos = 0; pos < m; ++pos)
        group[by_value[pos]] = static_cast<int>(pos * k / std::max<size_t>(m, 1));
    }
    if (m < 4 || k < 2 || m <= k) {
      out.push_back(k < 2 && m >= 4 ? 0.0 : std::numeric_limits<double>::quiet_NaN());
      continue;
    }
    double mean = 0;
    for (size_t a = 0; a < m; ++a) mean += rank[idx[a]];
    mean /= static_cast<double>(m);
    std::vector<double> sum(k, 0.0), count(k, 0.0);
    for (size_t a = 0; a < m; ++a) sum[group[a]] += rank[idx[a]], count[group[a]] += 1;
    double sst = 0, ssb = 0;
    for (size_t a = 0; a < m; ++a) sst += std::pow(rank[idx[a]] - mean, 2);
    for (size_t g = 0; g < k; ++g)
      if (count[g] > 0) ssb += count[g] * std::pow(sum[g] / count[g] - mean, 2);
    if (sst <= 0) {
      out.push_back(0.0);
      continue;
    }
    const double ssw = sst - ssb;
    const double eps2 = (ssb - static_cast<double>(k - 1) * ssw / static_cast<double>(m - k)) / sst;
    out.push_back(std::clamp(eps2, 0.0, 1.0));
  }
  return out;
}

std::string RenderReport(const StudyReport& r, const RenderOptions& o) {
  const configs::SweepConfig& sweep = r.sweep;
  ReportContext c{r, ViewOf(sweep.objective), "", YMetric(sweep.objective), {}, {}};
  c.objective_short = sweep.objective.metrics.empty() ? "objective " + sweep.objective.name
                                                      : sweep.objective.metrics.front().first;
  for (const auto& s : sweep.stacks) c.stacks.push_back(s.name);
  for (const auto& t : r.trials)  // stacks of the database the sweep no longer names
    if (std::find(c.stacks.begin(), c.stacks.end(), t.stack) == c.stacks.end())
      c.stacks.push_back(t.stack);
  for (size_t i = 0; i < c.stacks.size(); ++i) c.series[c.stacks[i]] = i;

  std::map<std::string, int64_t> counts;
  std::vector<Done> done;
  double first_start = 0, last_finish = 0;
  for (const auto& t : r.trials) {
    ++counts[t.status];
    if (t.started > 0 && (first_start == 0 || t.started < first_start)) first_start = t.started;
    last_finish = std::max(last_finish, t.finished);
    if (t.status != "done") continue;
    Done d;
    d.row = &t;
    d.stored = search::ObjectiveValue(sweep.objective, t.metrics);
    d.shown = c.view.negate ? -d.stored : d.stored;
    d.series = c.series[t.stack];
    done.push_back(d);
  }
  int64_t settled = 0;
  for (const auto& [s, n] : counts) settled += s != "queued" && s != "running" ? n : 0;
  const std::string state = StudyState(r);
  auto best_of = [&](const std::string& stack) -> const Done* {
    const Done* best = nullptr;
    for (const Done& d : done)
      if ((stack.empty() || d.row->stack == stack) && std::isfinite(d.stored) &&
          (!best || d.stored < best->stored))
        best = &d;
    return best;
  };

  std::string h = PageHead("masktune: " + r.study.name);
  h += "<body data-key=\"" + std::to_string(settled) + "/" + std::to_string(r.trials.size()) + "/" +
       state + "\"" + (o.live ? " data-api=\"" + Escape(o.api_url) + "\"" : std::string()) + ">\n";
  h += "<header>";
  if (!o.index_url.empty())
    h += "<p class=\"noprint\"><a href=\"" + Escape(o.index_url) + "\">all studies</a></p>";
  h += "<h1>masktune study " + Escape(r.study.name) +
       "</h1><p class=\"sub\"><span class=\"state\">" + Escape(state) + "</span> &#183; " +
       std::to_string(settled) + " of " + std::to_string(r.trials.size()) +
       " trials settled &#183; read " + Utc(r.now) + " from " + Escape(r.db) + "</p>";
  if (o.live) h += "<p id=\"live\">live: this page reloads when the study changes</p>";
  h += "</header>\n<nav class=\"toc\"><a href=\"#summary\">Study</a><a href=\"#all\">All "
       "stacks</a>";
  for (size_t i = 0; i < c.stacks.size(); ++i)
    h += "<a href=\"#" + Anchor(i) + "\">" + Escape(c.stacks[i]) + "</a>";
  h += "<a href=\"#problems\">Failed and stopped trials</a><a href=\"#method\">How to read "
       "this</a></nav>\n";

  // --- study header
  h += "<section id=\"summary\"><h2>Study</h2><div class=\"cols\"><div><table class=\"kv\">";
  auto kv = [&](const std::string& k, const std::string& v_html) {
    h += "<tr><th>" + Escape(k) + "</th><td>" + v_html + "</td></tr>";
  };
  kv("state", "<span class=\"state\">" + Escape(state) + "</span>" +
                  (r.lease && state == "running"
                       ? Escape(" (coordinator " + r.lease->holder + " on " + r.lease->host +
                                ", pid " + std::to_string(r.lease->pid) + ")")
                       : std::string()));
  kv("benchmark", Escape(sweep.benchmark.Describe()));
  std::string objective = sweep.objective.name;
  if (!sweep.objective.metrics.empty()) {
    objective = "";
    for (const auto& [m, minimise] : sweep.objective.metrics)
      objective += (objective.empty() ? "" : ", ") + m + (minimise ? " (min)" : " (max)");
    if (sweep.objective.multi()) objective = "Pareto front of " + objective;
  }
  if (sweep.objective.name == "default")
    objective += ": error + 0.1 density + (5 if density > 0.5)";
  else if (sweep.objective.metrics.empty())
    objective += ": 0.99 error + 0.01 density + 10 max(0, density - " +
                 sweep.objective.name.substr(sweep.objective.name.find('_') + 1) + "/100)";
  kv("objective", Escape(objective));
  std::string search = sweep.search.algorithm + ", num_samples " +
                       std::to_string(sweep.search.num_samples) + ", seed " +
                       std::to_string(sweep.search.seed) + ", max_failures " +
                       std::to_string(sweep.search.max_failures);
  if (sweep.search.algorithm == "tpe")
    search += ", n_startup_trials " + std::to_string(sweep.search.n_startup_trials);
  kv("search", Escape(search));
  std::string badges;
  for (const auto& [s, n] : Ordered(counts)) badges += Badge(s, std::to_string(n) + " " + s);
  kv("trials", std::to_string(r.trials.size()) + " " + (badges.empty() ? "(none yet)" : badges));
  const double end = state == "running" ? r.now : last_finish;
  kv("wall time", first_start > 0 && end >= first_start
                      ? Escape(FormatDuration(end - first_start) + " (" + Utc(first_start) +
                               " to " + (state == "running" ? "now" : Utc(end)) + ")")
                      : "-");
  kv("created", Escape(Utc(r.created)));
  std::string workers = std::to_string(r.workers.size());
  for (size_t i = 0; i < r.workers.size() && i < 12; ++i)
    workers += (i ? ", " : ": ") + r.workers[i].name;
  if (r.workers.size() > 12) workers += ", and " + std::to_string(r.workers.size() - 12) + " more";
  if (!r.workers.empty()) workers += " (last seen " + Utc(r.workers.front().last_seen) + ")";
  kv("workers seen", Escape(workers));
  kv("sweep file", Escape(r.study.sweep_path));
  h += "</table></div><div><h3>Sweep file (as stored)</h3><pre class=\"sweep\">" +
       Escape(r.study.sweep_text) + "</pre></div></div></section>\n";

  // --- every stack together
  h += "<section id=\"all\"><h2>All stacks</h2><div class=\"charts\">";
  h += DensityChart(c, done, "", best_of(""), nullptr);
  h += HistoryChart(c, done, "");
  h += "</div></section>\n";

  // --- per stack
  Exported lists, reference;
  if (!o.exe.empty() && !done.empty()) {
    lists = RunExport(o.exe, r.db, r.study.name, c.stacks, "json");
    reference = RunExport(o.exe, r.db, r.study.name, c.stacks, "sah");
  }
  const std::vector<search::StackPlan> plans = search::PlanSweep(sweep);
  for (size_t i = 0; i < c.stacks.size(); ++i) {
    const std::string& name = c.stacks[i];
    const search::StackPlan* plan = nullptr;
    for (const auto& p : plans)
      if (p.stack->name == name) plan = &p;
    std::vector<Done> mine;
    std::map<std::string, int64_t> stack_counts;
    for (const Done& d : done)
      if (d.row->stack == name) mine.push_back(d);
    for (const auto& t : r.trials)
      if (t.stack == name) ++stack_counts[t.status];
    h += "<section class=\"stack\" id=\"" + Anchor(i) + "\" data-stack=\"" + Escape(name) +
         "\"><h2>Stack " + Escape(name) + "</h2>";
    std::string maskers;
    if (plan) {
      for (const auto& m : plan->stack->maskers) {
        std::string fields;
        for (const auto& [f, space] : m.fields)
          if (space.searched())
            fields += (fields.empty() ? "" : ", ") + f + ": " + space.ToString();
        maskers +=
            (maskers.empty() ? "" : " + ") + m.type + (fields.empty() ? "" : " {" + fields + "}");
      }
      if (plan->stack->maskers.empty()) maskers = "[] (dense attention: the baseline)";
      h += "<p class=\"sub\">" + Escape(maskers) + " &#183; " + std::to_string(plan->trials) +
           " planned";
    } else {
      h += "<p class=\"sub\">a stack the stored sweep no longer names";
    }
    for (const auto& [s, n] : Ordered(stack_counts))
      h += " " + Badge(s, std::to_string(n) + " " + s);
    h += "</p>";
    const Done* best = best_of(name);
    std::string front_table;
    h += "<div class=\"charts\">" + DensityChart(c, mine, name, best, &front_table) +
         HistoryChart(c, mine, name) + "</div>";
    if (plan && !plan->params.empty()) {
      std::vector<ParamColumn> cols;
      for (const auto& sp : plan->params) cols.push_back(Column(sp, mine));
      h += "<h3>Each searched parameter against the objective</h3><div class=\"charts\">";
      for (const ParamColumn& col : cols) h += SliceChart(c, mine, name, col);
      h += "</div><h3>Parameter importance</h3>" + ImportanceChart(c, mine, name, cols);
    }
    h += "<h3>Best configuration</h3>";
    if (!best) {
      h += "<p class=\"note\">No finished trial yet.</p>";
    } else {
      const storage::TrialRow& b = *best->row;
      h += "<div class=\"cols\"><div><table class=\"kv best\" data-trial=\"" +
           std::to_string(b.id) + "\">";
      kv("trial",
         std::to_string(b.id) + " (" + Escape(name) + " #" + std::to_string(b.number) + ")");
      kv(c.objective_short,
         Num(best->shown) + (sweep.objective.multi() ? " (best on the first metric)" : ""));
      for (const auto& [k, v] : b.metrics) kv(k, Num(v));
      kv("parameters", Escape(ParamsText(b.params, ", ")));
      h += "</table>";
      if (!front_table.empty())
        h += "<h3>Pareto front (density, " + Escape(c.y.first) + ")</h3>" + front_table;
      h += "</div><div>";
      auto block = [&](const Exported& e, const std::string& title) {
        h += "<h3>" + Escape(title) + "</h3>";
        if (auto it = e.files.find(name); it != e.files.end())
          h += "<pre class=\"config\">" + Escape(Pretty(it->second)) + "</pre>";
        else if (!e.error.empty())
          h += "<p class=\"note\">" + Escape(e.error) + "</p>";
        else if (o.exe.empty())
          h += "<p class=\"note\">not computed</p>";
        std::string notes;
        const std::string tag = "stack " + name + ": ";
        for (const std::string& n : e.notes)
          if (n.find(tag) != std::string::npos)
            notes += "<li>" + Escape(n.substr(n.find(tag) + tag.size())) + "</li>";
        if (!notes.empty()) h += "<ul class=\"notes\">" + notes + "</ul>";
      };
      block(lists, "Masker list (masktune attend --maskers @FILE; export --format json)");
      block(reference,
            "Reference JSON (sparse-attention-hub run_config_dir.py; export --format sah)");
      h += "</div></div>";
    }
    h += "</section>\n";
  }

  // --- failed trials, and any other status but done, running and queued
  h += "<section id=\"problems\"><h2>Failed and stopped trials</h2>";
  std::string rows;
  size_t shown = 0, problems = 0;
  for (const auto& t : r.trials) {
    if (t.status == "done" || t.status == "running" || t.status == "queued") continue;
    ++problems;
    if (++shown > 1000) continue;
    std::string message = t.error;
    if (message.empty() && t.steps > 0) {
      // A trial the scheduler stopped: where, and how it stood then.
      message = "stopped after " + std::to_string(t.steps) + " sample" + (t.steps == 1 ? "" : "s");
      if (t.objective)
        message += "; " + c.objective_short + " " +
                   Num(c.view.negate ? -*t.objective : *t.objective) + " there";
    }
    rows += "<tr data-trial=\"" + std::to_string(t.id) + "\"><td class=\"num\">" +
            std::to_string(t.id) + "</td><td>" + Escape(t.stack) + "</td><td class=\"num\">" +
            std::to_string(t.number) + "</td><td>" + Badge(t.status, t.status) +
            "</td><td class=\"num\">" + std::to_string(t.attempts) + "</td><td>" +
            Escape(ParamsText(t.params, ", ")) + "</td><td class=\"msg\">" +
            Escape(message.empty() ? "(no message)" : message) + "</td></tr>";
  }
  if (problems == 0) {
    h += "<p class=\"note\">No trial failed or was stopped.</p>";
  } else {
    h += "<p class=\"sub\">" + std::to_string(problems) +
         " trials ended without a full result: failed after search.max_failures attempts "
         "(with the last attempt's message), or stopped early by the search's scheduler "
         "(pruned)" +
         (problems > 1000 ? "; the first 1000 shown" : "") + ".</p>";
    h += "<table class=\"problems\"><tr><th>trial</th><th>stack</th><th>#</th><th>status</th>"
         "<th>attempts</th><th>parameters</th><th>message</th></tr>" +
         rows + "</table>";
  }
  h += "</section>\n";

  // --- method
  h += "<section id=\"method\"><h2>How to read this report</h2><ul>"
       "<li><b>Density charts</b>: one point per finished trial, density (the fraction of "
       "keys attended) against " +
       Escape(c.y.first) +
       ". The step line is the Pareto front of the chart's two axes: the trials no other "
       "trial beats on both (as sparse or sparser, and as good or better, strictly better on "
       "one). The diamond marks the best trial under the study's objective (" +
       Escape(sweep.objective.name) +
       "). Hover a point (or read its title) for its trial, parameters and metrics.</li>"
       "<li><b>Optimisation history</b>: the objective of each finished trial in the order "
       "the search planned it, with the best so far as a dashed step line.</li>"
       "<li><b>Slice plots</b>: the objective against one searched parameter; the other "
       "parameters vary too, so a slice shows trends, not effects in isolation. A log-uniform "
       "space gets a log axis.</li>"
       "<li><b>Parameter importance</b>: for each parameter, epsilon-squared of a one-way "
       "analysis of variance of the objective's ranks grouped by the parameter (each value "
       "of a discrete parameter; equal-count bins, about the square root of the trial count "
       "and at most 10, of a continuous one): (SSB - (k-1) SSW/(n-k)) / SST, clipped to "
       "[0, 1]. It is the share of the objective's variation that the parameter explains on "
       "its own, the main-effect term of a variance decomposition (as fANOVA reports, here "
       "estimated from the trials directly instead of from a random-forest surrogate), "
       "corrected for the chance agreement of few trials, so a parameter that does not "
       "matter scores near 0. Interactions are not counted.</li>"
       "<li><b>Best configuration</b>: exactly what <code>masktune export</code> writes "
       "(--format json: the masker list attend reads; --format sah: the reference's "
       "file).</li>"
       "<li>Numbers have 4 significant digits; <code>masktune trials --csv</code> has them "
       "exact.</li></ul></section>\n";
  if (o.live) {
    // No '<' or '&' in the script: the page stays well-formed XML.
    h += "<script>//<![CDATA[\n"
         "(function(){var b=document.body,el=document.getElementById('live');"
         "function tick(){fetch(b.getAttribute('data-api'),{cache:'no-store'})"
         ".then(function(r){return r.json();}).then(function(j){"
         "var key=j.settled+'/'+j.total+'/'+j.state;"
         "if(key!==b.getAttribute('data-key')){location.reload();return;}"
         "el.textContent='live: '+j.settled+' of '+j.total+' trials settled, '+j.running+"
         "' running ('+j.state+'), checked '+new Date().toLocaleTimeString();"
         "setTimeout(tick,j.state==='running'?2000:10000);})"
         ".catch(function(){el.textContent='dashboard unreachable, retrying';"
         "setTimeout(tick,5000);});}"
         "setTimeout(tick,2000);})();\n//]]></script>\n";
  }
  h += "</body>\n</html>\n";
  return h;
}

namespace {

struct ReportFlags {
  std::string study, db, out;
};

int RunReport(const ReportFlags& f) {
  LoadedReport loaded = LoadStudyReport(f.db, f.study);
  if (!loaded.report) {
    std::fprintf(stderr, "masktune report: %s\n", loaded.message.c_str());
    return loaded.code;
  }
  RenderOptions o;
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) o.exe = self.string();
  const std::string html = RenderReport(*loaded.report, o);
  const std::string out = f.out.empty() ? f.study + ".html" : f.out;
  if (out == "-") {
    std::fwrite(html.data(), 1, html.size(), stdout);
    return std::fflush(stdout) == 0 ? kExitOk : kExitFailure;
  }
  errno = 0;
  std::ofstream file(out, std::ios::binary | std::ios::trunc);
  if (!file) {
    std::fprintf(stderr, "masktune report: --out: %s: cannot write: %s\n", out.c_str(),
                 std::strerror(errno ? errno : EACCES));
    return kExitBadInput;
  }
  file.write(html.data(), static_cast<std::streamsize>(html.size()));
  file.close();
  if (!file) {
    std::fprintf(stderr, "masktune report: --out: %s: write failed\n", out.c_str());
    return kExitFailure;
  }
  std::printf("report: %s (one HTML file, opens offline)\n", out.c_str());
  return kExitOk;
}

}  // namespace

Action AddReportCommand(CLI::App& app) {
  auto f = std::make_shared<ReportFlags>();
  CLI::App* cmd = app.add_subcommand(
      "report",
      "One self-contained HTML file of a study: charts (density against error or the\n"
      "objective, Pareto fronts, history, slices, parameter importance), the best\n"
      "configuration per stack, failed trials.");
  cmd->add_option("STUDY", f->study, "the study's name")->required();
  cmd->add_option("--db", f->db, "SQLite database")->required();
  cmd->add_option("--out", f->out, "the HTML file to write (default: STUDY.html; - for stdout)");
  cmd->footer(
      "The file holds everything inline (SVG charts, CSS; no script, nothing fetched), so it\n"
      "opens offline and prints. The database is opened read-only. `masktune dashboard`\n"
      "serves the same report live. Exit codes: 0 ok, 1 storage, 2 bad input (no such\n"
      "database or study, an --out that cannot be written).");
  return [f] { return RunReport(*f); };
}

}  // namespace masktune::cli
