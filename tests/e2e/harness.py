"""The end-to-end harness: run the installed program as processes, record everything, count it."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import quote, quote_plus

from fake_saxo import APP_KEY, APP_SECRET, FakeSaxo

# The installed console script, as an operator runs it; `make test` puts the venv's bin first on PATH.
_SCRIPT = shutil.which("token-refresh")
COMMAND = [_SCRIPT] if _SCRIPT else [sys.executable, "-m", "token_refresh"]
TIMEOUT = 60  # generous: the machine is shared and loaded


class Tally:
    """What the suite withstood; printed by the terminal-summary hook."""

    def __init__(self) -> None:
        self.scenarios: set[str] = set()
        self.tests = 0
        self.processes = 0
        self.kills = 0
        self.kill_outcomes: Counter[str] = Counter()  # where the kills landed
        self.faults = 0
        self.bytes_scanned = 0
        self.failures = 0

    def lines(self) -> list[str]:
        return [
            f"scenarios:          {len(self.scenarios)} ({', '.join(sorted(self.scenarios))})",
            f"tests:              {self.tests}",
            f"processes started:  {self.processes}",
            f"kills (SIGKILL):    {self.kills}"
            + (f" (landed: {dict(sorted(self.kill_outcomes.items()))})" if self.kill_outcomes else ""),
            f"faults injected:    {self.faults}",
            f"output scanned:     {self.bytes_scanned} bytes, 0 secrets allowed",
            f"failures:           {self.failures}",
        ]


TALLY = Tally()


def base_env(**extra: str) -> dict[str, str]:
    """A clean environment with the fake credentials; nothing inherited that could interfere."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAXOBANK_", "TOKEN_REFRESH_", "AEGIS_"))}
    env.update(SAXOBANK_APP_KEY_LIVE=APP_KEY, SAXOBANK_APP_SECRET_LIVE=APP_SECRET)
    env.update(extra)
    return env


def leak_forms(values: Iterable[str]) -> set[str]:
    """Each secret as it could appear in output: plain, URL-encoded, in a Basic header."""
    forms: set[str] = set()
    for value in values:
        if value:
            forms.update({value, quote(value, safe=""), quote_plus(value)})
    forms.add(base64.b64encode(f"{APP_KEY}:{APP_SECRET}".encode()).decode())
    return forms


def temp_files(cache: Path) -> list[str]:
    """Temporary files a run left beside the cache."""
    return sorted(p.name for p in cache.parent.iterdir() if p.name.endswith(".tmp"))


def load_json(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_bytes())
    assert isinstance(data, dict)
    return data


class Runner:
    """One scenario's world: a fake Saxo, a cache, a config, and every process's output."""

    def __init__(self, saxo: FakeSaxo, cache: Path, config: Path) -> None:
        self.saxo = saxo
        self.cache = cache
        self.config = config
        self.outputs: list[str] = []  # stdout + stderr of every process, for the leak scan

    # -- setup ---------------------------------------------------------------------
    def seed(self, *, age: float = 0.0, **extra: Any) -> bytes:
        """Write a freshly issued token, ``age`` seconds old; return the bytes on disk."""
        data = self.saxo.seed_cache(age=age, **extra)
        raw = (json.dumps(data, indent=2) + "\n").encode()
        self.cache.write_bytes(raw)
        self.cache.chmod(0o600)
        return raw

    def seed_due(self) -> bytes:
        """A token that the next run must refresh (1000 s of 1200 s used)."""
        return self.seed(age=1000)

    def fault(self, name: str | None, arg: float = 0.0, limit: int | None = None) -> None:
        with self.saxo.lock:
            self.saxo.fault, self.saxo.fault_arg, self.saxo.fault_limit = name, arg, limit
        if name:
            TALLY.faults += 1

    # -- processes -----------------------------------------------------------------
    def argv(self, *args: str, verbose: bool = True) -> list[str]:
        argv = list(args) or ["run"]
        if argv[0] not in ("run", "status"):
            argv.insert(0, "run")
        if argv[0] == "run":
            argv += ["--config", str(self.config)] + (["-v"] if verbose else [])
        else:
            argv += ["--config", str(self.config)]
        return [*COMMAND, *argv]

    def run(
        self, *args: str, env: dict[str, str] | None = None, prefix: list[str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the program to completion (at -v) and record its output."""
        TALLY.processes += 1
        done = subprocess.run(
            [*(prefix or []), *self.argv(*args)],
            env=base_env() if env is None else env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        self.record(done.stdout, done.stderr)
        return done

    def spawn(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        TALLY.processes += 1
        return subprocess.Popen(
            self.argv(*args),
            env=base_env() if env is None else env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def finish(self, proc: subprocess.Popen[str]) -> tuple[int, str]:
        """Wait for a spawned process; return (exit status, stderr)."""
        out, err = proc.communicate(timeout=TIMEOUT)
        self.record(out, err)
        return proc.returncode, err

    def kill(self, proc: subprocess.Popen[str]) -> None:
        TALLY.kills += 1
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        self.finish(proc)

    def record(self, *texts: str) -> None:
        for text in texts:
            TALLY.bytes_scanned += len(text.encode())
            self.outputs.append(text)

    # -- checks --------------------------------------------------------------------
    def leaks(self) -> list[str]:
        """Secrets the server ever issued (and the app secret) found in any recorded output."""
        forms = leak_forms(self.saxo.secrets_seen())
        found = []
        for text in self.outputs:
            found += [f"{s[:6]}... in {text[:200]!r}" for s in forms if s in text]
        return found

    def refresh_requests(self) -> list[dict[str, Any]]:
        with self.saxo.lock:
            return list(self.saxo.requests)

    def wait_for_requests(self, count: int, timeout: float = TIMEOUT) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.saxo.requests) >= count:
                return True
            time.sleep(0.002)
        return False

    def assert_holds_newest(self) -> dict[str, Any]:
        """The cache parses and holds the last token the server issued."""
        from token_refresh.store import load as load_cache

        token = load_cache(str(self.cache))
        assert token.refresh_token == self.saxo.current_refresh
        assert token.access_token == self.saxo.issued_access[-1]
        return token.data
