// masktune keys new DIR: CURVE key pairs for a coordinator and its workers.
#include <cstdio>

#include "cli/commands.h"
#include "protocol/security.h"

namespace masktune::cli {

Action AddKeysCommand(CLI::App& app) {
  auto dir = std::make_shared<std::string>();
  CLI::App* keys =
      app.add_subcommand("keys", "CURVE keys for tcp between coordinator and workers.");
  keys->require_subcommand(1);
  CLI::App* make = keys->add_subcommand(
      "new",
      "Write DIR/coordinator.key and .pub, DIR/worker.key and .pub (secret files mode 0600)\n"
      "and DIR/authorized_workers (the worker public keys the coordinator accepts).\n"
      "Give the coordinator `--keys DIR`; give each worker a folder with worker.key and\n"
      "coordinator.pub and `--keys` it. Existing keys are never overwritten.");
  make->add_option("DIR", *dir, "the key folder (created if missing)")->required();
  return [dir] {
    if (Status s = security::WriteKeyDir(*dir); !s.ok()) {
      std::fprintf(stderr, "masktune keys new: %s\n", s.message().c_str());
      return kExitBadInput;
    }
    std::printf("wrote %s/{coordinator,worker}.{key,pub} and %s/authorized_workers\n", dir->c_str(),
                dir->c_str());
    return kExitOk;
  };
}

}  // namespace masktune::cli
