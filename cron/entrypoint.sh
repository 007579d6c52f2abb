#!/bin/sh
# Container entrypoint. For the scheduler (the image's default command, which starts with
# supercronic) it runs one cycle first, so a broken deployment (credentials, mounts, UID)
# shows in `docker logs` at start instead of at the next quarter hour; a failed first cycle
# does not stop the schedule. Any other command (`token-refresh run`, `status`...) runs as given.
set -u

if [ "${1:-}" = "supercronic" ]; then
    token-refresh run
    status=$?
    if [ "$status" -ne 0 ]; then
        echo "entrypoint: first cycle exited $status (see docs/RUNBOOK.md); the schedule starts anyway" >&2
    fi
fi
exec "$@"
