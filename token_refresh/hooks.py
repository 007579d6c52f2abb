"""Hooks, like certbot's: operator commands run with ``/bin/sh -c`` after the cycle, time-limited.

A hook learns what happened from ``TOKEN_REFRESH_*`` variables; it never receives a token or the
app secret, and its failure is logged without changing the run's exit status.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import IO, TYPE_CHECKING, Mapping, Sequence

from token_refresh import redact

if TYPE_CHECKING:
    import subprocess

log = logging.getLogger(__name__)

EVENTS = ("on_refresh", "on_failure")
SHELL = "/bin/sh"
KILL_GRACE_SECS = 2.0  # between SIGTERM and SIGKILL of a hook's process group
OUTPUT_TAIL_CHARS = 400  # of a failed hook's output, in its log line
# Every SAXOBANK_* variable is withheld: the central env file also holds the access token and
# account variables, and no hook needs any of them.
WITHHELD_PREFIXES = ("SAXOBANK_",)


def _withheld(name: str, value: str) -> bool:
    return name.upper().startswith(WITHHELD_PREFIXES) or redact.redact(value) != value


def hook_environment(inherited: Mapping[str, str], values: Mapping[str, str]) -> dict[str, str]:
    """The hook's environment: ours minus anything secret, plus the ``TOKEN_REFRESH_*`` values."""
    env = {k: v for k, v in inherited.items() if not _withheld(k, v)}
    env.update({k: redact.redact(v) for k, v in values.items()})
    return env


def _tail(out: IO[bytes]) -> str:
    out.seek(0)
    text = out.read().decode("utf-8", "replace").strip()
    if len(text) > OUTPUT_TAIL_CHARS:
        text = "..." + text[-OUTPUT_TAIL_CHARS:]
    return " | ".join(line for line in text.splitlines() if line.strip())


def _kill_group(pgid: int) -> None:
    import signal

    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _stop(proc: subprocess.Popen[bytes], pgid: int) -> None:
    """SIGTERM the hook's process group, then SIGKILL whatever is left after a short grace."""
    import signal
    import subprocess

    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=KILL_GRACE_SECS)
    _kill_group(pgid)  # also the children that ignored SIGTERM or outlived the shell
    with contextlib.suppress(ProcessLookupError):
        proc.kill()  # should the group be gone, never wait on a live shell
    proc.wait()


def run_hook(name: str, command: str, *, env: Mapping[str, str], timeout: float) -> int | None:
    """Run one hook; return its exit status, or None when it could not start or was killed."""
    import subprocess
    import tempfile

    started = time.monotonic()
    # a file, not a pipe: a background child that keeps the pipe open cannot make us wait
    with tempfile.TemporaryFile() as out:
        try:
            proc = subprocess.Popen(  # noqa: S603 - the operator's own command line, by design
                [SHELL, "-c", command],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(env),
                start_new_session=True,  # its own process group, so a timeout can kill all of it
                close_fds=True,
            )
        except OSError as e:
            log.warning("hook %s could not start: %s", name, e.strerror or e)
            return None
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop(proc, proc.pid)
            output = _tail(out)
            log.warning(
                "hook %s still running after %g s; killed its process group%s",
                name,
                timeout,
                f" (output: {output})" if output else "",
            )
            return None
        output = _tail(out)
    elapsed = time.monotonic() - started
    if code != 0:
        log.warning("hook %s exited %d after %.1f s%s", name, code, elapsed, f": {output}" if output else "")
    else:
        log.debug("hook %s done in %.1f s%s", name, elapsed, f": {output}" if output else "")
    return code


def run_hooks(
    event: str, commands: Sequence[str], *, values: Mapping[str, str], timeout: float
) -> list[int | None]:
    """Run ``event``'s hooks one after another; a failing hook does not stop the next."""
    env = hook_environment(os.environ, {**values, "TOKEN_REFRESH_EVENT": event})
    return [
        run_hook(f"{event}[{i}]", command, env=env, timeout=timeout) for i, command in enumerate(commands)
    ]
