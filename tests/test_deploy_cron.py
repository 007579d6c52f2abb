"""The crontab fires every 900 s and runs the real console script; the entrypoint behaves."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

from croniter import croniter
from deploy_support import REPO, cli_bin_dir, console_script_name, invocation_problems
from fake_saxo import FakeSaxo
from support import Processes, base_env, write_json

CRONTAB = REPO / "cron" / "crontab"
ENTRYPOINT = REPO / "cron" / "entrypoint.sh"


def crontab_entries() -> list[tuple[str, list[str]]]:
    """(five-field schedule, command words) for every job line."""
    entries = []
    for line in CRONTAB.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split(None, 5)
        assert len(fields) == 6, f"not a five-field cron line: {line!r}"
        entries.append((" ".join(fields[:5]), shlex.split(fields[5])))
    return entries


def test_crontab_fires_every_900_seconds_for_a_whole_day() -> None:
    (schedule, _), *rest = crontab_entries()
    assert not rest, "exactly one job: two would race for the same refresh token"
    start = datetime(2026, 3, 29, 0, 7, tzinfo=timezone.utc)  # a DST change day in Europe
    it = croniter(schedule, start)
    fires = [it.get_next(datetime) for _ in range(4 * 24 + 1)]
    gaps = {(b - a).total_seconds() for a, b in zip(fires, fires[1:])}
    assert gaps == {900.0}
    assert fires[0] - start <= timedelta(seconds=900)
    assert all(f.minute % 15 == 0 and f.second == 0 for f in fires)


def test_crontab_runs_the_installed_console_script_with_a_real_subcommand() -> None:
    (_, words), *_ = crontab_entries()
    assert words[0] == console_script_name() == "token-refresh"
    assert words[1] == "run"
    assert invocation_problems(words[1:]) == []


def _fake_supercronic(tmp_path: Path) -> Path:
    bin_dir = cli_bin_dir(tmp_path)
    stub = bin_dir / "supercronic"
    stub.write_text('#!/bin/sh\necho "fake supercronic started: $*"\n')
    stub.chmod(0o755)
    return bin_dir


def _entrypoint(
    processes: Processes, tmp_path: Path, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    path = f"{_fake_supercronic(tmp_path)}{os.pathsep}{os.environ['PATH']}"
    return processes.run(["sh", str(ENTRYPOINT), *args], env=base_env(PATH=path, **env))


def test_entrypoint_runs_one_cycle_then_starts_the_schedule(
    processes: Processes, tmp_path: Path, saxo: FakeSaxo, cache_path: Path, config_file: Callable[..., Path]
) -> None:
    seed: dict[str, Any] = saxo.seed_cache(age=1000)
    write_json(cache_path, seed)
    result = _entrypoint(
        processes,
        tmp_path,
        "supercronic",
        "-passthrough-logs",
        "/crontab",
        TOKEN_REFRESH_CONFIG=str(config_file()),
    )
    assert result.returncode == 0, result.stderr
    assert saxo.refreshes == 1
    assert json.loads(cache_path.read_text())["refresh_token"] == saxo.current_refresh
    assert "token refreshed" in result.stderr
    assert "fake supercronic started: -passthrough-logs /crontab" in result.stdout


def test_entrypoint_starts_the_schedule_even_when_the_first_cycle_fails(
    processes: Processes, tmp_path: Path, config_file: Callable[..., Path]
) -> None:
    result = _entrypoint(
        processes, tmp_path, "supercronic", "/crontab", TOKEN_REFRESH_CONFIG=str(config_file())
    )
    assert result.returncode == 0
    assert "first cycle exited 66" in result.stderr
    assert "fake supercronic started" in result.stdout


def test_entrypoint_passes_any_other_command_through_with_its_exit_status(
    processes: Processes, tmp_path: Path, config_file: Callable[..., Path]
) -> None:
    result = _entrypoint(
        processes, tmp_path, "token-refresh", "status", TOKEN_REFRESH_CONFIG=str(config_file())
    )
    assert result.returncode == 66
    assert "fake supercronic" not in result.stdout


def test_entrypoint_hands_a_stop_signal_to_the_first_cycle_and_skips_the_schedule(tmp_path: Path) -> None:
    """In a container the shell is PID 1 and would ignore SIGTERM (make container-test checks that
    case); here, without the trap, the shell would die at once and leave the cycle running."""
    bin_dir = _fake_supercronic(tmp_path)
    marks = tmp_path / "marks"
    cycle = bin_dir / "token-refresh"  # a cycle that takes a while and saves before it exits
    cycle.write_text(
        f"#!/bin/sh\ntrap 'kill $!; sleep 0.5; echo saved >> {marks}; exit 0' TERM\n"
        f"echo started >> {marks}\nsleep 30 >/dev/null 2>&1 &\nwait $!\n"
    )
    cycle.chmod(0o755)
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("w") as stdout, err.open("w") as stderr:
        shell = subprocess.Popen(
            ["sh", str(ENTRYPOINT), "supercronic", "/crontab"],
            env={"PATH": f"{bin_dir}{os.pathsep}/usr/bin:/bin"},
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,  # its own process group, removed whole at the end
        )
    try:
        deadline = time.monotonic() + 10
        while not (marks.exists() and "started" in marks.read_text()):
            assert time.monotonic() < deadline, "the first cycle did not start"
            time.sleep(0.02)
        shell.send_signal(signal.SIGTERM)
        status = shell.wait(timeout=10)
        assert marks.read_text().split() == ["started", "saved"], "the cycle did not get the signal"
        assert status == 0, err.read_text()
        assert "SIGTERM during the first cycle" in err.read_text()
        assert "fake supercronic started" not in out.read_text()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(shell.pid, signal.SIGKILL)
        shell.wait()
