#!/usr/bin/env bash
# Tear down the test SLURM cluster started by tests/slurm/setup.sh: cancel leftover jobs, then
# stop slurmd, slurmctld, slurmdbd, munged and MariaDB. Idempotent: exits 0 when nothing runs.
# Configuration, the munge key and the accounting database are kept (setup.sh reuses them).
set -uo pipefail

RUN_DIR=/run/slurm

log() { printf '[slurm-stop] %s\n' "$*" >&2; }

# stop_daemons NAME...: SIGTERM each daemon (by its pidfile in $RUN_DIR or /run/munge when
# there is one, and by exact process name), wait up to 10 s for all of them, then SIGKILL
# whatever is left.
stop_daemons() {
    local name pidfile pid running=() i alive
    for name in "$@"; do
        for pidfile in "$RUN_DIR/$name.pid" "/run/munge/$name.pid"; do
            [[ -r $pidfile ]] || continue
            pid=$(<"$pidfile")
            if [[ -n $pid && $(cat "/proc/$pid/comm" 2>/dev/null) == "$name" ]]; then
                kill "$pid" 2>/dev/null
            fi
            rm -f "$pidfile"
        done
        if pgrep -x "$name" >/dev/null; then
            running+=("$name")
            pkill -x "$name" 2>/dev/null
        fi
    done
    ((${#running[@]})) || return 0
    log "stopping ${running[*]}"
    for ((i = 0; i < 40; i++)); do
        alive=0
        for name in "${running[@]}"; do
            pgrep -x "$name" >/dev/null && alive=1
        done
        ((alive)) || return 0
        sleep 0.25
    done
    for name in "${running[@]}"; do
        if pgrep -x "$name" >/dev/null; then
            log "$name did not exit: killing it"
            pkill -KILL -x "$name" 2>/dev/null
        fi
    done
    sleep 0.5
}

# Cancel jobs still queued or running, so no job step outlives the cluster.
if command -v scontrol >/dev/null 2>&1 && pgrep -x slurmctld >/dev/null &&
    timeout 10 scontrol ping 2>/dev/null | grep -q 'is UP'; then
    mapfile -t jobs < <(timeout 10 squeue -h -o '%i' 2>/dev/null)
    if ((${#jobs[@]})); then
        log "cancelling jobs: ${jobs[*]}"
        timeout 10 scancel "${jobs[@]}" 2>/dev/null
        sleep 1
    fi
fi

# slurmctld needs slurmdbd and munged to flush accounting records while it shuts down.
stop_daemons slurmd slurmstepd slurmctld
stop_daemons slurmdbd

# MariaDB: a clean shutdown (mysqld_safe then exits on its own), else by name; mysqld_safe
# goes before the server so that it cannot restart it.
if command -v mysqladmin >/dev/null 2>&1 &&
    mysqladmin --connect-timeout=2 ping >/dev/null 2>&1; then
    log "stopping MariaDB"
    timeout 30 mysqladmin shutdown >/dev/null 2>&1 &
fi
stop_daemons munged
wait
stop_daemons mysqld_safe
stop_daemons mariadbd mysqld

log "all SLURM test daemons stopped"
exit 0
