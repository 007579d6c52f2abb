"""Shared fixtures: the fake Saxo endpoint on 127.0.0.1, cache and config builders, a CLI runner."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fake_saxo import APP_KEY, APP_SECRET, FakeSaxo

# The installed console script, as an operator would run it; fall back to the venv's python -m.
TOKEN_REFRESH = shutil.which("token-refresh") or ""
if not TOKEN_REFRESH or not Path(TOKEN_REFRESH).exists():
    TOKEN_REFRESH = ""
COMMAND = [TOKEN_REFRESH] if TOKEN_REFRESH else [sys.executable, "-m", "token_refresh"]


@pytest.fixture
def saxo() -> Iterator[FakeSaxo]:
    """A running fake token endpoint."""
    with FakeSaxo() as server:
        yield server


@pytest.fixture
def cache_path(tmp_path: Path) -> Path:
    """Where the token cache lives (the directory exists, the file does not yet)."""
    folder = tmp_path / "tokens"
    folder.mkdir()
    return folder / "saxobank_tokens_live.json"


def write_json(path: Path, data: Any, mode: int = 0o600) -> bytes:
    """Write a cache (or anything JSON) and return the exact bytes on disk."""
    raw = (json.dumps(data, indent=2) + "\n").encode()
    path.write_bytes(raw)
    path.chmod(mode)
    return raw


@pytest.fixture
def config_file(tmp_path: Path, saxo: FakeSaxo, cache_path: Path) -> Callable[..., Path]:
    """Build a YAML config pointing at the fake endpoint and the test cache."""

    def build(**overrides: Any) -> Path:
        values: dict[str, Any] = {
            "environment": "live",
            "token_url": saxo.token_url,
            "cache_path": str(cache_path),
            "retry_budget_secs": 3,
            "http_timeout_secs": 5,
            "lock_timeout_secs": 20,
        }
        values.update(overrides)
        path = tmp_path / "token_refresh.yaml"
        path.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in values.items() if v is not None))
        return path

    return build


def base_env(**extra: str) -> dict[str, str]:
    """A clean environment with the fake credentials and nothing inherited that could interfere."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAXOBANK_", "TOKEN_REFRESH_", "AEGIS_"))}
    env.update(SAXOBANK_APP_KEY_LIVE=APP_KEY, SAXOBANK_APP_SECRET_LIVE=APP_SECRET)
    env.update(extra)
    return env


@pytest.fixture
def run_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the installed ``token-refresh`` as a separate process."""

    def run(
        *args: str, env: dict[str, str] | None = None, timeout: float = 60, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*COMMAND, *args],
            env=base_env() if env is None else env,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            check=False,
        )

    return run


def now() -> float:
    return time.time()
