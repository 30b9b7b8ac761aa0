#!/usr/bin/env bash
# Stop the local one-node SLURM cluster started by start-local-slurm.sh.
# Idempotent. Keeps config, state and the accounting database; pass --purge
# to also delete them (the next start then begins from scratch).
set -uo pipefail

RUN_DIR=/run/slurm
DB_DIR=/var/lib/slurm-local-mysql
log() { echo "stop-local-slurm: $*"; }

stop_pidfile() { # stop_pidfile NAME PIDFILE
  local name="$1" pf="$2" pid
  [ -s "$pf" ] || return 0
  pid="$(cat "$pf")"
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping $name (pid $pid)"
    kill "$pid" 2>/dev/null
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && { log "$name still alive, sending KILL"; kill -9 "$pid" 2>/dev/null; }
  fi
  rm -f "$pf"
}

stop_pidfile slurmd    "$RUN_DIR/slurmd.pid"
stop_pidfile slurmctld "$RUN_DIR/slurmctld.pid"
stop_pidfile slurmdbd  "$RUN_DIR/slurmdbd.pid"
stop_pidfile mariadbd  /run/mysqld/slurm-local-mysqld.pid
stop_pidfile munged    /run/munge/munged.pid

if [ "${1:-}" = "--purge" ]; then
  log "purging state, logs and accounting database"
  rm -rf /var/spool/slurmctld /var/spool/slurmd /var/log/slurm "$DB_DIR" \
         /etc/slurm/slurm.conf /etc/slurm/slurmdbd.conf /etc/slurm/cgroup.conf
fi
log "done"
