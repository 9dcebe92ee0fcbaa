#!/usr/bin/env bash
# Stop the one-node cluster that scripts/slurm/start_cluster.sh DIR started, and remove DIR:
#
#   scripts/slurm/stop_cluster.sh /tmp/slurm-test
#
# Only the daemons named by the pid files in DIR are signalled (TERM, then KILL after 10 s);
# running jobs of that cluster are cancelled first.
# With --keep, DIR (logs, state) is left in place for reading.
set -euo pipefail

die() { echo "stop_cluster.sh: $*" >&2; exit 1; }

keep=0
if [[ ${1:-} == --keep ]]; then keep=1; shift; fi
[[ $# -eq 1 ]] || die "usage: stop_cluster.sh [--keep] DIR"
[[ -d "$1" ]] || die "$1 is not a folder"
dir=$(cd "$1" && pwd)
[[ -e "$dir/slurm.conf" || -e "$dir/munge" ]] || die "$dir holds no cluster of start_cluster.sh"

pids=()
for pidfile in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munge/munged.pid"; do
  [[ -s "$pidfile" ]] && pids+=("$(cat "$pidfile")")
done

stop_all() {  # TERM the daemons together, wait up to 10 s, then KILL what is left
  local pid alive
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 100); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    ((alive)) || return 0
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
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
if ((${#pids[@]})); then stop_all; fi
if ((keep == 0)); then
  rm -rf "$dir"
fi
