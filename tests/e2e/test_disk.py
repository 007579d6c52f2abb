"""Scenario 8: a read-only or full cache directory; exit 74 before the token is spent, cache unchanged."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from harness import TALLY, Runner, temp_files
from support import base_env
from tools import namespaces_missing

# Runs in a private mount namespace: mounts vanish with the process and never touch the host.
# "$@" is the program's command line; afterwards the directory is copied out for inspection.
SCRIPT = """
set -e
mount --make-rprivate /
case "$MODE" in
  readonly) mount --bind "$DIR" "$DIR"; mount -o remount,bind,ro "$DIR" ;;
  full) mount -t tmpfs -o size=8k,mode=0755 tmpfs "$DIR"; cp -p "$SEED"/. "$DIR" -r ;;
esac
set +e
"$@"
rc=$?
cp -pr "$DIR"/. "$OUT"
exit $rc
"""


@pytest.fixture(autouse=True)
def _private_mounts() -> None:
    """Every test here runs the program in a private mount namespace: skip where there is none."""
    reason = namespaces_missing()
    if reason:
        pytest.skip(reason)


@pytest.mark.parametrize("lock_exists", [False, True], ids=["no-lock-file", "lock-file-exists"])
@pytest.mark.parametrize("mode", ["readonly", "full"])
def test_unwritable_directory_exits_74_before_spending(
    e2e: Runner, tmp_path: Path, mode: str, lock_exists: bool
) -> None:
    before = e2e.seed_due()
    if lock_exists:
        (e2e.cache.parent / (e2e.cache.name + ".lock")).touch()
    seed, out = tmp_path / "seed", tmp_path / "out"
    shutil.copytree(e2e.cache.parent, seed)
    out.mkdir()
    TALLY.faults += 1
    env = {"MODE": mode, "DIR": str(e2e.cache.parent), "SEED": str(seed), "OUT": str(out)}
    done = e2e.run("run", env=base_env(**env), prefix=["unshare", "-m", "sh", "-c", SCRIPT, "sh"])
    assert done.returncode == 74, done.stderr
    expected = "Read-only file system" if mode == "readonly" else "No space left on device"
    assert expected in done.stderr
    assert e2e.refresh_requests() == []  # the token was not spent
    assert e2e.saxo.refreshes == 0
    inside = out / e2e.cache.name
    assert inside.read_bytes() == before
    assert temp_files(inside) == []
    assert e2e.cache.read_bytes() == before


def test_unwritable_directory_still_serves_a_valid_token(e2e: Runner, tmp_path: Path) -> None:
    """A valid token needs no write: a read-only directory is no failure."""
    before = e2e.seed()
    out = tmp_path / "out"
    out.mkdir()
    env = base_env(MODE="readonly", DIR=str(e2e.cache.parent), SEED="", OUT=str(out))
    done = e2e.run("run", env=env, prefix=["unshare", "-m", "sh", "-c", SCRIPT, "sh"])
    assert done.returncode == 0, done.stderr
    assert "token valid" in done.stderr
    assert e2e.cache.read_bytes() == before
    assert e2e.refresh_requests() == []


def test_single_file_bind_mount_is_refused_before_spending(e2e: Runner, tmp_path: Path) -> None:
    """docs/DESIGN.md, "The durable write": os.replace onto a bind-mounted file fails with EBUSY."""
    before = e2e.seed_due()
    outside = tmp_path / "host-copy.json"
    outside.write_bytes(before)
    script = 'set -e; mount --make-rprivate /; mount --bind "$SRC" "$DST"; set +e; "$@"'
    env = base_env(SRC=str(outside), DST=str(e2e.cache))
    TALLY.faults += 1
    done = e2e.run("run", env=env, prefix=["unshare", "-m", "sh", "-c", script, "sh"])
    assert done.returncode == 74, done.stderr
    assert "is a mount point" in done.stderr
    assert e2e.refresh_requests() == []
    assert outside.read_bytes() == before
    assert temp_files(e2e.cache) == []
