"""Scenario 1: ten forced refreshes in a row; each spends the newest refresh token exactly once."""

from __future__ import annotations

import os
import stat

import pytest
from harness import Runner, load_json
from support import base_env

from token_refresh import cli


def test_ten_forced_refreshes_follow_the_chain(e2e: Runner) -> None:
    e2e.seed(consumer_note="kept across rewrites")
    issued_at = []
    for i in range(10):
        before = load_json(e2e.cache)
        done = e2e.run("--force")
        assert done.returncode == 0, done.stderr
        assert "token refreshed" in done.stderr
        requests = e2e.refresh_requests()
        assert len(requests) == i + 1
        assert requests[-1]["refresh_token"] == before["refresh_token"]  # the newest one, not an older one
        assert requests[-1]["auth_ok"]
        data = e2e.assert_holds_newest()
        assert data["consumer_note"] == "kept across rewrites"
        assert isinstance(data["issued_at"], int)
        issued_at.append(data["issued_at"])
    assert e2e.saxo.refreshes == 10
    assert e2e.saxo.reuses == 0
    assert issued_at == sorted(issued_at)
    assert e2e.cache.stat().st_mode & 0o777 == 0o600


def test_each_save_is_fsynced_before_the_rename_and_the_directory_after(
    e2e: Runner, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Durability (docs/DESIGN.md, "The durable write"): power loss after the rename leaves a whole cache."""
    e2e.seed()
    calls: list[tuple[str, str, bytes]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        size = os.fstat(fd).st_size
        content = os.pread(fd, size, 0) if stat.S_ISREG(os.fstat(fd).st_mode) else b""
        calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"), content))
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        calls.append(("replace", f"{src} -> {dst}", b""))
        real_replace(src, dst)

    for name, value in base_env().items():
        if name.startswith("SAXOBANK_"):
            monkeypatch.setenv(name, value)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    # in-process through the CLI's main(), so that the spy sees the program's own calls
    code = cli.main(["run", "--force", "--config", str(e2e.config), "-v"])
    monkeypatch.undo()
    e2e.record(*capsys.readouterr())
    assert code == 0
    final = e2e.cache.read_bytes()
    cache = os.path.realpath(e2e.cache)
    renames = [i for i, c in enumerate(calls) if c[0] == "replace" and c[1].endswith(f" -> {cache}")]
    assert len(renames) == 1, calls
    at = renames[0]
    temp = calls[at][1].split(" -> ")[0]
    synced = [c[2] for c in calls[:at] if c[0] == "fsync" and c[1] == temp]
    assert synced[-1:] == [final], "the bytes renamed into place were not fsynced first"
    assert ("fsync", os.path.dirname(cache), b"") in calls[at + 1 :], "the directory was not fsynced"
