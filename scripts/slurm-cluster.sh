#!/usr/bin/env bash
# slurm-cluster.sh install|start [--nodes N]|stop|status|env|logs|kill-node NODE|start-node NODE
#
# A real one-node Slurm cluster on loopback, for trying profiles/slurm locally and for the Slurm tests;
# with `start --nodes N` (N >= 2, as root), a cluster of N nodes on this one machine: each node a network
# namespace of its own (a veth pair to a private bridge, its own address and host name) running its own slurmd.
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
#   scripts/slurm-cluster.sh start --nodes 2  # two nodes, node1 and node2 (see "Several nodes" below)
#
# Settings (environment): PLMSCALE_SLURM_DIR, PLMSCALE_SLURM_PORT (first of four consecutive ports,
# default 16817), PLMSCALE_SLURM_ACCOUNTING=0 to skip slurmdbd/MariaDB (then only squeue can track jobs).
# Daemons run as root with SlurmUser=root: this is a throwaway cluster for a container or a CI machine.
#
# Several nodes: a Linux bridge holds the controller's address ($PLMSCALE_SLURM_SUBNET.1, default 10.77.0.1),
# where slurmctld listens (under `unshare --uts` with the host name slurmctl). munged, slurmdbd and MariaDB stay
# on loopback: the nodes reach munged through its socket file, and only slurmctld and this machine's clients
# talk to slurmdbd. Node i is the network namespace plmscale-<port>-node<i> with the address <subnet>.(10+i).
# Its slurmd runs under `nsenter --net` + `unshare --mount --uts` with the host name node<i>, a private hosts
# file bind-mounted over /etc/hosts (the real one is never edited), and this cluster's configuration over
# /etc/slurm, where job steps look for it. Jobs see the same file system, so a workflow directory is shared
# between the nodes as on a real cluster. `kill-node NODE` kills a node's slurmd and marks the node DOWN (what
# slurmctld does when a node stops answering), which requeues its jobs; `start-node NODE` brings it back.
# Setting: PLMSCALE_SLURM_SUBNET (three octets, default 10.77.0).
set -euo pipefail

DIR=${PLMSCALE_SLURM_DIR:-${TMPDIR:-/tmp}/plmscale-slurm}
PORT=${PLMSCALE_SLURM_PORT:-16817}
ACCOUNTING=${PLMSCALE_SLURM_ACCOUNTING:-1}
START_TIMEOUT_S=${PLMSCALE_SLURM_START_TIMEOUT_S:-90}
SUBNET=${PLMSCALE_SLURM_SUBNET:-10.77.0}
NODE=localhost
ADDR=127.0.0.1  # munged, MariaDB and slurmdbd: only slurmctld and the clients on this machine talk to them
CTL_NAME=$NODE  # slurmctld: on the bridge, named slurmctl, when there are several nodes
CTL_ADDR=$ADDR
NO_NAMESPACES=4  # exit status: several nodes asked for where network namespaces cannot be made
CLUSTER=plmscale
PACKAGES_BASE="slurm-wlm munge"
PACKAGES_ACCOUNTING="slurmdbd mariadb-server"

CONF=$DIR/etc/slurm.conf
export SLURM_CONF=$CONF
MUNGE_SOCKET=$DIR/munge/munge.socket.2

# How many nodes: `start --nodes N`, else what the running cluster's start recorded, else one.
NODES_FILE=$DIR/nodes
NODES=1
[ -s "$NODES_FILE" ] && NODES=$(cat "$NODES_FILE")

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

# ---- several nodes: names, addresses, namespaces ------------------------------------------------------
node_name() { echo "node$1"; }
node_addr() { echo "$SUBNET.$((10 + $1))"; }
node_netns() { echo "plmscale-$PORT-node$1"; }
BRIDGE=pls${PORT}br  # interface names are at most 15 characters

# Call once NODES is known: with several nodes the controller lives on the bridge, not on loopback.
use_topology() {
    if [ "$NODES" -gt 1 ]; then CTL_NAME=slurmctl; CTL_ADDR=$SUBNET.1; fi
}

# Several nodes need network namespaces, a bridge and veth pairs: root and iproute2. Say why not, and stop.
check_namespaces() {
    local why="" err
    if [ "$(id -u)" != 0 ]; then why="it needs root (network namespaces, a bridge, mount namespaces)"
    elif ! command -v ip >/dev/null; then why="the ip command (iproute2) is missing"
    elif ! command -v unshare >/dev/null || ! command -v nsenter >/dev/null; then
        why="the unshare and nsenter commands (util-linux) are missing"
    elif ! err=$(ip netns add "plmscale-$PORT-probe" 2>&1); then
        why="ip netns add failed: $(echo "$err" | tr '\n' ' ')(a container without CAP_SYS_ADMIN/NET_ADMIN?)"
    else
        ip netns del "plmscale-$PORT-probe"
    fi
    if [ -n "$why" ]; then
        say "error: cannot start $NODES nodes on this machine: $why."
        say "Run as root in a container or VM that allows namespaces, or start the one-node cluster (start)."
        exit $NO_NAMESPACES
    fi
}

setup_network() {
    local i ns host_end
    if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        ip link add "$BRIDGE" type bridge
        ip addr add "$CTL_ADDR/24" dev "$BRIDGE"
        ip link set "$BRIDGE" up
    fi
    for i in $(seq 1 "$NODES"); do
        ns=$(node_netns "$i"); host_end=pls${PORT}n$i
        ip netns list | grep -qx "$ns\( .*\)\?" && continue
        ip netns add "$ns"
        ip link add "$host_end" type veth peer name "pls${PORT}p$i"
        ip link set "$host_end" master "$BRIDGE" up
        ip link set "pls${PORT}p$i" netns "$ns"
        ip -n "$ns" link set "pls${PORT}p$i" name eth0
        ip -n "$ns" addr add "$(node_addr "$i")/24" dev eth0
        ip -n "$ns" link set eth0 up
        ip -n "$ns" link set lo up
    done
}

# Every namespace and interface this port's cluster may have made, whether or not its directory survived
# (a half-failed start): processes still inside a node's namespace are the jobs its slurmd started.
teardown_network() {
    command -v ip >/dev/null && [ "$(id -u)" = 0 ] || return 0
    local ns pid
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^plmscale-$PORT-node[0-9]*$"); do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
        ip netns del "$ns" || say "could not delete network namespace $ns"
    done
    # Deleting a namespace deletes its end of a veth pair and with it the host's end; the bridge remains.
    if ip link show "$BRIDGE" >/dev/null 2>&1; then ip link del "$BRIDGE" || say "could not delete bridge $BRIDGE"; fi
}

# ---- configuration ------------------------------------------------------------------------------------
mariadbd_bin() { command -v mariadbd || echo /usr/sbin/mariadbd; }

communication_parameters() {
    if [ "$NODES" -gt 1 ]; then
        # slurmctld on the bridge address only. srun and slurmd listen on any address of their namespace: srun
        # on this machine must take the nodes' I/O connections on the bridge, whatever its host name resolves to.
        echo "# slurmctld listens on the bridge address only; srun and slurmd on their namespace's addresses."
        echo "CommunicationParameters=NoCtldInAddrAny"
    else
        echo "# Listen on the configured loopback address, never on every interface."
        echo "CommunicationParameters=NoInAddrAny,NoCtldInAddrAny"
    fi
}

write_configs() {
    local cpus mem_mb node_suffix="" i
    # Several slurmds share the directory: each keeps its spool, pid and log under its own name (%n).
    [ "$NODES" -gt 1 ] && node_suffix=-%n
    # A requeued job may start again cred_expire + 1 s after it stopped (default 120 s): 20 s keeps a node
    # failure test short while leaving job steps on a loaded machine time to launch.
    local auth_extra="" kind="one-node throwaway cluster on loopback"
    if [ "$NODES" -gt 1 ]; then auth_extra=,cred_expire=20; kind="$NODES-node throwaway cluster on a private bridge"; fi
    cpus=$(nproc)
    # Leave room for the OS and the daemons; slurmd drains a node that has less memory than configured.
    mem_mb=$(awk '/^MemTotal:/ {m = int($2 / 1024) - 1024; if (m < 512) m = 512; print m}' /proc/meminfo)
    mkdir -p "$DIR"/{etc,munge,log,run,state/ctld,state/d,db}
    cat >"$CONF" <<CONF
# Written by scripts/slurm-cluster.sh: a $kind.
ClusterName=$CLUSTER
SlurmctldHost=$CTL_NAME($CTL_ADDR)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
$(communication_parameters)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET$auth_extra
CredType=cred/munge
StateSaveLocation=$DIR/state/ctld
SlurmdSpoolDir=$DIR/state/d$node_suffix
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd$node_suffix.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd$node_suffix.log
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
    if [ "$NODES" -gt 1 ]; then
        # Every node is the whole machine's CPUs (they share them) and an equal share of its memory.
        mem_mb=$((mem_mb / NODES)); [ $mem_mb -lt 512 ] && mem_mb=512
        for i in $(seq 1 "$NODES"); do
            echo "NodeName=$(node_name "$i") NodeAddr=$(node_addr "$i") CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN"
        done >>"$CONF"
        # LLN: each job goes to the least loaded node, so a few small jobs spread over the nodes.
        echo "PartitionName=debug Nodes=node[1-$NODES] Default=YES MaxTime=INFINITE State=UP LLN=YES" >>"$CONF"
        # What a node's processes resolve: the controller and every node by name (bind-mounted over /etc/hosts).
        { echo "127.0.0.1 localhost"; echo "$CTL_ADDR $CTL_NAME"
          for i in $(seq 1 "$NODES"); do echo "$(node_addr "$i") $(node_name "$i")"; done; } >"$DIR/etc/hosts"
    else
        cat >>"$CONF" <<CONF
NodeName=$NODE NodeAddr=$ADDR CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONF
    fi
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
    if [ "$NODES" -gt 1 ]; then
        # slurmctld listens on the address its host name resolves to: give it the name slurmctl, which the
        # private hosts file puts on the bridge (this machine's own name and /etc/hosts stay as they are).
        unshare --mount --uts --propagation private -- sh -c '
            hostname "$1" && mount --bind "$2/etc/hosts" /etc/hosts && exec slurmctld -f "$3" -i' \
            start_slurmctld "$CTL_NAME" "$DIR" "$CONF" 2>>"$DIR/log/slurmctld.log" \
            || { show_logs; die "slurmctld did not start"; }
    else
        slurmctld -f "$CONF" -i 2>>"$DIR/log/slurmctld.log" || { show_logs; die "slurmctld did not start"; }
    fi
    wait_for slurmctld scontrol ping
}

start_slurmd() {
    pid_alive "$DIR/run/slurmd.pid" && return 0
    slurmd -f "$CONF" -N "$NODE" 2>>"$DIR/log/slurmd.log" || { show_logs; die "slurmd did not start"; }
    wait_for "node $NODE to be idle" node_idle
}
node_idle() { [ "$(sinfo -h -n "$NODE" -o %t 2>/dev/null)" = idle ]; }

# Node i's slurmd, inside its network namespace, with its own host name, hosts file and /etc/slurm.
start_node() {
    local i=$1 name ns
    name=$(node_name "$i"); ns=$(node_netns "$i")
    pid_alive "$DIR/run/slurmd-$name.pid" && return 0
    mkdir -p "$DIR/state/d-$name"
    # Job steps (srun inside a job) find the configuration at /etc/slurm/slurm.conf, the plugin having
    # stripped SLURM_CONF; the mount is private to the node, so this machine's /etc/slurm is untouched.
    [ -d /etc/slurm ] || mkdir -p /etc/slurm
    # nsenter rather than `ip netns exec`, which remounts /sys and so hides the cgroup mounts slurmd needs.
    nsenter --net="/run/netns/$ns" unshare --mount --uts --propagation private -- sh -c '
        hostname "$1" && mount --bind "$2/etc/hosts" /etc/hosts && mount --bind "$2/etc" /etc/slurm \
            && exec slurmd -f "$3" -N "$1"' start_node "$name" "$DIR" "$CONF" \
        2>>"$DIR/log/slurmd-$name.log" || { show_logs; die "slurmd of $name did not start"; }
}
nodes_idle() { [ "$(sinfo -h -N -t idle -o %N 2>/dev/null | sort -u | wc -l)" = "$NODES" ]; }
node_up() { case $(sinfo -h -n "$1" -o %t 2>/dev/null) in idle|alloc|mix|comp) return 0 ;; *) return 1 ;; esac; }

node_index() {  # node_index NAME -> i, or an error naming the nodes there are
    local i
    for i in $(seq 1 "$NODES"); do [ "$(node_name "$i")" = "$1" ] && { echo "$i"; return 0; }; done
    die "no node '$1' in this cluster (it has node1..node$NODES)"
}

# A node failure as slurmctld sees one: the node's slurmd is gone and the node is DOWN, so its jobs are
# requeued (sbatch --requeue) or fail. slurmctld would notice by itself after SlurmdTimeout; saying so at once
# keeps a test short. The job's processes on the node die with the job.
cmd_kill_node() {
    local name=${1:?usage: kill-node NODE} pid i
    i=$(node_index "$name")
    pid=$(cat "$DIR/run/slurmd-$name.pid" 2>/dev/null || true)
    [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
    rm -f "$DIR/run/slurmd-$name.pid"
    scontrol update NodeName="$name" State=DOWN Reason="slurm-cluster.sh kill-node"
    say "killed slurmd of $name and marked it DOWN"
}

cmd_start_node() {
    local name=${1:?usage: start-node NODE} i
    i=$(node_index "$name")
    start_node "$i"
    wait_for "node $name to come back" node_up "$name"
    say "node $name is back: $(sinfo -h -n "$name" -o %t)"
}

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
    local t0=$SECONDS nodes=1 running=$NODES i
    while [ $# -gt 0 ]; do
        case $1 in
            --nodes) nodes=${2:?--nodes needs a number}; shift 2 ;;
            --nodes=*) nodes=${1#--nodes=}; shift ;;
            *) die "start: unknown option $1 (usage: start [--nodes N])" ;;
        esac
    done
    [[ $nodes =~ ^[1-9][0-9]?$ ]] || die "start --nodes: $nodes is not a node count (1-99)"
    if [ -s "$CONF" ] && [ "$running" != "$nodes" ]; then
        die "$DIR holds a $running-node cluster; stop it first (or set PLMSCALE_SLURM_DIR and PLMSCALE_SLURM_PORT)"
    fi
    NODES=$nodes; use_topology
    ensure_packages
    [ "$NODES" -gt 1 ] && check_namespaces
    mkdir -p "$DIR"; chmod 755 "$DIR"
    echo "$NODES" >"$NODES_FILE"
    [ -s "$CONF" ] || write_configs
    if [ "$NODES" -gt 1 ]; then setup_network; else link_conf; fi
    start_munge
    if [ "$ACCOUNTING" = 1 ]; then start_mariadb; start_slurmdbd; fi
    start_slurmctld
    if [ "$NODES" -gt 1 ]; then
        for i in $(seq 1 "$NODES"); do start_node "$i"; done
        wait_for "nodes node1..node$NODES to be idle" nodes_idle
    else
        start_slurmd
    fi
    # Prove that a job really runs: allocation, step launch through slurmstepd, output back.
    local out
    out=$(timeout 60 srun -N"$NODES" -n"$NODES" -t 1 hostname 2>&1) \
        || { say "srun hostname failed: $out"; show_logs; exit 1; }
    if [ "$NODES" -gt 1 ]; then
        out=$(echo "$out" | sort | paste -sd ' ')
        say "cluster '$CLUSTER' up in $((SECONDS - t0)) s: nodes node1..node$NODES on $BRIDGE ($CTL_ADDR/24),"
        say "partition debug, srun ran on: $out"
    else
        say "cluster '$CLUSTER' up in $((SECONDS - t0)) s: node $NODE, partition debug, srun ran on $out"
    fi
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
    local f
    if [ ! -d "$DIR" ]; then
        teardown_network
        say "not running (no $DIR)"; return 0
    fi
    if [ -s "$CONF" ] && pid_alive "$DIR/run/slurmctld.pid"; then
        scancel --full -u root >/dev/null 2>&1 || true  # jobs die with their slurmstepd otherwise
    fi
    kill_pidfile "$DIR/run/slurmd.pid" slurmd
    for f in "$DIR"/run/slurmd-*.pid; do [ -e "$f" ] && kill_pidfile "$f" "$(basename "$f" .pid)"; done
    teardown_network
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
    local name ok=0 i
    local daemons="munged mysqld slurmdbd slurmctld slurmd"
    if [ "$NODES" -gt 1 ]; then
        for i in $(seq 1 "$NODES"); do daemons="$daemons slurmd-$(node_name "$i")"; done
    fi
    for name in $daemons; do
        if [ -e "$DIR/run/$name.pid" ]; then
            if pid_alive "$DIR/run/$name.pid"; then echo "$name: running (pid $(cat "$DIR/run/$name.pid"))"
            else echo "$name: DEAD"; ok=1; fi
        fi
    done
    sinfo -N -o "%N %P %t %c %m" || ok=1
    return $ok
}

use_topology
command=${1:-}
[ $# -gt 0 ] && shift
case $command in
    install) ensure_packages ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    logs) show_logs ;;
    kill-node) cmd_kill_node "$@" ;;
    start-node) cmd_start_node "$@" ;;
    *) echo "usage: $0 install|start [--nodes N]|stop|status|env|logs|kill-node NODE|start-node NODE" >&2; exit 2 ;;
esac
