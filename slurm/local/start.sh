#!/usr/bin/env bash
# Starts a one-node Slurm cluster on loopback (slurmctld + slurmd + slurmdbd with a private MariaDB, munge),
# for tests and CI. Root on Debian 12, no systemd: every daemon is started in the background here.
#
# Idempotent: daemons already running with the same configuration are left alone (then it takes < 1 s).
# Installs the Debian packages on first use (~10 s). Settings (environment):
#   MIXERSTACK_SLURM_STATE   state directory           (default /var/lib/mixerstack-slurm)
#   MIXERSTACK_SLURM_CPUS    CPUs the node advertises  (default max(8, nproc); config_overrides allows more)
#   MIXERSTACK_SLURM_MEM_PER_CPU  DefMemPerCPU in MB   (default 1024)
# Stop with slurm/local/stop.sh (--purge also wipes accounting and job state).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
STATE="${MIXERSTACK_SLURM_STATE:-/var/lib/mixerstack-slurm}"
CPUS="${MIXERSTACK_SLURM_CPUS:-$(( $(nproc) > 8 ? $(nproc) : 8 ))}"
DEF_MEM_PER_CPU="${MIXERSTACK_SLURM_MEM_PER_CPU:-1024}"
CTLD_PORT=6817 SLURMD_PORT=6818 DBD_PORT=6819 DB_PORT="${MIXERSTACK_SLURM_DB_PORT:-3307}"
DB="$STATE/mysql"
PACKAGES="slurmctld slurmd slurm-client slurmdbd munge mariadb-server"

log() { echo "[slurm-local] $*"; }
die() { echo "[slurm-local] error: $*" >&2; exit 1; }
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

[ "$(id -u)" = 0 ] || die "must run as root (it installs packages and starts Slurm daemons); run: sudo $0"

# --- packages -------------------------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v slurmdbd >/dev/null \
   || ! command -v munged >/dev/null || ! command -v mariadb-admin >/dev/null \
   || ! command -v mariadbd >/dev/null || ! command -v sbatch >/dev/null; then
  command -v apt-get >/dev/null || die "Slurm is not installed and apt-get is absent; install: $PACKAGES"
  log "installing $PACKAGES"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q --no-install-recommends $PACKAGES >"$STATE.apt.log" 2>&1; then
    apt-get update -q >>"$STATE.apt.log" 2>&1 || true
    apt-get install -y -q --no-install-recommends $PACKAGES >>"$STATE.apt.log" 2>&1 \
      || die "apt-get install failed; see $STATE.apt.log"
  fi
fi

mkdir -p "$STATE"/{run,log,ctld,slurmd} "$DB"
chmod 755 "$STATE"

# --- hostname must resolve: it is the node name and submitit's MASTER_ADDR ------------------------------
HOST="$(hostname -s)"
if ! getent hosts "$HOST" >/dev/null; then
  log "adding $HOST to /etc/hosts"
  echo "127.0.0.1 $HOST" >>/etc/hosts
fi

# --- render configs; a change restarts the daemons that read them ----------------------------------------
MEM_MB=$(( CPUS * DEF_MEM_PER_CPU ))
DB_PASS_FILE="$STATE/db.pass"
[ -s "$DB_PASS_FILE" ] || { head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$DB_PASS_FILE"; chmod 600 "$DB_PASS_FILE"; }
DB_PASS="$(cat "$DB_PASS_FILE")"
render() {
  sed -e "s|@HOST@|$HOST|g" -e "s|@STATE@|$STATE|g" -e "s|@CPUS@|$CPUS|g" -e "s|@MEM_MB@|$MEM_MB|g" \
      -e "s|@DEF_MEM_PER_CPU@|$DEF_MEM_PER_CPU|g" -e "s|@CTLD_PORT@|$CTLD_PORT|g" \
      -e "s|@SLURMD_PORT@|$SLURMD_PORT|g" -e "s|@DBD_PORT@|$DBD_PORT|g" -e "s|@DB_PORT@|$DB_PORT|g" \
      -e "s|@DB_PASS@|$DB_PASS|g" "$1"
}
install_conf() {  # install_conf TEMPLATE DEST MODE -> prints "changed" when DEST changed
  local tmp; tmp="$(mktemp "$2.XXXXXX")"
  render "$1" >"$tmp"; chmod "$3" "$tmp"
  if [ -f "$2" ] && cmp -s "$tmp" "$2"; then rm -f "$tmp"; else mv -f "$tmp" "$2"; echo changed; fi
}
mkdir -p /etc/slurm
SLURM_CHANGED="$(install_conf "$HERE/slurm.conf.in" /etc/slurm/slurm.conf 644)"
DBD_CHANGED="$(install_conf "$HERE/slurmdbd.conf.in" /etc/slurm/slurmdbd.conf 600)"
# Debian's default cgroup.conf is not needed (proctrack/linuxproc); an empty plugstack is fine.

# --- munge ----------------------------------------------------------------------------------------------
mkdir -p /run/munge /var/log/munge /var/lib/munge /etc/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge
chmod 755 /run/munge; chmod 700 /etc/munge
if [ ! -s /etc/munge/munge.key ]; then
  mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  log "starting munged"
  rm -f /run/munge/munged.pid
  runuser -u munge -- munged
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
  munge -n | unmunge >/dev/null || die "munged does not answer; see /var/log/munge/munged.log"
fi

# --- private MariaDB on loopback (pid, log and socket live where the mysql user may write) ----------------
chown -R mysql:mysql "$DB"
SOCK="$DB/mysqld.sock"
sql() { mariadb --no-defaults --socket="$SOCK" -u root -e "$1"; }
if [ ! -d "$DB/data/mysql" ]; then
  log "initialising MariaDB in $DB/data"
  mariadb-install-db --no-defaults --user=mysql --datadir="$DB/data" --auth-root-authentication-method=socket \
    --skip-test-db >"$STATE/log/mariadb-install.log" 2>&1 || die "mariadb-install-db failed; see $STATE/log/mariadb-install.log"
fi
if ! alive "$DB/mysqld.pid"; then
  log "starting MariaDB on 127.0.0.1:$DB_PORT"
  setsid mariadbd --no-defaults --user=mysql --datadir="$DB/data" --socket="$SOCK" --pid-file="$DB/mysqld.pid" \
    --port="$DB_PORT" --bind-address=127.0.0.1 --log-error="$DB/error.log" --skip-name-resolve \
    --innodb-buffer-pool-size=64M </dev/null >/dev/null 2>&1 &
  for _ in $(seq 150); do mariadb-admin --no-defaults --socket="$SOCK" -u root ping >/dev/null 2>&1 && break; sleep 0.2; done
  mariadb-admin --no-defaults --socket="$SOCK" -u root ping >/dev/null 2>&1 || die "MariaDB did not start; see $DB/error.log"
fi
sql "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
     ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
     GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;"

# --- slurmdbd, then the cluster's accounting record, then slurmctld and slurmd ----------------------------
restart_if_changed() {  # restart_if_changed PIDFILE CHANGED
  if [ -n "$2" ] && alive "$1"; then kill "$(cat "$1")"; for _ in $(seq 50); do alive "$1" || break; sleep 0.1; done; fi
}
restart_if_changed "$STATE/run/slurmdbd.pid" "$DBD_CHANGED"
if ! alive "$STATE/run/slurmdbd.pid"; then
  log "starting slurmdbd"
  slurmdbd || die "slurmdbd failed; see $STATE/log/slurmdbd.log"
fi
for _ in $(seq 100); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.2; done
sacctmgr -n list cluster >/dev/null 2>&1 || die "slurmdbd does not answer; see $STATE/log/slurmdbd.log"
if ! sacctmgr -n -P list cluster format=cluster | grep -qx mixerstack; then
  sacctmgr -i add cluster mixerstack >/dev/null
fi

restart_if_changed "$STATE/run/slurmctld.pid" "$SLURM_CHANGED"
restart_if_changed "$STATE/run/slurmd.pid" "$SLURM_CHANGED"
if ! alive "$STATE/run/slurmctld.pid"; then
  log "starting slurmctld"
  slurmctld || die "slurmctld failed; see $STATE/log/slurmctld.log"
fi
for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.2; done
scontrol ping | grep -q UP || die "slurmctld does not answer; see $STATE/log/slurmctld.log"
if ! alive "$STATE/run/slurmd.pid"; then
  log "starting slurmd"
  slurmd || die "slurmd failed; see $STATE/log/slurmd.log"
fi

# --- wait until the node takes jobs (a restart may leave it DOWN until it re-registers) -------------------
for _ in $(seq 150); do
  st="$(sinfo -h -n "$HOST" -o %t 2>/dev/null | head -1)"
  case "$st" in
    idle*|mix*|alloc*) break ;;
    down*|drain*|drng*) scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true ;;
  esac
  sleep 0.2
done
case "$st" in idle*|mix*|alloc*) ;; *) die "node $HOST is '$st', not idle; see $STATE/log/slurmd.log" ;; esac
sacct -n -X -S now-1hours >/dev/null || die "sacct does not work; see $STATE/log/slurmdbd.log"
log "cluster mixerstack up: node $HOST ($CPUS CPUs, ${DEF_MEM_PER_CPU} MB/CPU), state in $STATE"
