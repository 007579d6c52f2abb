"""What the tests share (importable by name, unlike conftest.py): the command, its environment, the one
process runner and the one leak scan (invariant 3: no secret ever reaches an output)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Mapping, Sequence
from urllib.parse import quote, quote_plus

sys.path.insert(0, str(Path(__file__).parent))
from fake_saxo import APP_KEY, APP_SECRET, basic_header

__all__ = [
    "APP_KEY",
    "APP_SECRET",
    "COMMAND",
    "TIMEOUT",
    "Live",
    "Processes",
    "RunCli",
    "base_env",
    "find_leaks",
    "leak_forms",
    "load_json",
    "now",
    "temp_files",
    "write_json",
]

# The installed console script, as an operator runs it (`make test` puts the venv's bin first on PATH);
# without one, the venv's python -m.
_SCRIPT = shutil.which("token-refresh")
COMMAND = [_SCRIPT] if _SCRIPT else [sys.executable, "-m", "token_refresh"]
TIMEOUT = 60  # seconds a process may take: generous, the machine is shared and loaded

RunCli = Callable[..., "subprocess.CompletedProcess[str]"]


def write_json(path: Path, data: Any, mode: int = 0o600) -> bytes:
    """Write a cache (or anything JSON) and return the exact bytes on disk."""
    raw = (json.dumps(data, indent=2) + "\n").encode()
    path.write_bytes(raw)
    path.chmod(mode)
    return raw


def load_json(path: Path) -> dict[str, Any]:
    """A JSON object from a file (a cache, as the program left it)."""
    data = json.loads(path.read_bytes())
    assert isinstance(data, dict)
    return data


def temp_files(cache: Path) -> list[str]:
    """The names of the temporary files beside ``cache`` (``.<cache>.tr-XXXXXXXX.tmp``, or any other)."""
    return sorted(p.name for p in cache.parent.iterdir() if p.name.endswith(".tmp"))


def base_env(**extra: str) -> dict[str, str]:
    """A clean environment with the fake credentials and nothing inherited that could interfere."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAXOBANK_", "TOKEN_REFRESH_", "AEGIS_"))}
    env.update(SAXOBANK_APP_KEY_LIVE=APP_KEY, SAXOBANK_APP_SECRET_LIVE=APP_SECRET)
    env.update(extra)
    return env


def now() -> float:
    return time.time()


# -- the leak scan ------------------------------------------------------------------------------


def leak_forms(secrets: Iterable[str]) -> set[str]:
    """Each secret as an output could carry it: plain, URL-encoded (quote, quote_plus), base64 (standard
    and URL-safe, padded or not) and that URL-encoded; the fake app's Basic credential base64(key:secret)
    is always one of the secrets, raw and form-encoded (RFC 6749 §2.3.1)."""
    values = {v for v in secrets if v}
    values.update(basic_header(APP_KEY, APP_SECRET, form_encode=f).split()[1] for f in (True, False))
    forms: set[str] = set()
    for value in values:
        encoded = [e(value.encode()).decode() for e in (base64.b64encode, base64.urlsafe_b64encode)]
        for form in {value, *encoded, *(e.rstrip("=") for e in encoded)}:
            forms.update({form, quote(form, safe=""), quote_plus(form)})
    return forms


def find_leaks(texts: Iterable[str], secrets: Iterable[str]) -> list[str]:
    """Every place a form of a secret stands in ``texts`` ([] when none), shown with the secret masked."""
    texts = list(texts)
    joined = "\0".join(texts)  # one search per form, however many outputs
    found = []
    for form in sorted(leak_forms(secrets), key=len, reverse=True):
        if form not in joined:
            continue
        for text in texts:
            at = text.find(form)
            if at >= 0:
                context = text[max(0, at - 60) : at + len(form) + 60].replace(form, "<SECRET>")
                found.append(f"{form[:4]}... in {context!r}")
    return found


# -- the process runner -------------------------------------------------------------------------


class Live:
    """A spawned process whose stdout and stderr are read by threads while it runs."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [
            threading.Thread(target=self._pump, args=(stream, sink), daemon=True)
            for stream, sink in ((proc.stdout, self.out), (proc.stderr, self.err))
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _pump(stream: IO[str] | None, sink: list[str]) -> None:
        assert stream is not None
        for line in stream:
            sink.append(line)

    def stderr(self) -> str:
        """What it has printed to stderr so far."""
        return "".join(self.err)

    def join(self, timeout: float = 10) -> tuple[str, str]:
        """Wait for the readers (the process has ended); return (stdout, stderr)."""
        for reader in self._readers:
            reader.join(timeout=timeout)
        return "".join(self.out), "".join(self.err)


class Processes:
    """Every process a test starts goes through here, so that each one's output is recorded; at the end
    (``close``, or leaving ``with``) it is scanned for every form of every secret (``find_leaks``)."""

    def __init__(self) -> None:
        self.outputs: list[str] = []  # stdout and stderr of every process (and what a test adds)
        self.secrets: set[str] = {APP_SECRET}  # a test or fixture adds what its server issued
        self.started = 0
        self._running: dict[subprocess.Popen[str], Live | None] = {}

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        self.close(check=kind is None)

    # -- starting ------------------------------------------------------------------------------
    def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        input: str | None = None,
        timeout: float = TIMEOUT,
        preexec_fn: Callable[[], object] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` to completion (stdin: ``input`` or nothing; env: ``base_env()`` unless given)."""
        self.started += 1
        done = subprocess.run(
            list(argv),
            env=base_env() if env is None else env,
            input=input,
            stdin=subprocess.DEVNULL if input is None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=preexec_fn,
            cwd=cwd,
            check=False,
        )
        self.record(done.stdout, done.stderr)
        return done

    def cli(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        input: str | None = None,
        timeout: float = TIMEOUT,
        preexec_fn: Callable[[], object] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run the installed ``token-refresh ARGS`` to completion."""
        return self.run([*COMMAND, *args], env=env, input=input, timeout=timeout, preexec_fn=preexec_fn)

    def spawn(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        stdin: int | None = subprocess.DEVNULL,
        preexec_fn: Callable[[], object] | None = None,
    ) -> subprocess.Popen[str]:
        """Start ``argv`` with its stdout and stderr piped; ``finish`` or ``kill`` collects them."""
        self.started += 1
        proc = subprocess.Popen(
            list(argv),
            env=base_env() if env is None else env,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=preexec_fn,
        )
        self._running[proc] = None
        return proc

    def spawn_live(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        preexec_fn: Callable[[], object] | None = None,
    ) -> Live:
        """Start ``argv`` with stdin piped and its output read while it runs (``finish_live`` ends it)."""
        proc = self.spawn(argv, env=env, stdin=subprocess.PIPE, preexec_fn=preexec_fn)
        live = self._running[proc] = Live(proc)
        return live

    # -- ending --------------------------------------------------------------------------------
    def finish(
        self, proc: subprocess.Popen[str], *, input: str | None = None, timeout: float = TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """Wait for a spawned process and record its output."""
        live = self._running.get(proc)
        if live is not None:
            return self.finish_live(live, input=input, timeout=timeout)
        out, err = proc.communicate(input, timeout=timeout)
        return self._ended(proc, out or "", err or "")

    def finish_live(
        self, live: Live, *, input: str | None = None, timeout: float = TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """Write ``input`` (if any), close stdin, wait (kill it after ``timeout``), record its output."""
        proc = live.proc
        try:
            if proc.stdin is not None:
                if input is not None:
                    proc.stdin.write(input)
                proc.stdin.close()
            proc.wait(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=TIMEOUT)
        return self._ended(proc, *live.join())

    def kill(self, proc: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
        """SIGKILL a spawned process (if it still runs) and record what it printed."""
        proc.kill()
        return self.finish(proc)

    def _ended(self, proc: subprocess.Popen[str], out: str, err: str) -> subprocess.CompletedProcess[str]:
        self._running.pop(proc, None)
        self.record(out, err)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    # -- the scan ------------------------------------------------------------------------------
    def record(self, *texts: str) -> None:
        """Add output to the scan (in-process runs captured by the test, too)."""
        self.outputs.extend(texts)

    def leaks(self, *more: Iterable[str]) -> list[str]:
        """Secrets (``self.secrets`` and ``more``) in any recorded output."""
        return find_leaks(self.outputs, self.secrets.union(*more))

    def close(self, *, check: bool = True) -> None:
        """Kill and collect what is still running, then fail on any leaked secret."""
        for proc in list(self._running):
            try:
                self.kill(proc)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                self._running.pop(proc, None)
        leaks = self.leaks() if check else []
        assert not leaks, f"secrets in the output of a process: {leaks}"
