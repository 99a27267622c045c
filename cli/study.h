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

// Opens `db` and the study named `study` (cli/query.cpp, Open). On failure it
// prints one line "masktune COMMAND: ..." on stderr and returns nullopt (bad input).
std::optional<OpenedStudy> OpenStudy(const std::string& command, const std::string& study,
                                     const std::string& db);

}  // namespace masktune::cli
