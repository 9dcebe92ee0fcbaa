#!/usr/bin/env bash
# Start a one-node SLURM cluster (munged, slurmctld, slurmd) whose files all live in DIR:
#
#   sudo scripts/slurm/start_cluster.sh /tmp/slurm-test      # prints: export SLURM_CONF=...
#   eval "$(scripts/slurm/start_cluster.sh /tmp/slurm-test)"  # then sbatch, squeue, scontrol work
#   scripts/slurm/stop_cluster.sh /tmp/slurm-test
#
# For tests: needs root and Debian's `slurm-wlm` and `munge` packages
# (apt-get install -y slurm-wlm munge). The daemons run as root; munged listens on a socket in
# DIR and the SLURM ports are picked free at start, so the cluster does not touch /etc/slurm,
# /run/munge or another cluster on the same machine. A second start in the same DIR reuses the
# running cluster (and prints the same environment); a DIR holding a stopped cluster's files is
# an error: stop it (which removes them) or pick another DIR.
#
# Environment: SLURM_TEST_CPUS (default: nproc), SLURM_TEST_START_TIMEOUT_S (default 60).
set -euo pipefail

die() { echo "start_cluster.sh: $*" >&2; exit 1; }

[[ $# -eq 1 ]] || die "usage: start_cluster.sh DIR (a folder for the cluster's state, logs and sockets)"
for program in munged mungekey slurmctld slurmd sinfo scontrol; do
  command -v "$program" >/dev/null || die "$program not found: apt-get install -y slurm-wlm munge"
done
[[ $(id -u) -eq 0 ]] || die "must run as root (the daemons run as root)"

mkdir -p "$1"
dir=$(cd "$1" && pwd)
conf="$dir/slurm.conf"

alive() { [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

if [[ -e "$conf" ]]; then
  if alive "$dir/slurmctld.pid" && alive "$dir/slurmd.pid" && alive "$dir/munge/munged.pid"; then
    echo "export SLURM_CONF=$conf"
    exit 0
  fi
  die "$dir holds a cluster that is not running: run scripts/slurm/stop_cluster.sh $dir first"
fi

host=$(hostname -s)
cpus=${SLURM_TEST_CPUS:-$(nproc)}
# slurmd refuses a node whose RealMemory exceeds what it finds: stay 10% below MemTotal.
memory_mb=$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
ctld_port=$(free_port)
slurmd_port=$(free_port)
while [[ $slurmd_port == "$ctld_port" ]]; do slurmd_port=$(free_port); done

mkdir -p "$dir/munge" "$dir/state" "$dir/spool" "$dir/log"
chmod 0700 "$dir/munge"
mungekey --create --keyfile="$dir/munge/munge.key" --force
chmod 0400 "$dir/munge/munge.key"
socket="$dir/munge/munge.socket"
munged --socket="$socket" --key-file="$dir/munge/munge.key" --pid-file="$dir/munge/munged.pid" \
  --log-file="$dir/log/munged.log" --seed-file="$dir/munge/munged.seed" --force

cat >"$conf" <<EOF
# One-node test cluster written by scripts/slurm/start_cluster.sh
ClusterName=brainalign
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire also sets how long a requeued job waits before it may start again (default 120 s)
AuthInfo=socket=$socket,cred_expire=5
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
MailProg=/bin/true
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobRequeue=1
ReturnToService=2
KillWait=10
# finished jobs stay visible to squeue/scontrol (there is no slurmdbd, hence no sacct)
MinJobAge=3600
SchedulerType=sched/backfill
# short scheduling passes: a requeued job starts again seconds after its begin time
SchedulerParameters=sched_interval=2,bf_interval=1
SlurmdTimeout=60
SlurmctldTimeout=60
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF

export SLURM_CONF="$conf"
slurmctld -f "$conf" -L "$dir/log/slurmctld.log"
slurmd -f "$conf" -L "$dir/log/slurmd.log"

deadline=$((SECONDS + ${SLURM_TEST_START_TIMEOUT_S:-60}))
until [[ $(sinfo --noheader --nodes="$host" --format=%t 2>/dev/null) == idle ]]; do
  if ((SECONDS > deadline)); then
    echo "start_cluster.sh: node $host not idle after ${SLURM_TEST_START_TIMEOUT_S:-60} s;" \
      "logs in $dir/log (sinfo says: $(sinfo --noheader --format='%t %E' 2>&1 | head -1))" >&2
    exit 1
  fi
  sleep 0.5
done
echo "export SLURM_CONF=$conf"
