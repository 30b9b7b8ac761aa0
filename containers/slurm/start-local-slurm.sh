#!/usr/bin/env bash
# Start a real one-node SLURM cluster (Debian 12 / Slurm 22.05) on localhost,
# for CI tests of Snakemake's SLURM executor. Idempotent: safe to re-run.
#
# Must run as root (no systemd needed: all daemons are started directly).
#
# Environment knobs:
#   SLURM_ACCOUNTING=dbd   (default) slurmdbd + MariaDB: `sacct` lists jobs
#                          permanently (what the snakemake slurm plugin polls).
#   SLURM_ACCOUNTING=none  no database (faster start, no MariaDB). In Slurm
#                          22.05 `sacct` then only says "Slurm accounting
#                          storage is disabled" (there is no filetxt accounting
#                          any more), so snakemake needs
#                          `--slurm-status-command squeue`; squeue sees jobs
#                          for MinJobAge seconds (SLURM_MIN_JOB_AGE, def. 3600).
#   SLURM_PARTITION=debug  name of the single (default) partition.
#   SLURM_CLUSTER=localcluster
#   SLURM_WAIT_S=60        how long to wait for the node to become idle.
#
# Stop everything with: containers/slurm/stop-local-slurm.sh
set -euo pipefail

ACCOUNTING="${SLURM_ACCOUNTING:-dbd}"
PARTITION="${SLURM_PARTITION:-debug}"
CLUSTER="${SLURM_CLUSTER:-localcluster}"
WAIT_S="${SLURM_WAIT_S:-60}"
MIN_JOB_AGE="${SLURM_MIN_JOB_AGE:-3600}"

CONF_DIR=/etc/slurm
LOG_DIR=/var/log/slurm
RUN_DIR=/run/slurm
CTLD_SPOOL=/var/spool/slurmctld
D_SPOOL=/var/spool/slurmd
DB_DIR=/var/lib/slurm-local-mysql
DB_SOCK=/run/mysqld/mysqld.sock

die() { echo "start-local-slurm: ERROR: $*" >&2; exit 1; }
log() { echo "start-local-slurm: $*"; }

[ "$(id -u)" -eq 0 ] || die "must run as root"
case "$ACCOUNTING" in dbd|none) ;; *) die "SLURM_ACCOUNTING must be 'dbd' or 'none' (got '$ACCOUNTING')";; esac

# ---------------------------------------------------------------- packages
pkgs=(slurm-wlm munge)
[ "$ACCOUNTING" = dbd ] && pkgs+=(slurmdbd mariadb-server)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]} from apt"
  export DEBIAN_FRONTEND=noninteractive
  # keep package postinst scripts from starting their own daemons (mariadb,
  # munge, slurm*): this script starts them itself with its own config
  own_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; own_policy=1
  fi
  apt_rc=0
  { apt-get update -qq && apt-get install -y -q --no-install-recommends "${missing[@]}"; } \
    >/tmp/start-local-slurm-apt.log 2>&1 || apt_rc=$?
  [ "$own_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
  [ "$apt_rc" = 0 ] || { tail -20 /tmp/start-local-slurm-apt.log >&2; die "apt-get install ${missing[*]} failed (log: /tmp/start-local-slurm-apt.log)"; }
fi
for b in slurmctld slurmd munged sinfo sacct; do
  command -v "$b" >/dev/null || die "$b not found after install"
done

# ---------------------------------------------------------------- helpers
pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
wait_for() { # wait_for SECONDS DESCRIPTION CMD...
  local t="$1" what="$2"; shift 2
  local end=$((SECONDS + t))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$end" ] || return 1
    sleep 0.5
  done
}

# ---------------------------------------------------------------- munge
mkdir -p /etc/munge /run/munge /var/log/munge /var/lib/munge
if [ ! -s /etc/munge/munge.key ]; then
  log "creating munge key"
  if command -v mungekey >/dev/null; then mungekey --create --force --keyfile=/etc/munge/munge.key
  else dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none; fi
fi
chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge
chmod 0700 /etc/munge; chmod 0400 /etc/munge/munge.key; chmod 0755 /run/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  log "starting munged"
  rm -f /run/munge/munged.pid
  # --force: tolerate a stale socket left by a killed munged
  runuser -u munge -- /usr/sbin/munged --force || die "munged failed to start (see /var/log/munge/munged.log)"
  wait_for 10 munge bash -c 'munge -n | unmunge' || die "munge does not work (see /var/log/munge/munged.log)"
fi

# ---------------------------------------------------------------- node facts
NODE="$(hostname -s)"
[ -n "$NODE" ] || die "hostname -s is empty"
# make sure the short host name resolves (slurmd/slurmctld need it)
getent hosts "$NODE" >/dev/null || { log "adding $NODE to /etc/hosts"; echo "127.0.0.1 $NODE" >>/etc/hosts; }
CONF_LINE="$(slurmd -C | head -1)"   # NodeName=... CPUs=... RealMemory=...
CPUS="$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$CONF_LINE")"
SOCKETS="$(sed -n 's/.*SocketsPerBoard=\([0-9]*\).*/\1/p' <<<"$CONF_LINE")"
CORES="$(sed -n 's/.*CoresPerSocket=\([0-9]*\).*/\1/p' <<<"$CONF_LINE")"
THREADS="$(sed -n 's/.*ThreadsPerCore=\([0-9]*\).*/\1/p' <<<"$CONF_LINE")"
MEM="$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$CONF_LINE")"
[ -n "$CPUS" ] && [ -n "$MEM" ] || die "could not parse 'slurmd -C': $CONF_LINE"
# a bit below what slurmd reports, so the node is never drained for low memory
REAL_MEM=$(( MEM * 95 / 100 ))

# ---------------------------------------------------------------- slurm.conf
mkdir -p "$CONF_DIR" "$LOG_DIR" "$RUN_DIR" "$CTLD_SPOOL" "$D_SPOOL"
if [ "$ACCOUNTING" = dbd ]; then
  ACCT_LINES="AccountingStorageType=accounting_storage/slurmdbd
AccountingStoreFlags=job_comment
AccountingStorageHost=localhost
AccountingStoragePort=6819
AccountingStorageEnforce=associations"
else
  ACCT_LINES="AccountingStorageType=accounting_storage/none"
fi
NEW_CONF="$(cat <<EOF
# Generated by containers/slurm/start-local-slurm.sh -- one-node local cluster
ClusterName=$CLUSTER
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$CTLD_SPOOL
SlurmdSpoolDir=$D_SPOOL
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MinJobAge=$MIN_JOB_AGE
KillWait=5
InactiveLimit=0
Waittime=0
SlurmctldTimeout=30
SlurmdTimeout=60
DefMemPerCPU=100
$ACCT_LINES
JobCompType=jobcomp/none
MailProg=/bin/true
NodeName=$NODE CPUs=$CPUS Sockets=$SOCKETS CoresPerSocket=$CORES ThreadsPerCore=$THREADS RealMemory=$REAL_MEM State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
)"
CONF_CHANGED=0
if [ ! -f "$CONF_DIR/slurm.conf" ] || [ "$(cat "$CONF_DIR/slurm.conf")" != "$NEW_CONF" ]; then
  printf '%s\n' "$NEW_CONF" >"$CONF_DIR/slurm.conf"
  CONF_CHANGED=1
fi
chmod 0644 "$CONF_DIR/slurm.conf"
# no cgroups are used (proctrack/linuxproc, task/none); a minimal cgroup.conf
# keeps slurmd from complaining if it looks for one
[ -f "$CONF_DIR/cgroup.conf" ] || echo "CgroupPlugin=autodetect" >"$CONF_DIR/cgroup.conf"

# ---------------------------------------------------------------- database + slurmdbd
if [ "$ACCOUNTING" = dbd ]; then
  command -v slurmdbd >/dev/null || die "slurmdbd not found"
  command -v mariadbd >/dev/null || die "mariadbd not found"
  mkdir -p /run/mysqld "$DB_DIR"; chown mysql:mysql /run/mysqld "$DB_DIR"
  if [ ! -d "$DB_DIR/mysql" ]; then
    log "initialising MariaDB data dir $DB_DIR"
    mariadb-install-db --user=mysql --datadir="$DB_DIR" --auth-root-authentication-method=socket \
      --skip-test-db >/tmp/start-local-slurm-mariadb-init.log 2>&1 \
      || { tail -20 /tmp/start-local-slurm-mariadb-init.log >&2; die "mariadb-install-db failed"; }
  fi
  if ! mariadb-admin --socket="$DB_SOCK" ping >/dev/null 2>&1; then
    log "starting MariaDB"
    # small footprint; TCP off, unix socket only
    nohup mariadbd --user=mysql --datadir="$DB_DIR" --socket="$DB_SOCK" \
      --pid-file=/run/mysqld/slurm-local-mysqld.pid --skip-networking \
      --innodb-buffer-pool-size=64M --innodb-log-file-size=16M \
      --log-error="$LOG_DIR/mariadb.log" >/dev/null 2>&1 &
    wait_for 60 mariadb mariadb-admin --socket="$DB_SOCK" ping \
      || { tail -20 "$LOG_DIR/mariadb.log" >&2; die "MariaDB did not come up"; }
  fi
  mariadb --socket="$DB_SOCK" -uroot <<'SQL' || die "creating slurm database/user failed"
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmdbpass';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
SQL
  cat >"$CONF_DIR/slurmdbd.conf" <<EOF
# Generated by containers/slurm/start-local-slurm.sh
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
PidFile=$RUN_DIR/slurmdbd.pid
LogFile=$LOG_DIR/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=localhost
StoragePort=3306
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass=slurmdbpass
EOF
  # slurmdbd refuses to start unless slurmdbd.conf is 0600 and owned by SlurmUser
  chmod 0600 "$CONF_DIR/slurmdbd.conf"
  # MariaDB runs with --skip-networking: point the client lib at the socket
  # via localhost (libmysqlclient uses the unix socket for host=localhost).
  if ! pid_alive "$RUN_DIR/slurmdbd.pid"; then
    log "starting slurmdbd"
    slurmdbd || die "slurmdbd failed to start (see $LOG_DIR/slurmdbd.log)"
  fi
  wait_for 60 slurmdbd bash -c "sacctmgr -n list cluster >/dev/null" \
    || { tail -20 "$LOG_DIR/slurmdbd.log" >&2; die "slurmdbd does not answer"; }
  # cluster, account and root's association (needed because AccountingStorageEnforce=associations)
  sacctmgr -n list cluster format=cluster%-40 | grep -qw "$CLUSTER" \
    || sacctmgr -i add cluster "$CLUSTER" >/dev/null || die "sacctmgr add cluster failed"
  sacctmgr -n list account format=account%-40 | grep -qw local \
    || sacctmgr -i add account local Description="local CI" Organization=ci >/dev/null || die "sacctmgr add account failed"
  for u in root ${SUDO_USER:-}; do
    sacctmgr -n list assoc user="$u" account=local cluster="$CLUSTER" format=user%-40 | grep -qw "$u" \
      || sacctmgr -i add user "$u" Account=local DefaultAccount=local Cluster="$CLUSTER" >/dev/null \
      || die "sacctmgr add user $u failed"
  done
fi

# ---------------------------------------------------------------- slurmctld + slurmd
if pid_alive "$RUN_DIR/slurmctld.pid" && [ "$CONF_CHANGED" = 1 ]; then
  log "slurm.conf changed: restarting slurm daemons"
  for p in slurmd slurmctld; do
    if pid_alive "$RUN_DIR/$p.pid"; then
      pid="$(cat "$RUN_DIR/$p.pid")"; kill "$pid" || true
      wait_for 30 "$p exit" bash -c "! kill -0 $pid" || die "$p (pid $pid) did not stop"
    fi
  done
fi
if ! pid_alive "$RUN_DIR/slurmctld.pid"; then
  log "starting slurmctld"
  slurmctld || die "slurmctld failed to start (see $LOG_DIR/slurmctld.log)"
fi
wait_for 30 slurmctld scontrol ping \
  || { tail -20 "$LOG_DIR/slurmctld.log" >&2; die "slurmctld does not answer"; }
if ! pid_alive "$RUN_DIR/slurmd.pid"; then
  log "starting slurmd"
  slurmd || die "slurmd failed to start (see $LOG_DIR/slurmd.log)"
fi

node_idle() { sinfo -h -n "$NODE" -o '%t' | grep -Eq '^(idle|mix|alloc)'; }
if ! wait_for "$WAIT_S" node node_idle; then
  # a node left DOWN/DRAIN from an earlier run: resume it once
  scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
  wait_for 20 node node_idle || {
    sinfo -N -l >&2; tail -20 "$LOG_DIR/slurmd.log" >&2
    die "node $NODE did not become idle within ${WAIT_S}s"
  }
fi

log "ready: cluster=$CLUSTER node=$NODE cpus=$CPUS mem=${REAL_MEM}MB partition=$PARTITION accounting=$ACCOUNTING"
sinfo
cat <<EOF
start-local-slurm: submit e.g.:  sbatch -p $PARTITION --wrap 'hostname'   ;  check with: sacct -X
start-local-slurm: snakemake:    snakemake --executor slurm --jobs 2 --default-resources slurm_partition=$PARTITION$([ "$ACCOUNTING" = dbd ] && echo " slurm_account=local" || echo " --slurm-no-account --slurm-status-command squeue")
start-local-slurm: stop with:    $(cd "$(dirname "$0")" && pwd)/stop-local-slurm.sh
EOF
