#!/bin/bash
# Synology DSM Task Scheduler (or any cron) without Docker: one cycle with a host virtual environment.
# Install once, as root, into a venv of its own (not the checkout's .venv, which `make test` and
# `make clean` own); the task's account only reads and runs it (docs/RUNBOOK.md, "Without Docker"):
#   python3 -m venv /volume1/aegis/token-refresh-venv &&
#   /volume1/aegis/token-refresh-venv/bin/pip install /volume1/aegis/token-refresh
# DSM task: User-defined script, User: the account that owns /volume1/aegis/tokens (NOT root:
# the lock file must be created by the same UID as every other entry point), every 15 minutes,
# "Send run details by email ... only when the script terminates abnormally". Task body:
#     bash /volume1/aegis/token-refresh/cron/synology-task-venv.sh
# By hand, as that account, with the same credentials, config and cache as the task:
#     sudo -u tokenkeeper bash /volume1/aegis/token-refresh/cron/synology-task-venv.sh authorize --paste
#     sudo -u tokenkeeper bash /volume1/aegis/token-refresh/cron/synology-task-venv.sh status
# Any other arguments go to `run` (e.g. --force, -v).
#
# DSM gives the task no environment, so only the credential variables are read from the central
# env file (it must be readable by that account; mode 0600). The file is parsed, never sourced:
# compose env-file syntax is not shell syntax. The exit status is the program's (sysexits).
set -u

PROJECT_DIR="${PROJECT_DIR:-/volume1/aegis/token-refresh}"
VENV="${VENV:-/volume1/aegis/token-refresh-venv}"
TOKEN_REFRESH="${TOKEN_REFRESH:-$VENV/bin/token-refresh}"
ENV_FILE="${ENV_FILE:-/volume1/aegis/.env}"
CONFIG="${CONFIG:-$PROJECT_DIR/configs/token_refresh.yaml}"
# The host path of the cache (inside containers it is /data/tokens/...).
CACHE="${CACHE:-/volume1/aegis/tokens/saxobank_tokens_live.json}"

for needed in "$TOKEN_REFRESH" "$ENV_FILE" "$CONFIG"; do
    if [ ! -e "$needed" ]; then
        echo "synology-task-venv: $needed does not exist; see docs/RUNBOOK.md, Prerequisites" >&2
        exit 78
    fi
done

# Export only the credential variables (and their *_FILE variants); strip one pair of quotes.
while IFS= read -r line || [ -n "$line" ]; do
    line="${line%$'\r'}"
    case "$line" in
        SAXOBANK_APP_KEY_LIVE=* | SAXOBANK_APP_SECRET_LIVE=* | SAXOBANK_APP_KEY_SIM=* | \
        SAXOBANK_APP_SECRET_SIM=* | SAXOBANK_APP_*_FILE=*) ;;
        *) continue ;;
    esac
    name="${line%%=*}"
    value="${line#*=}"
    if [[ "$value" == \"*\" || "$value" == \'*\' ]]; then
        value="${value:1:${#value}-2}"
    fi
    export "$name=$value"
done < "$ENV_FILE"

case "${1:-}" in
    status | authorize)
        command="$1"
        shift
        "$TOKEN_REFRESH" "$command" --config "$CONFIG" --cache "$CACHE" "$@"
        ;;
    *)
        if [ "${1:-}" = run ]; then shift; fi
        "$TOKEN_REFRESH" run --config "$CONFIG" --cache "$CACHE" -q "$@"
        ;;
esac
status=$?
if [ "$status" -ne 0 ]; then
    echo "synology-task-venv: token-refresh exited $status; see docs/RUNBOOK.md, Troubleshooting" >&2
fi
exit "$status"
