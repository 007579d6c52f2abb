"""The cache file: strict loading, and saving that never loses or tears it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from support import write_json

from token_refresh import cache
from token_refresh.errors import CacheFormatError, CacheMissingError, CacheWriteError, ExitCode

GOOD = {"access_token": "at-1234", "refresh_token": "rt-1234", "issued_at": 1_800_000_000, "expires_in": 1200}


def temp_files(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(cache.TMP_SUFFIX)]


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
        (json.dumps({**GOOD, "access_token": ""}).encode(), "'access_token' must be a non-empty string"),
        (json.dumps({**GOOD, "refresh_token": 5}).encode(), "'refresh_token' must be a string"),
        (json.dumps({**GOOD, "issued_at": "yesterday"}).encode(), "'issued_at' is not a time"),
        (json.dumps({**GOOD, "issued_at": [1]}).encode(), "'issued_at' is not a time"),
        (json.dumps({**GOOD, "refresh_token_expires_in": "1h"}).encode(), "'refresh_token_expires_in'"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "issued_at"}).encode(), "'issued_at' is missing"),
        (b" " * (cache.MAX_CACHE_BYTES + 1), "larger than"),
    ],
)
def test_unusable_cache_is_a_format_error(cache_path: Path, content: bytes, message: str) -> None:
    cache_path.write_bytes(content)
    with pytest.raises(CacheFormatError) as info:
        cache.load_cache(str(cache_path))
    assert message in str(info.value)
    assert info.value.exit_code == ExitCode.DATAERR


def test_missing_cache_and_directory_are_not_readable(cache_path: Path) -> None:
    with pytest.raises(CacheMissingError, match="does not exist") as info:
        cache.load_cache(str(cache_path))
    assert info.value.exit_code == ExitCode.NOINPUT
    cache_path.mkdir()
    with pytest.raises(CacheMissingError, match="is a directory"):
        cache.load_cache(str(cache_path))


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
def test_issued_at_representations(value, epoch: float, style: str) -> None:
    assert cache.parse_issued_at(value) == (epoch, style)
    written = cache.format_issued_at(epoch, style)
    assert type(written) is type(value)
    assert cache.parse_issued_at(written) == (epoch, style)


def save(path: Path, data: dict) -> None:
    with cache.PendingWrite(str(path), reserve=4096) as pending:
        pending.commit(cache.serialize(data))


def test_save_replaces_whole_file_and_keeps_mode_and_fields(cache_path: Path) -> None:
    write_json(cache_path, {**GOOD, "consumer": {"nested": [1, 2]}}, mode=0o640)
    new = {**GOOD, "access_token": "at-5678", "consumer": {"nested": [1, 2]}}
    save(cache_path, new)
    assert json.loads(cache_path.read_text()) == new
    assert cache_path.stat().st_mode & 0o777 == 0o640
    assert temp_files(cache_path.parent) == []


def test_new_cache_is_private(cache_path: Path) -> None:
    save(cache_path, GOOD)
    assert cache_path.stat().st_mode & 0o777 == 0o600


def test_failed_rename_leaves_original_byte_identical(cache_path: Path, monkeypatch) -> None:
    original = write_json(cache_path, GOOD)

    def refuse(src: str, dst: str) -> None:
        raise OSError(16, "Device or resource busy")

    monkeypatch.setattr(cache.os, "replace", refuse)
    with pytest.raises(CacheWriteError, match="Device or resource busy") as info:
        save(cache_path, {**GOOD, "access_token": "at-new"})
    assert info.value.exit_code == ExitCode.IOERR
    assert cache_path.read_bytes() == original
    assert temp_files(cache_path.parent) == []


def test_failed_reservation_leaves_no_temp_file(cache_path: Path, monkeypatch) -> None:
    original = write_json(cache_path, GOOD)

    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache.os, "posix_fallocate", full)
    with pytest.raises(CacheWriteError, match="No space left on device"):
        cache.PendingWrite(str(cache_path), reserve=4096)
    assert cache_path.read_bytes() == original
    assert temp_files(cache_path.parent) == []


def test_missing_directory_cannot_be_prepared(tmp_path: Path) -> None:
    with pytest.raises(CacheWriteError, match="cannot create a file"):
        cache.PendingWrite(str(tmp_path / "nowhere" / "c.json"), reserve=10)


def test_durable_order_fsync_file_then_rename_then_fsync_directory(cache_path: Path, monkeypatch) -> None:
    write_json(cache_path, GOOD)
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync-dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "fsync-file")
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        events.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(cache.os, "fsync", fsync)
    monkeypatch.setattr(cache.os, "replace", replace)
    save(cache_path, {**GOOD, "access_token": "at-new"})
    # the reservation is fsynced too; what matters is data before rename, directory after
    assert events[-3:] == ["fsync-file", "replace", "fsync-dir"]


def test_stale_temp_files_are_removed_only_for_this_cache(cache_path: Path) -> None:
    folder = cache_path.parent
    (folder / f".{cache_path.name}.abc123.tmp").write_text("partial")
    (folder / ".other.json.abc123.tmp").write_text("not ours")
    assert cache.remove_stale_temps(str(cache_path)) == [f".{cache_path.name}.abc123.tmp"]
    assert sorted(p.name for p in folder.iterdir()) == [".other.json.abc123.tmp"]
