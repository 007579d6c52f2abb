"""The installed program, run as a process against the fake Saxo endpoint on 127.0.0.1.

Every row of the exit-status table is exercised here, and every run's output is scanned for
the secrets the server knows (invariant 3).
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from fake_saxo import FakeSaxo
from support import APP_SECRET, COMMAND, Processes, RunCli, base_env, write_json

from token_refresh import cli
from token_refresh.errors import ExitCode


@pytest.fixture
def cli_run(run_cli: RunCli, config_file: Callable[..., Path]) -> RunCli:
    """Run the program with ``{config}`` standing for a config for the fake server (every process's
    output is scanned for the server's secrets by the ``processes`` fixture)."""
    config = str(config_file())

    def run(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return run_cli(*(a.replace("{config}", config) for a in args), **kwargs)

    return run


def due_cache(saxo: FakeSaxo, path: Path, **extra: Any) -> bytes:
    """A cache issued 1000 s ago: 200 s left on the access token, so a run must refresh."""
    return write_json(path, saxo.seed_cache(age=1000, **extra))


def valid_cache(saxo: FakeSaxo, path: Path) -> bytes:
    return write_json(path, saxo.seed_cache(age=10))


# -- 0: refreshed, then valid -----------------------------------------------------------


def test_refresh_then_valid(saxo: FakeSaxo, cli_run: RunCli, cache_path: Path) -> None:
    due_cache(saxo, cache_path, consumer_field={"keep": True})
    cache_path.chmod(0o640)
    before = time.time()
    first = cli_run("run", "--config", "{config}", "-v")
    assert first.returncode == 0, first.stderr
    assert re.search(
        r"INFO token refreshed: access token 1[12]\d\d s left, refresh token 3[56]\d\d s left", first.stderr
    )
    data = json.loads(cache_path.read_text())
    assert data["access_token"] == saxo.issued_access[-1]
    assert data["refresh_token"] == saxo.current_refresh
    assert data["consumer_field"] == {"keep": True}
    assert isinstance(data["issued_at"], int)
    assert before - 1 <= data["issued_at"] <= time.time()
    assert cache_path.stat().st_mode & 0o777 == 0o640
    assert [r["grant_type"] for r in saxo.requests] == ["refresh_token"]

    raw = cache_path.read_bytes()
    mtime = cache_path.stat().st_mtime_ns
    second = cli_run("--config", "{config}")  # `run` is the default subcommand
    assert second.returncode == 0
    assert "INFO token valid: access token" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1  # exactly one summary line
    assert cache_path.read_bytes() == raw
    assert cache_path.stat().st_mtime_ns == mtime
    assert len(saxo.requests) == 1
    assert saxo.reuses == 0


def test_log_line_has_utc_timestamp(saxo: FakeSaxo, cli_run: RunCli, cache_path: Path) -> None:
    valid_cache(saxo, cache_path)
    result = cli_run("run", "--config", "{config}")
    stamp = result.stderr.split(" ", 1)[0]
    assert time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")


def test_quiet_valid_run_prints_nothing(saxo: FakeSaxo, cli_run: RunCli, cache_path: Path) -> None:
    valid_cache(saxo, cache_path)
    result = cli_run("run", "--config", "{config}", "-q")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_force_refreshes_a_valid_token(saxo: FakeSaxo, cli_run: RunCli, cache_path: Path) -> None:
    valid_cache(saxo, cache_path)
    result = cli_run("run", "--force", "--config", "{config}")
    assert result.returncode == 0
    assert "token refreshed" in result.stderr
    assert json.loads(cache_path.read_text())["refresh_token"] == saxo.current_refresh


def test_dry_run_neither_calls_nor_writes(saxo: FakeSaxo, cli_run: RunCli, cache_path: Path) -> None:
    raw = due_cache(saxo, cache_path)
    result = cli_run("run", "--dry-run", "--config", "{config}")
    assert result.returncode == 0
    assert "dry run: token needs refresh" in result.stderr
    assert "would refresh" in result.stderr
    assert cache_path.read_bytes() == raw
    assert saxo.requests == []
    assert not Path(f"{cache_path}.lock").exists()


def test_python_dash_m_matches_console_script(run_cli: RunCli, processes: Processes) -> None:
    from token_refresh import __version__

    script = run_cli("--version")
    module = processes.run([sys.executable, "-m", "token_refresh", "--version"])
    assert script.returncode == module.returncode == 0
    assert script.stdout == module.stdout == f"token-refresh {__version__}\n"


def test_help_documents_exit_statuses(run_cli: RunCli) -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for code in ("65", "66", "70", "74", "75", "77", "78"):
        assert f"\n  {code}  " in result.stdout


# -- 2: usage ----------------------------------------------------------------------------


@pytest.mark.parametrize("args", [("--bogus",), ("run", "-v", "-q"), ("status", "--force"), ("frobnicate",)])
def test_usage_errors_exit_2(run_cli: RunCli, args: tuple[str, ...]) -> None:
    result = run_cli(*args)
    assert result.returncode == ExitCode.USAGE
    assert "usage: token-refresh" in result.stderr


# -- 65 / 66: the cache -----------------------------------------------------------------


def test_broken_cache_exits_65_and_is_untouched(cli_run: RunCli, cache_path: Path) -> None:
    cache_path.write_bytes(b'{"access_token": "abc"')
    result = cli_run("run", "--config", "{config}")
    assert result.returncode == ExitCode.DATAERR
    assert f"token cache {cache_path}: is not valid JSON" in result.stderr
    assert cache_path.read_bytes() == b'{"access_token": "abc"'


def test_missing_cache_exits_66(cli_run: RunCli, cache_path: Path) -> None:
    result = cli_run("run", "--config", "{config}")
    assert result.returncode == ExitCode.NOINPUT
    assert f"token cache {cache_path}: does not exist" in result.stderr
    assert not cache_path.exists()


def test_cache_flag_beats_environment_and_config(
    saxo: FakeSaxo, cli_run: RunCli, cache_path: Path, tmp_path: Path
) -> None:
    other = tmp_path / "tokens" / "parallel.json"
    valid_cache(saxo, other)
    env = base_env(AEGIS_SAXO_TOKEN_CACHE_PATH=str(tmp_path / "absent-env.json"))
    result = cli_run("status", "--config", "{config}", "--cache", str(other), "--json", env=env)
    assert result.returncode == 0
    assert json.loads(result.stdout)[0]["path"] == str(other)
    result = cli_run("status", "--config", "{config}", "--json", env=env)
    assert result.returncode == ExitCode.NOINPUT
    assert "absent-env.json" in result.stderr


# -- 70: an internal error ----------------------------------------------------------------


def test_unexpected_error_exits_70_traceback_only_with_verbose(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import token_refresh.refresh

    def boom(**kwargs: object) -> None:
        raise RuntimeError("boom near s3cret-value-xyz")

    monkeypatch.setattr(token_refresh.refresh, "run_cycle", boom)
    monkeypatch.setenv("SAXOBANK_APP_KEY_LIVE", "key-1234")
    monkeypatch.setenv("SAXOBANK_APP_SECRET_LIVE", "s3cret-value-xyz")
    monkeypatch.setenv("AEGIS_SAXO_TOKEN_CACHE_PATH", str(tmp_path / "c.json"))
    assert cli.main(["run"]) == ExitCode.SOFTWARE
    err = capsys.readouterr().err
    assert "unexpected error: RuntimeError: boom near <redacted>" in err
    assert "Traceback" not in err
    assert cli.main(["run", "-v"]) == ExitCode.SOFTWARE
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert "s3cret-value-xyz" not in err


# -- 74: cannot write, checked before the token is spent ----------------------------------


def _tiny_file_limit() -> None:
    # a file-size limit makes reserving space fail like a full disk (EFBIG), also for root
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))


def test_unwritable_cache_exits_74_before_spending(
    saxo: FakeSaxo, run_cli: RunCli, config_file: Callable[..., Path], cache_path: Path
) -> None:
    raw = due_cache(saxo, cache_path)
    result = run_cli("run", "--config", str(config_file()), preexec_fn=_tiny_file_limit)
    assert result.returncode == ExitCode.IOERR, result.stderr
    assert "cannot reserve" in result.stderr
    assert saxo.requests == []
    assert cache_path.read_bytes() == raw
    assert [p.name for p in cache_path.parent.iterdir() if p.suffix == ".tmp"] == []


# -- 75: temporary failures ---------------------------------------------------------------


def test_server_unavailable_exits_75_and_keeps_cache(
    saxo: FakeSaxo, cli_run: RunCli, cache_path: Path
) -> None:
    raw = due_cache(saxo, cache_path)
    saxo.fault, saxo.fault_arg = "503", 60  # Retry-After beyond the 3 s budget
    result = cli_run("run", "--config", "{config}", "-v")
    assert result.returncode == ExitCode.TEMPFAIL
    assert "token endpoint unavailable (HTTP 503" in result.stderr
    assert cache_path.read_bytes() == raw


def test_connection_refused_exits_75(
    saxo: FakeSaxo, run_cli: RunCli, config_file: Callable[..., Path], cache_path: Path
) -> None:
    raw = due_cache(saxo, cache_path)
    config = config_file(token_url="http://127.0.0.1:9/token", retry_budget_secs=1)
    result = run_cli("run", "--config", str(config))
    assert result.returncode == ExitCode.TEMPFAIL
    assert "cannot reach the token endpoint" in result.stderr
    assert cache_path.read_bytes() == raw


def test_lock_held_elsewhere_exits_75(
    saxo: FakeSaxo, run_cli: RunCli, config_file: Callable[..., Path], cache_path: Path
) -> None:
    import filelock

    raw = due_cache(saxo, cache_path)
    config = config_file(lock_timeout_secs=1)
    with filelock.FileLock(f"{cache_path}.lock"):
        result = run_cli("run", "--config", str(config))
    assert result.returncode == ExitCode.TEMPFAIL
    assert "still held by another run after 1 s" in result.stderr
    assert saxo.requests == []
    assert cache_path.read_bytes() == raw


def test_unusable_2xx_exits_75_and_warns(saxo: FakeSaxo, cli_run: RunCli, cache_path: Path) -> None:
    raw = due_cache(saxo, cache_path)
    saxo.fault = "200-html"
    result = cli_run("run", "--config", "{config}")
    assert result.returncode == ExitCode.TEMPFAIL
    assert "may already be spent" in result.stderr
    assert cache_path.read_bytes() == raw


# -- 77: re-authorization -------------------------------------------------------------------


def test_invalid_grant_exits_77_and_asks_for_a_person(
    saxo: FakeSaxo, cli_run: RunCli, cache_path: Path
) -> None:
    data = saxo.seed_cache(age=1000)
    data["refresh_token"] = "revoked-refresh-token"
    raw = write_json(cache_path, data)
    result = cli_run("run", "--config", "{config}")
    assert result.returncode == ExitCode.NOPERM
    assert "ERROR" in result.stderr
    assert "invalid_grant" in result.stderr
    assert "Manual re-authorization required" in result.stderr
    assert cache_path.read_bytes() == raw


def test_refresh_token_expired_by_the_clock_is_still_tried(
    saxo: FakeSaxo, cli_run: RunCli, cache_path: Path
) -> None:
    """The server decides expiry: a skewed clock or a wrong lifetime must not force a login."""
    raw = write_json(cache_path, saxo.seed_cache(age=4000))
    dry = cli_run("run", "--dry-run", "--config", "{config}")
    assert dry.returncode == 0
    assert saxo.requests == []
    assert cache_path.read_bytes() == raw
    result = cli_run("run", "--config", "{config}")
    assert result.returncode == 0, result.stderr
    assert "refresh token expired by the local clock; trying it anyway" in result.stderr
    assert json.loads(cache_path.read_text())["refresh_token"] == saxo.current_refresh


def test_refused_after_the_clock_said_expired_exits_77(
    saxo: FakeSaxo, cli_run: RunCli, cache_path: Path
) -> None:
    raw = write_json(cache_path, saxo.seed_cache(age=4000))
    saxo.current_refresh = "the-server-moved-on"
    result = cli_run("run", "--config", "{config}")
    assert result.returncode == ExitCode.NOPERM
    assert "invalid_grant" in result.stderr
    assert "Manual re-authorization required" in result.stderr
    assert len(saxo.requests) == 1
    assert cache_path.read_bytes() == raw


def test_force_without_refresh_token_exits_77(saxo: FakeSaxo, cli_run: RunCli, cache_path: Path) -> None:
    data = saxo.seed_cache(age=10)
    del data["refresh_token"], data["refresh_token_expires_in"]
    data["expires_in"] = 86400
    raw = write_json(cache_path, data)
    valid = cli_run("run", "--config", "{config}")
    assert valid.returncode == 0
    assert "WARNING the token has no refresh token" in valid.stderr
    forced = cli_run("run", "--force", "--config", "{config}")
    assert forced.returncode == ExitCode.NOPERM
    assert cache_path.read_bytes() == raw


# -- 78: configuration ----------------------------------------------------------------------


def test_missing_credentials_exit_78_even_when_valid(
    saxo: FakeSaxo, cli_run: RunCli, cache_path: Path
) -> None:
    valid_cache(saxo, cache_path)
    env = base_env()
    del env["SAXOBANK_APP_KEY_LIVE"]
    result = cli_run("run", "--config", "{config}", env=env)
    assert result.returncode == ExitCode.CONFIG
    assert "SAXOBANK_APP_KEY_LIVE is not set" in result.stderr


def test_conflicting_secret_file_exits_78(
    saxo: FakeSaxo, cli_run: RunCli, cache_path: Path, tmp_path: Path
) -> None:
    valid_cache(saxo, cache_path)
    (tmp_path / "secret").write_text(APP_SECRET + "\n")
    env = base_env(SAXOBANK_APP_SECRET_LIVE_FILE=str(tmp_path / "secret"))
    result = cli_run("run", "--config", "{config}", env=env)
    assert result.returncode == ExitCode.CONFIG
    assert "both SAXOBANK_APP_SECRET_LIVE and SAXOBANK_APP_SECRET_LIVE_FILE" in result.stderr


def test_secret_file_works(saxo: FakeSaxo, cli_run: RunCli, cache_path: Path, tmp_path: Path) -> None:
    due_cache(saxo, cache_path)
    (tmp_path / "secret").write_text(APP_SECRET + "\n")
    env = base_env(SAXOBANK_APP_SECRET_LIVE_FILE=str(tmp_path / "secret"))
    del env["SAXOBANK_APP_SECRET_LIVE"]
    result = cli_run("run", "--config", "{config}", env=env)
    assert result.returncode == 0, result.stderr
    assert saxo.requests[-1]["auth_ok"]


def test_bad_config_exits_78_naming_the_key(cli_run: RunCli, tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("interval_secs: -5\nbogus: true\n")
    result = cli_run("run", "--config", str(config))
    assert result.returncode == ExitCode.CONFIG
    assert "interval_secs: must be between 60 and 86400" in result.stderr
    assert "unknown key 'bogus'" in result.stderr


def test_rejected_credentials_exit_78(saxo: FakeSaxo, cli_run: RunCli, cache_path: Path) -> None:
    raw = due_cache(saxo, cache_path)
    env = base_env(SAXOBANK_APP_SECRET_LIVE="wrong-secret-value")
    result = cli_run("run", "--config", "{config}", "-v", env=env)
    assert result.returncode == ExitCode.CONFIG
    assert "rejected the client credentials" in result.stderr
    assert "wrong-secret-value" not in result.stderr
    assert cache_path.read_bytes() == raw


@pytest.mark.parametrize("fault", ["redirect", "404"])
def test_wrong_token_url_exits_78(saxo: FakeSaxo, cli_run: RunCli, cache_path: Path, fault: str) -> None:
    raw = due_cache(saxo, cache_path)
    saxo.fault = fault
    result = cli_run("run", "--config", "{config}")
    assert result.returncode == ExitCode.CONFIG
    assert "check token_url" in result.stderr
    assert len(saxo.requests) == 1  # the redirect was not followed
    assert cache_path.read_bytes() == raw


# -- status -------------------------------------------------------------------------------


def test_status_needs_no_credentials_and_reports_json(
    saxo: FakeSaxo, cli_run: RunCli, cache_path: Path
) -> None:
    valid_cache(saxo, cache_path)
    env = {k: v for k, v in base_env().items() if not k.startswith("SAXOBANK_")}
    result = cli_run("status", "--config", "{config}", "--json", env=env)
    assert result.returncode == 0
    (info,) = json.loads(result.stdout)
    assert info["path"] == str(cache_path)
    assert info["state"] == "valid"
    assert 1180 <= info["access_expires_in_secs"] <= 1190
    assert 3580 <= info["refresh_expires_in_secs"] <= 3590
    for key in ("issued_at", "access_expires_at", "refresh_expires_at", "mtime"):
        assert info[key].endswith("Z")
    assert not Path(f"{cache_path}.lock").exists()
    text = cli_run("status", "--config", "{config}", env=env)
    assert "state:          valid" in text.stdout


@pytest.mark.parametrize(
    ("age", "expected", "state"),
    [(10, 0, "valid"), (1000, 0, "needs_refresh"), (1300, 75, "needs_refresh"), (4000, 77, "expired")],
)
def test_status_exit_is_a_healthcheck(
    saxo: FakeSaxo, cli_run: RunCli, cache_path: Path, age: int, expected: int, state: str
) -> None:
    write_json(cache_path, saxo.seed_cache(age=age))
    result = cli_run("status", "--config", "{config}", "--json")
    assert result.returncode == expected
    assert json.loads(result.stdout)[0]["state"] == state


def test_status_of_missing_and_broken_cache(cli_run: RunCli, cache_path: Path) -> None:
    assert cli_run("status", "--config", "{config}").returncode == ExitCode.NOINPUT
    cache_path.write_text("[]")
    assert cli_run("status", "--config", "{config}").returncode == ExitCode.DATAERR


# -- invariant 2: concurrent runs spend the refresh token once -----------------------------


def test_concurrent_runs_refresh_once(
    saxo: FakeSaxo, config_file: Callable[..., Path], cache_path: Path, processes: Processes
) -> None:
    due_cache(saxo, cache_path)
    saxo.delay = 0.3  # keep the winner inside the lock while the others queue
    config = str(config_file())
    procs = [processes.spawn([*COMMAND, "run", "--config", config]) for _ in range(10)]
    results = [(done.returncode, done.stderr) for done in map(processes.finish, procs)]
    assert [code for code, _ in results] == [0] * 10, results
    assert saxo.refreshes == 1
    assert saxo.reuses == 0
    assert len(saxo.requests) == 1
    assert json.loads(cache_path.read_text())["refresh_token"] == saxo.current_refresh
    assert sum("token refreshed:" in err for _, err in results) == 1


def test_no_temp_or_stray_files_after_runs(saxo: FakeSaxo, cli_run: RunCli, cache_path: Path) -> None:
    due_cache(saxo, cache_path)
    assert cli_run("run", "--config", "{config}").returncode == 0
    names = sorted(os.listdir(cache_path.parent))
    # the lock file stays (docs/DESIGN.md, "The lock"), and so does the run journal beside the cache
    assert names == [cache_path.name, f"{cache_path.name}.lock", f"{cache_path.name}.runs.json"]


def test_issued_at_in_the_future_warns_and_refreshes(
    saxo: FakeSaxo, cli_run: RunCli, cache_path: Path
) -> None:
    write_json(cache_path, saxo.seed_cache(age=-3600))
    result = cli_run("run", "--config", "{config}")
    assert result.returncode == 0
    assert "WARNING issued_at is more than 300 s in the future" in result.stderr
    assert "token refreshed" in result.stderr
    assert json.loads(cache_path.read_text())["issued_at"] <= time.time()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_during_refresh_waits_for_the_save(
    saxo: FakeSaxo,
    config_file: Callable[..., Path],
    cache_path: Path,
    sig: signal.Signals,
    processes: Processes,
) -> None:
    due_cache(saxo, cache_path)
    saxo.delay = 1.5  # the server has spent the token and is slow to answer
    proc = processes.spawn([*COMMAND, "run", "--config", str(config_file())])
    deadline = time.monotonic() + 20
    while saxo.refreshes == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert saxo.refreshes == 1
    proc.send_signal(sig)
    err = processes.finish(proc, timeout=30).stderr
    assert proc.returncode == 0, err
    assert (
        f"{signal.Signals(sig).name} arrived during the refresh and waited until the new token was saved"
        in err
    )
    assert json.loads(cache_path.read_text())["refresh_token"] == saxo.current_refresh
