#!/bin/sh
# Container entrypoint. For the scheduler (the image's default command, which starts with
# supercronic) it runs one cycle first, so a broken deployment (credentials, mounts, UID)
# shows in `docker logs` at start instead of at the next quarter hour; a failed first cycle
# does not stop the schedule. Any other command (`token-refresh run`, `status`...) runs as given.
set -u

if [ "${1:-}" = "supercronic" ]; then
    # This shell is PID 1, which has no default signal handlers: untrapped, a stop during the
    # first cycle waits out stop_grace_period and ends in SIGKILL. The trap hands the signal to
    # the cycle, which holds it until a spent token is saved (docs/RUNBOOK.md, "Start, stop and
    # remove the sidecar"); the schedule is then not started. Not compose's `init: true`: that
    # init exits as soon as this shell dies of the signal, and takes the cycle down with it.
    stop="" cycle=""
    forward() {
        stop=$1
        if [ -n "$cycle" ]; then kill -TERM "$cycle" 2>/dev/null; fi
    }
    trap 'forward TERM' TERM
    trap 'forward INT' INT
    trap 'forward HUP' HUP
    token-refresh run &
    cycle=$!
    if [ -n "$stop" ]; then kill -TERM "$cycle" 2>/dev/null; fi
    # a trapped signal interrupts `wait` (status > 128) while the cycle still runs: wait again
    while :; do
        wait "$cycle"
        status=$?
        kill -0 "$cycle" 2>/dev/null || break
    done
    if [ -n "$stop" ]; then
        echo "entrypoint: SIG$stop during the first cycle (exit $status); stopping without the schedule" >&2
        exit "$status"
    fi
    trap - TERM INT HUP
    if [ "$status" -ne 0 ]; then
        echo "entrypoint: first cycle exited $status (see docs/RUNBOOK.md); the schedule starts anyway" >&2
    fi
fi
exec "$@"
