#!/usr/bin/env bash
# A one-node SLURM cluster on this machine for the launch tests: installs
# slurm-wlm and munge if missing, writes a slurm.conf for localhost under
# $SLURM_LOCAL (default /tmp/masktune-slurm), and starts munged, slurmctld
# and slurmd. Idempotent: exits 0 at once when the cluster answers. Exit 3
# when the daemons cannot start here (the tests then skip, saying why).
set -euo pipefail
# Anything that fails on the way means no cluster here: exit 3, saying where.
trap 'echo "slurm_local: setup failed at line $LINENO: $BASH_COMMAND" >&2; exit 3' ERR
base=${SLURM_LOCAL:-/tmp/masktune-slurm}
export SLURM_CONF="$base/slurm.conf"
if [ -f "$SLURM_CONF" ] && sinfo -h >/dev/null 2>&1; then exit 0; fi
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
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
# munge: a key and the daemon (its default socket path, which the clients use).
if ! pgrep -x munged >/dev/null; then
  mkdir -p /etc/munge /var/run/munge /var/log/munge /var/lib/munge
  [ -f /etc/munge/munge.key ] || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  chmod 700 /etc/munge; chmod 400 /etc/munge/munge.key
  chown -R "$user" /etc/munge /var/run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
  munged --force || { echo "slurm_local: munged does not start here" >&2; exit 3; }
fi
pgrep -x slurmctld >/dev/null || slurmctld -f "$SLURM_CONF" || { echo "slurm_local: slurmctld does not start" >&2; exit 3; }
pgrep -x slurmd >/dev/null || slurmd -f "$SLURM_CONF" || { echo "slurm_local: slurmd does not start" >&2; exit 3; }
for _ in $(seq 1 30); do
  if sinfo -h -o %T 2>/dev/null | grep -qE "idle|mixed|alloc"; then exit 0; fi
  scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true
  sleep 1
done
echo "slurm_local: the node did not come up; see $base/log" >&2
exit 3
