#!/bin/bash
# `make container-test`: the sidecar for real. Builds the project's Dockerfile with podman (on a
# Debian base image made by mmdebstrap, no registry) and runs docker-compose.cron.yml through
# podman-compose against the fake token endpoint (tests/container/test_container.py).
# Needs root and apt-get to install podman; without them it says so and exits 0. With them every
# failure is a failure. Its podman settings live in STATE_DIR, nothing system-wide.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "container-test: skipped (needs root and apt-get to install podman)"
    exit 0
fi

STATE_DIR=${TR_CONTAINER_STATE:-/var/tmp/token-refresh-container}
RUN_DIR=/run/token-refresh-container
BASE_IMAGE=localhost/token-refresh-base:bookworm
IMAGE=token-refresh:local  # docker-compose.cron.yml's image:
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
VENV=$REPO/.venv-container
PODMAN_COMPOSE_VERSION=1.6.0
started=$(date +%s)

say() { echo "container-test: $*"; }
fail() {
    echo "container-test: FAILED: $*" >&2
    exit 1
}

mkdir -p "$STATE_DIR" "$RUN_DIR"
# One run per machine at a time: the compose file fixes the container's name.
exec 9>"$STATE_DIR/lock"
flock -w 600 9 || fail "another container-test still runs after 10 minutes"

# --- packages from Debian (podman 4.3 with runc; crun refuses hybrid cgroups) ---
missing=()
for tool in podman runc mmdebstrap; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]} from Debian"
    timeout 300 apt-get update -qq >"$STATE_DIR/apt.log" 2>&1 ||
        fail "apt-get update failed or timed out after 300 s (see $STATE_DIR/apt.log)"
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq --no-install-recommends \
        podman runc mmdebstrap >>"$STATE_DIR/apt.log" 2>&1 ||
        fail "apt-get install podman runc mmdebstrap failed or timed out (see $STATE_DIR/apt.log)"
fi

# --- podman's settings, in files of our own ---
# Without CAP_SYS_RESOURCE a container's rlimits cannot exceed podman's own: pin them to the
# current ones. podman 4.3 lowers its own RLIMIT_NPROC to 32768 when it starts.
nofile=$(ulimit -n)
nproc=$(ulimit -u)
if [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ]; then nproc=32768; fi
export CONTAINERS_CONF=$STATE_DIR/containers.conf
export CONTAINERS_STORAGE_CONF=$STATE_DIR/storage.conf
cat >"$CONTAINERS_CONF" <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]

[engine]
runtime = "runc"
# no systemd or journald on CI machines
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "$RUN_DIR/libpod"

[network]
network_config_dir = "$STATE_DIR/cni"
EOF
storage_conf() {
    cat >"$CONTAINERS_STORAGE_CONF" <<EOF
[storage]
driver = "$1"
graphroot = "$STATE_DIR/storage-$1"
runroot = "$RUN_DIR/storage-$1"
EOF
}
storage_conf overlay
if ! podman info >"$STATE_DIR/podman-info.log" 2>&1; then
    say "overlay storage does not work here, using vfs (slower)"
    storage_conf vfs
    podman info >"$STATE_DIR/podman-info.log" 2>&1 || fail "podman does not start (see $STATE_DIR/podman-info.log)"
fi

cleanup() {
    status=$?
    trap - EXIT INT TERM
    if [ -n "${tests_pid:-}" ] && kill -0 "$tests_pid" 2>/dev/null; then
        kill "$tests_pid" 2>/dev/null || true
        wait "$tests_pid" 2>/dev/null || true
    fi
    # the private storage holds only this project's containers
    podman ps -aq --filter label=io.podman.compose.project=token-refresh | xargs -r podman rm -f -t 0 >/dev/null 2>&1 || true
    podman pod rm -f pod_token-refresh >/dev/null 2>&1 || true
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- the base image: Debian bookworm with python3, built once and kept ---
if ! podman image exists "$BASE_IMAGE"; then
    say "building $BASE_IMAGE with mmdebstrap (once; kept in $STATE_DIR)"
    timeout 600 mmdebstrap --variant=essential --format=tar \
        --include=python3,python3-venv,python-is-python3,ca-certificates \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        bookworm - "$DEBIAN_MIRROR" 2>"$STATE_DIR/mmdebstrap.log" |
        podman import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null ||
        fail "mmdebstrap or podman import failed (see $STATE_DIR/mmdebstrap.log)"
fi

# --- podman-compose and pytest, in a venv of their own ---
if ! "$VENV/bin/podman-compose" --version 2>/dev/null | grep -q "podman-compose version $PODMAN_COMPOSE_VERSION"; then
    say "installing podman-compose $PODMAN_COMPOSE_VERSION and pytest in $VENV"
    python3 -m venv "$VENV" || fail "python3 -m venv $VENV"
    timeout 300 "$VENV/bin/pip" install -q "podman-compose==$PODMAN_COMPOSE_VERSION" 'pytest>=8,<10' ||
        fail "pip install podman-compose pytest"
fi

# --- the image: the real Dockerfile; only the supercronic stage is a stand-in ---
stand_in=$STATE_DIR/supercronic-context
mkdir -p "$stand_in"
install -m 0755 tests/container/supercronic_standin.py "$stand_in/supercronic"
build_args=(--pull=never --network host --build-arg "PYTHON_IMAGE=$BASE_IMAGE"
    --build-context "supercronic=$stand_in" -t "$IMAGE" -f Dockerfile)
# outbound TLS may be re-signed by a local CA: lend pip the host's bundle for the build only
if [ -s /etc/ssl/certs/ca-certificates.crt ]; then
    build_args+=(--volume /etc/ssl/certs/ca-certificates.crt:/run/build-ca.crt:ro)
fi
say "building $IMAGE from the Dockerfile"
timeout 600 podman build "${build_args[@]}" . >"$STATE_DIR/build.log" 2>&1 ||
    fail "podman build failed (see $STATE_DIR/build.log)"

# --- the tests ---
say "image ready after $(($(date +%s) - started)) s; running tests/container"
TOKEN_REFRESH_CONTAINER_TEST=1 PODMAN_COMPOSE="$VENV/bin/podman-compose" \
    "$VENV/bin/python" -m pytest -p no:cacheprovider --durations=5 tests/container &
tests_pid=$!
tests_status=0
wait "$tests_pid" || tests_status=$?
tests_pid=
[ "$tests_status" -eq 0 ] || fail "tests/container exited $tests_status"
say "passed in $(($(date +%s) - started)) s"
