"""``status`` over several caches, ``--since`` snapshots, and the worst exit status."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import pytest
from fake_saxo import FakeSaxo
from support import base_env, write_json

from token_refresh import status
from token_refresh.errors import worst

RunCli = Callable[..., Any]


@pytest.fixture
def second_cache(tmp_path: Path) -> Path:
    """The parallel observation keeper's cache, in its own folder."""
    folder = tmp_path / "rust"
    folder.mkdir()
    return folder / "saxobank_tokens_live_rust.json"


def status_json(run_cli: RunCli, *args: str) -> tuple[int, list[dict[str, Any]], str]:
    result = run_cli("status", "--json", *args)
    return result.returncode, json.loads(result.stdout), result.stderr


def test_two_caches_one_advanced_one_stale(
    run_cli: RunCli,
    saxo: FakeSaxo,
    config_file: Callable[..., Path],
    cache_path: Path,
    second_cache: Path,
    tmp_path: Path,
) -> None:
    config = config_file()
    write_json(second_cache, saxo.seed_cache(age=100))  # a keeper that is not running
    # seeded last: the fake server accepts only the newest refresh token
    write_json(cache_path, saxo.seed_cache(age=1000))  # due: the next run refreshes it
    caches = ("--cache", str(cache_path), "--cache", str(second_cache))

    code, before, _ = status_json(run_cli, "--config", str(config), *caches)
    assert code == 0
    assert [row["path"] for row in before] == [str(cache_path), str(second_cache)]
    assert all("issued_at_advanced" not in row for row in before)  # only with --since
    snapshot = tmp_path / "before.json"
    snapshot.write_text(json.dumps(before))

    assert run_cli("run", "--config", str(config)).returncode == 0
    assert saxo.refreshes == 1

    code, after, _ = status_json(run_cli, "--config", str(config), *caches, "--since", str(snapshot))
    assert code == 0
    first, second = after
    assert first["issued_at_advanced"] is True
    assert first["previous_issued_at"] == before[0]["issued_at"]
    assert second["issued_at_advanced"] is False
    assert second["issued_at"] == second["previous_issued_at"] == before[1]["issued_at"]

    # wide enough for side by side, whatever the length of the temporary paths
    text = run_cli(
        "status", "--config", str(config), *caches, "--since", str(snapshot), env=base_env(COLUMNS="500")
    )
    assert text.returncode == 0
    lines = {line.split(":", 1)[0]: line for line in text.stdout.splitlines()}
    assert str(cache_path) in lines["path"]
    assert str(second_cache) in lines["path"]
    assert "yes (was" in lines["advanced"]
    assert "NO (snapshot had" in lines["advanced"]
    assert lines["advanced"].index("yes") < lines["advanced"].index("NO")


def test_cache_missing_from_snapshot_and_old_single_object_snapshot(
    run_cli: RunCli, saxo: FakeSaxo, cache_path: Path, second_cache: Path, tmp_path: Path
) -> None:
    write_json(cache_path, saxo.seed_cache(age=100))
    write_json(second_cache, saxo.seed_cache(age=100))
    # the format before several caches: one object; an older issued_at, spelled through a symlink
    link = tmp_path / "link"
    link.symlink_to(cache_path.parent)
    old = {"path": str(link / cache_path.name), "issued_at": "2020-01-01T00:00:00Z", "state": "valid"}
    snapshot = tmp_path / "old.json"
    snapshot.write_text(json.dumps(old))
    code, rows, _ = status_json(
        run_cli, "--cache", str(cache_path), "--cache", str(second_cache), "--since", str(snapshot)
    )
    assert code == 0
    assert rows[0]["issued_at_advanced"] is True
    assert rows[0]["previous_issued_at"] == "2020-01-01T00:00:00Z"
    assert rows[1]["issued_at_advanced"] is None
    assert rows[1]["previous_issued_at"] is None


def test_a_broken_cache_is_a_row_not_a_crash(
    run_cli: RunCli, saxo: FakeSaxo, cache_path: Path, second_cache: Path, tmp_path: Path
) -> None:
    write_json(cache_path, saxo.seed_cache(age=100))
    second_cache.write_text("{not json")
    missing = tmp_path / "nowhere.json"
    args = ("--cache", str(cache_path), "--cache", str(second_cache), "--cache", str(missing))
    code, rows, stderr = status_json(run_cli, *args)
    assert code == 66  # missing beats corrupt beats valid
    good, corrupt, gone = rows
    assert set(good) == set(corrupt) == set(gone)  # the same keys in every row
    assert good["state"] == "valid"
    assert good["error"] is None
    assert good["exit_status"] == 0
    assert corrupt["exit_status"] == 65
    assert "not valid JSON" in corrupt["error"]
    assert corrupt["state"] is None
    assert corrupt["issued_at"] is None
    assert gone["exit_status"] == 66
    assert "does not exist" in gone["error"]
    assert str(second_cache) in stderr
    assert str(missing) in stderr

    text = run_cli("status", *args)
    assert text.returncode == 66
    assert "does not exist" in text.stdout
    assert "valid" in text.stdout


def test_default_cache_is_the_configs_and_json_is_a_list(
    run_cli: RunCli, saxo: FakeSaxo, config_file: Callable[..., Path], cache_path: Path
) -> None:
    write_json(cache_path, saxo.seed_cache(age=100))
    code, rows, _ = status_json(run_cli, "--config", str(config_file()))
    assert code == 0
    assert len(rows) == 1
    assert rows[0]["path"] == str(cache_path)
    for key in status.ROW_KEYS:
        assert key in rows[0]


@pytest.mark.parametrize(
    ("content", "code", "message"),
    [
        (None, 66, "does not exist"),
        ("{broken", 65, "not valid JSON"),
        ('[{"no_path": 1}]', 65, "not a status --json snapshot"),
        ('"a string"', 65, "not a status --json snapshot"),
    ],
)
def test_bad_snapshot(
    run_cli: RunCli,
    saxo: FakeSaxo,
    cache_path: Path,
    tmp_path: Path,
    content: str | None,
    code: int,
    message: str,
) -> None:
    write_json(cache_path, saxo.seed_cache(age=100))
    snapshot = tmp_path / "snap.json"
    if content is not None:
        snapshot.write_text(content)
    result = run_cli("status", "--cache", str(cache_path), "--since", str(snapshot))
    assert result.returncode == code
    assert message in result.stderr
    assert str(snapshot) in result.stderr


def _cache_for_status(saxo: FakeSaxo, path: Path, code: int) -> None:
    if code == 0:
        write_json(path, saxo.seed_cache(age=100))
    elif code == 75:  # access token expired, refresh token still good: a run fixes it
        write_json(path, saxo.seed_cache(age=1500))
    elif code == 77:  # refresh token expired
        write_json(path, saxo.seed_cache(age=4000))
    elif code == 65:
        path.write_text("[]")
    elif code == 66 and path.exists():
        os.unlink(path)


@pytest.mark.parametrize(
    ("codes", "expected"),
    [
        ((0, 0), 0),
        ((0, 75), 75),
        ((75, 65), 65),
        ((65, 66), 66),
        ((66, 77), 77),
        ((77, 0), 77),
    ],
)
def test_exit_status_is_the_worst(
    run_cli: RunCli,
    saxo: FakeSaxo,
    tmp_path: Path,
    codes: tuple[int, int],
    expected: int,
) -> None:
    paths = [tmp_path / f"cache{i}.json" for i in range(len(codes))]
    for path, code in zip(paths, codes):
        _cache_for_status(saxo, path, code)
    args = [arg for path in paths for arg in ("--cache", str(path))]
    code, rows, _ = status_json(run_cli, *args)
    assert [row["exit_status"] for row in rows] == list(codes)
    assert code == expected


def test_worst_ranks_every_code() -> None:
    assert worst([]) == 0
    assert worst([0, 75, 65, 66, 77]) == 77
    assert worst([0, 75, 65, 66]) == 66
    assert worst([0, 75, 65]) == 65
    assert worst([75, 0]) == 75
    assert worst([77, 70]) == 70  # an unexpected status outranks all


@pytest.mark.parametrize(
    ("current", "previous", "expected"),
    [
        ("2026-01-01T00:00:01Z", "2026-01-01T00:00:00Z", True),
        ("2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z", False),
        ("2025-12-31T23:59:59Z", "2026-01-01T00:00:00Z", False),  # went back: a restored old file
        (None, "2026-01-01T00:00:00Z", None),
        ("2026-01-01T00:00:00Z", None, None),
        ("2026-01-01T00:00:00Z", "garbage", None),
    ],
)
def test_advanced(current: str | None, previous: str | None, expected: bool | None) -> None:
    assert status.advanced(current, previous) is expected
