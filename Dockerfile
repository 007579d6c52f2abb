# token-refresh sidecar: supercronic runs `token-refresh run` every 15 minutes (cron/crontab).
# Build: docker compose -f docker-compose.cron.yml --env-file /volume1/aegis/.env build
# No secret is baked in: credentials arrive at run time through the compose file's environment.
# Written for the classic builder too (no BuildKit-only syntax), since DSM's Docker may be old.
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

# --- supercronic: a release binary (not in Debian or PyPI), pinned and verified by SHA-256 ---
FROM ${PYTHON_IMAGE} AS supercronic
# v0.2.49. Upstream's release notes publish SHA-1 sums only; the SHA-256 values below are the ones
# GitHub's release API reports for these assets, as recorded identically by several independent
# public Dockerfiles (amd64 by four, arm64 by two). They could not be recomputed here (no network
# to GitHub): confirm once on a Docker host, see docs/RUNBOOK.md. A mismatch fails the build.
ARG SUPERCRONIC_VERSION=v0.2.49
ARG SUPERCRONIC_ARCH=amd64
ARG SUPERCRONIC_SHA256_AMD64=a53ae236602c7338aba3fbaff40bda6300eae3b9fedb8261eb06cfe3724430c1
ARG SUPERCRONIC_SHA256_ARM64=02aa0cb229ba09050cba6638059dadb9eedc2276632ea43d6a57a2f8c1629dd5
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ADD https://github.com/aptible/supercronic/releases/download/${SUPERCRONIC_VERSION}/supercronic-linux-${SUPERCRONIC_ARCH} /supercronic
RUN case "${SUPERCRONIC_ARCH}" in \
      amd64) sum="${SUPERCRONIC_SHA256_AMD64}" ;; \
      arm64) sum="${SUPERCRONIC_SHA256_ARM64}" ;; \
      *) echo "no SHA-256 pinned for ${SUPERCRONIC_ARCH}" >&2; exit 1 ;; \
    esac \
 && echo "${sum}  /supercronic" | sha256sum -c - \
 && chmod 0755 /supercronic

# --- the package and its dependencies in a virtual environment, copied whole below ---
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY setup.cfg pyproject.toml README.md ./
COPY token_refresh ./token_refresh
# The version bounds live in setup.cfg; `.` is this repository, not an unpinned package.
# A build host whose outbound TLS is re-signed (a corporate proxy) may lend its CA bundle to pip
# for this step only: `podman build --volume <bundle>:/run/build-ca.crt:ro`. Without the mount
# (the classic builder, DSM) pip uses its own; the bundle never becomes part of the image.
# hadolint ignore=DL3013
RUN if [ -s /run/build-ca.crt ]; then export PIP_CERT=/run/build-ca.crt REQUESTS_CA_BUNDLE=/run/build-ca.crt; fi \
 && python -m venv /opt/token-refresh \
 && /opt/token-refresh/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/token-refresh/bin/pip install --no-cache-dir '.[metrics]'

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
