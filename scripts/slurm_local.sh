#!/usr/bin/env bash
# A one-node SLURM cluster on this machine for the launch tests.
#
#   slurm_local.sh [start [OWNER_PID]]   # default
#   slurm_local.sh stop [OWNER_PID]
#
# start: installs slurm-wlm and munge with apt-get if missing (saying so on
# stderr), writes /etc/munge/munge.key if there is none, writes a slurm.conf
# for localhost under $SLURM_LOCAL (default /tmp/masktune-slurm), and starts
# munged, slurmctld and slurmd, each only if it is not running already. It
# names on stderr the daemons it started and records them (name and pid) in
# $SLURM_LOCAL/started. Exits 0 once the cluster answers (at once when it
# already did); exit 3 when the daemons cannot start here (the tests then
# skip, saying why).
#
# stop: stops the daemons recorded by start, and only those: daemons that
# were running before are left alone. OWNER_PID (default: the caller) names
# who uses the cluster; start registers it, stop unregisters it, and the
# daemons are stopped only when no other live owner is registered, so two
# test runs at once do not pull the cluster from under each other. A record
# whose owners all died without stopping is forgotten at the next start:
# those daemons then count as already running.
set -euo pipefail
cmd=${1:-start}
owner=${2:-$PPID}
case "$cmd" in
  start | stop) ;;
  *) echo "usage: slurm_local.sh [start|stop] [OWNER_PID]" >&2; exit 2 ;;
esac
# Anything that fails on the way means no cluster here: exit 3, saying where.
trap 'echo "slurm_local: setup failed at line $LINENO: $BASH_COMMAND" >&2; exit 3' ERR
base=${SLURM_LOCAL:-/tmp/masktune-slurm}
export SLURM_CONF="$base/slurm.conf"
record="$base/started"
users="$base/users"
mkdir -p "$base" "$users"
exec 9>"$base/lock"
flock -w 300 9  # one start or stop at a time (the daemons must not inherit fd 9)

# Fields of /proc/PID/stat after the command name: state is the 1st, the
# start time (clock ticks since boot) the 20th. Empty when there is no PID.
stat_field() { sed -E 's/^.*\) //' "/proc/$1/stat" 2>/dev/null | awk -v n="$2" '{print $n}' || true; }
# The start time: with the pid, it names a process even after the pid is reused.
started_at() { stat_field "$1" 20; }
# Whether PID runs (a zombie has ended).
running() { local s; s=$(stat_field "$1" 1); [ -n "$s" ] && [ "$s" != Z ]; }
# The registered owners still alive; the dead ones are unregistered.
live_owners() {
  local f p
  for f in "$users"/*; do
    [ -e "$f" ] || continue
    p=${f##*/}
    if [ -n "$(started_at "$p")" ] && [ "$(started_at "$p")" = "$(cat "$f")" ]; then
      echo "$p"
    else
      rm -f "$f"
    fi
  done
}

if [ "$cmd" = stop ]; then
  rm -f "$users/$owner"
  [ -z "$(live_owners)" ] || exit 0  # another owner still uses the cluster
  [ -s "$record" ] || { rm -f "$record"; exit 0; }
  pids=() names=()
  while read -r name pid; do
    # Only a process that is still the daemon we started (the pid not reused).
    if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ]; then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid") names+=("$name")
    fi
  done < <(tac "$record")  # slurmd, slurmctld, then munged
  for _ in $(seq 1 100); do
    alive=0
    for pid in "${pids[@]}"; do if running "$pid"; then alive=1; fi; done
    [ "$alive" -eq 0 ] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do if running "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi; done
  rm -f "$record"
  [ ${#names[@]} -eq 0 ] || echo "slurm_local: stopped ${names[*]}" >&2
  exit 0
fi

# start
others=$(live_owners)
[ -n "$others" ] || rm -f "$record"  # a record without a live owner is stale
if [ -n "$(started_at "$owner")" ]; then started_at "$owner" >"$users/$owner"; fi
if [ -f "$SLURM_CONF" ] && sinfo -h >/dev/null 2>&1; then exit 0; fi
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  echo "slurm_local: installing slurm-wlm and munge with apt-get (for the SLURM test)" >&2
  sudo_cmd=(); [ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq >/dev/null
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi
mkdir -p "$base"/{state,spool,log,munge}
host=$(hostname -s)
cpus=$(nproc)
mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 512 ))
user=$(id -un)
cat > "$SLURM_CONF" <<CONF
ClusterName=masktune
SlurmctldHost=$host
SlurmUser=$user
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$base/state
SlurmdSpoolDir=$base/spool
SlurmctldPidFile=$base/slurmctld.pid
SlurmdPidFile=$base/slurmd.pid
SlurmctldLogFile=$base/log/slurmctld.log
SlurmdLogFile=$base/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
SchedulerType=sched/backfill
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF
# Records a daemon this call started, by the pid file it writes once it has
# detached ($base/NAME.pid, removed before the start): the process that
# started it may still be there, under the same name, for a moment.
started=()
note_started() {
  local pid=""
  for _ in $(seq 1 100); do
    pid=$(cat "$base/$1.pid" 2>/dev/null || true)
    if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ]; then break; fi
    pid=""
    sleep 0.05
  done
  [ -n "$pid" ] || pid=$(pgrep -x -o "$1" || true)  # no pid file after 5 s: the oldest
  if [ -n "$pid" ]; then echo "$1 $pid" >>"$record"; fi
  started+=("$1")
}
# munge: a key and the daemon (its default socket path, which the clients use).
if ! pgrep -x munged >/dev/null; then
  mkdir -p /etc/munge /var/run/munge /var/log/munge /var/lib/munge
  if [ ! -f /etc/munge/munge.key ]; then
    echo "slurm_local: writing a new munge key, /etc/munge/munge.key" >&2
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
  chmod 700 /etc/munge; chmod 400 /etc/munge/munge.key
  chown -R "$user" /etc/munge /var/run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
  rm -f "$base/munged.pid"
  munged --force --pid-file="$base/munged.pid" 9>&- || { echo "slurm_local: munged does not start here" >&2; exit 3; }
  note_started munged
fi
if ! pgrep -x slurmctld >/dev/null; then
  rm -f "$base/slurmctld.pid"
  slurmctld -f "$SLURM_CONF" 9>&- || { echo "slurm_local: slurmctld does not start" >&2; exit 3; }
  note_started slurmctld
fi
if ! pgrep -x slurmd >/dev/null; then
  rm -f "$base/slurmd.pid"
  slurmd -f "$SLURM_CONF" 9>&- || { echo "slurm_local: slurmd does not start" >&2; exit 3; }
  note_started slurmd
fi
[ ${#started[@]} -eq 0 ] ||
  echo "slurm_local: started ${started[*]} (\`scripts/slurm_local.sh stop\` stops them)" >&2
for _ in $(seq 1 30); do
  if sinfo -h -o %T 2>/dev/null | grep -qE "idle|mixed|alloc"; then exit 0; fi
  scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true
  sleep 1
done
echo "slurm_local: the node did not come up; see $base/log" >&2
exit 3
