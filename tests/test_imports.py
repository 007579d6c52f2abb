"""A run that finds the token valid imports no HTTP or lock machinery (docs/DESIGN.md, "The valid path").

The installed program runs as a process with ``PYTHONPROFILEIMPORTTIME=1`` (``-X importtime``),
which lists on stderr every module the interpreter imported, the program left unchanged.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Callable

import pytest
from fake_saxo import FakeSaxo
from support import base_env, write_json

# Never needed before a refresh begins; each costs milliseconds per run, 96 runs a day per token.
REFRESH_ONLY = (
    "requests",
    "urllib3",
    "filelock",
    "http.client",
    "ssl",
    "email",
    "charset_normalizer",
    "idna",
)
# Heavy stdlib a valid run does without: argparse sizes help through shutil (and bz2, lzma) unless
# cli passes the width; urllib.parse is left out of this list because the editable install's
# import hook in .venv loads it into every interpreter.
AVOIDED_STDLIB = ("shutil", "bz2", "lzma")
Runner = Callable[..., "subprocess.CompletedProcess[str]"]
IMPORT_LINE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)\s*$", re.MULTILINE)


def imported(stderr: str) -> set[str]:
    """Module names from ``-X importtime`` lines."""
    return set(IMPORT_LINE.findall(stderr))


def refresh_only(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in REFRESH_ONLY))


def profiled_env() -> dict[str, str]:
    return base_env(PYTHONPROFILEIMPORTTIME="1")


@pytest.mark.parametrize("command", [("run",), ("run", "--dry-run"), ("status",), ("status", "--json")])
def test_valid_token_imports_no_http_or_lock_modules(
    command: tuple[str, ...],
    saxo: FakeSaxo,
    cache_path: Path,
    config_file: Callable[..., Path],
    run_cli: Runner,
) -> None:
    write_json(cache_path, saxo.seed_cache(age=0))
    result = run_cli(*command, "--config", str(config_file()), env=profiled_env())
    assert result.returncode == 0, result.stderr
    modules = imported(result.stderr)
    assert "token_refresh.freshness" in modules  # the listing really covers the program
    assert refresh_only(modules) == []
    assert sorted(modules.intersection(AVOIDED_STDLIB)) == []
    assert saxo.requests == []


def test_refresh_imports_them_so_the_check_can_fail(
    saxo: FakeSaxo, cache_path: Path, config_file: Callable[..., Path], run_cli: Runner
) -> None:
    write_json(cache_path, saxo.seed_cache(age=1000))  # due
    result = run_cli("run", "--config", str(config_file()), env=profiled_env())
    assert result.returncode == 0, result.stderr
    assert {"requests", "urllib3", "filelock"} <= set(refresh_only(imported(result.stderr)))
    assert saxo.refreshes == 1


# The shortcuts that keep modules out must not change what the program does.


def test_url_encoded_forms_of_a_secret_are_still_redacted() -> None:
    from urllib.parse import quote, quote_plus

    from token_refresh import redact

    secret = "s3cr3t+/= with space"
    plain = "AbC-123_x.y~z-url-safe"
    redact.register(secret, plain)
    text = f"{secret} {quote(secret, safe='')} {quote_plus(secret)} {plain}"
    assert redact.redact(text) == " ".join([redact.REDACTED] * 4)


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://live.logonvalidation.net/token", True),
        ("https://sim.logonvalidation.net/token", True),
        ("http://live.logonvalidation.net/token", False),
        ("https://live.logonvalidation.net/token\n", False),  # stray whitespace is refused, not stripped
        ("http://localhost:8765/callback", True),
        ("http://127.0.0.1.evil.example/token", False),
        ("http://127.0.0.1:8080/token", True),
        ("ftp://127.0.0.1/token", False),
    ],
)
def test_token_url_check(url: str, ok: bool) -> None:
    from token_refresh.config import config_from_mapping
    from token_refresh.errors import ConfigError

    if ok:
        assert config_from_mapping({"token_url": url}, "test").token_url == url
    else:
        with pytest.raises(ConfigError, match="token_url: must be an https:// URL"):
            config_from_mapping({"token_url": url}, "test")


def test_help_follows_columns(run_cli: Runner) -> None:
    narrow, wide = (run_cli("status", "--help", env=base_env(COLUMNS=c)) for c in ("60", "200"))
    assert narrow.returncode == wide.returncode == 0
    assert max(len(line) for line in narrow.stdout.splitlines()) <= 60
    assert len(wide.stdout.splitlines()) < len(narrow.stdout.splitlines())
