// masktune launch slurm|k8s FILE: the cluster's scheduler starts the workers;
// the coordinator stays masktune's. SLURM: one sbatch job, the coordinator on
// the first node and one worker per GPU on every node (or a job array of
// workers for a running coordinator). Kubernetes: manifests for a
// coordinator Deployment + Service, a worker Job and a Secret with the keys.
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <regex>
#include <sstream>

#include "cli/commands.h"
#include "configs/sweep.h"
#include "engine/registry.h"
#include "protocol/security.h"

namespace masktune::cli {
namespace {

struct LaunchOptions {
  std::string file, db, keys, coordinator, partition, account, time = "04:00:00", out;
  std::string image = "masktune:latest", binary;
  int nodes = 1, gpus_per_node = 1, port = 5555, workers = 2;
  int64_t max_trials = configs::kDefaultMaxTrials;
  bool dry_run = false;
};

int LaunchFail(const std::string& message) {
  std::fprintf(stderr, "masktune launch: %s\n", message.c_str());
  return kExitBadInput;
}

std::string Abs(const std::string& p) {
  return std::filesystem::absolute(p).lexically_normal().string();
}

// This binary's absolute path, so compute nodes run the same masktune.
std::string SelfPath() {
  std::error_code ec;
  const auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? "masktune" : p.string();
}

std::string Quote(const std::string& s) {  // single-quoted for bash
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

}  // namespace

// The sbatch script for `o` (exposed for tests through the --dry-run output).
std::string SlurmScript(const LaunchOptions& o, const std::string& study) {
  std::ostringstream s;
  const bool array = !o.coordinator.empty();
  // A worker per GPU; on CPU nodes (--gpus-per-node 0), --workers per node.
  const int per_node = o.gpus_per_node > 0 ? o.gpus_per_node : o.workers;
  s << "#!/bin/bash\n";
  s << "#SBATCH --job-name=masktune-" << study << (array ? "-workers" : "") << "\n";
  if (array) {
    s << "#SBATCH --array=0-" << (o.nodes * per_node - 1) << "\n";
    s << "#SBATCH --ntasks=1\n";
    if (o.gpus_per_node > 0) s << "#SBATCH --gpus-per-task=1\n";
  } else {
    s << "#SBATCH --nodes=" << o.nodes << "\n";
    s << "#SBATCH --ntasks-per-node=" << per_node << "\n";
    if (o.gpus_per_node > 0) s << "#SBATCH --gpus-per-node=" << o.gpus_per_node << "\n";
  }
  if (!o.partition.empty()) s << "#SBATCH --partition=" << o.partition << "\n";
  if (!o.account.empty()) s << "#SBATCH --account=" << o.account << "\n";
  s << "#SBATCH --time=" << o.time << "\n";
  // The job's log sits beside the database, not wherever sbatch was run.
  s << "#SBATCH --output="
    << (std::filesystem::path(o.db).parent_path() / ("masktune-" + study + "-%j.out")).string()
    << "\n";
  s << "# Written by masktune launch slurm. Submitting it again after a preemption or\n"
       "# a time limit resumes the study: finished trials are kept.\n";
  s << "set -euo pipefail\n";
  s << "MASKTUNE=" << Quote(o.binary) << "\n";
  s << "KEYS=" << Quote(o.keys) << "\n";
  if (array) {
    s << "ENDPOINT=" << Quote(o.coordinator) << "\n";
    s << "exec \"$MASKTUNE\" worker --connect \"$ENDPOINT\" --keys \"$KEYS\" "
         "--name \"$(hostname)-${SLURM_ARRAY_TASK_ID}\"\n";
    return s.str();
  }
  s << "SWEEP=" << Quote(o.file) << "\n";
  s << "DB=" << Quote(o.db) << "\n";
  s << "# The coordinator runs on the job's first node; workers find it there.\n";
  s << "COORDINATOR_HOST=$(scontrol show hostnames \"$SLURM_JOB_NODELIST\" | head -n 1)\n";
  s << "ENDPOINT=\"tcp://${COORDINATOR_HOST}:" << o.port << "\"\n";
  s << "srun --nodes=1 --ntasks=1 --nodelist=\"$COORDINATOR_HOST\" --overlap --gpus=0 \\\n"
       "  \"$MASKTUNE\" coordinator \"$SWEEP\" --bind \"tcp://0.0.0.0:"
    << o.port << "\" --db \"$DB\" --keys \"$KEYS\" --max-trials " << o.max_trials << " &\n";
  s << "COORDINATOR_PID=$!\n";
  s << "# One worker per GPU (per node when there are none), each seeing its own GPU.\n";
  s << "srun --nodes=" << o.nodes << " --ntasks-per-node=" << per_node << " --overlap"
    << (o.gpus_per_node > 0 ? " --gpus-per-task=1" : "") << " \\\n"
    << "  bash -c 'export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-$SLURM_LOCALID}; "
       "exec \"$0\" worker --connect \"$1\" --keys \"$2\" --name \"$(hostname)-$SLURM_LOCALID\"' "
       "\\\n"
       "  \"$MASKTUNE\" \"$ENDPOINT\" \"$KEYS\" &\n";
  s << "WORKERS_PID=$!\n";
  s << "wait \"$COORDINATOR_PID\"   # the coordinator exits once every trial is settled\n";
  s << "wait \"$WORKERS_PID\" || true   # workers exit when told the study is over\n";
  return s.str();
}

std::string K8sManifests(const LaunchOptions& o, const std::string& study,
                         const std::string& sweep_text, const security::KeyPair& coordinator,
                         const security::KeyPair& worker, const std::string& allowed) {
  auto indent = [](const std::string& text, int n) {
    std::string pad(static_cast<size_t>(n), ' '), out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) out += pad + line + "\n";
    return out;
  };
  const std::string name = "masktune-" + study;
  std::ostringstream s;
  s << "# Written by masktune launch k8s: apply with kubectl apply -f FILE\n";
  s << "apiVersion: v1\nkind: Secret\nmetadata:\n  name: " << name << "-keys\ntype: Opaque\n"
    << "stringData:\n"
    << "  coordinator.key: |\n"
    << indent("public = " + coordinator.public_key + "\nsecret = " + coordinator.secret_key, 4)
    << "  coordinator.pub: |\n"
    << indent("public = " + coordinator.public_key, 4) << "  worker.key: |\n"
    << indent("public = " + worker.public_key + "\nsecret = " + worker.secret_key, 4)
    << "  authorized_workers: |\n"
    << indent(allowed, 4);
  s << "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: " << name << "-sweep\ndata:\n"
    << "  sweep.yaml: |\n"
    << indent(sweep_text, 4);
  s << "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: " << name << "-coordinator\n"
    << "spec:\n  selector:\n    app: " << name << "-coordinator\n  ports:\n  - port: " << o.port
    << "\n    targetPort: " << o.port << "\n";
  s << "---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: " << name << "-coordinator\n"
    << "spec:\n  replicas: 1\n  selector:\n    matchLabels:\n      app: " << name
    << "-coordinator\n"
    << "  template:\n    metadata:\n      labels:\n        app: " << name << "-coordinator\n"
    << "    spec:\n      containers:\n      - name: coordinator\n        image: " << o.image << "\n"
    << "        command: [\"masktune\", \"coordinator\", \"/sweep/sweep.yaml\", \"--bind\", "
       "\"tcp://0.0.0.0:"
    << o.port << "\", \"--db\", \"/data/" << study
    << ".db\", \"--keys\", \"/keys\", \"--max-trials\", \"" << o.max_trials << "\"]\n"
    << "        ports:\n        - containerPort: " << o.port << "\n"
    << "        volumeMounts:\n        - {name: keys, mountPath: /keys, readOnly: true}\n"
    << "        - {name: sweep, mountPath: /sweep, readOnly: true}\n"
    << "        - {name: data, mountPath: /data}\n"
    << "      volumes:\n      - name: keys\n        secret: {secretName: " << name
    << "-keys, defaultMode: 0400}\n"
    << "      - name: sweep\n        configMap: {name: " << name << "-sweep}\n"
    << "      - name: data\n        emptyDir: {}   # replace with a PersistentVolumeClaim to "
       "resume across restarts\n";
  s << "---\napiVersion: batch/v1\nkind: Job\nmetadata:\n  name: " << name << "-workers\n"
    << "spec:\n  parallelism: " << o.workers << "\n  completions: " << o.workers
    << "\n  backoffLimit: 100\n  template:\n    spec:\n      restartPolicy: OnFailure\n"
    << "      containers:\n      - name: worker\n        image: " << o.image << "\n"
    << "        command: [\"masktune\", \"worker\", \"--connect\", \"tcp://" << name
    << "-coordinator:" << o.port << "\", \"--keys\", \"/keys\"]\n"
    << "        resources:\n          limits:\n            nvidia.com/gpu: "
    << std::max(0, o.gpus_per_node) << "\n"
    << "        volumeMounts:\n        - {name: keys, mountPath: /keys, readOnly: true}\n"
    << "      volumes:\n      - name: keys\n        secret: {secretName: " << name
    << "-keys, defaultMode: 0400}\n";
  return s.str();
}

Action AddLaunchCommand(CLI::App& app) {
  auto o = std::make_shared<LaunchOptions>();
  auto kind = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand(
      "launch",
      "Start a sweep on a cluster: the scheduler (SLURM or Kubernetes) starts the\n"
      "workers, masktune's coordinator runs the study; CURVE keys secure every link.");
  cmd->add_option("SCHEDULER", *kind, "slurm or k8s")
      ->required()
      ->check(CLI::IsMember({"slurm", "k8s"}));
  cmd->add_option("FILE", o->file, "the sweep file (YAML)")->required();
  cmd->add_option("--keys", o->keys,
                  "CURVE key folder (default: KEYS next to the database; created)");
  cmd->add_option("--db", o->db,
                  "SQLite database on a shared filesystem (default: the file's storage)");
  cmd->add_option("--nodes", o->nodes, "nodes (slurm)")->check(CLI::PositiveNumber);
  cmd->add_option("--gpus-per-node", o->gpus_per_node,
                  "GPUs per node, one worker each (0: one CPU worker per node)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--partition", o->partition, "SLURM partition");
  cmd->add_option("--account", o->account, "SLURM account");
  cmd->add_option("--time", o->time, "SLURM time limit HH:MM:SS");
  cmd->add_option("--coordinator", o->coordinator,
                  "tcp://HOST:PORT of a running coordinator: submit a job array of workers only");
  cmd->add_option("--port", o->port, "the coordinator's port")->check(CLI::Range(1, 65535));
  cmd->add_option("--workers", o->workers,
                  "worker pods (k8s); workers per node on CPU nodes (slurm, --gpus-per-node 0)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--image", o->image, "container image with masktune (k8s)");
  cmd->add_option("--out", o->out,
                  "write the script/manifests here (default: beside the database)");
  cmd->add_flag("--dry-run", o->dry_run, "print what would be submitted; submit nothing");
  cmd->add_option("--max-trials", o->max_trials,
                  "refuse plans of more trials than this (default 1000000)")
      ->check(CLI::PositiveNumber);
  cmd->footer("Exit codes: 0 submitted (or printed), 2 bad input, 1 the scheduler refused.");
  return [o, kind] {
    const MaskerRegistry registry = MaskerRegistry::WithBuiltins();
    configs::ParseOptions parse;
    parse.max_trials = o->max_trials;
    auto sweep = configs::LoadSweep(o->file, registry, parse);
    if (!sweep.ok()) return LaunchFail(sweep.status().message());
    std::ifstream f(o->file);
    std::stringstream text;
    text << f.rdbuf();
    o->file = Abs(o->file);
    o->db = Abs(o->db.empty() ? sweep->storage : o->db);
    o->binary = SelfPath();
    if (o->keys.empty()) o->keys = (std::filesystem::path(o->db).parent_path() / "keys").string();
    o->keys = Abs(o->keys);
    if (!std::filesystem::exists(o->keys + "/coordinator.key")) {
      if (Status s = security::WriteKeyDir(o->keys); !s.ok()) return LaunchFail(s.message());
    }
    if (*kind == "k8s") {
      auto server = security::LoadServerKeys(o->keys);
      auto client = security::LoadClientKeys(o->keys);
      if (!server.ok()) return LaunchFail(server.status().message());
      if (!client.ok()) return LaunchFail(client.status().message());
      std::string allowed;
      for (const auto& k : server->allowed) allowed += k + "\n";
      const std::string yaml =
          K8sManifests(*o, sweep->study, text.str(), server->coordinator, client->worker, allowed);
      if (!o->out.empty()) std::ofstream(o->out) << yaml;
      std::printf("%s", yaml.c_str());
      return kExitOk;
    }
    const std::string script = SlurmScript(*o, sweep->study);
    const std::string path = o->out.empty() ? (std::filesystem::path(o->db).parent_path() /
                                               ("masktune-" + sweep->study + ".sbatch"))
                                                  .string()
                                            : o->out;
    std::ofstream(path) << script;
    if (o->dry_run) {
      std::printf("%s", script.c_str());
      std::fprintf(stderr, "wrote %s (not submitted: --dry-run)\n", path.c_str());
      return kExitOk;
    }
    const std::string command = "sbatch --parsable " + Quote(path) + " 2>&1";
    std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(command.c_str(), "r"), pclose);
    if (!pipe) return LaunchFail("cannot run sbatch");
    std::string reply;
    std::array<char, 256> buf{};
    while (fgets(buf.data(), buf.size(), pipe.get())) reply += buf.data();
    const int rc = pclose(pipe.release());
    std::smatch m;
    if (rc != 0 || !std::regex_search(reply, m, std::regex("^([0-9]+)"))) {
      std::fprintf(stderr, "masktune launch: sbatch refused %s: %s", path.c_str(), reply.c_str());
      return kExitFailure;
    }
    std::printf("submitted job %s (%s)\nfollow it: masktune status %s --db %s\n",
                m[1].str().c_str(), path.c_str(), sweep->study.c_str(), o->db.c_str());
    return kExitOk;
  };
}

}  // namespace masktune::cli
