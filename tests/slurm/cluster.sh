#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for the integration test
# (tests/test_slurm.py) and for trying profiles/slurm-local by hand.
#
#   tests/slurm/cluster.sh start    install (if missing), configure, start, wait until the node is idle
#   tests/slurm/cluster.sh status   daemons + sinfo; exit 0 when the cluster accepts jobs, 3 otherwise
#   tests/slurm/cluster.sh stop     cancel leftover jobs, stop the daemons by their pid files
#
# Needs root (Debian/Ubuntu, no systemd required). `start` is idempotent: when everything is
# already up with the same configuration it does nothing. Daemons are stopped only through their
# pid files (never by process name), so other SLURM/munge processes on the machine are untouched.
#
# Environment:
#   FUNDIFF_SLURM_FAKE_GPU=1   advertise one fake GPU (gres.conf File=/dev/null) so that `--gpus=1`
#                              submissions are accepted; jobs then see CUDA_VISIBLE_DEVICES=0 but
#                              no real device. Set to 0 for a CPU-only node. Default 1.
#   FUNDIFF_SLURM_TIMEOUT=60   seconds to wait for the daemons / the node before failing.
#
# It refuses to overwrite an /etc/slurm/slurm.conf that it did not write itself.
set -euo pipefail

FAKE_GPU="${FUNDIFF_SLURM_FAKE_GPU:-1}"
TIMEOUT="${FUNDIFF_SLURM_TIMEOUT:-60}"

CONF_DIR=/etc/slurm
SLURM_CONF="$CONF_DIR/slurm.conf"
GRES_CONF="$CONF_DIR/gres.conf"
MARKER="# Written by fundiff tests/slurm/cluster.sh (local test cluster); safe to overwrite."
LOG_DIR=/var/log/slurm
STATE_DIR=/var/lib/slurm
MUNGE_PID=/run/munge/munged.pid
MUNGE_LOG=/var/log/munge/munged.log
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
NODE="$(hostname -s)"

log() { printf 'cluster.sh: %s\n' "$*" >&2; }

die() {
    log "ERROR: $*"
    show_logs
    exit 1
}

show_logs() {
    local f
    for f in "$MUNGE_LOG" "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log"; do
        if [[ -s "$f" ]]; then
            printf '\n----- last lines of %s -----\n' "$f" >&2
            tail -n 25 "$f" >&2 || true
        fi
    done
}

need_root() {
    if [[ "$(id -u)" -ne 0 ]]; then
        log "ERROR: must run as root (try: sudo $0 $*)"
        exit 2
    fi
}

# pid_alive PIDFILE NAME: the pid file names a live process whose command is NAME
# (guards against a stale pid file whose number was reused by an unrelated process).
pid_alive() {
    local pidfile="$1" name="$2" pid comm
    [[ -r "$pidfile" ]] || return 1
    pid="$(tr -dc '0-9' <"$pidfile")"
    [[ -n "$pid" ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    comm="$(cat "/proc/$pid/comm" 2>/dev/null || true)"
    [[ "$comm" == "$name"* ]]
}

pid_of() { tr -dc '0-9' <"$1"; }

install_packages() {
    local missing=()
    command -v slurmctld >/dev/null || [[ -x /usr/sbin/slurmctld ]] || missing+=(slurmctld)
    command -v slurmd >/dev/null || [[ -x /usr/sbin/slurmd ]] || missing+=(slurmd)
    command -v sbatch >/dev/null || missing+=(slurm-client)
    command -v munged >/dev/null || [[ -x /usr/sbin/munged ]] || missing+=(munge)
    if ((${#missing[@]} == 0)); then
        return 0
    fi
    command -v apt-get >/dev/null || die "SLURM is not installed and apt-get is unavailable; install ${missing[*]} by hand"
    log "installing ${missing[*]} (apt-get)"
    # The package scripts try to start services and are refused without systemd: harmless.
    apt-get -o DPkg::Lock::Timeout=300 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
        --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
}

render_config() {
    local line cpus mem gres_node=""
    line="$(/usr/sbin/slurmd -C | head -n 1)"
    cpus="$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$line")"
    mem="$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$line")"
    [[ -n "$cpus" && -n "$mem" ]] || die "could not parse 'slurmd -C': $line"
    mem=$((mem * 90 / 100))
    if [[ "$FAKE_GPU" == 1 ]]; then
        gres_node=" Gres=gpu:1"
    fi
    cat <<EOF
$MARKER
ClusterName=localci
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
# Finished jobs stay visible to squeue for 5 min: snakemake polls with squeue (no slurmdbd).
MinJobAge=300
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
StateSaveLocation=$STATE_DIR/slurmctld
SlurmdSpoolDir=$STATE_DIR/slurmd
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
$([[ "$FAKE_GPU" == 1 ]] && echo "GresTypes=gpu")
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem${gres_node} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

render_gres() {
    echo "$MARKER"
    if [[ "$FAKE_GPU" == 1 ]]; then
        echo "# One fake GPU: lets --gpus=1 jobs be scheduled; there is no real device behind it."
        echo "NodeName=$NODE Name=gpu File=/dev/null"
    fi
}

# write_if_changed FILE CONTENT -> returns 0 when the file was (re)written
write_if_changed() {
    local file="$1" content="$2"
    if [[ -f "$file" ]] && [[ "$(cat "$file")" == "$content" ]]; then
        return 1
    fi
    if [[ -f "$file" ]] && ! head -n 1 "$file" | grep -qxF "$MARKER"; then
        die "$file exists and was not written by this script; refusing to overwrite it (move it away first)"
    fi
    printf '%s\n' "$content" >"$file"
    return 0
}

stop_daemon() { # stop_daemon PIDFILE NAME
    local pidfile="$1" name="$2" pid i
    if ! pid_alive "$pidfile" "$name"; then
        rm -f "$pidfile"
        return 0
    fi
    pid="$(pid_of "$pidfile")"
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$name (pid $pid) ignored SIGTERM for 15 s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    rm -f "$pidfile"
}

wait_for() { # wait_for DESCRIPTION COMMAND... (polls every 0.5 s up to TIMEOUT)
    local what="$1" deadline
    shift
    deadline=$((SECONDS + TIMEOUT))
    until "$@"; do
        ((SECONDS < deadline)) || die "timed out after ${TIMEOUT}s waiting for $what"
        sleep 0.5
    done
}

node_state() { sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null | head -n 1; }

node_ready() {
    local state
    state="$(node_state)"
    case "$state" in
    idle | mixed | allocated | completing) return 0 ;;
    *drain* | *inval* | down* | *fail*)
        # A node that once registered with another config stays DRAIN/INVAL/DOWN across restarts.
        log "node $NODE is '$state'; resuming it"
        scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
        return 1
        ;;
    *) return 1 ;;
    esac
}

cluster_up() {
    pid_alive "$MUNGE_PID" munged && pid_alive "$CTLD_PID" slurmctld &&
        pid_alive "$SLURMD_PID" slurmd && node_ready
}

cmd_start() {
    need_root start
    install_packages
    install -d -m 0755 "$CONF_DIR"
    install -d -o slurm -g slurm "$LOG_DIR" "$STATE_DIR" "$STATE_DIR/slurmctld" "$STATE_DIR/slurmd"

    local changed=0 conf gres
    conf="$(render_config)" || exit 1
    gres="$(render_gres)"
    if write_if_changed "$SLURM_CONF" "$conf"; then changed=1; fi
    if write_if_changed "$GRES_CONF" "$gres"; then changed=1; fi
    if ((changed)); then
        log "configuration written to $SLURM_CONF (fake GPU: $FAKE_GPU)"
        # Both daemons must restart to see a new configuration.
        stop_daemon "$SLURMD_PID" slurmd
        stop_daemon "$CTLD_PID" slurmctld
    elif cluster_up; then
        log "already running (node $NODE: $(node_state)); nothing to do"
        return 0
    fi

    if ! pid_alive "$MUNGE_PID" munged; then
        [[ -s /etc/munge/munge.key ]] || {
            log "creating /etc/munge/munge.key"
            if command -v mungekey >/dev/null; then
                runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key
            else
                dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
                chown munge:munge /etc/munge/munge.key
            fi
            chmod 0400 /etc/munge/munge.key
        }
        install -d -o munge -g munge -m 0755 /run/munge /var/log/munge /var/lib/munge
        log "starting munged"
        runuser -u munge -- /usr/sbin/munged --pid-file="$MUNGE_PID" ||
            die "munged failed to start"
        wait_for "munged" pid_alive "$MUNGE_PID" munged
    fi
    if ! pid_alive "$CTLD_PID" slurmctld; then
        log "starting slurmctld"
        /usr/sbin/slurmctld || die "slurmctld failed to start"
        wait_for "slurmctld" pid_alive "$CTLD_PID" slurmctld
    fi
    if ! pid_alive "$SLURMD_PID" slurmd; then
        log "starting slurmd (node $NODE)"
        /usr/sbin/slurmd -N "$NODE" || die "slurmd failed to start"
        wait_for "slurmd" pid_alive "$SLURMD_PID" slurmd
    fi
    wait_for "node $NODE to become idle" node_ready
    log "cluster up: node $NODE is $(node_state); partition debug; fake GPU: $FAKE_GPU"
}

cmd_stop() {
    need_root stop
    local i jobs
    if pid_alive "$CTLD_PID" slurmctld; then
        jobs="$(squeue -h -o '%i' 2>/dev/null || true)"
        if [[ -n "$jobs" ]]; then
            log "cancelling leftover jobs: $(echo $jobs)"
            # shellcheck disable=SC2086
            scancel $jobs 2>/dev/null || true
            for ((i = 0; i < 100; i++)); do
                [[ -z "$(squeue -h -t running,completing,pending -o '%i' 2>/dev/null)" ]] && break
                sleep 0.1
            done
        fi
    fi
    stop_daemon "$SLURMD_PID" slurmd
    stop_daemon "$CTLD_PID" slurmctld
    stop_daemon "$MUNGE_PID" munged
    log "stopped"
}

cmd_status() {
    local ok=0 d
    for d in "munged:$MUNGE_PID" "slurmctld:$CTLD_PID" "slurmd:$SLURMD_PID"; do
        if pid_alive "${d#*:}" "${d%%:*}"; then
            printf '%-10s running (pid %s)\n' "${d%%:*}" "$(pid_of "${d#*:}")"
        else
            printf '%-10s stopped\n' "${d%%:*}"
            ok=3
        fi
    done
    if pid_alive "$CTLD_PID" slurmctld; then
        sinfo -N -o '%N %P %T %c %m %G' || ok=3
        case "$(node_state)" in idle | mixed | allocated | completing) ;; *) ok=3 ;; esac
    fi
    return "$ok"
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
*)
    echo "usage: $0 start|stop|status" >&2
    exit 64
    ;;
esac
