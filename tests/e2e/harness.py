"""The end-to-end harness: run the installed program as processes, record everything, count it."""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

from fake_saxo import FakeSaxo
from support import COMMAND, TIMEOUT, Processes, load_json, temp_files, write_json

# load_json and temp_files are support's, named here too for the scenarios that import them from here
__all__ = ["TALLY", "Runner", "Tally", "load_json", "temp_files"]


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


class Runner:
    """One scenario's world: a fake Saxo, a cache, a config, and the processes (support.Processes) that
    start the program and keep its output for the leak scan."""

    def __init__(self, saxo: FakeSaxo, cache: Path, config: Path, processes: Processes) -> None:
        self.saxo = saxo
        self.cache = cache
        self.config = config
        self.processes = processes

    @property
    def outputs(self) -> list[str]:
        """stdout and stderr of every process, for the leak scan."""
        return self.processes.outputs

    # -- setup ---------------------------------------------------------------------
    def seed(self, *, age: float = 0.0, **extra: Any) -> bytes:
        """Write a freshly issued token, ``age`` seconds old; return the bytes on disk."""
        return write_json(self.cache, self.saxo.seed_cache(age=age, **extra))

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
        return self.processes.run([*(prefix or []), *self.argv(*args)], env=env)

    def spawn(
        self, *args: str, env: dict[str, str] | None = None, prefix: list[str] | None = None
    ) -> subprocess.Popen[str]:
        return self.processes.spawn([*(prefix or []), *self.argv(*args)], env=env)

    def finish(self, proc: subprocess.Popen[str]) -> tuple[int, str]:
        """Wait for a spawned process; return (exit status, stderr)."""
        done = self.processes.finish(proc)
        return done.returncode, done.stderr

    def kill(self, proc: subprocess.Popen[str]) -> None:
        TALLY.kills += 1
        self.processes.kill(proc)

    def record(self, *texts: str) -> None:
        self.processes.record(*texts)

    # -- checks --------------------------------------------------------------------
    def leaks(self) -> list[str]:
        """Secrets the server ever issued (and the app secret) found in any recorded output."""
        return self.processes.leaks(self.saxo.secrets_seen())

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
