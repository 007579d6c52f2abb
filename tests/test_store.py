"""The cache's directory: strict loading, and saving that never loses or tears the cache."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from support import temp_files, write_json

from token_refresh import store
from token_refresh import token as tokens
from token_refresh.errors import CacheInvalid, CacheMissing, CacheWriteError, ExitCode

GOOD: dict[str, Any] = {
    "access_token": "at-1234",
    "refresh_token": "rt-1234",
    "issued_at": 1_800_000_000,
    "expires_in": 1200,
}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b'{"access_token": "at', "is not valid JSON"),
        (b"null", "not a JSON object (got NoneType)"),
        (b"[1, 2]", "not a JSON object (got list)"),
        (b"\xff\xfe{}", "is not UTF-8"),
        (json.dumps({**GOOD, "expires_in": "1200"}).encode(), "'expires_in' must be a number"),
        (json.dumps({**GOOD, "expires_in": True}).encode(), "'expires_in' must be a number"),
        (json.dumps({**GOOD, "expires_in": None}).encode(), "'expires_in' must be a number"),
        (b'{"access_token": "a", "refresh_token": "r", "issued_at": 1, "expires_in": NaN}', "not valid JSON"),
        (
            json.dumps({**GOOD, "access_token": "", "refresh_token": None}).encode(),
            "'access_token' must be a",
        ),
        (json.dumps({**GOOD, "access_token": 7}).encode(), "'access_token' must be a non-empty string"),
        (json.dumps({**GOOD, "refresh_token": 5}).encode(), "'refresh_token' must be a string"),
        (json.dumps({**GOOD, "issued_at": "yesterday"}).encode(), "'issued_at' is not a time"),
        (json.dumps({**GOOD, "issued_at": [1]}).encode(), "'issued_at' is not a time"),
        (json.dumps({**GOOD, "refresh_token_expires_in": "1h"}).encode(), "'refresh_token_expires_in'"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "issued_at"}).encode(), "'issued_at' is missing"),
        (b" " * (store.MAX_CACHE_BYTES + 1), "larger than"),
    ],
)
def test_unusable_cache_is_a_format_error(cache_path: Path, content: bytes, message: str) -> None:
    cache_path.write_bytes(content)
    with pytest.raises(CacheInvalid) as info:
        store.load(str(cache_path))
    assert message in str(info.value)
    assert info.value.exit_code == ExitCode.DATAERR


def test_missing_cache_and_directory_are_not_readable(cache_path: Path) -> None:
    with pytest.raises(CacheMissing, match="does not exist") as info:
        store.load(str(cache_path))
    assert info.value.exit_code == ExitCode.NOINPUT
    cache_path.mkdir()
    with pytest.raises(CacheMissing, match="is a directory"):
        store.load(str(cache_path))


@pytest.mark.parametrize(
    ("value", "epoch", "style"),
    [
        (1_800_000_000, 1_800_000_000, "int"),
        (1_800_000_000.5, 1_800_000_000.5, "float"),
        ("2027-01-15T08:00:00Z", 1_800_000_000, "iso-z"),
        ("2027-01-15T08:00:00+00:00", 1_800_000_000, "iso-offset"),
        ("2027-01-15T10:00:00+02:00", 1_800_000_000, "iso-offset"),
        ("2027-01-15T08:00:00", 1_800_000_000, "iso-naive"),
    ],
)
def test_issued_at_representations(value: float | str, epoch: float, style: str) -> None:
    assert tokens.parse_issued_at(value) == (epoch, style)
    written = tokens.format_issued_at(epoch, style)
    assert type(written) is type(value)
    assert tokens.parse_issued_at(written) == (epoch, style)


def save(path: Path, data: dict[str, Any]) -> None:
    with store.PendingWrite(str(path), reserve=4096) as pending:
        pending.commit(store.serialize(data))


def test_save_replaces_whole_file_and_keeps_mode_and_fields(cache_path: Path) -> None:
    write_json(cache_path, {**GOOD, "consumer": {"nested": [1, 2]}}, mode=0o640)
    new = {**GOOD, "access_token": "at-5678", "consumer": {"nested": [1, 2]}}
    save(cache_path, new)
    assert json.loads(cache_path.read_text()) == new
    assert cache_path.stat().st_mode & 0o777 == 0o640
    assert temp_files(cache_path) == []


def test_new_cache_is_private(cache_path: Path) -> None:
    save(cache_path, GOOD)
    assert cache_path.stat().st_mode & 0o777 == 0o600


def test_failed_rename_keeps_original_and_the_new_bytes_for_the_next_run(
    cache_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = write_json(cache_path, GOOD)

    def refuse(src: str, dst: str) -> None:
        raise OSError(16, "Device or resource busy")

    monkeypatch.setattr(os, "replace", refuse)
    new = {**GOOD, "access_token": "at-new", "refresh_token": "rt-new", "issued_at": GOOD["issued_at"] + 1}
    with pytest.raises(CacheWriteError, match="Device or resource busy") as info:
        save(cache_path, new)
    assert info.value.exit_code == ExitCode.IOERR
    assert "WAS spent" in str(info.value)
    assert cache_path.read_bytes() == original
    [kept] = temp_files(cache_path)
    assert json.loads((cache_path.parent / kept).read_bytes().rstrip(b"\0")) == new
    monkeypatch.undo()
    assert store.recover_temps(str(cache_path)) is not None  # the next run rolls it forward
    assert json.loads(cache_path.read_bytes()) == new
    assert temp_files(cache_path) == []


def test_failed_reservation_leaves_no_temp_file(cache_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = write_json(cache_path, GOOD)

    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(CacheWriteError, match="No space left on device"):
        store.PendingWrite(str(cache_path), reserve=4096)
    assert cache_path.read_bytes() == original
    assert temp_files(cache_path) == []


def test_missing_directory_cannot_be_prepared(tmp_path: Path) -> None:
    with pytest.raises(CacheWriteError, match="cannot create a file"):
        store.PendingWrite(str(tmp_path / "nowhere" / "c.json"), reserve=10)


def test_durable_order_fsync_file_then_rename_then_fsync_directory(
    cache_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_json(cache_path, GOOD)
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync-dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "fsync-file")
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        events.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    save(cache_path, {**GOOD, "access_token": "at-new"})
    # the reservation is fsynced too; what matters is data before rename, directory after
    assert events[-3:] == ["fsync-file", "replace", "fsync-dir"]


def test_stale_temp_files_are_removed_only_for_this_cache(cache_path: Path) -> None:
    folder = cache_path.parent
    write_json(cache_path, GOOD)
    (folder / f".{cache_path.name}.tr-abc123de.tmp").write_text("partial")
    others = [".other.json.tr-abc123de.tmp", f".{cache_path.name}.sim.tr-abc123de.tmp"]
    for name in others:
        (folder / name).write_text("not ours")
    assert store.recover_temps(str(cache_path)) is None
    assert sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp")) == sorted(others)
