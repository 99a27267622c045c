// Early-stopping schedulers (search/scheduler.h): ASHA's rungs and the
// median rule on scripted reports with hand-computed decisions; the sweep
// file's scheduler fields; the v2 -> v3 migration (pruned, reports); pruned
// trials in SQLite and in trials/status/best; the state rebuilt from SQLite
// (unit, and with the coordinator killed with -9 and resumed); a worker
// killed mid-trial; inproc and tcp.
#include <doctest/doctest.h>
#include <sqlite3.h>

#include <cmath>
#include <fstream>
#include <map>
#include <set>

#include "configs/sweep.h"
#include "coordinator/coordinator.h"
#include "protocol/protocol.h"
#include "protocol/security.h"
#include "search/scheduler.h"
#include "search/tpe.h"
#include "storage/store.h"
#include "tests/helpers.h"
#include "tests/process_helpers.h"

namespace masktune {
namespace {

using namespace masktune::testing;

configs::SchedulerSpec Spec(const std::string& type, int64_t max_t, int64_t grace, int64_t rf,
                            int64_t brackets, int64_t min_samples = 3) {
  configs::SchedulerSpec s;
  s.type = type;
  s.max_t = max_t;
  s.grace_period = grace;
  s.reduction_factor = rf;
  s.brackets = brackets;
  s.min_samples_required = min_samples;
  return s;
}

struct Step {
  int64_t trial, step;
  double objective;
  bool stop;  // the expected decision
};

void Script(search::Scheduler& s, const std::vector<Step>& steps) {
  for (size_t i = 0; i < steps.size(); ++i) {
    const Step& x = steps[i];
    CAPTURE(i);
    CAPTURE(x.trial);
    CAPTURE(x.step);
    CHECK(s.OnReport("a", x.trial, x.trial, x.step, x.objective) == x.stop);
  }
}

TEST_CASE("scheduler: ASHA rungs and promotions on a scripted sequence (hand-computed)") {
  // max_t 16, grace 1, rf 4, one bracket: rungs at 1 and 4 (16 is max_t: complete).
  // A trial continues when -objective >= the 75th percentile (numpy, linear) of
  // the -objectives recorded at the rung before it.
  auto asha = search::CreateScheduler(Spec("asha", 16, 1, 4, 1), 0);
  REQUIRE(asha);
  Script(*asha, {
                    {1, 1, 0.5, false},   // rung 1 empty: continue
                    {2, 1, 0.3, false},   // cutoff P75[-0.5] = -0.5; -0.3 >= it
                    {3, 1, 0.4, true},    // P75[-0.5, -0.3] = -0.35 > -0.4: stop
                    {4, 1, 0.1, false},   // P75[-0.5, -0.4, -0.3] = -0.35 <= -0.1
                    {1, 2, 0.5, false},   // no rung at 2
                    {1, 4, 0.45, false},  // rung 4 empty
                    {4, 4, 0.2, false},   // P75[-0.45] = -0.45 <= -0.2
                    {2, 4, 0.35, true},   // P75[-0.45, -0.2] = -0.2625 > -0.35: stop
                    {4, 16, 0.2, true},   // max_t: complete, nothing recorded
                    {1, 1, 0.5, false},   // a requeued attempt: trial 1 is in rung 1 already
                    {1, 4, 0.45, false},  // ... and in rung 4: promoted once, not twice
                });
  CHECK(asha->StateText() ==
        "stack a\n"
        "  trial 1 bracket 0\n  trial 2 bracket 0\n  trial 3 bracket 0\n  trial 4 bracket 0\n"
        "  bracket 0 rung 16:\n"
        "  bracket 0 rung 4: 1=-0.45000000000000001 2=-0.34999999999999998 "
        "4=-0.20000000000000001\n"
        "  bracket 0 rung 1: 1=-0.5 2=-0.29999999999999999 3=-0.40000000000000002 "
        "4=-0.10000000000000001\n");
  // Ray's rf 2, grace 2, max_t 8: rungs 2, 4 (8 is max_t); the top half continues.
  auto half = search::CreateScheduler(Spec("asha", 8, 2, 2, 1), 0);
  Script(*half, {
                    {1, 1, 9.0, false},  // before the first rung
                    {1, 2, 1.0, false},
                    {2, 2, 2.0, true},   // P50[-1] = -1 > -2
                    {3, 2, 0.5, false},  // P50[-2, -1] = -1.5 <= -0.5
                    {4, 2, 1.2, true},   // P50[-2, -1, -0.5] = -1 > -1.2: stop
                });
}

TEST_CASE("scheduler: the median stopping rule on a scripted sequence (hand-computed)") {
  // grace 2, at least 2 other trials whose latest report is at t or beyond.
  auto median = search::CreateScheduler(Spec("median", 10, 2, 4, 0, 2), 0);
  REQUIRE(median);
  Script(*median, {
                      {1, 1, 1.0, false},  // before grace
                      {1, 2, 1.0, false},  // no other trial
                      {1, 3, 1.0, false},
                      {2, 1, 0.5, false},
                      {2, 2, 0.5, false},  // one other (trial 1): fewer than 2
                      {3, 1, 2.0, false},
                      {3, 2, 2.0, true},  // means at 2: 1 (trial 1), 0.5 (2): median 0.75 < 2
                      {4, 1, 0.9, false},
                      {4, 2, 0.6, false},  // means 1, 0.5, 2: median 1 > best 0.6
                      {3, 3, 0.1, true},   // stopped stays stopped
                      {4, 10, 0.6, true},  // max_t: complete
                  });
}

TEST_CASE("scheduler: hyperband brackets are drawn per trial number, the same every time") {
  const auto spec = Spec("hyperband", 16, 1, 2, 5);  // brackets with 5, 4, 3, 2, 1 rungs
  auto a = search::CreateScheduler(spec, 7), b = search::CreateScheduler(spec, 7);
  for (int64_t t = 1; t <= 40; ++t) {
    const double objective = std::fmod(static_cast<double>(t) * 0.37, 1.0);
    for (int64_t step = 1; step <= 16; ++step) {
      const bool x = a->OnReport("s", t, t, step, objective);
      CHECK(x == b->OnReport("s", t, t, step, objective));
      if (x) break;
    }
  }
  CHECK(a->StateText() == b->StateText());
  // Several brackets are used (Ray's e^(rungs - most) weights: 0.64, 0.24, 0.09, ...).
  std::set<std::string> used;
  const std::string text = a->StateText();
  for (size_t p = text.find(" bracket "); p != std::string::npos; p = text.find(" bracket ", p + 1))
    used.insert(text.substr(p + 9, 1));
  CHECK(used.size() >= 2);
}

TEST_CASE("scheduler: TPE ranks pruned trials after complete ones, deeper first (as Optuna)") {
  // Optuna's _split_trials: complete by value, then pruned by (-step, value).
  configs::SweepConfig sweep;
  sweep.search.algorithm = "tpe";
  sweep.search.n_startup_trials = 1;
  configs::StackSpec stack;
  stack.name = "s";
  configs::MaskerEntry m;
  m.type = "sink";
  configs::ParamSpace space;
  space.kind = configs::ParamSpace::Kind::kChoice;
  space.values = {int64_t{1}, int64_t{2}, int64_t{3}};
  m.fields["sink_size"] = space;
  stack.maskers.push_back(m);
  sweep.stacks.push_back(stack);
  const auto plans = search::PlanSweep(sweep);
  REQUIRE(plans.size() == 1);
  const std::string name = plans[0].params.at(0).name;
  // One complete trial (value 5, choice 3) and pruned ones with better values
  // (choice 1): the complete one is the "good" one (n_good = 1), so TPE
  // suggests choice 3; ranked by value alone it would suggest 1.
  std::vector<search::Observation> history = {{{{name, int64_t{3}}}, 5.0, false, 16}};
  for (int i = 0; i < 9; ++i) history.push_back({{{name, int64_t{1}}}, 0.1, true, 1});
  int threes = 0;
  for (int64_t t = 10; t < 30; ++t)
    threes += std::get<int64_t>(search::SuggestTpe(sweep, plans[0], t, history).at(name)) == 3;
  CHECK(threes >= 15);
}

// --- the sweep file ----------------------------------------------------------

const char* kHead =
    "study: s\n"
    "benchmark: {name: attention_error, data: {synthetic: {keys: 256, heads: 2, kv_heads: 1, "
    "head_dim: 16, samples: 16, seed: 1}}}\n";
const char* kStacks = "attention: {a: [{sink: {sink_size: {randint: [1, 50]}}}]}\n";

std::string Sweep(const std::string& objective, const std::string& scheduler) {
  return std::string(kHead) + "objective: " + objective + "\n" +
         "search:\n  algorithm: random\n  num_samples: 4\n  scheduler: " + scheduler + "\n" +
         kStacks;
}

TEST_CASE("scheduler: bad fields in the sweep file exit 2 with FILE:LINE:COLUMN") {
  TempDir dir;
  auto check = [&](const std::string& text, const std::string& expected) {
    std::ofstream(dir / "s.yaml") << text;
    CheckBadInput(Masktune("validate " + dir / "s.yaml"), dir / "s.yaml" + ":" + expected);
    CheckBadInput(Masktune("run " + dir / "s.yaml" + " --db " + dir / "s.db"),
                  dir / "s.yaml" + ":" + expected);
  };
  // Line 7 is `  scheduler: {...}`: column 14 is the mapping, then its values.
  check(Sweep("sparsity_10", "{type: bohb}"),
        "7:21: search.scheduler.type: expected asha, hyperband or median, found 'bohb'");
  check(Sweep("sparsity_10", "{type: asha, max_t: 17}"),
        "7:34: search.scheduler.max_t: 17 is more than the benchmark's 16 samples");
  check(Sweep("sparsity_10", "{type: asha, reduction_factor: 1}"),
        "7:45: search.scheduler.reduction_factor: expected an integer in [2, 1048576], found 1");
  check(Sweep("sparsity_10", "{type: asha, max_t: 8, grace_period: 9}"),
        "7:51: search.scheduler.grace_period: 9 is more than max_t (8)");
  check(Sweep("sparsity_10", "{type: median, brackets: 2}"),
        "7:29: search.scheduler (median): unknown key 'brackets'");
  check(Sweep("sparsity_10", "{type: asha, max_t: 16, grace_period: 4, brackets: 3}"),
        "7:65: search.scheduler.brackets: 3 brackets need rungs up to");
  check(Sweep("[{metric: error, mode: min}, {metric: density, mode: min}]", "{type: asha}"),
        "7:14: search.scheduler: a scheduler ranks trials on one number, and the objective is a "
        "Pareto front of 2 metrics (error, density)");
  // A good one: validate says so, and max_t defaults to the samples.
  std::ofstream(dir / "s.yaml") << Sweep("sparsity_10", "{type: hyperband, reduction_factor: 2}");
  const Run ok = Masktune("validate " + dir / "s.yaml");
  CAPTURE(ok.output);
  CHECK(ok.code == 0);
  auto parsed = configs::LoadSweep(dir / "s.yaml", MaskerRegistry::WithBuiltins());
  REQUIRE(parsed.ok());
  CHECK(parsed->search.scheduler.max_t == 16);
  CHECK(parsed->search.scheduler.brackets == 5);  // 1, 2, 4, 8, 16
}

// --- storage -----------------------------------------------------------------

TEST_CASE("storage: a version 2 database migrates to 3 (pruned trials, reports), data kept") {
  TempDir dir;
  const std::string db = dir / "old.db";
  {
    sqlite3* raw = nullptr;
    REQUIRE(sqlite3_open(db.c_str(), &raw) == SQLITE_OK);
    const char* v2 = R"(
CREATE TABLE studies (
  id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, sweep_path TEXT NOT NULL,
  sweep_text TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'running', created REAL NOT NULL,
  fingerprint TEXT NOT NULL DEFAULT '');
CREATE TABLE stacks (
  id INTEGER PRIMARY KEY, study_id INTEGER NOT NULL REFERENCES studies(id), name TEXT NOT NULL,
  position INTEGER NOT NULL, UNIQUE (study_id, name));
CREATE TABLE trials (
  id INTEGER PRIMARY KEY, study_id INTEGER NOT NULL REFERENCES studies(id),
  stack_id INTEGER NOT NULL REFERENCES stacks(id), number INTEGER NOT NULL,
  params TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'queued'
    CHECK (status IN ('queued', 'running', 'done', 'failed')),
  attempts INTEGER NOT NULL DEFAULT 0, worker TEXT, error TEXT, objective REAL,
  queued REAL NOT NULL, started REAL, finished REAL, UNIQUE (stack_id, number));
CREATE INDEX trials_by_status ON trials (study_id, status, id);
CREATE TABLE metrics (
  trial_id INTEGER NOT NULL REFERENCES trials(id), name TEXT NOT NULL, value REAL,
  PRIMARY KEY (trial_id, name));
CREATE TABLE workers (
  study_id INTEGER NOT NULL REFERENCES studies(id), name TEXT NOT NULL, info TEXT,
  last_seen REAL NOT NULL, PRIMARY KEY (study_id, name));
CREATE TABLE leases (
  study_id INTEGER PRIMARY KEY REFERENCES studies(id), holder TEXT NOT NULL, host TEXT NOT NULL,
  pid INTEGER NOT NULL, expires REAL NOT NULL);
INSERT INTO studies VALUES (1, 'old', '/x.yaml', 'study: old', 'finished', 0, 'fp');
INSERT INTO stacks VALUES (1, 1, 'a', 0);
INSERT INTO trials VALUES (1, 1, 1, 0, '{"x":1}', 'done', 1, 'w', NULL, 0.25, 0, 1, 2);
INSERT INTO trials VALUES (2, 1, 1, 1, '{"x":2}', 'queued', 0, NULL, NULL, NULL, 0, NULL, NULL);
INSERT INTO metrics VALUES (1, 'error', 0.25);
PRAGMA user_version = 2;
)";
    REQUIRE(sqlite3_exec(raw, v2, nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(raw);
  }
  {  // read-only, before any migration: read as version 2 (no steps, no reports)
    auto ro = storage::Store::OpenReadOnly(db);
    REQUIRE(ro.ok());
    auto rows = ro->Trials(1);
    REQUIRE(rows.ok());
    CHECK(rows->size() == 2);
    CHECK(ro->Reports(1)->empty());
  }
  auto store = storage::Store::Open(db);
  REQUIRE(store.ok());
  auto rows = store->Trials(1);
  REQUIRE(rows.ok());
  REQUIRE(rows->size() == 2);
  CHECK(rows->at(0).status == "done");
  CHECK(*rows->at(0).objective == 0.25);
  CHECK(rows->at(0).metrics.at("error") == 0.25);
  // The new status and table work; foreign keys still hold.
  REQUIRE(store->Begin().ok());
  auto started = store->StartNext(1, "w2");
  REQUIRE(started.ok());
  REQUIRE(started.value());
  CHECK(started.value()->id == 2);
  CHECK(!store->AddReport(2, 1, 1, {{"error", 0.9}}, 0.9, "continue")->has_value());
  CHECK(!store->AddReport(2, 1, 2, {{"error", 0.8}}, 0.8, "stop")->has_value());
  CHECK(store->AddReport(2, 1, 2, {{"error", 0.7}}, 0.7, "continue").value() ==
        std::optional<std::string>("stop"));  // a repeat keeps the first decision
  CHECK(store->RecordPruned(2, 1, 2, {{"error", 0.8}}, 0.8).value());
  CHECK(!store->RecordPruned(2, 1, 2, {{"error", 0.8}}, 0.8).value());  // once
  REQUIRE(store->Commit().ok());
  auto p = store->GetProgress(1);
  REQUIRE(p.ok());
  CHECK(p->pruned == 1);
  CHECK(p->done == 1);
  CHECK(p->settled() == 2);
  rows = store->Trials(1, "pruned");
  REQUIRE(rows->size() == 1);
  CHECK(rows->at(0).steps == 2);
  CHECK(rows->at(0).metrics.at("error") == 0.8);
  auto reports = store->Reports(1);
  REQUIRE(reports.ok());
  REQUIRE(reports->size() == 2);
  CHECK(reports->at(1).step == 2);
  CHECK(reports->at(1).decision == "stop");
  CHECK(reports->at(1).stack == "a");
  CHECK(reports->at(1).number == 1);
  CHECK(store->Check()->empty());
  // A report for a trial that does not exist breaks a foreign key: refused.
  CHECK(!store->AddReport(99, 1, 1, {}, 0.0, "continue").ok());
}

TEST_CASE("scheduler: the state rebuilt from SQLite equals the live one, decisions included") {
  TempDir dir;
  std::ofstream(dir / "s.yaml")
      << "study: rebuild\nbenchmark: {name: noop, steps: 16}\n"
         "search: {algorithm: random, num_samples: 12, seed: 2, "
         "scheduler: {type: asha, grace_period: 1, reduction_factor: 2}}\n"
         "attention: {a: [{sink: {sink_size: {randint: [1, 50]}}}],\n"
         "            b: [{local: {window_size: {randint: [1, 50]}}}]}\n";
  auto sweep = configs::LoadSweep(dir / "s.yaml", MaskerRegistry::WithBuiltins());
  REQUIRE(sweep.ok());
  auto store = storage::Store::Open(dir / "s.db");
  REQUIRE(store.ok());
  auto study = PrepareStudy(store.value(), sweep.value(), "");
  REQUIRE(study.ok());
  auto live = search::CreateScheduler(sweep->search.scheduler, sweep->search.seed);
  REQUIRE(live);
  // Trials interleaved as workers would run them; trial 3's first attempt dies
  // after 5 samples and its second runs again from sample 1.
  auto rows = store->Trials(study.value());
  REQUIRE(rows.ok());
  REQUIRE(rows->size() == 24);
  REQUIRE(store->Begin().ok());
  std::map<int64_t, int64_t> attempt;
  for (const auto& r : rows.value()) attempt[r.id] = 1;
  auto report = [&](const storage::TrialRow& r, int64_t step) {
    const double objective = 0.01 * static_cast<double>((r.id * 37) % 23) + 0.001 * step;
    const bool stop = live->OnReport(r.stack, r.id, r.number, step, objective);
    REQUIRE(store
                ->AddReport(r.id, attempt[r.id], step, {{"error", objective}}, objective,
                            stop ? "stop" : "continue")
                .ok());
    return stop;
  };
  std::set<int64_t> stopped;
  for (int64_t step = 1; step <= 16; ++step)
    for (const auto& r : rows.value()) {
      if (stopped.count(r.id)) continue;
      if (r.id == 3 && step == 6 && attempt[3] == 1) {
        attempt[3] = 2;
        for (int64_t again = 1; again < step; ++again) CHECK(!report(r, again));
      }
      if (report(r, step)) stopped.insert(r.id);
    }
  REQUIRE(store->Commit().ok());
  CHECK(stopped.size() == 24);  // each one stopped: pruned, or complete at max_t
  int64_t mismatches = -1;
  auto rebuilt = RebuildScheduler(store.value(), study.value(), sweep.value(), &mismatches);
  REQUIRE(rebuilt.ok());
  REQUIRE(rebuilt.value());
  CHECK(mismatches == 0);
  CHECK(rebuilt.value()->StateText() == live->StateText());
  CHECK(live->StateText().find("rung 8:") != std::string::npos);
}

// --- runs --------------------------------------------------------------------

// Every stored report of each trial: per trial, the decisions of all its
// attempts agree step by step; at most one stop; nothing after a stop; a
// pruned trial's steps are its stop's step (< max_t), a done one's max_t.
void CheckConsistent(const std::string& db, const std::string& study_name, int64_t max_t) {
  auto store = storage::Store::Open(db);
  REQUIRE(store.ok());
  auto study = store->FindStudy(study_name);
  REQUIRE(study.ok());
  REQUIRE(study.value());
  const int64_t id = study.value()->id;
  auto reports = store->Reports(id);
  REQUIRE(reports.ok());
  std::map<int64_t, std::map<int64_t, std::string>> decision;  // trial -> step -> decision
  std::map<std::pair<int64_t, int64_t>, int64_t> stopped_at;   // (trial, attempt) -> step
  std::map<int64_t, int64_t> stop_step;
  for (const auto& r : reports.value()) {
    CAPTURE(r.trial);
    CAPTURE(r.step);
    CHECK(!stopped_at.count({r.trial, r.attempt}));  // nothing after a stop
    auto [it, fresh] = decision[r.trial].emplace(r.step, r.decision);
    CHECK(it->second == r.decision);  // a requeued attempt gets the same answers
    if (r.decision == "stop") {
      stopped_at[{r.trial, r.attempt}] = r.step;
      CHECK(!stop_step.count(r.trial));  // stopped (promoted no further) once
      stop_step[r.trial] = r.step;
    }
  }
  auto rows = store->Trials(id);
  REQUIRE(rows.ok());
  for (const auto& r : rows.value()) {
    CAPTURE(r.id);
    CHECK((r.status == "done" || r.status == "pruned"));
    REQUIRE(stop_step.count(r.id));
    CHECK(r.steps == stop_step[r.id]);
    if (r.status == "pruned") CHECK(r.steps < max_t);
    if (r.status == "done") CHECK(r.steps == max_t);
  }
  // The scheduler's state comes back with the same decisions.
  int64_t mismatches = -1;
  configs::ParseOptions parse;
  parse.check_files = false;
  auto sweep = configs::ParseSweep(study.value()->sweep_text, study.value()->sweep_path,
                                   MaskerRegistry::WithBuiltins(), parse);
  REQUIRE(sweep.ok());
  auto rebuilt = RebuildScheduler(store.value(), id, sweep.value(), &mismatches);
  REQUIRE(rebuilt.ok());
  CHECK(mismatches == 0);
}

TEST_CASE(
    "scheduler: asha, hyperband and median in `run` (inproc): pruned trials stored and shown") {
  for (const std::string type : {"asha", "hyperband", "median"}) {
    CAPTURE(type);
    TempDir dir;
    std::ofstream(dir / "s.yaml")
        << "study: early\nbenchmark: {name: noop, steps: 8}\n"
           "search: {algorithm: random, num_samples: 16, seed: 5, scheduler: {type: " +
               type + ", grace_period: 1" +
               (type == "median" ? ", min_samples_required: 2" : ", reduction_factor: 2") +
               "}}\n"
               "attention: {a: [{sink: {sink_size: {randint: [1, 200]}}}]}\n";
    const std::string db = dir / "s.db";
    const Run run = Masktune("run " + dir / "s.yaml" + " --db " + db + " --workers 2", "", 120);
    CAPTURE(run.output);
    REQUIRE(run.code == 0);
    const auto rows = AllTrials(db, "early");
    REQUIRE(rows.size() == 16);
    int pruned = 0, done = 0;
    double best_done = INFINITY;
    for (const auto& r : rows) {
      pruned += r.status == "pruned";
      done += r.status == "done";
      if (r.status == "done") best_done = std::min(best_done, *r.objective);
      if (r.status == "pruned") {
        CHECK(r.steps >= 1);
        CHECK(r.steps < 8);
        CHECK(r.objective);
        CHECK(r.metrics.count("error") == 1);  // its last report's metrics
      }
    }
    CHECK(pruned >= 4);
    CHECK(done >= 1);
    CHECK(pruned + done == 16);
    CheckConsistent(db, "early", 8);
    const Run status = Masktune("status early --db " + db);
    CHECK(status.output.find(std::to_string(done) + " done, 0 failed, " + std::to_string(pruned) +
                             " pruned, 0 running") != std::string::npos);
    const Run trials = Masktune("trials early --db " + db + " --status pruned --csv");
    CHECK(trials.code == 0);
    CHECK(std::count(trials.output.begin(), trials.output.end(), '\n') == pruned + 1);
    CHECK(trials.output.find(",steps,") != std::string::npos);
    // best ranks complete trials only, unless asked.
    const Run best = Masktune("best early --db " + db);
    CAPTURE(best.output);
    CHECK(best.code == 0);
    CHECK(best.output.find("pruned") == std::string::npos);
    const Run any = Masktune("best early --db " + db + " --include-pruned");
    CHECK(any.code == 0);
  }
}

TEST_CASE("scheduler: the coordinator killed with -9 mid-rung, then resume: same decisions") {
  TempDir dir;
  std::ofstream(dir / "s.yaml")
      << "study: kill_sched\nbenchmark: {name: noop, steps: 8, sleep_ms: 15}\n"
         "search: {algorithm: random, num_samples: 24, seed: 9, "
         "scheduler: {type: asha, grace_period: 1, reduction_factor: 2}}\n"
         "attention: {a: [{sink: {sink_size: {randint: [1, 200]}}}]}\n";
  const std::string db = dir / "s.db";
  const pid_t run = Spawn({MASKTUNE_BINARY, "run", dir / "s.yaml", "--db", db, "--workers", "2",
                           "--heartbeat-ms", "50"});
  REQUIRE(WaitFor(db, "kill_sched", [](const auto& rows) {
    int settled = 0, running = 0;
    for (const auto& r : rows) {
      settled += r.status == "done" || r.status == "pruned";
      running += r.status == "running";
    }
    return settled >= 6 && running >= 1;  // a trial takes 8 x 15 ms: still running at the kill
  }));
  kill(run, SIGKILL);
  waitpid(run, nullptr, 0);
  int running = 0;
  for (const auto& r : AllTrials(db, "kill_sched")) running += r.status == "running";
  CHECK(running >= 1);  // killed mid-trial: these go again under a new attempt
  const pid_t resume = Spawn({MASKTUNE_BINARY, "resume", "kill_sched", "--db", db, "--workers", "2",
                              "--heartbeat-ms", "50"});
  CHECK(WaitExit(resume, 90) == 0);
  const auto rows = AllTrials(db, "kill_sched");
  CHECK(rows.size() == 24);
  int retried = 0;
  for (const auto& r : rows) retried += r.attempts >= 2;
  CHECK(retried >= 1);
  CheckConsistent(db, "kill_sched", 8);
}

TEST_CASE("scheduler: a worker killed mid-trial over tcp leaves its rungs consistent") {
  TempDir dir;
  std::ofstream(dir / "s.yaml")
      << "study: kill_sched_worker\nbenchmark: {name: noop, steps: 6, sleep_ms: 60}\n"
         "search: {algorithm: tpe, num_samples: 6, seed: 1, n_startup_trials: 2, "
         "scheduler: {type: asha, grace_period: 1, reduction_factor: 2}}\n"
         "attention: {a: [{sink: {sink_size: {randint: [1, 50]}}}]}\n";
  const std::string endpoint = "tcp://127.0.0.1:" + std::to_string(FreePort());
  const std::string db = dir / "s.db";
  REQUIRE(security::WriteKeyDir(dir / "keys").ok());
  const std::string keys = dir / "keys";
  const pid_t coordinator = Spawn({MASKTUNE_BINARY, "coordinator", dir / "s.yaml", "--bind",
                                   endpoint, "--db", db, "--heartbeat-ms", "50", "--keys", keys});
  const pid_t doomed = Spawn({MASKTUNE_BINARY, "worker", "--connect", endpoint, "--name", "doomed",
                              "--heartbeat-ms", "50", "--keys", keys});
  // Killed once its first trial has reported a few samples.
  bool reported = false;
  for (int i = 0; i < 2000 && !reported; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    auto store = storage::Store::Open(db);
    if (!store.ok()) continue;
    auto study = store->FindStudy("kill_sched_worker");
    if (!study.ok() || !study.value()) continue;
    auto reports = store->Reports(study.value()->id);
    reported = reports.ok() && reports->size() >= 3;
  }
  REQUIRE(reported);
  kill(doomed, SIGKILL);
  waitpid(doomed, nullptr, 0);
  const pid_t good = Spawn({MASKTUNE_BINARY, "worker", "--connect", endpoint, "--name", "good",
                            "--heartbeat-ms", "50", "--keys", keys});
  CHECK(WaitExit(coordinator, 60) == 0);
  CHECK(WaitExit(good, 10) == 0);
  const auto rows = AllTrials(db, "kill_sched_worker");
  REQUIRE(rows.size() == 6);
  int retried = 0;
  for (const auto& r : rows) retried += r.attempts == 2;
  CHECK(retried == 1);
  CheckConsistent(db, "kill_sched_worker", 6);
}

// --- protocol ----------------------------------------------------------------

TEST_CASE("scheduler: REPORT and DECISION are type-checked like every message") {
  auto from_worker = [](const std::string& body) {
    return protocol::ParseFromWorker(protocol::Frames{"", protocol::kReport, body});
  };
  auto ok = from_worker(R"({"trial":3,"attempt":1,"step":2,"metrics":{"error":0.5}})");
  REQUIRE(ok.ok());
  const auto& r = std::get<protocol::StepReport>(ok.value());
  CHECK(r.step == 2);
  CHECK(r.metrics.at("error") == 0.5);
  CHECK(from_worker(R"({"trial":3,"attempt":1,"step":"2","metrics":{}})").status().message() ==
        "REPORT.step: expected an integer, found string");
  CHECK(from_worker(R"({"trial":3,"attempt":1,"step":0,"metrics":{}})").status().message() ==
        "REPORT.step: expected an integer >= 1, found 0");
  CHECK(from_worker(R"({"trial":3,"attempt":1,"step":1,"metrics":{"e":"x"}})").status().message() ==
        "REPORT.metrics.e: expected a number, found string");
  auto from_coordinator = [](const std::string& command, const std::string& body) {
    return protocol::ParseFromCoordinator(protocol::Frames{"", command, body});
  };
  auto d = from_coordinator("DECISION", R"({"trial":3,"attempt":1,"step":2,"action":"stop"})");
  REQUIRE(d.ok());
  CHECK(std::get<protocol::Decision>(d.value()).stop);
  CHECK(from_coordinator("DECISION", R"({"trial":3,"attempt":1,"step":2,"action":"maybe"})")
            .status()
            .message() == "DECISION.action: expected \"continue\" or \"stop\", found \"maybe\"");
  CHECK(from_coordinator("DECISION", R"({"trial":3,"attempt":1,"action":"stop"})")
            .status()
            .message() == "DECISION.step: missing");
  CHECK(from_coordinator("TRIAL", R"({"trial":3,"attempt":1,"stack":"a","maskers":[],"report":1})")
            .status()
            .message() == "TRIAL.report: expected a boolean, found number");
  auto t = from_coordinator("TRIAL", R"({"trial":3,"attempt":1,"stack":"a","maskers":[]})");
  REQUIRE(t.ok());
  CHECK(!std::get<protocol::TrialRequest>(t.value()).report);  // absent: no reports
}

}  // namespace
}  // namespace masktune
