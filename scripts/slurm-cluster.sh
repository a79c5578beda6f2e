#!/usr/bin/env bash
# slurm-cluster.sh install|start|stop|status|env|logs
#
# A real one-node Slurm cluster on loopback, for trying profiles/slurm locally and for the Slurm tests.
# Everything it starts is private: its own munged (own key and socket), slurmctld, slurmd, and, for
# `sacct`, slurmdbd on a private MariaDB. Configuration, state, logs and pid files live in one directory
# ($PLMSCALE_SLURM_DIR, default /tmp/plmscale-slurm); nothing under /etc is changed, no system service
# is started, and every daemon listens on and talks to 127.0.0.1 only.
#
# Use it:
#   scripts/slurm-cluster.sh start            # installs missing Debian packages (as root), starts, waits
#   eval "$(scripts/slurm-cluster.sh env)"    # points sbatch/squeue/sacct at this cluster (SLURM_CONF)
#   snakemake --profile profiles/slurm --default-resources slurm_partition=debug ...
#   scripts/slurm-cluster.sh stop             # stops the daemons it started and deletes the directory
#
# Settings (environment): PLMSCALE_SLURM_DIR, PLMSCALE_SLURM_PORT (first of four consecutive ports,
# default 16817), PLMSCALE_SLURM_ACCOUNTING=0 to skip slurmdbd/MariaDB (then only squeue can track jobs).
# Daemons run as root with SlurmUser=root: this is a throwaway cluster for a container or a CI machine.
set -euo pipefail

DIR=${PLMSCALE_SLURM_DIR:-${TMPDIR:-/tmp}/plmscale-slurm}
PORT=${PLMSCALE_SLURM_PORT:-16817}
ACCOUNTING=${PLMSCALE_SLURM_ACCOUNTING:-1}
START_TIMEOUT_S=${PLMSCALE_SLURM_START_TIMEOUT_S:-90}
NODE=localhost
ADDR=127.0.0.1
CLUSTER=plmscale
PACKAGES_BASE="slurm-wlm munge"
PACKAGES_ACCOUNTING="slurmdbd mariadb-server"

CONF=$DIR/etc/slurm.conf
export SLURM_CONF=$CONF
MUNGE_SOCKET=$DIR/munge/munge.socket.2

say() { echo "slurm-cluster: $*" >&2; }
die() { say "error: $*"; exit 1; }

# ---- packages -----------------------------------------------------------------------------------------
binaries_present() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
        && command -v sbatch >/dev/null || return 1
    if [ "$ACCOUNTING" = 1 ]; then
        command -v slurmdbd >/dev/null && command -v sacctmgr >/dev/null \
            && { command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ]; } \
            && command -v mariadb-install-db >/dev/null || return 1
    fi
}

ensure_packages() {
    binaries_present && return 0
    local packages=$PACKAGES_BASE
    [ "$ACCOUNTING" = 1 ] && packages="$packages $PACKAGES_ACCOUNTING"
    if ! command -v apt-get >/dev/null || [ "$(id -u)" != 0 ]; then
        say "error: Slurm is not installed and cannot be installed here (needs apt-get as root)."
        say "Install it yourself: sudo apt-get install $packages"
        exit 3
    fi
    say "installing $packages with apt-get ..."
    export DEBIAN_FRONTEND=noninteractive
    # Package scripts must not start the system's own munge/slurm/mariadb services.
    local policy=/usr/sbin/policy-rc.d added_policy=0
    if [ ! -e $policy ]; then printf '#!/bin/sh\nexit 101\n' >$policy; chmod +x $policy; added_policy=1; fi
    apt-get update -qq >/dev/null || true
    # shellcheck disable=SC2086
    local log=${TMPDIR:-/tmp}/plmscale-slurm-apt.log
    apt-get install -y -qq --no-install-recommends $packages >"$log" 2>&1 || {
        [ $added_policy = 1 ] && rm -f $policy
        tail -20 "$log" >&2; say "error: apt-get install $packages failed (log: $log)"; exit 3; }
    [ $added_policy = 1 ] && rm -f $policy
    binaries_present || { say "error: packages installed but Slurm binaries are missing"; exit 3; }
}

# ---- configuration ------------------------------------------------------------------------------------
mariadbd_bin() { command -v mariadbd || echo /usr/sbin/mariadbd; }

write_configs() {
    local cpus mem_mb
    cpus=$(nproc)
    # Leave room for the OS and the daemons; slurmd drains a node that has less memory than configured.
    mem_mb=$(awk '/^MemTotal:/ {m = int($2 / 1024) - 1024; if (m < 512) m = 512; print m}' /proc/meminfo)
    mkdir -p "$DIR"/{etc,munge,log,run,state/ctld,state/d,db}
    cat >"$CONF" <<CONF
# Written by scripts/slurm-cluster.sh: a one-node throwaway cluster on loopback.
ClusterName=$CLUSTER
SlurmctldHost=$NODE($ADDR)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
# Listen on the configured loopback address, never on every interface.
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
CredType=cred/munge
StateSaveLocation=$DIR/state/ctld
SlurmdSpoolDir=$DIR/state/d
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig=$DIR/etc/plugstack.conf
MailProg=/bin/true
# No cgroups in a container: track processes through /proc, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
# sacct shows the plugin's --comment (rule and wildcards of each job).
AccountingStoreFlags=job_comment
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Trust the node line below rather than the hardware probe (containers misreport sockets/memory).
SlurmdParameters=config_overrides
ReturnToService=2
# Finished jobs stay visible to squeue/scontrol for 5 min (the plugin's squeue fallback needs >= 120 s).
MinJobAge=300
KillWait=5
InactiveLimit=0
Waittime=0
CONF
    if [ "$ACCOUNTING" = 1 ]; then
        cat >>"$CONF" <<CONF
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=$ADDR
AccountingStoragePort=$((PORT + 2))
# Clients authenticate to slurmdbd through this munged socket (not the system's /run/munge).
AccountingStoragePass=$MUNGE_SOCKET
AccountingStorageEnforce=associations
JobCompType=jobcomp/none
CONF
    else
        cat >>"$CONF" <<CONF
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
CONF
    fi
    cat >>"$CONF" <<CONF
NodeName=$NODE NodeAddr=$ADDR CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONF
    : >"$DIR/etc/plugstack.conf"

    if [ "$ACCOUNTING" = 1 ]; then
        cat >"$DIR/etc/slurmdbd.conf" <<CONF
# Written by scripts/slurm-cluster.sh
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=$NODE
DbdAddr=$ADDR
DbdPort=$((PORT + 2))
CommunicationParameters=NoInAddrAny
SlurmUser=root
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=$ADDR
StoragePort=$((PORT + 3))
StorageUser=root
StorageLoc=slurm_acct_db
CONF
        chmod 600 "$DIR/etc/slurmdbd.conf"
        cat >"$DIR/etc/my.cnf" <<CONF
# Written by scripts/slurm-cluster.sh: private MariaDB for slurmdbd, loopback only.
[mysqld]
datadir=$DIR/db
socket=$DIR/run/mysqld.sock
pid-file=$DIR/run/mysqld.pid
log-error=$DIR/log/mariadb.log
bind-address=$ADDR
port=$((PORT + 3))
user=root
skip-name-resolve
innodb_buffer_pool_size=64M
innodb_log_file_size=64M
innodb_lock_wait_timeout=900
CONF
    fi
}

# ---- daemons ------------------------------------------------------------------------------------------
pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_for() {  # wait_for DESCRIPTION COMMAND...
    local what=$1; shift
    local deadline=$((SECONDS + START_TIMEOUT_S))
    until "$@" >/dev/null 2>&1; do
        if [ $SECONDS -ge $deadline ]; then
            say "timed out after ${START_TIMEOUT_S}s waiting for $what"; show_logs; exit 1
        fi
        sleep 0.5
    done
}

start_munge() {
    pid_alive "$DIR/run/munged.pid" && return 0
    if [ ! -s "$DIR/munge/munge.key" ]; then
        # A fresh key for this cluster only; the system's /etc/munge/munge.key is left alone.
        dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
        chmod 600 "$DIR/munge/munge.key"
    fi
    chmod 755 "$DIR/munge"  # clients need to reach the socket; the key itself is 0600
    munged --force --socket="$MUNGE_SOCKET" --key-file="$DIR/munge/munge.key" \
        --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" \
        --seed-file="$DIR/munge/munged.seed" --origin="$ADDR"
    wait_for munged munge_works
}
munge_works() { munge --socket="$MUNGE_SOCKET" -n | unmunge --socket="$MUNGE_SOCKET"; }

start_mariadb() {
    pid_alive "$DIR/run/mysqld.pid" && return 0
    if [ ! -d "$DIR/db/mysql" ]; then
        mariadb-install-db --defaults-file="$DIR/etc/my.cnf" --auth-root-authentication-method=normal \
            --skip-test-db >"$DIR/log/mariadb-install.log" 2>&1 \
            || { tail -20 "$DIR/log/mariadb-install.log" >&2; die "mariadb-install-db failed"; }
    fi
    "$(mariadbd_bin)" --defaults-file="$DIR/etc/my.cnf" >>"$DIR/log/mariadb.log" 2>&1 &
    wait_for MariaDB mariadb --defaults-file="$DIR/etc/my.cnf" --protocol=socket --socket="$DIR/run/mysqld.sock" \
        -uroot -e "SELECT 1"
    # slurmdbd logs in over TCP as root@127.0.0.1 with no password; the install only creates root@localhost.
    mariadb --protocol=socket --socket="$DIR/run/mysqld.sock" -uroot -e \
        "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1'; GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;"
}

start_slurmdbd() {
    pid_alive "$DIR/run/slurmdbd.pid" && return 0
    # slurmdbd reads slurmdbd.conf from the directory of $SLURM_CONF.
    slurmdbd 2>>"$DIR/log/slurmdbd.log" \
        || { show_logs; die "slurmdbd did not start"; }
    # Register the cluster, an account and root's association so jobs are accounted (sacct sees them).
    wait_for slurmdbd sacctmgr -i list cluster
    sacctmgr -i add cluster "$CLUSTER" >/dev/null 2>&1 || true
    sacctmgr -i add account plmscale Cluster="$CLUSTER" Description=tests Organization=plmscale \
        >/dev/null 2>&1 || true
    sacctmgr -i add user root Account=plmscale Cluster="$CLUSTER" >/dev/null 2>&1 || true
}

start_slurmctld() {
    pid_alive "$DIR/run/slurmctld.pid" && return 0
    slurmctld -f "$CONF" -i 2>>"$DIR/log/slurmctld.log" || { show_logs; die "slurmctld did not start"; }
    wait_for slurmctld scontrol ping
}

start_slurmd() {
    pid_alive "$DIR/run/slurmd.pid" && return 0
    slurmd -f "$CONF" -N "$NODE" 2>>"$DIR/log/slurmd.log" || { show_logs; die "slurmd did not start"; }
    wait_for "node $NODE to be idle" node_idle
}
node_idle() { [ "$(sinfo -h -n "$NODE" -o %t 2>/dev/null)" = idle ]; }

# Jobs need the configuration too, and the Slurm plugin's job step strips SLURM_CONF from the environment
# of the `srun` it runs inside each job. Slurm clients look for /etc/slurm/slurm.conf, then for
# /run/slurm/conf/slurm.conf (where a configless slurmd keeps its copy): point the latter at ours.
CONF_LINK=/run/slurm/conf
link_conf() {
    if [ -e /etc/slurm/slurm.conf ]; then
        say "error: /etc/slurm/slurm.conf exists (a real Slurm installation?): jobs would read it instead of"
        say "this cluster's configuration. Use that cluster, or move the file aside while testing."
        exit 1
    fi
    if [ -e "$CONF_LINK" ] || [ -L "$CONF_LINK" ]; then
        [ "$(readlink "$CONF_LINK")" = "$DIR/etc" ] && return 0
        die "$CONF_LINK exists and is not this cluster's (a configless slurmd runs here?); stop that first"
    fi
    mkdir -p "$(dirname "$CONF_LINK")"
    ln -s "$DIR/etc" "$CONF_LINK"
}
remove_conf_link() {
    if [ -L "$CONF_LINK" ] && [ "$(readlink "$CONF_LINK")" = "$DIR/etc" ]; then
        rm -f "$CONF_LINK"
        rmdir "$(dirname "$CONF_LINK")" 2>/dev/null || true
    fi
}

show_logs() {
    local f
    for f in "$DIR"/log/*.log; do
        [ -s "$f" ] || continue
        echo "---- $f (last 15 lines)" >&2; tail -15 "$f" >&2
    done
}

cmd_start() {
    local t0=$SECONDS
    ensure_packages
    mkdir -p "$DIR"; chmod 755 "$DIR"
    [ -s "$CONF" ] || write_configs
    link_conf
    start_munge
    if [ "$ACCOUNTING" = 1 ]; then start_mariadb; start_slurmdbd; fi
    start_slurmctld
    start_slurmd
    # Prove that a job really runs: allocation, step launch through slurmstepd, output back.
    local out
    out=$(timeout 60 srun -N1 -n1 -t 1 hostname 2>&1) || { say "srun hostname failed: $out"; show_logs; exit 1; }
    say "cluster '$CLUSTER' up in $((SECONDS - t0)) s: node $NODE, partition debug, srun ran on $out"
    say "use it with: export SLURM_CONF=$CONF"
}

kill_pidfile() {  # kill_pidfile FILE NAME: stop the process this script started, by its pid
    local file=$1 name=$2 pid i
    [ -s "$file" ] || return 0
    pid=$(cat "$file")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for i in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        kill -0 "$pid" 2>/dev/null && { say "$name ($pid) ignored SIGTERM, killing"; kill -9 "$pid" || true; }
    fi
    rm -f "$file"
}

cmd_stop() {
    [ -d "$DIR" ] || { say "not running (no $DIR)"; return 0; }
    if [ -s "$CONF" ] && pid_alive "$DIR/run/slurmctld.pid"; then
        scancel --full -u root >/dev/null 2>&1 || true  # jobs die with their slurmstepd otherwise
    fi
    kill_pidfile "$DIR/run/slurmd.pid" slurmd
    kill_pidfile "$DIR/run/slurmctld.pid" slurmctld
    kill_pidfile "$DIR/run/slurmdbd.pid" slurmdbd
    kill_pidfile "$DIR/run/mysqld.pid" mariadbd
    kill_pidfile "$DIR/run/munged.pid" munged
    remove_conf_link
    rm -rf "$DIR"
    say "stopped and removed $DIR"
}

cmd_status() {
    [ -s "$CONF" ] || { say "not running (no $CONF)"; return 1; }
    local name ok=0
    for name in munged mysqld slurmdbd slurmctld slurmd; do
        if [ -e "$DIR/run/$name.pid" ]; then
            if pid_alive "$DIR/run/$name.pid"; then echo "$name: running (pid $(cat "$DIR/run/$name.pid"))"
            else echo "$name: DEAD"; ok=1; fi
        fi
    done
    sinfo -N -o "%N %P %t %c %m" || ok=1
    return $ok
}

case ${1:-} in
    install) ensure_packages ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    logs) show_logs ;;
    *) echo "usage: $0 install|start|stop|status|env|logs" >&2; exit 2 ;;
esac
