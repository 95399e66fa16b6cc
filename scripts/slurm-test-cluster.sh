#!/usr/bin/env bash
# A throw-away single-node SLURM cluster for the tests of `bench run --executor slurm` (issue #27).
#
#   scripts/slurm-test-cluster.sh start    install what is missing (apt, root only), then start munged,
#                                          MariaDB, slurmdbd, slurmctld and slurmd; wait until the node is idle
#   scripts/slurm-test-cluster.sh stop     cancel the cluster's jobs, stop every daemon it started (by PID;
#                                          root only)
#   scripts/slurm-test-cluster.sh status   which daemons run, and sinfo/squeue when the controller is up
#   scripts/slurm-test-cluster.sh env      the export lines a client needs: eval "$(scripts/slurm-test-cluster.sh env)"
#
# Everything (configs, munge key, MariaDB data, spool, logs, PID files) lives in one state folder,
# $ROBUSTAD_SLURM_DIR (default /tmp/robustad-slurm). This script writes nothing under /etc (Debian's
# packages install their defaults there, e.g. /etc/munge/munge.key, which stay unused) and starts no
# system service: during the install a /usr/sbin/policy-rc.d, where there is none, keeps the packages
# from starting theirs, and is removed again. The daemons use their own
# ports, $ROBUSTAD_SLURM_PORT_BASE .. +3 (default 16817: slurmctld, slurmd, slurmdbd, MariaDB), their own
# munge socket and a MariaDB bound to 127.0.0.1, so a SLURM, munge or MariaDB the machine already runs is
# left alone. Clients find the cluster through SLURM_CONF (see `env`).
#
# The node: NodeAddr=127.0.0.1, SlurmctldHost=<hostname>(127.0.0.1) because CI hosts may not resolve their
# own name; CPUs=$(nproc), RealMemory 90 % of MemTotal (slurmd drains a node that has less than configured);
# proctrack/linuxproc and task/none (no cgroups, which containers often lack); select/cons_tres with CR_CPU,
# so one-CPU tasks run side by side. Accounting goes to slurmdbd, because submitit reads task states with
# `sacct` only (without it a killed task stays UNKNOWN).
#
# Environment: ROBUSTAD_SLURM_DIR, ROBUSTAD_SLURM_PORT_BASE, ROBUSTAD_SLURM_TIMEOUT (seconds to wait for
# each daemon and for the idle node, default 60).
set -euo pipefail

STATE_DIR=${ROBUSTAD_SLURM_DIR:-/tmp/robustad-slurm}
PORT_BASE=${ROBUSTAD_SLURM_PORT_BASE:-16817}
TIMEOUT_S=${ROBUSTAD_SLURM_TIMEOUT:-60}

CTLD_PORT=$PORT_BASE
SLURMD_PORT=$((PORT_BASE + 1))
DBD_PORT=$((PORT_BASE + 2))
DB_PORT=$((PORT_BASE + 3))

ETC_DIR=$STATE_DIR/etc
LOG_DIR=$STATE_DIR/log
RUN_DIR=$STATE_DIR/run
MUNGE_DIR=$STATE_DIR/munge      # owned by munge: key, socket, seed, pid and log of munged
DB_DIR=$STATE_DIR/mariadb       # owned by mysql: data, socket, pid and log of mariadbd
SLURM_CONF_FILE=$ETC_DIR/slurm.conf
MUNGE_SOCKET=$MUNGE_DIR/munge.socket.2
DB_SOCKET=$DB_DIR/mariadbd.sock

CLUSTER_NAME=robustad
PARTITION=debug
NODE_NAME=$(hostname -s)

APT_PACKAGES=(slurm-wlm munge slurmdbd mariadb-server)

# Daemons in start order (each name is also the /proc/PID/comm of a live one), their PID files and logs.
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)
declare -A PID_FILE=(
    [munged]=$MUNGE_DIR/munged.pid
    [mariadbd]=$RUN_DIR/mariadbd.pid
    [slurmdbd]=$RUN_DIR/slurmdbd.pid
    [slurmctld]=$RUN_DIR/slurmctld.pid
    [slurmd]=$RUN_DIR/slurmd.pid
)
declare -A LOG_FILE=(
    [munged]=$MUNGE_DIR/munged.log
    [mariadbd]=$DB_DIR/mariadbd.err
    [slurmdbd]=$LOG_DIR/slurmdbd.log
    [slurmctld]=$LOG_DIR/slurmctld.log
    [slurmd]=$LOG_DIR/slurmd.log
)

say() { printf 'slurm-test-cluster: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

show_logs() {
    local name
    if is_running slurmctld; then
        printf '\n--- sinfo and squeue ---\n' >&2
        SLURM_CONF=$SLURM_CONF_FILE sinfo --Node --long >&2 || true
        SLURM_CONF=$SLURM_CONF_FILE squeue >&2 || true
    fi
    for name in "${DAEMONS[@]}"; do
        if [[ -s ${LOG_FILE[$name]} ]]; then
            printf '\n--- last lines of %s ---\n' "${LOG_FILE[$name]}" >&2
            tail -n 15 "${LOG_FILE[$name]}" >&2
        fi
    done
}

fail_with_logs() {
    say "error: $*"
    show_logs
    exit 1
}

# The PID of a running daemon from its PID file, or nothing. The comm check keeps a stale file whose PID
# was reused by another program from being taken for the daemon.
daemon_pid() {
    local name=$1 pid
    [[ -r ${PID_FILE[$name]} ]] || return 1
    pid=$(tr -dc '0-9' <"${PID_FILE[$name]}")
    [[ -n $pid && -r /proc/$pid/comm ]] || return 1
    [[ $(cat "/proc/$pid/comm") == "$name" ]] || return 1
    printf '%s\n' "$pid"
}

is_running() { daemon_pid "$1" >/dev/null; }

STARTED=()  # daemons this start launched, in order

# wait_until SECONDS DESCRIPTION COMMAND...: poll COMMAND every 0.2 s; give up early when a daemon
# started before has died (slurmctld exits on a fatal config error, for instance).
wait_until() {
    local timeout=$1 what=$2 deadline name
    shift 2
    deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || fail_with_logs "timed out after ${timeout}s waiting for $what"
        for name in "${STARTED[@]}"; do
            is_running "$name" || fail_with_logs "$name died while waiting for $what"
        done
        sleep 0.2
    done
}

tcp_port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

node_state() { SLURM_CONF=$SLURM_CONF_FILE sinfo --noheader --Node --nodes="$NODE_NAME" --format=%T 2>/dev/null; }

node_is_idle() { [[ $(node_state) == idle ]]; }

# Responding and taking jobs (a trailing * in sinfo means not responding).
node_is_up() { [[ $(node_state) =~ ^(idle|mixed|allocated|completing)$ ]]; }

all_running() {
    local name
    for name in "${DAEMONS[@]}"; do
        is_running "$name" || return 1
    done
}

# ---------------------------------------------------------------------------------------------- install

missing_packages() {
    local package
    for package in "${APT_PACKAGES[@]}"; do
        dpkg-query --show --showformat='${Status}' "$package" 2>/dev/null | grep -q '^install ok installed$' ||
            printf '%s\n' "$package"
    done
}

install_packages() {
    local missing policy_added=0
    mapfile -t missing < <(missing_packages)
    ((${#missing[@]} == 0)) && return 0
    command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get to install them"
    say "installing ${missing[*]} with apt-get"
    # Debian's maintainer scripts would start the system-wide munge, MariaDB and SLURM services; this
    # cluster runs its own, so forbid service starts during the install (the policy-rc.d mechanism,
    # removed again afterwards; an existing policy file is left as it is).
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        policy_added=1
    fi
    local status=0
    {
        # Update the package lists only when apt does not know a package (fresh image) or the install
        # fails (stale lists pointing at removed .debs).
        if apt-cache policy "${missing[@]}" 2>/dev/null | grep -q 'Candidate: (none)' ||
            [[ -z $(apt-cache policy "${missing[@]}" 2>/dev/null) ]]; then
            apt-get update -qq
        fi
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" ||
            { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
                --no-install-recommends "${missing[@]}"; }
    } >"$STATE_DIR/apt.log" 2>&1 || status=$?
    ((policy_added)) && rm -f /usr/sbin/policy-rc.d
    if ((status != 0)); then
        tail -n 30 "$STATE_DIR/apt.log" >&2
        die "apt-get install ${missing[*]} failed (full log: $STATE_DIR/apt.log)"
    fi
}

# ---------------------------------------------------------------------------------------------- configs

make_state_dirs() {
    if [[ -e $STATE_DIR && $(stat -c %u "$STATE_DIR") != 0 ]]; then
        die "state folder $STATE_DIR exists but is not owned by root; remove it or set ROBUSTAD_SLURM_DIR"
    fi
    # 755 all the way: munged refuses directories that group or others may write to, and job owners
    # other than root must be able to reach the munge socket.
    install -d -m 755 -o root -g root "$STATE_DIR" "$ETC_DIR" "$LOG_DIR" "$RUN_DIR" \
        "$STATE_DIR/slurmctld" "$STATE_DIR/slurmd"
}

write_configs() {
    local cpus mem_mb db_password
    cpus=$(nproc)
    mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
    install -d -m 755 -o munge -g munge "$MUNGE_DIR"
    install -d -m 755 -o mysql -g mysql "$DB_DIR"
    if [[ ! -s $MUNGE_DIR/munge.key ]]; then
        dd if=/dev/urandom of="$MUNGE_DIR/munge.key" bs=1024 count=1 status=none
    fi
    chown munge:munge "$MUNGE_DIR/munge.key"
    chmod 400 "$MUNGE_DIR/munge.key"
    if [[ ! -s $ETC_DIR/db.password ]]; then
        # od reads exactly 16 bytes: no `tr </dev/urandom | head`, whose SIGPIPE pipefail would report.
        (umask 077 && od -An -tx1 -N16 /dev/urandom | tr -d ' \n' >"$ETC_DIR/db.password")
    fi
    db_password=$(cat "$ETC_DIR/db.password")

    cat >"$SLURM_CONF_FILE" <<EOF
# Written by scripts/slurm-test-cluster.sh; rewritten on every start.
ClusterName=$CLUSTER_NAME
SlurmctldHost=$NODE_NAME(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
CredType=cred/munge
StateSaveLocation=$STATE_DIR/slurmctld
SlurmdSpoolDir=$STATE_DIR/slurmd
SlurmctldPidFile=${PID_FILE[slurmctld]}
SlurmdPidFile=${PID_FILE[slurmd]}
SlurmctldLogFile=${LOG_FILE[slurmctld]}
SlurmdLogFile=${LOG_FILE[slurmd]}
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
MailProg=/bin/true
# SIGKILL 2 s after SIGTERM; finished jobs leave squeue after 30 s (sacct keeps them).
KillWait=2
MinJobAge=30
ReturnToService=2
FirstJobId=1
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
# With munge, this names the munge socket for talking to slurmdbd: AuthInfo above does not apply to
# that connection, and without it slurmctld and sacct look for /run/munge/munge.socket.2.
AccountingStoragePass=$MUNGE_SOCKET
JobCompType=jobcomp/none
NodeName=$NODE_NAME NodeAddr=127.0.0.1 NodeHostname=$NODE_NAME CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE_NAME Default=YES MaxTime=INFINITE State=UP
EOF
    chmod 644 "$SLURM_CONF_FILE"

    # slurmdbd reads slurmdbd.conf next to $SLURM_CONF and insists on mode 600, owned by SlurmUser.
    (umask 077 && cat >"$ETC_DIR/slurmdbd.conf" <<EOF
# Written by scripts/slurm-test-cluster.sh; rewritten on every start.
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=${PID_FILE[slurmdbd]}
LogFile=${LOG_FILE[slurmdbd]}
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$db_password
StorageLoc=slurm_acct_db
EOF
    )
}

# ---------------------------------------------------------------------------------------------- daemons

start_munged() {
    runuser -u munge -- /usr/sbin/munged --key-file="$MUNGE_DIR/munge.key" --socket="$MUNGE_SOCKET" \
        --pid-file="${PID_FILE[munged]}" --log-file="${LOG_FILE[munged]}" --seed-file="$MUNGE_DIR/munged.seed" ||
        fail_with_logs "munged did not start"
    STARTED+=(munged)
    wait_until "$TIMEOUT_S" "munged to answer on $MUNGE_SOCKET" \
        bash -c "munge --socket='$MUNGE_SOCKET' --no-input | unmunge --socket='$MUNGE_SOCKET'"
}

# At least half of what slurmdbd recommends, else it logs an "error" line at every start (the buffer
# pool is allocated as it fills, so this costs no memory on a test cluster).
SLURMDBD_INNODB_SETTINGS=(--innodb-buffer-pool-size=512M --innodb-lock-wait-timeout=900)

# shellcheck disable=SC2120  # called with arguments through wait_until
db_client() { mariadb --no-defaults --protocol=socket --socket="$DB_SOCKET" --user=root "$@"; }

start_mariadbd() {
    if [[ ! -d $DB_DIR/data/mysql ]]; then
        mariadb-install-db --no-defaults --datadir="$DB_DIR/data" --user=mysql --skip-test-db \
            --auth-root-authentication-method=socket >"$DB_DIR/install-db.log" 2>&1 ||
            { tail -n 20 "$DB_DIR/install-db.log" >&2; die "mariadb-install-db failed"; }
    fi
    # One that answers although `stop` found no PID file for it would be taken for the new one.
    if db_client --execute='SELECT 1' >/dev/null 2>&1; then
        die "a MariaDB this script has no PID file for answers on $DB_SOCKET (PID $(cat "$DB_DIR/mariadbd.pid" \
            2>/dev/null || echo unknown)); stop it, then start again"
    fi
    # No daemon mode of its own: detach it from this shell (new session, no stdio) and let it write
    # its PID file. root@localhost logs in through the unix socket as the system root, no password.
    setsid /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$DB_DIR/data" --socket="$DB_SOCKET" \
        --pid-file="$DB_DIR/mariadbd.pid" --log-error="${LOG_FILE[mariadbd]}" --bind-address=127.0.0.1 \
        --port="$DB_PORT" --skip-name-resolve "${SLURMDBD_INNODB_SETTINGS[@]}" </dev/null >/dev/null 2>&1 &
    wait_until "$TIMEOUT_S" "MariaDB on $DB_SOCKET" db_client --execute='SELECT 1'
    # mariadbd's own PID file is readable by mysql only; keep a copy that `status` can read as any user.
    install -m 644 "$DB_DIR/mariadbd.pid" "${PID_FILE[mariadbd]}"
    is_running mariadbd || fail_with_logs "mariadbd answers but its PID file names no mariadbd"
    STARTED+=(mariadbd)
}

create_db_user() {
    local db_password
    db_password=$(cat "$ETC_DIR/db.password")
    db_client <<EOF || fail_with_logs "could not create the MariaDB user for slurmdbd"
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE OR REPLACE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$db_password';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
EOF
}

start_slurm_daemon() {
    local name=$1
    shift
    SLURM_CONF=$SLURM_CONF_FILE "/usr/sbin/$name" "$@" || fail_with_logs "$name did not start"
    wait_until "$TIMEOUT_S" "$name to write ${PID_FILE[$name]}" is_running "$name"
    STARTED+=("$name")
}

# One more than the largest job id slurmdbd has recorded (sacct asks slurmdbd, not slurmctld).
next_job_id() {
    local largest
    largest=$(SLURM_CONF=$SLURM_CONF_FILE sacct --allusers --allocations --noheader --parsable2 \
        --format=JobIDRaw --starttime=1970-01-01T00:00:00 --endtime=now 2>/dev/null |
        grep -E '^[0-9]+$' | sort -n | tail -n 1) || true
    printf '%s\n' "$((${largest:-0} + 1))"
}

# ---------------------------------------------------------------------------------------------- commands

cmd_start() {
    local started=$SECONDS name
    [[ $(id -u) == 0 ]] || die "start needs root (apt-get, munge and mysql users, slurmd); run it with sudo"
    if all_running && node_is_up; then
        say "already running (node $NODE_NAME $(node_state)); SLURM_CONF=$SLURM_CONF_FILE"
        return 0
    fi
    make_state_dirs
    install_packages
    # A daemon left from a broken start would keep an old config; restart from a clean slate.
    for name in "${DAEMONS[@]}"; do
        if is_running "$name"; then
            say "a previous $name is still running; stopping everything first"
            cmd_stop
            break
        fi
    done
    write_configs
    # Keep the previous start's logs apart, so the tails printed on failure are this start's.
    for name in "${DAEMONS[@]}"; do
        [[ -s ${LOG_FILE[$name]} ]] && mv -f "${LOG_FILE[$name]}" "${LOG_FILE[$name]}.prev"
    done

    start_munged
    start_mariadbd
    create_db_user
    # slurmdbd before slurmctld: the controller registers the cluster with slurmdbd as it starts.
    start_slurm_daemon slurmdbd
    wait_until "$TIMEOUT_S" "slurmdbd to listen on port $DBD_PORT" tcp_port_open "$DBD_PORT"
    # A clean controller state on every start (-c): no job of an earlier run that was not stopped
    # cleanly can hold the node. Job ids go on from the accounting database's, so sacct never
    # sees two jobs with one id.
    sed -i "s/^FirstJobId=.*/FirstJobId=$(next_job_id)/" "$SLURM_CONF_FILE"
    start_slurm_daemon slurmctld -c
    start_slurm_daemon slurmd -N "$NODE_NAME"
    wait_until "$TIMEOUT_S" "node $NODE_NAME to be idle in sinfo" node_is_idle
    wait_until "$TIMEOUT_S" "sacct to reach slurmdbd" env SLURM_CONF="$SLURM_CONF_FILE" sacct --noheader
    say "up in $((SECONDS - started)) s: node $NODE_NAME ($(nproc) CPUs), partition $PARTITION," \
        "state in $STATE_DIR; export SLURM_CONF=$SLURM_CONF_FILE"
}

# A process that exists and is not a zombie (an unreaped zombie has no process left to stop).
process_alive() { [[ -r /proc/$1/stat ]] && [[ $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) != Z ]]; }

# Stop daemons by their recorded PIDs, together: SIGTERM, then SIGKILL to any still alive after 15 s.
stop_daemons() {
    local name pid waited=0
    declare -A pids=()
    for name in "$@"; do
        if pid=$(daemon_pid "$name"); then
            pids[$name]=$pid
            kill -TERM "$pid" 2>/dev/null || true
        fi
    done
    for name in "${!pids[@]}"; do
        while process_alive "${pids[$name]}" && ((waited < 75)); do
            sleep 0.2
            waited=$((waited + 1))
        done
        if process_alive "${pids[$name]}"; then
            say "$name (PID ${pids[$name]}) ignored SIGTERM for 15 s; sending SIGKILL"
            kill -KILL "${pids[$name]}" 2>/dev/null || true
        fi
        say "stopped $name (PID ${pids[$name]})"
    done
    for name in "$@"; do
        rm -f "${PID_FILE[$name]}"
    done
}

# Processes of this cluster that outlive its daemons: slurmstepd and job processes, recognised by the
# SLURM_CONF they inherit (slurmd's, and the job's environment) together with being a slurmstepd or
# carrying SLURM_JOB_ID. Only reached when jobs could not be cancelled (slurmctld already gone).
# This shell and its ancestors are never listed, even when `stop` runs inside one of the jobs.
leftover_job_processes() {
    local proc pid ancestors=" " environ
    pid=$$
    while ((pid > 1)); do
        ancestors+="$pid "
        pid=$(awk '{print $4}' "/proc/$pid/stat" 2>/dev/null || echo 1)
    done
    for proc in /proc/[0-9]*; do
        pid=${proc#/proc/}
        [[ $ancestors == *" $pid "* ]] && continue
        environ=$(tr '\0' '\n' 2>/dev/null <"$proc/environ") || continue
        grep -qxF "SLURM_CONF=$SLURM_CONF_FILE" <<<"$environ" || continue
        if [[ $(cat "$proc/comm" 2>/dev/null) == slurmstepd ]] || grep -q '^SLURM_JOB_ID=' <<<"$environ"; then
            printf '%s\n' "$pid"
        fi
    done
    return 0
}

cmd_stop() {
    local pids deadline
    [[ $(id -u) == 0 ]] || die "stop needs root (the daemons run as root, munge and mysql); run it with sudo"
    if is_running slurmctld; then
        mapfile -t pids < <(SLURM_CONF=$SLURM_CONF_FILE squeue --noheader --format=%A 2>/dev/null)
        if ((${#pids[@]} > 0)); then
            say "cancelling ${#pids[@]} job(s): ${pids[*]}"
            SLURM_CONF=$SLURM_CONF_FILE scancel "${pids[@]}" 2>/dev/null || true
            deadline=$((SECONDS + 15))
            while [[ -n $(SLURM_CONF=$SLURM_CONF_FILE squeue --noheader --states=RUNNING,COMPLETING \
                2>/dev/null) ]] && ((SECONDS < deadline)); do
                sleep 0.5
            done
        fi
    fi
    # Reverse start order, in three waves: slurmctld sends its last job records to slurmdbd as it
    # stops, slurmdbd writes them to MariaDB, and both need munged until then.
    stop_daemons slurmd slurmctld
    stop_daemons slurmdbd
    stop_daemons mariadbd munged
    mapfile -t pids < <(leftover_job_processes)
    if ((${#pids[@]} > 0)); then
        say "killing leftover slurmstepd and job processes: PIDs ${pids[*]}"
        kill -KILL "${pids[@]}" 2>/dev/null || true
    fi
}

cmd_status() {
    local name pid all_up=0
    for name in "${DAEMONS[@]}"; do
        if pid=$(daemon_pid "$name"); then
            printf '%-10s running (PID %s)\n' "$name" "$pid"
        else
            printf '%-10s stopped\n' "$name"
            all_up=3
        fi
    done
    printf 'state folder: %s\n' "$STATE_DIR"
    if is_running slurmctld; then
        SLURM_CONF=$SLURM_CONF_FILE sinfo --Node --long || true
        SLURM_CONF=$SLURM_CONF_FILE squeue || true
    fi
    return "$all_up"
}

cmd_env() {
    [[ -r $SLURM_CONF_FILE ]] || die "no $SLURM_CONF_FILE; run '$0 start' first"
    printf 'export SLURM_CONF=%q\n' "$SLURM_CONF_FILE"
}

case ${1:-} in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) cmd_env ;;
    *)
        printf 'usage: %s start|stop|status|env\n' "$0" >&2
        exit 2
        ;;
esac
