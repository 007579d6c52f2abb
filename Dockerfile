# token-refresh sidecar: supercronic runs `token-refresh run` every 15 minutes (cron/crontab).
# Build: docker compose -f docker-compose.cron.yml --env-file /volume1/aegis/.env build
# No secret is baked in: credentials arrive at run time through the compose file's environment.
# Written for the classic builder too (no BuildKit-only syntax), since DSM's Docker may be old.
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

# --- supercronic: a release binary (not in Debian or PyPI), pinned and verified by checksum ---
FROM ${PYTHON_IMAGE} AS supercronic
# v0.2.51 is the newest release found (2026-11). Upstream publishes only a SHA-1 per binary, in
# the release notes; the SHA-1 below is that published value and is always checked.
# No published SHA-256 exists, and none could be computed here (no Docker host, no network), so
# SUPERCRONIC_SHA256 is empty: the build then prints the binary's SHA-256. Confirm it on a
# Docker host against a second download and pin it here or with --build-arg (docs/RUNBOOK.md).
# Another architecture (arm64 NAS): pass SUPERCRONIC_ARCH and its SHA-1 from the same release page.
ARG SUPERCRONIC_VERSION=v0.2.51
ARG SUPERCRONIC_ARCH=amd64
ARG SUPERCRONIC_SHA1=1692066e350a88ff4d7d6474fe3c7a6c41ec5e89
ARG SUPERCRONIC_SHA256=
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ADD https://github.com/aptible/supercronic/releases/download/${SUPERCRONIC_VERSION}/supercronic-linux-${SUPERCRONIC_ARCH} /supercronic
RUN echo "${SUPERCRONIC_SHA1}  /supercronic" | sha1sum -c - \
 && if [ -n "${SUPERCRONIC_SHA256}" ]; then \
      echo "${SUPERCRONIC_SHA256}  /supercronic" | sha256sum -c -; \
    else \
      echo "WARNING: SUPERCRONIC_SHA256 not pinned; SHA-1 verified; sha256: $(sha256sum /supercronic)"; \
    fi \
 && chmod 0755 /supercronic

# --- the package and its dependencies in a virtual environment, copied whole below ---
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY setup.cfg pyproject.toml README.md ./
COPY token_refresh ./token_refresh
# The version bounds live in setup.cfg; `.` is this repository, not an unpinned package.
# hadolint ignore=DL3013
RUN python -m venv /opt/token-refresh \
 && /opt/token-refresh/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/token-refresh/bin/pip install --no-cache-dir .

# --- runtime ---
FROM ${PYTHON_IMAGE}
# DL3064 matches "TOKEN" in a name: TOKEN_REFRESH_CONFIG is a file path, not a secret.
# hadolint ignore=DL3064
ENV PATH=/opt/token-refresh/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TOKEN_REFRESH_CONFIG=/etc/token-refresh/token_refresh.yaml
COPY --from=supercronic /supercronic /usr/local/bin/supercronic
COPY --from=build /opt/token-refresh /opt/token-refresh
# Default configs (no secrets); docker-compose.cron.yml mounts ./configs over them read-only.
COPY configs/ /etc/token-refresh/
COPY cron/crontab /usr/local/share/token-refresh/crontab
COPY cron/entrypoint.sh /usr/local/bin/token-refresh-entrypoint
# A fixed non-root default; compose's `user:` sets the UID:GID that owns the token directory.
# Nothing in the image needs a home directory or a writable path (the root fs is read-only).
USER 1026:100
ENTRYPOINT ["/usr/local/bin/token-refresh-entrypoint"]
CMD ["supercronic", "-passthrough-logs", "/usr/local/share/token-refresh/crontab"]
