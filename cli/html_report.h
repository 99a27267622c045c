// File: cli/html_report.h
//
// `masktune report`: one self-contained HTML file per study (charts drawn as
// inline SVG by cli/svg, CSS inline, nothing fetched: it opens offline), and
// the pieces `masktune dashboard` serves the same report with. Everything
// here reads the database read-only (storage::Store::OpenReadOnly, plus a
// read-only SQLite connection for the few rows the Store API does not
// expose: the workers seen, the study's creation time, the list of studies).
// The markup is well-formed XHTML (a strict XML parser reads it).
// Thread-safety: pure functions of their arguments; each call opens its own
// connections, so calls may run on several threads at once.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "configs/sweep.h"
#include "storage/store.h"

namespace masktune::cli {

struct WorkerSeen {
  std::string name, info;
  double last_seen = 0;  // unix seconds
};

// Everything a report shows, read in one go.
struct StudyReport {
  std::string db;  // as given
  storage::StudyRow study;
  configs::SweepConfig sweep;
  std::vector<storage::TrialRow> trials;  // by id
  std::vector<WorkerSeen> workers;
  double created = 0;                   // unix seconds; 0 if unknown
  std::optional<storage::Lease> lease;  // the live coordinator's, if any
  double now = 0;                       // when it was read (unix seconds)
};

// LoadStudyReport's answer: the report, or an exit code (kExitBadInput: no
// such database or study, a stored sweep that no longer parses;
// kExitFailure: a storage error) with a one-line message naming the file.
struct LoadedReport {
  std::optional<StudyReport> report;
  int code = 0;
  std::string message;
};
LoadedReport LoadStudyReport(const std::string& db, const std::string& study);

// A study as the dashboard lists it.
struct StudySummary {
  std::string name;
  std::string state;                      // finished | running (a live lease) | interrupted
  std::map<std::string, int64_t> counts;  // trials by status
  int64_t total = 0, settled = 0;         // settled: neither queued nor running
};
// Every study of the database, in creation order. Error messages name the file.
Result<std::vector<StudySummary>> ListStudies(const std::string& db);
// The summary as JSON text: {"study", "state", "total", "settled", "running", "counts"}.
std::string SummaryJson(const StudySummary& s);

struct RenderOptions {
  // The masktune binary that writes the best configurations (`masktune
  // export --format json|sah`, run into a temporary folder, so the report
  // shows exactly what export writes); "" leaves that part out.
  std::string exe;
  // Dashboard: a small inline script polls `api_url` and reloads the page
  // when the study's counts change; `index_url` links back to the list. The
  // offline report has neither (no script at all).
  bool live = false;
  std::string api_url, index_url;
};

std::string RenderReport(const StudyReport& report, const RenderOptions& options);

// The dashboard's front page: the database's studies (state, counts, a link
// to /study/NAME each); `live` adds the script that reloads it on change.
std::string RenderStudyIndex(const std::string& db, const std::vector<StudySummary>& studies,
                             bool live);
// A small page for an HTTP error (404, 405, 500), well-formed XHTML.
std::string RenderErrorPage(int status, const std::string& title, const std::string& detail);
// Percent-encodes everything but RFC 3986's unreserved characters.
std::string UrlEncode(const std::string& text);

// The study's state: finished, running (a live coordinator's lease) or interrupted.
std::string StudyState(const StudyReport& report);

// Parameter importance (documented in the report and DESIGN.md): for each
// parameter, the share of the variance of the objective's ranks explained by
// that parameter alone, estimated as epsilon-squared, the bias-corrected
// correlation ratio of a one-way ANOVA: (SSB - (k-1) SSW/(n-k)) / SST over k
// groups (each value of a discrete parameter, or k = clamp(sqrt n, 2, 10)
// equal-count bins of a continuous one), clipped to [0, 1]. It is the
// first-order (main-effect) term of a variance decomposition, as fANOVA
// reports, estimated from the trials directly rather than from a surrogate
// forest; ranks make it robust to the objectives' penalty steps. A parameter
// that does not matter scores near 0; one that explains everything near 1.
struct ImportanceColumn {
  std::string name;
  std::vector<double> values;  // per trial: the value, or a category's index
  bool discrete = false;       // group by value instead of binning
};
// NaN for a column with fewer than 4 trials or as many groups as trials.
std::vector<double> MainEffectImportance(const std::vector<ImportanceColumn>& columns,
                                         const std::vector<double>& objective);

}  // namespace masktune::cli
