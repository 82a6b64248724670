#!/usr/bin/env bash
# Stops the local one-node Slurm cluster started by start.sh. `--purge` also deletes its state
# (job records, accounting database): job ids then restart at 1.
set -uo pipefail
STATE="${MIXERSTACK_SLURM_STATE:-/var/lib/mixerstack-slurm}"
PURGE=0
[ "${1:-}" = "--purge" ] && PURGE=1

stop_pid() {  # stop_pid NAME PIDFILE
  [ -s "$2" ] || return 0
  local pid; pid="$(cat "$2")"
  if kill -0 "$pid" 2>/dev/null; then
    echo "[slurm-local] stopping $1 ($pid)"
    kill "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  rm -f "$2"
}

command -v scancel >/dev/null && scancel --user=root --quiet 2>/dev/null
stop_pid slurmd "$STATE/run/slurmd.pid"
stop_pid slurmctld "$STATE/run/slurmctld.pid"
stop_pid slurmdbd "$STATE/run/slurmdbd.pid"
stop_pid mariadb "$STATE/mysql/mysqld.pid"
# munged is shared with anything else on the machine that uses munge: left running.
if [ "$PURGE" = 1 ]; then
  echo "[slurm-local] removing $STATE"
  rm -rf "$STATE"
fi
exit 0
