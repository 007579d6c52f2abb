"""A new operator's first hour: each mistake gets a status that says what happened and words that say
what to do next. Every test runs the installed program as a process.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any, Callable

import pytest
from fake_saxo import FakeSaxo
from support import APP_SECRET, base_env, write_json

from token_refresh import errors
from token_refresh.errors import ExitCode

RunCli = Callable[..., "subprocess.CompletedProcess[str]"]
Config = Callable[..., Path]


def _due(saxo: FakeSaxo, path: Path, **extra: Any) -> bytes:
    return write_json(path, saxo.seed_cache(age=1000, **extra))


# -- configuration and arguments ---------------------------------------------------------------


def test_empty_credential_variable_says_it_is_empty(run_cli: RunCli, config_file: Config) -> None:
    result = run_cli("run", "--config", str(config_file()), env=base_env(SAXOBANK_APP_KEY_LIVE=""))
    assert result.returncode == ExitCode.CONFIG
    assert "SAXOBANK_APP_KEY_LIVE is empty" in result.stderr


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("run", "--cache", ""), "argument --cache: must not be empty"),
        (("status", "--cache", " "), "argument --cache: must not be empty"),
        (("authorize", "--timeout", "0"), "must be between 1 and 86400 seconds, got 0"),
        (("run", "--check-credentials"), "--check-credentials goes with --dry-run"),
    ],
)
def test_bad_arguments_exit_2_saying_why(run_cli: RunCli, args: tuple[str, ...], words: str) -> None:
    result = run_cli(*args)
    assert result.returncode == ExitCode.USAGE
    assert words in result.stderr


def test_bad_log_format_variable_is_a_config_error(run_cli: RunCli) -> None:
    result = run_cli("status", env=base_env(TOKEN_REFRESH_LOG_FORMAT="xml"))
    assert result.returncode == ExitCode.CONFIG
    assert "$TOKEN_REFRESH_LOG_FORMAT must be one of text, json, got 'xml'" in result.stderr


def test_exponent_in_yaml_gets_a_hint(run_cli: RunCli, tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("interval_secs: 1e3\n")
    result = run_cli("status", "--config", str(config))
    assert result.returncode == ExitCode.CONFIG
    assert "interval_secs: '1e3' is a string to YAML 1.1" in result.stderr
    assert "write the number out, e.g. 1000" in result.stderr


def test_missing_config_named_by_the_variable_says_so(run_cli: RunCli, tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = run_cli("status", env=base_env(TOKEN_REFRESH_CONFIG=str(missing)))
    assert result.returncode == ExitCode.CONFIG
    assert f"({missing}): config file not found (named by $TOKEN_REFRESH_CONFIG)" in result.stderr


# -- a missing cache: where the path came from, and how a first cache is made ----------------


@pytest.mark.parametrize("command", ["run", "status"])
def test_missing_default_cache_says_it_is_the_default_and_how_to_create_one(
    run_cli: RunCli, command: str
) -> None:
    result = run_cli(command)  # no config, no variable, no --cache: the built-in default
    assert result.returncode == ExitCode.NOINPUT
    line = next(ln for ln in result.stderr.splitlines() if "does not exist" in ln)
    assert "token cache /data/tokens/saxobank_tokens_live.json: does not exist" in line
    assert "the built-in default for environment live" in line
    assert "create a first cache with `token-refresh authorize`" in line


@pytest.mark.parametrize(
    ("command", "source"),
    [
        ("run", "--cache"),
        ("run", "$AEGIS_SAXO_TOKEN_CACHE_PATH"),
        ("run", "cache_path in"),
        ("status", "--cache"),
    ],
)
def test_missing_cache_names_where_its_path_came_from(
    run_cli: RunCli, config_file: Config, cache_path: Path, command: str, source: str
) -> None:
    env = base_env()
    args = [command]
    if source == "--cache":
        args += ["--cache", str(cache_path)]
    elif source.startswith("$"):
        env["AEGIS_SAXO_TOKEN_CACHE_PATH"] = str(cache_path)
    else:
        args += ["--config", str(config_file())]
    result = run_cli(*args, env=env)
    assert result.returncode == ExitCode.NOINPUT
    assert f"token cache {cache_path}: does not exist; the path comes from {source}" in result.stderr
    assert "`token-refresh authorize`" in result.stderr


def test_unreadable_cache_gets_no_authorize_hint(run_cli: RunCli, cache_path: Path) -> None:
    cache_path.mkdir()  # exists, but cannot be read as a file: authorize would not help
    result = run_cli("run", "--cache", str(cache_path))
    assert result.returncode == ExitCode.NOINPUT
    assert "is a directory, not a file" in result.stderr
    assert "authorize" not in result.stderr


# -- failures before and after a request ----------------------------------------------------------


def test_expired_token_without_refresh_token_is_not_refreshed(
    run_cli: RunCli, saxo: FakeSaxo, config_file: Config, cache_path: Path
) -> None:
    seed = saxo.seed_cache(age=5000)
    del seed["refresh_token"], seed["refresh_token_expires_in"]
    write_json(cache_path, seed)
    result = run_cli("run", "--config", str(config_file()))
    assert result.returncode == ExitCode.NOPERM
    assert "ERROR not refreshed: token expired" in result.stderr
    assert saxo.requests == []


def test_refusal_after_a_request_says_refresh_failed(
    run_cli: RunCli, saxo: FakeSaxo, config_file: Config, cache_path: Path
) -> None:
    _due(saxo, cache_path, refresh_token="a-refresh-token-the-server-never-issued")
    result = run_cli("run", "--config", str(config_file()))
    assert result.returncode == ExitCode.NOPERM
    assert "ERROR refresh failed: the token endpoint refused the refresh grant" in result.stderr
    assert "run: token-refresh authorize" in result.stderr


def test_lock_file_that_cannot_be_opened_exits_74_naming_it(
    run_cli: RunCli, saxo: FakeSaxo, config_file: Config, cache_path: Path
) -> None:
    raw = _due(saxo, cache_path)
    lock = Path(f"{cache_path}.lock")
    if os.geteuid() == 0:
        lock.mkdir()  # root opens any file; a directory in its place fails the same open
    else:
        lock.touch(mode=0o000)  # as left by a run under another UID with mode 0600
    result = run_cli("run", "--config", str(config_file()))
    assert result.returncode == ExitCode.IOERR
    assert f"lock file {lock}: cannot open or create it" in result.stderr
    assert cache_path.read_bytes() == raw
    assert saxo.requests == []


# -- a CLI that helps -------------------------------------------------------------------------------


def test_mistyped_command_lists_the_commands_and_suggests_one(run_cli: RunCli) -> None:
    result = run_cli("stauts")
    assert result.returncode == ExitCode.USAGE
    assert "unknown command 'stauts' (did you mean 'status'?)" in result.stderr
    for name in ("run (the default)", "status", "authorize", "help"):
        assert name in result.stderr.split("the commands are:")[1]


def test_help_command_shows_a_command_s_help(run_cli: RunCli) -> None:
    result = run_cli("help", "status")
    assert result.returncode == ExitCode.OK
    assert result.stdout.startswith("usage: token-refresh status")
    assert "--since FILE" in result.stdout


@pytest.mark.parametrize(("command", "flag"), [("run", "-v"), ("status", "-q"), ("authorize", "--quiet")])
def test_every_command_accepts_verbose_and_quiet(run_cli: RunCli, command: str, flag: str) -> None:
    result = run_cli(command, flag, "--help")
    assert result.returncode == ExitCode.OK
    assert "[-v | -q]" in result.stdout  # both, and not together
    assert "-v, --verbose" in result.stdout
    assert "-q, --quiet" in result.stdout


def test_help_says_run_is_the_default_and_lists_the_environment(run_cli: RunCli) -> None:
    text = " ".join(run_cli("--help").stdout.split())
    assert "Without a command, `run` is meant" in text
    for name in (
        "SAXOBANK_APP_KEY_LIVE",
        "SAXOBANK_APP_SECRET_LIVE",
        "*_FILE",
        "TOKEN_REFRESH_CONFIG",
        "AEGIS_SAXO_TOKEN_CACHE_PATH",
        "TOKEN_REFRESH_LOG_FORMAT",
    ):
        assert name in text
    assert "config: --config FILE, else $TOKEN_REFRESH_CONFIG, else built-in defaults." in text
    assert "cache: --cache, else $AEGIS_SAXO_TOKEN_CACHE_PATH, else cache_path" in text


def test_help_exit_table_is_every_exit_row(run_cli: RunCli) -> None:
    text = run_cli("--help", env=base_env(COLUMNS="2000")).stdout  # one line per row
    table = text[text.index("exit status:") :]
    rows = re.findall(r"^  (\d+) +(.+)$", table, re.M)
    assert [(int(code), meaning) for code, meaning in rows] == errors.exit_rows()


@pytest.mark.parametrize("command", ["", "run", "status", "authorize"])
def test_help_fits_a_narrow_terminal(run_cli: RunCli, command: str) -> None:
    result = run_cli(*([command] if command else []), "--help", env=base_env(COLUMNS="60"))
    assert result.returncode == ExitCode.OK
    too_long = [line for line in result.stdout.splitlines() if len(line) > 60]
    assert too_long == []


# -- status over several caches in a narrow terminal -------------------------------------------------


def test_status_of_several_caches_goes_vertical_when_wider_than_the_terminal(
    run_cli: RunCli, saxo: FakeSaxo, config_file: Config, cache_path: Path
) -> None:
    write_json(cache_path, saxo.seed_cache(age=10))
    missing = cache_path.with_name("observation-cache-that-is-not-there.json")
    args = ("status", "--config", str(config_file()), "--cache", str(cache_path), "--cache", str(missing))

    wide = run_cli(*args, env=base_env(COLUMNS="400"))
    assert wide.returncode == ExitCode.NOINPUT
    assert len([ln for ln in wide.stdout.splitlines() if ln.startswith("path:")]) == 1  # side by side

    narrow = run_cli(*args, env=base_env(COLUMNS="100"))
    assert narrow.returncode == ExitCode.NOINPUT
    blocks = narrow.stdout.split("\n\n")
    assert [b.splitlines()[0] for b in blocks[:2]] == [
        f"path:{' ' * 11}{cache_path}",
        f"path:{' ' * 11}{missing}",
    ]
    assert "state:          valid" in blocks[0]
    assert "error:          token cache" in blocks[1]
    # a line longer than the terminal holds one value that is longer by itself (a path, the error)
    for line in narrow.stdout.splitlines():
        assert len(line) <= 100 or "   " not in line[16:].strip(), line


# -- --dry-run, and --check-credentials -----------------------------------------------------------


@pytest.mark.parametrize("age", [10, 1000])
def test_dry_run_says_so_in_text_and_json(
    run_cli: RunCli, saxo: FakeSaxo, config_file: Config, cache_path: Path, age: int
) -> None:
    raw = write_json(cache_path, saxo.seed_cache(age=age))
    config = str(config_file())
    text = run_cli("run", "--dry-run", "--config", config)
    assert text.returncode == ExitCode.OK
    assert text.stderr.count("dry run: token ") == 1
    as_json = run_cli("run", "--dry-run", "--config", config, "--log-format", "json")
    final = json.loads(as_json.stderr.splitlines()[-1])
    assert final["dry_run"] is True
    assert final["message"].startswith("dry run: token ")
    assert final["action"] == ("valid" if age == 10 else "would_refresh")
    assert cache_path.read_bytes() == raw
    assert saxo.requests == []


def test_dry_run_failure_says_dry_run(run_cli: RunCli, config_file: Config) -> None:
    result = run_cli("run", "--dry-run", "--config", str(config_file()), "--log-format", "json")
    assert result.returncode == ExitCode.NOINPUT
    final = json.loads(result.stderr.splitlines()[-1])
    assert final["dry_run"] is True
    assert final["message"].startswith("dry run: not refreshed: token cache")


def test_real_run_has_no_dry_run_field(
    run_cli: RunCli, saxo: FakeSaxo, config_file: Config, cache_path: Path
) -> None:
    write_json(cache_path, saxo.seed_cache(age=10))
    result = run_cli("run", "--config", str(config_file()), "--log-format", "json")
    assert "dry_run" not in json.loads(result.stderr.splitlines()[-1])


def test_check_credentials_proves_the_client_and_spends_nothing(
    run_cli: RunCli, saxo: FakeSaxo, config_file: Config, cache_path: Path
) -> None:
    raw = _due(saxo, cache_path)
    current = saxo.current_refresh
    result = run_cli("run", "--dry-run", "--check-credentials", "--config", str(config_file()))
    assert result.returncode == ExitCode.OK, result.stderr
    assert (
        "dry run: credentials accepted (invalid_grant for a made-up refresh token, HTTP 401 for a wrong "
        "secret): the token endpoint authenticated the app key and secret; nothing was spent"
    ) in result.stderr
    assert "dry run: token needs refresh" in result.stderr
    check, control = saxo.requests  # the real client, then one that must be refused as a client
    assert [check["auth_ok"], control["auth_ok"]] == [True, False]
    assert {check["grant_type"], control["grant_type"]} == {"refresh_token"}
    assert {check["refresh_token"], control["refresh_token"]} == {"token-refresh-credential-check"}
    assert saxo.refreshes == saxo.reuses == 0
    assert saxo.current_refresh == current  # the cached chain is untouched and still works
    assert cache_path.read_bytes() == raw
    assert APP_SECRET not in result.stderr


@pytest.mark.parametrize(
    ("env", "fault", "status", "words"),
    [
        (
            {"SAXOBANK_APP_SECRET_LIVE": "not-the-secret"},
            None,
            ExitCode.CONFIG,
            "rejected the client credentials",
        ),
        ({}, "404", ExitCode.CONFIG, "check token_url"),
        # an endpoint that looks at the grant before the client: invalid_grant even for a wrong secret
        ({}, "echo-secrets", ExitCode.CONFIG, "a wrong secret got invalid_grant too"),
        ({}, "bad-request", ExitCode.CONFIG, "got invalid_request, not invalid_grant"),
        ({}, "503", ExitCode.TEMPFAIL, "token endpoint unavailable"),
    ],
)
def test_check_credentials_failures(
    run_cli: RunCli,
    saxo: FakeSaxo,
    config_file: Config,
    cache_path: Path,
    env: dict[str, str],
    fault: str | None,
    status: int,
    words: str,
) -> None:
    raw = _due(saxo, cache_path)
    saxo.fault = fault
    result = run_cli(
        "run",
        "--dry-run",
        "--check-credentials",
        "--config",
        str(config_file(retry_budget_secs=0)),
        env=base_env(**env),
    )
    assert result.returncode == status
    assert "dry run: credential check failed: " in result.stderr
    assert words in result.stderr
    assert saxo.refreshes == 0
    assert cache_path.read_bytes() == raw
    for secret in [APP_SECRET, *saxo.secrets_seen()]:
        assert secret not in result.stderr


def test_check_credentials_of_a_public_client(
    run_cli: RunCli, config_file: Config, cache_path: Path, tmp_path: Path
) -> None:
    with FakeSaxo(app_secret=None) as public:
        write_json(cache_path, public.seed_cache(age=10))
        env = base_env()
        del env["SAXOBANK_APP_SECRET_LIVE"]
        config = tmp_path / "public.yaml"
        config.write_text(f"token_url: {public.token_url}\ncache_path: {cache_path}\n")
        result = run_cli("run", "--dry-run", "--check-credentials", "--config", str(config), env=env)
        assert result.returncode == ExitCode.OK, result.stderr
        assert "HTTP 401 for a wrong app key): the token endpoint authenticated the app key" in result.stderr
        assert [r["client_auth"] for r in public.requests] == ["none", "none"]
        assert [r["auth_ok"] for r in public.requests] == [True, False]
