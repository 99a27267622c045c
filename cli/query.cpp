// masktune best / trials / status / check: questions to a study's database.
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/report.h"
#include "cli/study.h"
#include "coordinator/coordinator.h"
#include "search/objective.h"
#include "search/plan.h"
#include "storage/store.h"

namespace masktune::cli {
namespace {

using json = nlohmann::json;

struct Query {
  std::string study, db, stack, status, sort = "id", format = "json", out, objective;
  bool csv = false;
  bool include_pruned = false;  // best: rank trials a scheduler pruned too
};

OpenedOrExit Open(const std::string& command, const Query& q) {
  return OpenStudy(command, q.study, q.db);
}

std::string CsvField(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

void AddStudyOptions(CLI::App* cmd, Query& q) {
  cmd->add_option("STUDY", q.study, "the study's name")->required();
  cmd->add_option("--db", q.db, "SQLite database")->required();
}

int RunBest(Query& q) {
  auto o = Open("best", q);
  if (!o) return o.code;
  if (!q.objective.empty()) {
    // Rank under another objective: recomputed from the stored metrics, per stack.
    auto rows = o->store.Trials(o->study.id, "done");
    if (!rows.ok()) {
      std::fprintf(stderr, "masktune best: %s\n", rows.status().message().c_str());
      return kExitFailure;
    }
    std::vector<std::string> reported;
    for (const auto& r : rows.value())
      for (const auto& [k, v] : r.metrics)
        if (std::find(reported.begin(), reported.end(), k) == reported.end()) reported.push_back(k);
    auto objective = ParseObjectiveFlag(q.objective, reported);
    if (!objective.ok()) {
      std::fprintf(stderr, "masktune best: %s\n", objective.status().message().c_str());
      return kExitBadInput;
    }
    o->sweep.objective = std::move(objective).value();
  }
  return PrintBest(o->store, o->study.id, o->sweep, q.stack, q.include_pruned);
}

// The table shows numbers with 6 significant digits and cells of at most 24
// characters (failure 40) unless `wide`; whole failure messages follow it.
// CSV keeps every value exact (the shortest text that reads back as the same
// double), so a trial's parameters can be reused as stored.
int RunTrials(Query& q, bool wide) {
  auto o = Open("trials", q);
  if (!o) return o.code;
  if (!q.status.empty() && q.status != "queued" && q.status != "running" && q.status != "done" &&
      q.status != "failed" && q.status != "pruned") {
    std::fprintf(stderr,
                 "masktune trials: --status: expected queued, running, done or failed (or "
                 "pruned, under a scheduler)\n");
    return kExitBadInput;
  }
  if (q.sort != "id" && q.sort != "objective" && q.sort != "stack") {
    std::fprintf(stderr, "masktune trials: --sort: expected id, objective or stack, found '%s'\n",
                 q.sort.c_str());
    return kExitBadInput;
  }
  auto rows = o->store.Trials(o->study.id, q.status, q.sort);
  if (!rows.ok()) {  // storage
    std::fprintf(stderr, "masktune trials: %s\n", rows.status().message().c_str());
    return kExitFailure;
  }
  // Columns: fixed ones, then every parameter and metric that occurs.
  std::vector<std::string> params, metrics;
  for (const auto& r : rows.value()) {
    const json p = json::parse(r.params);  // kept alive for items()
    for (auto& [k, v] : p.items())
      if (std::find(params.begin(), params.end(), k) == params.end()) params.push_back(k);
    for (const auto& [k, v] : r.metrics)
      if (std::find(metrics.begin(), metrics.end(), k) == metrics.end()) metrics.push_back(k);
  }
  std::vector<std::string> header = {"trial_id", "stack",    "number",
                                     "status",   "attempts", "objective"};
  // Under a scheduler: the samples each trial ran (a pruned one's step).
  const bool steps = std::any_of(rows->begin(), rows->end(),
                                 [](const storage::TrialRow& r) { return r.steps > 0; });
  if (steps) header.insert(header.begin() + 5, "steps");
  header.insert(header.end(), params.begin(), params.end());
  header.insert(header.end(), metrics.begin(), metrics.end());
  header.push_back("worker");
  header.push_back("failure");  // the last attempt's error; `error` may be a metric
  const bool csv = q.csv;
  auto number = [&](double x) { return csv ? json(x).dump() : FormatNumber(x); };
  std::vector<std::vector<std::string>> table = {header};
  for (const auto& r : rows.value()) {
    const json p = json::parse(r.params);
    std::vector<std::string> row = {
        std::to_string(r.id),       r.stack,
        std::to_string(r.number),   r.status,
        std::to_string(r.attempts), r.objective ? number(*r.objective) : ""};
    if (steps) row.insert(row.begin() + 5, r.steps > 0 ? std::to_string(r.steps) : "");
    for (const auto& k : params) {
      if (!p.contains(k))
        row.push_back("");
      else if (csv)
        row.push_back(p[k].is_string() ? p[k].get<std::string>() : p[k].dump());
      else
        row.push_back(FormatParamValue(p[k]));
    }
    for (const auto& k : metrics) row.push_back(r.metrics.count(k) ? number(r.metrics.at(k)) : "");
    row.push_back(r.worker);
    row.push_back(r.error);
    table.push_back(std::move(row));
  }
  if (csv) {
    for (const auto& cells : table) {
      std::string s;
      for (size_t i = 0; i < cells.size(); ++i) s += (i ? "," : "") + CsvField(cells[i]);
      std::printf("%s\n", s.c_str());
    }
    return kExitOk;
  }
  if (wide) {
    std::printf("%s", FormatTable(table, 0).c_str());
    return kExitOk;
  }
  // Cut cells; the failure column gets a little more room, and the whole
  // messages follow the table, one per distinct message.
  std::vector<std::vector<std::string>> shown = table;
  for (size_t r = 1; r < shown.size(); ++r) {  // the header stays whole
    std::vector<std::string>& row = shown[r];
    std::string& f = row.back();
    if (f.size() > 40) f = f.substr(0, 39) + "~";
    for (size_t i = 0; i + 1 < row.size(); ++i)
      if (row[i].size() > 24) row[i] = row[i].substr(0, 23) + "~";
  }
  std::printf("%s", FormatTable(shown, 0).c_str());
  std::vector<std::pair<std::string, std::vector<int64_t>>> failures;  // message -> trials
  for (const auto& r : rows.value()) {
    if (r.error.empty()) continue;
    auto it = std::find_if(failures.begin(), failures.end(),
                           [&](const auto& f) { return f.first == r.error; });
    if (it == failures.end())
      failures.push_back({r.error, {r.id}});
    else
      it->second.push_back(r.id);
  }
  if (!failures.empty()) {
    std::printf("\nfailures (whole messages):\n");
    for (const auto& [message, ids] : failures) {
      std::string list;
      for (int64_t id : ids) list += (list.empty() ? "" : ", ") + std::to_string(id);
      std::printf("  trial%s %s: %s\n", ids.size() > 1 ? "s" : "", list.c_str(), message.c_str());
    }
  }
  return kExitOk;
}

// "2026-12-01 15:30:02 UTC" for unix seconds.
std::string UtcTime(double unix_seconds) {
  const std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

// SQLite's integrity_check and foreign_key_check on the open database: "DB:
// ok ..." on stdout and kExitOk, or each problem on stdout, one line naming
// the database on stderr and kExitFailure.
int ReportCheck(const std::string& command, storage::Store& store, const std::string& db) {
  auto problems = store.Check();
  if (!problems.ok()) {
    std::fprintf(stderr, "masktune %s: %s\n", command.c_str(), problems.status().message().c_str());
    return kExitFailure;
  }
  if (problems->empty()) {
    std::printf("%s: ok (integrity_check and foreign_key_check found no problem)\n", db.c_str());
    return kExitOk;
  }
  for (const std::string& p : problems.value()) std::printf("%s: %s\n", db.c_str(), p.c_str());
  std::fflush(stdout);  // the findings before the summary, when both go to one place
  std::fprintf(stderr, "masktune %s: %s: %zu problem%s found by SQLite's integrity checks\n",
               command.c_str(), db.c_str(), problems->size(), problems->size() == 1 ? "" : "s");
  return kExitFailure;
}

// The counts, and who runs the study: "finished"; "running", held by a live
// coordinator's lease; or "interrupted", running in the file but with no live
// lease (a killed coordinator, or one that failed to start).
int RunStatus(Query& q, bool check) {
  auto o = Open("status", q);
  if (!o) return o.code;
  auto fail = [&](const Status& s) {
    std::fprintf(stderr, "masktune status: %s\n", s.message().c_str());
    return kExitFailure;
  };
  auto p = o->store.GetProgress(o->study.id);
  if (!p.ok()) return fail(p.status());
  auto lease = o->store.LiveLease(o->study.id);
  if (!lease.ok()) return fail(lease.status());
  std::string state = "finished", detail;
  if (o->study.status != "finished") {
    const std::string resume = "resume with `masktune resume " + q.study + " --db " + q.db + "`";
    if (const auto& l = lease.value();
        l && storage::HolderGoneFromThisHost(*l)) {  // killed before its lease ran out
      state = "interrupted";
      detail = "no live coordinator: " + l->holder + " (pid " + std::to_string(l->pid) +
               " on this host) is gone; " + resume;
    } else if (l) {
      state = "running";
      detail = "held by " + l->holder + " on " + l->host + " pid " + std::to_string(l->pid) +
               " (lease until " + UtcTime(l->expires) + ")";
    } else {
      state = "interrupted";
      detail = "no live coordinator: " + resume;
    }
  }
  const std::string pruned =
      p->pruned > 0 ? std::to_string(p->pruned) + " pruned, " : std::string();
  std::printf("study %s (%s): %lld trials: %lld done, %lld failed, %s%lld running, %lld queued\n",
              o->study.name.c_str(), state.c_str(), static_cast<long long>(p->total),
              static_cast<long long>(p->done), static_cast<long long>(p->failed), pruned.c_str(),
              static_cast<long long>(p->running), static_cast<long long>(p->queued));
  if (!detail.empty()) std::printf("  %s\n", detail.c_str());
  return check ? ReportCheck("status", o->store, q.db) : kExitOk;
}

// Reads the database even when the study's rows are damaged: the checks run
// before the study is looked up.
int RunCheck(Query& q) {
  auto fail = [&](const std::string& m, int code) {
    std::fprintf(stderr, "masktune check: %s\n", m.c_str());
    return code;
  };
  if (!std::filesystem::exists(q.db)) return fail(q.db + ": no such database", kExitBadInput);
  auto store = storage::Store::OpenReadOnly(q.db);
  if (!store.ok()) return fail(store.status().message(), kExitFailure);
  if (int code = ReportCheck("check", store.value(), q.db); code != kExitOk) return code;
  auto row = store->FindStudy(q.study);
  if (!row.ok()) return fail(row.status().message(), kExitFailure);
  if (!row.value()) return fail("no study '" + q.study + "' in " + q.db, kExitBadInput);
  return kExitOk;
}

}  // namespace

Action AddBestCommand(CLI::App& app) {
  auto q = std::make_shared<Query>();
  CLI::App* cmd = app.add_subcommand(
      "best",
      "The best configuration per stack and its metrics (or the Pareto front, as a table).");
  AddStudyOptions(cmd, *q);
  cmd->add_option("--stack", q->stack, "only this stack");
  cmd->add_flag("--include-pruned", q->include_pruned,
                "rank trials an early-stopping scheduler pruned too (they ran fewer samples;\n"
                "without it, only complete trials are ranked)");
  cmd->add_option("--objective", q->objective,
                  "rank under another objective, recomputed from the stored metrics: default,\n"
                  "sparsity_5..sparsity_25, METRIC[:min|max] (min if not said), or a comma-\n"
                  "separated list of METRIC:MODE for a Pareto front (accuracy:max,density:min)");
  cmd->footer(
      "One line per stack: the best trial, its objective (a maximised metric as its real\n"
      "value), every metric and its parameters. Exit codes: 0 ok, 1 a stack whose trials\n"
      "all failed (its most common failure is printed), 2 bad input.");
  return [q] { return RunBest(*q); };
}

Action AddTrialsCommand(CLI::App& app) {
  auto q = std::make_shared<Query>();
  auto wide = std::make_shared<bool>(false);
  CLI::App* cmd = app.add_subcommand(
      "trials", "Every trial of a study: parameters, status, attempts, metrics.");
  AddStudyOptions(cmd, *q);
  cmd->add_option("--status", q->status,
                  "only trials with this status (queued, running, done, failed, pruned)");
  cmd->add_option("--sort", q->sort, "id (default), objective or stack");
  cmd->add_flag("--csv", q->csv, "CSV: a header row, then one row per trial, numbers exact");
  cmd->add_flag("--wide", *wide, "table cells in full (no cutting), failure messages included");
  cmd->footer(
      "The table shows numbers to 6 significant digits and cuts long cells with '~'; the\n"
      "`failure` column holds the last attempt's error, and a 'failures' section under\n"
      "the table gives each distinct message whole with its trials. `objective` is the\n"
      "value the search minimises (a maximised metric negated; its own column is real).\n"
      "--csv keeps full precision: each number reads back as the stored double.");
  return [q, wide] { return RunTrials(*q, *wide); };
}

Action AddStatusCommand(CLI::App& app) {
  auto q = std::make_shared<Query>();
  auto check = std::make_shared<bool>(false);
  CLI::App* cmd =
      app.add_subcommand("status", "A study's progress, and whether a coordinator runs it.");
  AddStudyOptions(cmd, *q);
  cmd->add_flag("--check", *check,
                "then run SQLite's integrity checks on the database (as `check`)");
  cmd->footer(
      "The state is finished, running (a live coordinator holds the study's lease: who,\n"
      "where, until when) or interrupted (no live coordinator: resume it). The database\n"
      "is opened read-only. Exit codes: 0 ok, 1 a storage error or a check that found\n"
      "problems, 2 no such database or study.");
  return [q, check] { return RunStatus(*q, *check); };
}

Action AddCheckCommand(CLI::App& app) {
  auto q = std::make_shared<Query>();
  CLI::App* cmd = app.add_subcommand(
      "check", "Check a study's database: SQLite's integrity_check and foreign_key_check.");
  AddStudyOptions(cmd, *q);
  cmd->footer(
      "Prints 'DB: ok' or each problem found. The database is opened read-only.\n"
      "Exit codes: 0 ok, 1 problems found or a storage error, 2 no such database or study.");
  return [q] { return RunCheck(*q); };
}

// Export lives in cli/export.cpp; it opens studies through this.
OpenedOrExit OpenStudy(const std::string& command, const std::string& study,
                       const std::string& db) {
  auto fail = [&](const std::string& m, int code) {
    std::fprintf(stderr, "masktune %s: %s\n", command.c_str(), m.c_str());
    return OpenedOrExit{std::nullopt, code};
  };
  if (!std::filesystem::exists(db)) return fail(db + ": no such database", kExitBadInput);
  auto store = storage::Store::OpenReadOnly(db);
  if (!store.ok()) return fail(store.status().message(), kExitFailure);
  auto row = store->FindStudy(study);
  if (!row.ok()) return fail(row.status().message(), kExitFailure);
  if (!row.value()) return fail("no study '" + study + "' in " + db, kExitBadInput);
  // Read to show results: a side file deleted since, or a plan over today's cap, must not hide
  // them.
  configs::ParseOptions parse;
  parse.max_trials = std::numeric_limits<int64_t>::max();
  parse.check_files = false;
  auto sweep = configs::ParseSweep(row.value()->sweep_text, row.value()->sweep_path,
                                   MaskerRegistry::WithBuiltins(), parse);
  if (!sweep.ok())
    return fail(db + ": study '" + study +
                    "': its stored sweep no longer parses: " + sweep.status().message(),
                kExitBadInput);
  return OpenedOrExit{
      OpenedStudy{std::move(store).value(), *row.value(), std::move(sweep).value()}};
}

}  // namespace masktune::cli
