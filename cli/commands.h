// File: cli/commands.h
//
// One function per subcommand: it registers its flags on the parent app and
// returns the action to run once parsing succeeded. Actions return the exit
// code: 0 success, 2 bad input (one line on stderr naming the problem),
// 1 an internal failure.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace masktune::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitBadInput = 2;

using Action = std::function<int()>;

Action AddAttendCommand(CLI::App& app);
Action AddRulerCommand(CLI::App& app);
Action AddCaptureCommand(CLI::App& app);
Action AddValidateCommand(CLI::App& app);
Action AddRunCommand(CLI::App& app);
Action AddResumeCommand(CLI::App& app);
Action AddCoordinatorCommand(CLI::App& app);
Action AddWorkerCommand(CLI::App& app);
Action AddBestCommand(CLI::App& app);
Action AddTrialsCommand(CLI::App& app);
Action AddStatusCommand(CLI::App& app);
Action AddCheckCommand(CLI::App& app);
Action AddExportCommand(CLI::App& app);
Action AddKeysCommand(CLI::App& app);
Action AddLaunchCommand(CLI::App& app);
Action AddReportCommand(CLI::App& app);
Action AddDashboardCommand(CLI::App& app);

}  // namespace masktune::cli
