"""``--log-format json``, ``run --quiet`` and the lean hot path, as an operator sees them."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
from fake_saxo import FakeSaxo
from support import Processes, RunCli, base_env, write_json

from token_refresh import logs, redact

REQUIRED = ("timestamp", "level", "logger", "message")
NEVER_ISSUED = "never-issued-refresh-token"


def json_lines(stderr: str) -> list[dict[str, Any]]:
    lines = stderr.splitlines()
    assert lines, "no log line"
    objs = [json.loads(line) for line in lines]  # every line is one JSON object
    for obj in objs:
        assert isinstance(obj, dict)
        for key in REQUIRED:
            assert key in obj, (key, obj)
        assert obj["timestamp"].endswith("Z")
    return objs


def _prepare(case: str, saxo: FakeSaxo, cache_path: Path, processes: Processes) -> None:
    age = 100 if case == "valid" else 1000
    extra: dict[str, Any] = {"refresh_token": NEVER_ISSUED} if case == "invalid_grant" else {}
    processes.secrets.add(NEVER_ISSUED)  # a secret too, though the server never issued it
    write_json(cache_path, saxo.seed_cache(age=age, **extra))
    saxo.fault = {"invalid_client": "invalid_client", "500": "500-html", "unusable": "truncated"}.get(case)


@pytest.mark.parametrize(
    ("case", "code", "state"),
    [
        ("valid", 0, "valid"),
        ("refresh", 0, "valid"),
        ("invalid_grant", 77, "needs_refresh"),
        ("invalid_client", 78, "needs_refresh"),
        ("500", 75, "needs_refresh"),
        ("unusable", 75, "needs_refresh"),
    ],
)
@pytest.mark.parametrize("how", ["flag", "env"])
def test_json_lines(
    run_cli: RunCli,
    processes: Processes,
    saxo: FakeSaxo,
    config_file: Callable[..., Path],
    cache_path: Path,
    case: str,
    code: int,
    state: str,
    how: str,
) -> None:
    _prepare(case, saxo, cache_path, processes)
    args = ["run", "--config", str(config_file()), "-v"]
    env = base_env()
    if how == "flag":
        args += ["--log-format", "json"]
    else:
        env["TOKEN_REFRESH_LOG_FORMAT"] = "json"
    result = run_cli(*args, env=env)
    assert result.returncode == code
    objs = json_lines(result.stderr)
    assert {o["level"] for o in objs} >= {"DEBUG"}  # -v: urllib3 and filelock lines are JSON too
    outcome = [o for o in objs if "exit_status" in o]
    assert len(outcome) == 1, outcome
    final = outcome[0]
    assert final["exit_status"] == code
    assert final["state"] == state
    assert final["cache"] == str(cache_path)
    assert isinstance(final["access_expires_in_secs"], float)
    assert isinstance(final["refresh_expires_in_secs"], float)
    assert len(final["access_fingerprint"]) == 8
    assert len(final["refresh_fingerprint"]) == 8
    assert final["level"] == ("INFO" if code == 0 else "ERROR")


def test_json_traceback_is_one_line_and_redacted(
    run_cli: RunCli, saxo: FakeSaxo, config_file: Callable[..., Path], cache_path: Path
) -> None:
    write_json(cache_path, saxo.seed_cache(age=1000))
    saxo.fault = "wrong-types"  # an unusable 2xx body
    result = run_cli("run", "--config", str(config_file()), "-v", "--log-format", "json")
    assert result.returncode == 75
    json_lines(result.stderr)


def test_status_json_logs(run_cli: RunCli, tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    result = run_cli("status", "--cache", str(missing), "--log-format", "json")
    assert result.returncode == 66
    (line,) = json_lines(result.stderr)
    assert line["level"] == "ERROR"
    assert line["exit_status"] == 66
    assert line["cache"] == str(missing)


def test_bad_log_format_env_is_a_configuration_error(run_cli: RunCli) -> None:
    result = run_cli("status", env=base_env(TOKEN_REFRESH_LOG_FORMAT="yaml"))
    assert result.returncode == 78
    assert "TOKEN_REFRESH_LOG_FORMAT" in result.stderr


def test_json_formatter_redacts_escaped_secrets_and_the_final_line() -> None:
    secret = 'q"uo\\te-s3cret-' + "x" * 8  # JSON escaping changes its spelling
    redact.register(secret)
    formatter = logs.JsonFormatter()

    def line(msg: str, **fields: Any) -> str:
        record = logging.LogRecord("t", logging.INFO, __file__, 1, msg, (), None)
        record.__dict__.update(logs.fields(**fields))
        return formatter.format(record)

    out = line(f"message with {secret}", field=f"value {secret}", nested={"k": [secret]})
    assert secret not in out
    assert json.dumps(secret)[1:-1] not in out  # nor its escaped form
    assert json.loads(out)["field"] == f"value {redact.REDACTED}"
    # a secret outside any value (here: a field name) is still caught on the serialized line
    plain = "plain-s3cret-value-123"
    redact.register(plain)
    out = line("m", **{plain: 1})
    assert plain not in out
    json.loads(out)


# -- run --quiet ---------------------------------------------------------------------------


def test_quiet_valid_run_prints_nothing(
    run_cli: RunCli, saxo: FakeSaxo, config_file: Callable[..., Path], cache_path: Path
) -> None:
    write_json(cache_path, saxo.seed_cache(age=100))
    result = run_cli("run", "-q", "--config", str(config_file()))
    assert result.returncode == 0
    assert result.stdout == result.stderr == ""


@pytest.mark.parametrize("age", [100, 1000])  # valid, and due so that the run refreshes
def test_quiet_success_prints_nothing(
    run_cli: RunCli, saxo: FakeSaxo, config_file: Callable[..., Path], cache_path: Path, age: int
) -> None:
    write_json(cache_path, saxo.seed_cache(age=age))
    result = run_cli("run", "-q", "--config", str(config_file()))
    assert result.returncode == 0
    assert result.stderr == ""
    assert saxo.refreshes == (age == 1000)


def test_quiet_success_with_a_warning_prints_it_in_one_line(
    run_cli: RunCli, saxo: FakeSaxo, config_file: Callable[..., Path], cache_path: Path
) -> None:
    seed = saxo.seed_cache(age=100)
    del seed["refresh_token"], seed["refresh_token_expires_in"]
    write_json(cache_path, seed)
    result = run_cli("run", "-q", "--config", str(config_file()))
    assert result.returncode == 0
    assert result.stderr.count("\n") == 1
    assert "WARNING the token has no refresh token" in result.stderr


@pytest.mark.parametrize(
    ("case", "code", "needles"),
    [
        ("invalid_grant", 77, ["Manual re-authorization required"]),
        ("invalid_client", 78, ["rejected the client credentials"]),
        ("500", 75, ["token endpoint unavailable"]),
        # two ERROR records become one line that keeps both facts
        ("unusable", 75, ["unusable token response", "may already be spent"]),
    ],
)
@pytest.mark.parametrize("log_format", ["text", "json"])
def test_quiet_prints_one_line_otherwise(
    run_cli: RunCli,
    processes: Processes,
    saxo: FakeSaxo,
    config_file: Callable[..., Path],
    cache_path: Path,
    case: str,
    code: int,
    needles: list[str],
    log_format: str,
) -> None:
    _prepare(case, saxo, cache_path, processes)
    result = run_cli("run", "-q", "--log-format", log_format, "--config", str(config_file()))
    assert result.returncode == code
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    text = json.loads(lines[0])["message"] if log_format == "json" else lines[0]
    for needle in needles:
        assert needle in text


def test_quiet_config_error_is_one_line(run_cli: RunCli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("interval_secs: 1\nno_such_key: 2\n")
    result = run_cli("run", "-q", "--config", str(bad))
    assert result.returncode == 78
    (line,) = result.stderr.splitlines()  # the config error's list of problems, folded
    assert "interval_secs" in line
    assert "no_such_key" in line


# -- the hot path -----------------------------------------------------------------------------

PROBE = """
import sys
from token_refresh.cli import main
code = main(sys.argv[1:])
heavy = ("prometheus_client", "subprocess", "requests", "urllib3", "filelock")
print(code, " ".join(sorted(m for m in heavy if m in sys.modules)))
"""


@pytest.mark.parametrize(
    ("extra_args", "expected"),
    [
        ((), ""),
        (("--log-format", "json"), ""),
        (("-q",), ""),
        (("--metrics-file", "METRICS"), "prometheus_client"),  # only what metrics need (below)
    ],
)
def test_valid_run_imports_stay_lean(
    processes: Processes,
    saxo: FakeSaxo,
    config_file: Callable[..., Path],
    cache_path: Path,
    tmp_path: Path,
    extra_args: tuple[str, ...],
    expected: str,
) -> None:
    write_json(cache_path, saxo.seed_cache(age=100))
    # hooks are configured but a valid run fires none, so subprocess must stay unimported
    config = config_file(hooks={"on_refresh": ["true"], "on_failure": ["true"]})
    args = [a.replace("METRICS", str(tmp_path / "m.prom")) for a in extra_args]
    result = processes.run([sys.executable, "-c", PROBE, "run", "--config", str(config), *args])
    code, *imported = result.stdout.split("\n")[0].split()
    assert code == "0", result.stderr
    if expected == "prometheus_client":
        # what prometheus_client imports by itself is its cost, not ours (3.9: subprocess, via platform)
        alone = processes.run([sys.executable, "-c", "import sys, prometheus_client; print(*sys.modules)"])
        assert alone.returncode == 0, alone.stderr
        own = alone.stdout.split()
        imported = [m for m in imported if m == "prometheus_client" or m not in own]
    assert " ".join(imported) == expected, result.stderr
