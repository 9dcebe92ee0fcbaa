#!/usr/bin/env bash
# Stop the one-node cluster that scripts/slurm/start_cluster.sh DIR started, and remove DIR:
#
#   scripts/slurm/stop_cluster.sh /tmp/slurm-test
#
# Only the daemons named by the pid files in DIR are signalled (TERM, then KILL after 10 s).
# With --keep, DIR (logs, state) is left in place for reading.
set -euo pipefail

die() { echo "stop_cluster.sh: $*" >&2; exit 1; }

keep=0
if [[ ${1:-} == --keep ]]; then keep=1; shift; fi
[[ $# -eq 1 ]] || die "usage: stop_cluster.sh [--keep] DIR"
[[ -d "$1" ]] || die "$1 is not a folder"
dir=$(cd "$1" && pwd)
[[ -e "$dir/slurm.conf" || -e "$dir/munge" ]] || die "$dir holds no cluster of start_cluster.sh"

stop() {  # stop PIDFILE: TERM the process it names, wait up to 10 s, then KILL
  local pidfile=$1 pid
  [[ -s "$pidfile" ]] || return 0
  pid=$(cat "$pidfile")
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
}

# Jobs first, so that no slurmstepd outlives its slurmd.
if [[ -e "$dir/slurm.conf" ]] && [[ -s "$dir/slurmctld.pid" ]]; then
  export SLURM_CONF="$dir/slurm.conf"
  timeout 10 scancel --full --quiet --user=root 2>/dev/null || true
  for _ in $(seq 40); do  # KillWait is 10 s
    [[ -z $(timeout 5 squeue --noheader --states=RUNNING,COMPLETING 2>/dev/null) ]] && break
    sleep 0.5
  done
fi
stop "$dir/slurmd.pid"
stop "$dir/slurmctld.pid"
stop "$dir/munge/munged.pid"
if ((keep == 0)); then
  rm -rf "$dir"
fi
