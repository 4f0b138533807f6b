#!/usr/bin/env bash
# Stand up a real single-node SLURM cluster (Debian's SLURM 22.05 packages) on this machine:
# MariaDB + slurmdbd (accounting, so `sacct` works), munged, slurmctld and slurmd, without
# systemd. Two partitions, `cpu` (default) and `gpu`, over the one node, which advertises one
# fake GPU (gres gpu:1 backed by /dev/null).
#
# Idempotent: re-running it leaves running daemons alone unless their configuration changed
# (then they are restarted), and starts whatever is not running. Needs root.
#
# Environment:
#   CELLEMBED_SLURM_CPUS     CPUs the node advertises (default: max(nproc, 8); slurmd is told
#                            to trust slurm.conf, so this may exceed the real core count).
#   CELLEMBED_SLURM_MEM_MB   RealMemory of the node in MB (default: max(90% of MemTotal, 65536);
#                            like the CPUs, it may exceed the machine: nothing enforces it).
#   CELLEMBED_SLURM_DB_PASS  password of the MariaDB user slurmdbd uses.
#   CELLEMBED_SLURM_TIMEOUT  seconds to wait for each daemon / the node (default: 60).
#   CELLEMBED_SLURM_USERS    extra (non-root) users to give an accounting association.
set -Eeuo pipefail

CLUSTER=cellembed
NODE=$(hostname -s)
REAL_CPUS=$(nproc)
CPUS=${CELLEMBED_SLURM_CPUS:-$((REAL_CPUS > 8 ? REAL_CPUS : 8))}
MEM_TOTAL_MB=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
# At least 64 GB, so that jobs sized for a real cluster node (the SLURM profile's GPU jobs ask
# for 16 GB) are accepted and run side by side; without cgroups no job is held to its request.
MEM_MB=${CELLEMBED_SLURM_MEM_MB:-$((MEM_TOTAL_MB * 9 / 10 > 65536 ? MEM_TOTAL_MB * 9 / 10 : 65536))}
DEF_MEM_PER_CPU=$((MEM_MB / CPUS))
DB_NAME=slurm_acct_db
DB_USER=slurm
DB_PASS=${CELLEMBED_SLURM_DB_PASS:-cellembed-slurmdbd}
TIMEOUT=${CELLEMBED_SLURM_TIMEOUT:-60}

PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
CONF_DIR=/etc/slurm
LOG_DIR=/var/log/slurm
RUN_DIR=/run/slurm
CTLD_SPOOL=/var/spool/slurmctld
SLURMD_SPOOL=/var/spool/slurmd
MUNGE_KEY=/etc/munge/munge.key
MARIADB_CNF=/etc/mysql/mariadb.conf.d/99-cellembed-slurm.cnf
MARIADB_LOG=$LOG_DIR/mariadb.log

log() { printf '[slurm-setup] %s\n' "$*" >&2; }

show_logs() {
    local f
    for f in "$LOG_DIR"/*.log "$LOG_DIR"/*.err; do
        [[ -s $f ]] || continue
        printf '\n===== tail -n 40 %s =====\n' "$f" >&2
        tail -n 40 "$f" >&2 || true
    done
    if command -v sinfo >/dev/null 2>&1; then
        printf '\n===== sinfo -N -l =====\n' >&2
        sinfo -N -l >&2 2>&1 || true
    fi
}

die() {
    log "ERROR: $*"
    show_logs
    exit 1
}

on_err() {
    local rc=$? line=$1
    log "ERROR: command failed (exit $rc) at line $line: $BASH_COMMAND"
    show_logs
    exit "$rc"
}
trap 'on_err $LINENO' ERR

# wait_for SECONDS DESCRIPTION COMMAND...: retry COMMAND every half second until it succeeds.
wait_for() {
    local secs=$1 what=$2 deadline
    shift 2
    deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "timed out after ${secs}s waiting for $what"
        sleep 0.5
    done
}

# pid_alive PIDFILE NAME: the process named NAME whose pid is in PIDFILE is running.
pid_alive() {
    local pid
    [[ -r $1 ]] || return 1
    pid=$(<"$1")
    [[ -n $pid ]] && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$2" ]]
}

# stop_daemon NAME PIDFILE: terminate a daemon and wait for it to exit.
stop_daemon() {
    local name=$1 pidfile=$2 i
    if pid_alive "$pidfile" "$name"; then
        kill "$(<"$pidfile")" 2>/dev/null || true
    fi
    pkill -x "$name" 2>/dev/null || true
    for ((i = 0; i < 40; i++)); do
        pgrep -x "$name" >/dev/null || return 0
        sleep 0.25
    done
    pkill -KILL -x "$name" 2>/dev/null || true
    sleep 0.5
}

# install_file MODE OWNER DEST FLAGVAR < CONTENT: write DEST only when its content, mode or
# owner differ, and then set the variable named FLAGVAR to 1.
install_file() {
    local mode=$1 owner=$2 dest=$3 flag=$4 tmp
    tmp=$(mktemp)
    cat >"$tmp"
    if [[ -f $dest ]] && cmp -s "$tmp" "$dest" &&
        [[ $(stat -c '%a %U:%G' "$dest") == "$mode $owner" ]]; then
        rm -f "$tmp"
        return 0
    fi
    install -m "$mode" -o "${owner%%:*}" -g "${owner##*:}" "$tmp" "$dest"
    rm -f "$tmp"
    log "wrote $dest"
    printf -v "$flag" 1
}

[[ $EUID -eq 0 ]] || die "must run as root"

# ---------------------------------------------------------------------------------------------
# Packages
# ---------------------------------------------------------------------------------------------
missing=()
for pkg in "${PACKAGES[@]}"; do
    if [[ $(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true) != "install ok installed" ]]; then
        missing+=("$pkg")
    fi
done
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    # Keep maintainer scripts from starting daemons (there is no systemd, and we start them
    # ourselves with our configuration): policy-rc.d exit 101 = "action forbidden".
    policy_rc=/usr/sbin/policy-rc.d
    own_policy=0
    if [[ ! -e $policy_rc ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy_rc"
        chmod 755 "$policy_rc"
        own_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
    if ((own_policy)); then rm -f "$policy_rc"; fi
fi

# ---------------------------------------------------------------------------------------------
# Directories
# ---------------------------------------------------------------------------------------------
# The log directory is root's, group slurm, sticky (munged refuses a log file in a directory
# another user owns or that is group-writable without the sticky bit; slurmctld/slurmdbd want
# to write there). Each daemon gets its own log file, owned by the user the daemon runs as.
install -d -m 1775 -o root -g slurm "$LOG_DIR"
install -d -m 755 -o root -g root "$CONF_DIR" "$SLURMD_SPOOL"
install -d -m 755 -o slurm -g slurm "$RUN_DIR" "$CTLD_SPOOL"
install -d -m 700 -o munge -g munge /etc/munge /var/lib/munge
install -d -m 755 -o munge -g munge /run/munge
install -d -m 755 -o mysql -g mysql /run/mysqld
for spec in slurmctld:slurm slurmdbd:slurm slurmd:root munged:munge mariadb:mysql; do
    logfile=$LOG_DIR/${spec%%:*}.log
    [[ -e $logfile ]] || touch "$logfile"
    chown "${spec##*:}:" "$logfile"
    chmod 640 "$logfile"
done

# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------
slurm_changed=0
dbd_changed=0
mariadb_changed=0

install_file 644 root:root "$CONF_DIR/slurm.conf" slurm_changed <<EOF
# Written by tests/slurm/setup.sh: single-node test cluster for the cellembed workflow.
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$CTLD_SPOOL
SlurmdSpoolDir=$SLURMD_SPOOL
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true

# No cgroups in containers: plain process tracking, no task binding, no usage sampling.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SwitchType=switch/none

# slurmd reports the resources below instead of probing the hardware, so jobs may ask for
# more CPUs than this machine has.
SlurmdParameters=config_overrides
ReturnToService=2

# Scheduling: run jobs as soon as they are submitted.
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,bf_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$DEF_MEM_PER_CPU
GresTypes=gpu
MaxJobCount=10000
MinJobAge=300
PriorityType=priority/basic

# Timeouts: generous where a slow CI machine could trip them, short where they only add delay.
MessageTimeout=10
TCPTimeout=5
SlurmctldTimeout=120
SlurmdTimeout=300
BatchStartTimeout=60
InactiveLimit=0
KillWait=5
Waittime=0
UnkillableStepTimeout=120

# Accounting through slurmdbd (sacct is how snakemake-executor-plugin-slurm polls jobs).
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
AccountingStorageTRES=gres/gpu
# Keep each job's --comment in accounting: the executor plugin puts the rule name there, and the
# tests map sacct rows to rules through it (sacct -o Comment is empty without this flag).
AccountingStoreFlags=job_comment
JobCompType=jobcomp/none

NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$NODE CPUs=$CPUS RealMemory=$MEM_MB Gres=gpu:1 State=UNKNOWN
PartitionName=cpu Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$NODE Default=NO MaxTime=INFINITE State=UP
EOF

install_file 644 root:root "$CONF_DIR/gres.conf" slurm_changed <<EOF
# Written by tests/slurm/setup.sh. One fake GPU: File= is required (a bare Count=1 line makes
# slurmd report 0 GPUs and the node gets drained).
AutoDetect=off
NodeName=$NODE Name=gpu File=/dev/null
EOF

install_file 600 slurm:slurm "$CONF_DIR/slurmdbd.conf" dbd_changed <<EOF
# Written by tests/slurm/setup.sh.
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=slurm
DebugLevel=info
LogFile=$LOG_DIR/slurmdbd.log
PidFile=$RUN_DIR/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=3306
StorageUser=$DB_USER
StoragePass=$DB_PASS
StorageLoc=$DB_NAME
EOF

install -d -m 755 "$(dirname "$MARIADB_CNF")"
install_file 644 root:root "$MARIADB_CNF" mariadb_changed <<EOF
# Written by tests/slurm/setup.sh (settings slurmdbd asks for; durability is not needed in CI).
[mysqld_safe]
skip-syslog
log-error = $MARIADB_LOG

[mysqld]
bind-address = 127.0.0.1
log-error = $MARIADB_LOG
innodb_buffer_pool_size = 1024M
innodb_lock_wait_timeout = 900
innodb_flush_log_at_trx_commit = 2
EOF

# ---------------------------------------------------------------------------------------------
# MariaDB
# ---------------------------------------------------------------------------------------------
mariadb_up() { mysqladmin --connect-timeout=2 ping >/dev/null 2>&1; }
mariadb_stopped() { ! pgrep -x mysqld_safe && ! pgrep -x mariadbd && ! pgrep -x mysqld; }

if ((mariadb_changed)) && mariadb_up; then
    log "MariaDB configuration changed: restarting MariaDB"
    mysqladmin shutdown || true
    wait_for 30 "MariaDB to stop" mariadb_stopped
fi
if ! mariadb_up; then
    if [[ ! -d /var/lib/mysql/mysql ]]; then
        log "initialising the MariaDB data directory"
        mariadb-install-db --user=mysql --datadir=/var/lib/mysql >>"$MARIADB_LOG" 2>&1
    fi
    log "starting MariaDB"
    setsid mysqld_safe --user=mysql </dev/null >>"$MARIADB_LOG" 2>&1 &
    wait_for "$TIMEOUT" "MariaDB (mysqladmin ping)" mariadb_up
fi
mysql -u root <<EOF
CREATE DATABASE IF NOT EXISTS $DB_NAME;
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
CREATE USER IF NOT EXISTS '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
ALTER USER '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
ALTER USER '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
GRANT ALL PRIVILEGES ON $DB_NAME.* TO '$DB_USER'@'localhost';
GRANT ALL PRIVILEGES ON $DB_NAME.* TO '$DB_USER'@'127.0.0.1';
FLUSH PRIVILEGES;
EOF

# ---------------------------------------------------------------------------------------------
# munge
# ---------------------------------------------------------------------------------------------
if [[ ! -s $MUNGE_KEY ]]; then
    log "creating $MUNGE_KEY"
    dd if=/dev/urandom of="$MUNGE_KEY" bs=1024 count=1 status=none
fi
chown munge:munge "$MUNGE_KEY"
chmod 400 "$MUNGE_KEY"

munge_ok() { munge -n </dev/null | unmunge >/dev/null; }
if ! pgrep -x munged >/dev/null || ! munge_ok >/dev/null 2>&1; then
    stop_daemon munged /run/munge/munged.pid
    rm -f /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
    log "starting munged"
    runuser -u munge -- munged --log-file="$LOG_DIR/munged.log"
    wait_for "$TIMEOUT" "munged (munge -n | unmunge)" munge_ok
fi

# ---------------------------------------------------------------------------------------------
# slurmdbd, then register the cluster
# ---------------------------------------------------------------------------------------------
dbd_listening() { (exec 3<>/dev/tcp/127.0.0.1/6819) 2>/dev/null; }

if ((dbd_changed)) && pgrep -x slurmdbd >/dev/null; then
    log "slurmdbd.conf changed: restarting slurmdbd"
    stop_daemon slurmdbd "$RUN_DIR/slurmdbd.pid"
fi
if ! pid_alive "$RUN_DIR/slurmdbd.pid" slurmdbd || ! dbd_listening; then
    stop_daemon slurmdbd "$RUN_DIR/slurmdbd.pid"
    log "starting slurmdbd"
    slurmdbd
    wait_for "$TIMEOUT" "slurmdbd to listen on port 6819" dbd_listening
fi
wait_for "$TIMEOUT" "sacctmgr to reach slurmdbd" sacctmgr -n show cluster

if ! sacctmgr -n -P show cluster format=cluster | grep -qx "$CLUSTER"; then
    log "registering cluster $CLUSTER"
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
fi
# Jobs are accepted without associations (AccountingStorageEnforce is unset); give root (and
# CELLEMBED_SLURM_USERS) one anyway, so the executor plugin can guess and validate an account.
read -r -a slurm_users <<<"root ${CELLEMBED_SLURM_USERS:-}"
for user in "${slurm_users[@]}"; do
    if ! sacctmgr -n -P show assoc cluster="$CLUSTER" user="$user" format=user | grep -qx "$user"; then
        log "adding SLURM user $user (account root)"
        sacctmgr -i add user "$user" account=root cluster="$CLUSTER" >/dev/null
    fi
done

# ---------------------------------------------------------------------------------------------
# slurmctld and slurmd
# ---------------------------------------------------------------------------------------------
ctld_up() { scontrol ping 2>/dev/null | grep -q 'is UP'; }

if ((slurm_changed)); then
    if pgrep -x slurmd >/dev/null || pgrep -x slurmctld >/dev/null; then
        log "slurm.conf/gres.conf changed: restarting slurmctld and slurmd"
    fi
    pkill -x slurmd 2>/dev/null || true # signal both first: each takes seconds to exit
    pkill -x slurmctld 2>/dev/null || true
    stop_daemon slurmd "$RUN_DIR/slurmd.pid"
    stop_daemon slurmctld "$RUN_DIR/slurmctld.pid"
fi
if ! pid_alive "$RUN_DIR/slurmctld.pid" slurmctld; then
    stop_daemon slurmctld "$RUN_DIR/slurmctld.pid"
    log "starting slurmctld"
    slurmctld
fi
wait_for "$TIMEOUT" "slurmctld (scontrol ping)" ctld_up

if ! pid_alive "$RUN_DIR/slurmd.pid" slurmd; then
    stop_daemon slurmd "$RUN_DIR/slurmd.pid"
    log "starting slurmd"
    slurmd
fi

# ---------------------------------------------------------------------------------------------
# Wait for the node to be usable in both partitions
# ---------------------------------------------------------------------------------------------
# node_ready: prints nothing; succeeds when the node is up (idle, or busy with jobs of an
# earlier run) in both partitions. Resumes it when it is drained or down.
node_ready() {
    local out state ok=0 part
    out=$(sinfo -h -o '%R %T' 2>/dev/null) || return 1
    for part in cpu gpu; do
        state=$(awk -v p="$part" '$1 == p {print $2}' <<<"$out")
        case $state in
            idle | mixed | allocated | completing) ok=$((ok + 1)) ;;
            *drain* | *down* | *fail*)
                scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
                ;;
        esac
    done
    ((ok == 2))
}
wait_for "$TIMEOUT" "node $NODE to be idle in partitions cpu and gpu" node_ready

log "cluster $CLUSTER is up after ${SECONDS}s: node $NODE, $CPUS CPUs advertised ($REAL_CPUS real), ${MEM_MB} MB, gres gpu:1"
sinfo -o '%P %a %D %T %c %m %G %N' >&2
