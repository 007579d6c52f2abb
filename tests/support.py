"""Helpers shared by the test modules (importable by name, unlike conftest.py)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from fake_saxo import APP_KEY, APP_SECRET

__all__ = ["APP_KEY", "APP_SECRET", "COMMAND", "base_env", "now", "write_json"]

# The installed console script, as an operator would run it; fall back to the venv's python -m.
TOKEN_REFRESH = shutil.which("token-refresh") or ""
if not TOKEN_REFRESH or not Path(TOKEN_REFRESH).exists():
    TOKEN_REFRESH = ""
COMMAND = [TOKEN_REFRESH] if TOKEN_REFRESH else [sys.executable, "-m", "token_refresh"]


def write_json(path: Path, data: Any, mode: int = 0o600) -> bytes:
    """Write a cache (or anything JSON) and return the exact bytes on disk."""
    raw = (json.dumps(data, indent=2) + "\n").encode()
    path.write_bytes(raw)
    path.chmod(mode)
    return raw


def base_env(**extra: str) -> dict[str, str]:
    """A clean environment with the fake credentials and nothing inherited that could interfere."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAXOBANK_", "TOKEN_REFRESH_", "AEGIS_"))}
    env.update(SAXOBANK_APP_KEY_LIVE=APP_KEY, SAXOBANK_APP_SECRET_LIVE=APP_SECRET)
    env.update(extra)
    return env


def now() -> float:
    return time.time()
