#!/bin/bash
# Synology DSM Task Scheduler: Control Panel > Task Scheduler > Create > Scheduled Task >
# User-defined script. User: root (the Docker socket needs it; the container itself runs as the
# compose file's non-root `user:`). Schedule: daily, every 15 minutes. Settings: tick "Send run
# details by email" and "only when the script terminates abnormally". Task body, one line:
#     bash /volume1/aegis/token-refresh/cron/synology-task.sh
#
# One cycle in a one-shot container: `docker compose run --rm` rather than `docker exec` into the
# sidecar, because it does not depend on a long-running container being up (a stopped or
# restarting sidecar would make `docker exec` fail with Docker's own status, not the program's),
# and it uses the same image, UID, mounts, config and env file as the sidecar, so the lock file
# and the cache stay owned by one UID. The container's exit status is the program's (sysexits,
# docs/RUNBOOK.md), and this script exits with it, so DSM mails the operator on any failure.
#
# DSM runs the task with no TTY and an almost empty environment: every path below is absolute,
# and `-T` stops compose from asking for a TTY. The variables can be overridden for testing.
set -u

DOCKER="${DOCKER:-/usr/local/bin/docker}"
PROJECT_DIR="${PROJECT_DIR:-/volume1/aegis/token-refresh}"
ENV_FILE="${ENV_FILE:-/volume1/aegis/.env}"
COMPOSE_FILE="${COMPOSE_FILE:-$PROJECT_DIR/docker-compose.cron.yml}"
SERVICE="${SERVICE:-token-refresh-cron}"

for needed in "$DOCKER" "$ENV_FILE" "$COMPOSE_FILE"; do
    if [ ! -e "$needed" ]; then
        echo "synology-task: $needed does not exist; see docs/RUNBOOK.md, Prerequisites" >&2
        exit 78
    fi
done

"$DOCKER" compose --project-directory "$PROJECT_DIR" -f "$COMPOSE_FILE" --env-file "$ENV_FILE" \
    run --rm -T --no-deps "$SERVICE" token-refresh run -q "$@"
status=$?

case "$status" in
    0) ;;
    75) echo "synology-task: exit 75, temporary failure (network, Saxo 5xx/429, lock busy); the next run retries" >&2 ;;
    77) echo "synology-task: exit 77, MANUAL RE-AUTHORIZATION REQUIRED (docs/RUNBOOK.md, Re-authorize)" >&2 ;;
    78) echo "synology-task: exit 78, configuration or credentials problem (docs/RUNBOOK.md, Troubleshooting)" >&2 ;;
    65|66|74) echo "synology-task: exit $status, the token cache is broken, missing or not writable (docs/RUNBOOK.md)" >&2 ;;
    *) echo "synology-task: exit $status from docker compose / token-refresh (docs/RUNBOOK.md, Troubleshooting)" >&2 ;;
esac
exit "$status"
