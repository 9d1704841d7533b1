#!/usr/bin/env bash
# Start a one-node SLURM cluster on this machine (slurmctld and slurmd, CPU only) for
# tests/integration/test_slurm_cluster.py. Idempotent: rerunning it keeps a running cluster
# (restarting the daemons only when the generated slurm.conf changed).
#
#   bash scripts/slurm_cluster.sh          # install (apt-get), configure, start, wait for the node
#   bash scripts/slurm_cluster.sh --stop   # stop the daemons it started
#
# * installs Debian's `slurm-wlm` and `munge` with apt-get if sbatch/slurmctld/slurmd/munged are missing;
# * writes /etc/slurm/slurm.conf (SLURM_CONF to change it): cluster and node named after
#   `hostname -s` with the CPUs and memory `slurmd -C` reports, select/cons_tres, proctrack/linuxproc
#   and task/none (no cgroups needed), no accounting, ReturnToService=2, one default partition `debug`;
# * creates the munge key if missing, starts munged, slurmctld and slurmd, waits until `sinfo`
#   shows the node idle and runs a one-second job through `sbatch --wait`.
#
# On failure it exits non-zero and writes why (the step, the failing command, its output and the
# daemons' log tails) to $NNUNET_TRANSFER_SLURM_REASON (default /tmp/nnunet_transfer_slurm_unavailable),
# which the integration test prints as its skip reason; on success it removes that file.
set -uo pipefail

REASON_FILE=${NNUNET_TRANSFER_SLURM_REASON:-/tmp/nnunet_transfer_slurm_unavailable}
CONF=${SLURM_CONF:-/etc/slurm/slurm.conf}
STATE_DIR=/var/lib/slurm
LOG_DIR=/var/log/slurm
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
MUNGE_PID=/run/munge/munged.pid
WAIT_S=${NNUNET_TRANSFER_SLURM_WAIT:-90}
STEP="starting"

note() { echo "slurm_cluster: $*" >&2; }

log_tails() {
    local f
    for f in "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log" /var/log/munge/munged.log; do
        if [ -s "$f" ] && [ -r "$f" ]; then
            echo "--- last lines of $f ---"
            tail -n 15 "$f"
        fi
    done
}

# fail STEP_DESCRIPTION COMMAND OUTPUT: write the reason file and exit 1
fail() {
    {
        echo "one-node SLURM cluster unavailable" \
             "(scripts/slurm_cluster.sh on $(hostname 2>/dev/null), $(date -u +%FT%TZ))"
        echo "step: $1"
        [ -n "${2:-}" ] && echo "command: $2"
        [ -n "${3:-}" ] && printf 'output:\n%s\n' "$3"
        log_tails
    } > "$REASON_FILE.tmp" 2>&1
    mv -f "$REASON_FILE.tmp" "$REASON_FILE"
    note "FAILED, see $REASON_FILE:"
    cat "$REASON_FILE" >&2
    exit 1
}

# step DESCRIPTION: what we are doing now (left in the reason file if the script is killed)
step() {
    STEP=$1
    note "$STEP"
    printf '%s (interrupted during: %s; started %s)\n' \
        "one-node SLURM cluster unavailable: scripts/slurm_cluster.sh did not finish" \
        "$STEP" "$STARTED" > "$REASON_FILE"
}

# try COMMAND...: run it; on failure, fail with the command and its output
try() {
    local out
    if ! out=$("$@" 2>&1); then
        fail "$STEP" "$*" "$out"
    fi
    [ -n "$out" ] && printf '%s\n' "$out" >&2
    return 0
}

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
gone() { [ -s "$1" ] && ! kill -0 "$(cat "$1")" 2>/dev/null; }  # started, wrote its pid file, died

start_daemon() {  # start_daemon PIDFILE COMMAND...: unless running (a stale pid file is removed first)
    local pidfile=$1
    shift
    if ! alive "$pidfile"; then
        rm -f "$pidfile"
        try "$@"
    fi
}

stop_daemon() {  # stop_daemon PIDFILE NAME
    if alive "$1"; then
        local pid
        pid=$(cat "$1")
        note "stopping $2 (pid $pid)"
        kill "$pid" 2>/dev/null
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
    fi
    rm -f "$1"
}

STARTED=$(date -u +%FT%TZ)
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        exec sudo -n -E bash "$0" "$@"
    fi
    STEP="checking privileges"
    fail "$STEP" "id -u" \
        "uid $(id -u): installing SLURM and starting its daemons needs root (or sudo without a password)"
fi

if [ "${1:-}" = "--stop" ]; then
    stop_daemon "$SLURMD_PID" slurmd
    stop_daemon "$CTLD_PID" slurmctld
    stop_daemon "$MUNGE_PID" munged
    exit 0
fi

# ---- packages -------------------------------------------------------------------------------
step "installing slurm-wlm and munge"
if ! command -v sbatch >/dev/null || ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
        || ! command -v munged >/dev/null; then
    command -v apt-get >/dev/null \
        || fail "$STEP" "command -v apt-get" "no apt-get: install SLURM (slurmctld, slurmd, sbatch) and munge by hand"
    export DEBIAN_FRONTEND=noninteractive
    install=(apt-get install -y -qq --no-install-recommends -o Dpkg::Use-Pty=0 slurm-wlm munge)
    if ! out=$("${install[@]}" 2>&1); then
        try apt-get update -qq
        try "${install[@]}"
    fi
fi

# ---- munge ----------------------------------------------------------------------------------
step "creating the munge key"
if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    if command -v mungekey >/dev/null; then
        try mungekey --create --keyfile=/etc/munge/munge.key
    else
        try dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024
    fi
fi
chown munge:munge /etc/munge/munge.key 2>/dev/null
chmod 0400 /etc/munge/munge.key

step "starting munged"
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null
    chmod 0755 /run/munge
    rm -f /run/munge/munged.pid
    if command -v runuser >/dev/null; then
        try runuser -u munge -- /usr/sbin/munged
    else
        try su -s /bin/sh munge -c /usr/sbin/munged
    fi
    for _ in $(seq 1 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.2; done
    check=$( (munge -n | unmunge) 2>&1) || fail "$STEP" "munge -n | unmunge" "$check"
fi

# ---- slurm.conf -----------------------------------------------------------------------------
step "writing $CONF"
HOST=$(hostname -s) || fail "$STEP" "hostname -s" "no short host name"
hw=$(slurmd -C 2>&1) || fail "$STEP" "slurmd -C" "$hw"
node_line=$(printf '%s\n' "$hw" | grep -m1 '^NodeName=')
[ -n "$node_line" ] || fail "$STEP" "slurmd -C" "no NodeName line in: $hw"
hardware=$(printf '%s\n' "$node_line" | tr ' ' '\n' \
    | grep -E '^(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore|RealMemory)=' | tr '\n' ' ' | sed 's/ $//')
CLUSTER=$(printf '%s' "$HOST" | tr 'A-Z' 'a-z' | tr -c 'a-z0-9_\n' '_')
mkdir -p "$(dirname "$CONF")" "$STATE_DIR/slurmctld" "$STATE_DIR/slurmd" "$LOG_DIR"
cat > "$CONF.new" <<EOF
# one-node test cluster written by nnunet-transfer's scripts/slurm_cluster.sh (CPU only)
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$STATE_DIR/slurmctld
SlurmdSpoolDir=$STATE_DIR/slurmd
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MpiDefault=none
MailProg=/bin/true
# no cgroups in a sandbox: processes tracked through /proc, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=2
# no accounting: finished jobs stay visible to scontrol for a day instead
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=86400
ReturnToService=2
KillWait=10
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName=$HOST NodeAddr=127.0.0.1 $hardware State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
changed=0
if ! cmp -s "$CONF.new" "$CONF"; then
    mv -f "$CONF.new" "$CONF"
    changed=1
else
    rm -f "$CONF.new"
fi
export SLURM_CONF="$CONF"

# ---- daemons --------------------------------------------------------------------------------
if [ "$changed" = 1 ]; then
    stop_daemon "$SLURMD_PID" slurmd
    stop_daemon "$CTLD_PID" slurmctld
fi
step "starting slurmctld"
start_daemon "$CTLD_PID" slurmctld -f "$CONF"
deadline=$((SECONDS + WAIT_S))
until out=$(scontrol ping 2>&1) && printf '%s\n' "$out" | grep -q ' is UP'; do
    gone "$CTLD_PID" && fail "$STEP" "slurmctld -f $CONF" "slurmctld exited; scontrol ping: $out"
    [ "$SECONDS" -lt "$deadline" ] || fail "$STEP" "scontrol ping" "no controller after ${WAIT_S} s: $out"
    sleep 0.5
done

step "starting slurmd"
start_daemon "$SLURMD_PID" slurmd -f "$CONF"

step "waiting for node $HOST to be idle (sinfo)"
state=""
deadline=$((SECONDS + WAIT_S))
resumed=0
while [ "$SECONDS" -lt "$deadline" ]; do
    state=$(sinfo -h -n "$HOST" -o '%T' 2>&1 | head -n1)
    case "$state" in
        idle|mixed|allocated|completing) break ;;
        down*|drain*|fail*)  # left so by an earlier run: bring it back once
            [ "$resumed" = 0 ] && scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1
            resumed=1 ;;
    esac
    gone "$SLURMD_PID" && fail "$STEP" "slurmd -f $CONF" "slurmd exited (node state: $state)"
    sleep 0.5
done
case "$state" in
    idle|mixed|allocated|completing) ;;
    *) fail "$STEP" "sinfo -h -n $HOST -o %T" "node state after ${WAIT_S} s: '$state'
$(sinfo -R 2>&1)
$(scontrol show node "$HOST" 2>&1)" ;;
esac

step "running a test job (sbatch --wait --wrap true)"
smoke=$(mktemp /tmp/slurm_smoke.XXXXXX)
out=$(timeout "$WAIT_S" sbatch --wait --time=1 --mem=16M --job-name=slurm-cluster-check \
      --output="$smoke" --wrap 'echo ok on $(hostname -s)' 2>&1)
rc=$?
if [ "$rc" != 0 ] || ! grep -q '^ok' "$smoke"; then
    fail "$STEP" "sbatch --wait --time=1 --mem=16M --wrap 'echo ok'" "exit status $rc
$out
job output: $(cat "$smoke" 2>&1)"
fi
rm -f "$smoke"

rm -f "$REASON_FILE"
note "cluster '$CLUSTER' is up: node $HOST ($hardware) in partition debug"
sinfo >&2
exit 0
