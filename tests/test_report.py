"""``token-refresh report``: the observation criteria answered from the run journal, run as a process."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from fake_saxo import FakeSaxo
from support import write_json

from token_refresh.fmt import iso

RunCli = Callable[..., "subprocess.CompletedProcess[str]"]
ConfigFile = Callable[..., Path]
INTERVAL = 900


def record(epoch: float, *, action: str = "refreshed", exit_status: int = 0, **extra: Any) -> dict[str, Any]:
    """A journal record as ``run`` writes it after a refresh of a 1200 s Saxo token."""
    issued = epoch + 1 if exit_status == 0 else epoch - INTERVAL + 1
    values: dict[str, Any] = {
        "time": iso(epoch),
        "epoch": epoch,
        "command": "run",
        "action": action,
        "exit_status": exit_status,
        "issued_at": iso(issued),
        "issued_at_epoch": issued,
        "access_left_secs": 1199.0 if exit_status == 0 else 299.0,
        "refresh_left_secs": 3599.0,
        "refresh_fingerprint": "0123abcd",
        "spent_fingerprint": None,
        "refused_fingerprint": None,
        "access_expired_at_start": False,
        "attempts": 1,
        "duration_secs": 0.2,
    }
    values.update(extra)
    return values


def healthy_day(now: float) -> list[dict[str, Any]]:
    """A refresh every 900 s for the last 24 h and a bit, as the shipped cadence journals it."""
    return [record(now - 3 - INTERVAL * i) for i in range(98)][::-1]


def write_journal(cache_path: Path, runs: list[dict[str, Any]]) -> None:
    Path(f"{cache_path}.runs.json").write_text(json.dumps({"version": 1, "runs": runs}))


def spoil(runs: list[dict[str, Any]], case: str, now: float) -> list[dict[str, Any]]:
    """The healthy day with one thing wrong, as ``case`` names it."""
    if case == "gap":  # the keeper stopped for an hour: four runs missing
        return runs[:40] + runs[44:]
    if case == "refused":
        runs[60] = record(runs[60]["epoch"], action="refused", exit_status=77, refused_fingerprint="0123abcd")
    elif case == "failed-twice":
        runs[60] = record(runs[60]["epoch"], action="failed", exit_status=75)
        runs[61] = record(runs[61]["epoch"], action="failed", exit_status=75)
    elif case == "issued_at-back":
        runs[70]["issued_at_epoch"] = runs[10]["issued_at_epoch"]
        runs[70]["issued_at"] = runs[10]["issued_at"]
    elif case == "expired-at-start":
        runs[80]["access_expired_at_start"] = True
    elif case == "stopped":  # nothing for the last 40 minutes
        return [r for r in runs if r["epoch"] < now - 2400]
    return runs


@pytest.mark.parametrize(
    ("case", "failed"),
    [
        ("healthy", []),
        ("blip", []),  # one 75 that the next run recovered from: accepted (docs/RUNBOOK.md)
        ("gap", ["max_gap"]),
        ("stopped", ["max_gap"]),
        ("refused", ["failures", "invalid_grant"]),
        ("failed-twice", ["max_gap", "failures"]),
        ("issued_at-back", ["issued_at_monotonic"]),
        ("expired-at-start", ["access_expired_at_start"]),
    ],
)
def test_criteria(
    run_cli: RunCli, config_file: ConfigFile, cache_path: Path, case: str, failed: list[str]
) -> None:
    now = time.time()
    runs = healthy_day(now)
    if case == "blip":
        runs[50] = record(runs[50]["epoch"], action="failed", exit_status=75)
    write_journal(cache_path, spoil(runs, case, now))
    result = run_cli("report", "--json", "--config", str(config_file()))
    (row,) = json.loads(result.stdout)
    assert [c["name"] for c in row["criteria"] if not c["ok"]] == failed, row["criteria"]
    assert result.returncode == (69 if failed else 0), result.stderr
    assert row["ok"] is (not failed)
    assert row["exit_status"] == result.returncode
    assert {c["name"] for c in row["criteria"]} == {
        "max_gap",
        "failures",
        "invalid_grant",
        "issued_at_monotonic",
        "access_expired_at_start",
    }
    if case == "healthy":
        assert row["runs"] == row["refreshes"] == 96  # 24 h at 900 s
        assert row["failures"] == {}
        assert row["invalid_grant"] == 0
        assert row["issued_at_monotonic"] is True
        assert INTERVAL - 5 <= row["max_gap_secs"] <= INTERVAL + 5
    if case == "refused":
        assert row["failures"] == {"77": 1}
        assert row["invalid_grant"] == 1


def test_since_narrows_the_window_and_the_text_says_it(
    run_cli: RunCli, config_file: ConfigFile, cache_path: Path
) -> None:
    now = time.time()
    runs = healthy_day(now)
    runs[10] = record(runs[10]["epoch"], action="refused", exit_status=77)  # about 22 h ago
    write_journal(cache_path, runs)
    config = str(config_file())
    assert run_cli("report", "--config", config).returncode == 69
    recent = run_cli("report", "--config", config, "--since", "90m")
    assert recent.returncode == 0, recent.stdout
    lines = dict(line.split(":", 1) for line in recent.stdout.splitlines() if line[:1].strip())
    assert lines["runs"].split()[0] == "6"
    assert lines["window"].strip().startswith("90m:")
    assert "ok: every criterion holds" in lines["result"]
    week = run_cli("report", "--json", "--config", config, "--since", "7d")
    assert week.returncode == 69
    assert json.loads(week.stdout)[0]["runs"] == 98


def test_runs_journal_what_report_reads(
    run_cli: RunCli, saxo: FakeSaxo, config_file: ConfigFile, cache_path: Path, tmp_path: Path
) -> None:
    """End to end: real runs write the journal, report answers from it; a second cache without one is 66."""
    config = str(config_file(interval_secs=60))  # a horizon of 180 s
    write_json(cache_path, saxo.seed_cache(age=1100))
    assert run_cli("run", "--config", config).returncode == 0
    assert run_cli("run", "--force", "--config", config).returncode == 0
    result = run_cli("report", "--json", "--config", config, "--since", "90s")
    assert result.returncode == 0, result.stdout
    (row,) = json.loads(result.stdout)
    assert (row["runs"], row["refreshes"], row["failures"], row["invalid_grant"]) == (2, 2, {}, 0)
    assert row["issued_at_monotonic"] is True

    other = tmp_path / "other.json"
    write_json(other, saxo.seed_cache(age=100))
    both = run_cli(
        "report", "--config", config, "--since", "90s", "--cache", str(cache_path), "--cache", str(other)
    )
    assert both.returncode == 66
    assert "run journal" in both.stdout
    assert "does not exist" in both.stderr


@pytest.mark.parametrize("since", ["0", "8d", "soon", "-5m"])
def test_bad_since_is_a_usage_error(run_cli: RunCli, since: str) -> None:
    result = run_cli("report", "--since", since)
    assert result.returncode == 2
    assert "--since" in result.stderr


def test_a_damaged_journal_is_65(run_cli: RunCli, config_file: ConfigFile, cache_path: Path) -> None:
    Path(f"{cache_path}.runs.json").write_text("[1, 2")
    result = run_cli("report", "--config", str(config_file()))
    assert result.returncode == 65
    assert "not valid JSON" in result.stderr
