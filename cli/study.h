// File: cli/study.h
//
// A study opened for questions (best, trials, status, export): its database,
// its row and its sweep re-read from the database.
#pragma once

#include <optional>
#include <string>

#include "configs/sweep.h"
#include "storage/store.h"

namespace masktune::cli {

struct OpenedStudy {
  storage::Store store;
  storage::StudyRow study;
  configs::SweepConfig sweep;
};

// OpenStudy's answer: the study, or the exit code of a failure already
// reported in one line on stderr: kExitBadInput for no such database or
// study (or a stored sweep that no longer parses), kExitFailure for a
// storage error (unreadable, corrupt, not a masktune file).
struct OpenedOrExit {
  std::optional<OpenedStudy> opened;
  int code = 0;
  explicit operator bool() const { return opened.has_value(); }
  OpenedStudy* operator->() { return &*opened; }
};

// Opens `db` read-only (nothing is created, migrated or written, so a file in
// a read-only folder can be read) and the study named `study`, re-reading its
// sweep from the database.
OpenedOrExit OpenStudy(const std::string& command, const std::string& study, const std::string& db);

}  // namespace masktune::cli
