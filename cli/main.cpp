// masktune: one binary, one subcommand per job.
#include <cstdio>
#include <exception>
#include <map>

#include "cli/commands.h"

namespace {

int Main(int argc, char** argv) {
  using namespace masktune::cli;
  CLI::App app{
      "masktune: search sparse-attention configurations for long-context LLMs.\n"
      "Design: DESIGN.md; masker semantics: ../shared/spec/maskers.md"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Print help for every subcommand");
  std::map<CLI::App*, Action> actions;
  // Each Add*Command adds one subcommand, the newest in app's list.
  for (auto add :
       {AddRunCommand, AddResumeCommand, AddValidateCommand, AddBestCommand, AddTrialsCommand,
        AddStatusCommand, AddCheckCommand, AddExportCommand, AddCoordinatorCommand,
        AddWorkerCommand, AddAttendCommand, AddRulerCommand, AddCaptureCommand, AddKeysCommand,
        AddLaunchCommand, AddReportCommand, AddDashboardCommand}) {
    Action action = add(app);
    actions[app.get_subcommands({}).back()] = std::move(action);
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "masktune: %s (see --help)\n", e.what());
    return kExitBadInput;
  }
  for (auto& [sub, action] : actions)
    if (sub->parsed()) return action();
  return kExitBadInput;
}

}  // namespace

int main(int argc, char** argv) {
  // Errors are values inside masktune; an exception here is a bug (or out of
  // memory), reported as one line rather than an abort.
  try {
    return Main(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "masktune: internal error: %s\n", e.what());
  } catch (...) {
    std::fprintf(stderr, "masktune: internal error\n");
  }
  return masktune::cli::kExitFailure;
}
