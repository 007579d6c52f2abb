"""Helpers for the fault-injection scenarios: strace and private mount namespaces."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Callable

# strace's line for one call, with -f: "PID  name(args) = result"
STRACE_CALL = re.compile(r"^\d+\s+(?P<name>\w+)\((?P<args>.*)$")


@functools.cache
def strace_missing() -> str | None:
    """Why strace cannot inject faults here, or None when it can."""
    if not shutil.which("strace"):
        return "strace is not installed"
    probe = subprocess.run(
        ["strace", "-f", "-o", "/dev/null", "-e", "trace=getpid", "-e", "inject=getpid:retval=7", "true"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        return f"strace cannot trace here (ptrace not permitted?): {probe.stderr.strip()[:200]}"
    return None


@functools.cache
def namespaces_missing() -> str | None:
    """Why a private mount namespace cannot be used here, or None when it can."""
    if os.geteuid() != 0:
        return "needs root for unshare -m and mount"
    if not shutil.which("unshare"):
        return "unshare (util-linux) is not installed"
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"unshare -m is not permitted here: {probe.stderr.strip()}"
    return None


def strace_calls(path: Path) -> list[tuple[str, str]]:
    """(name, arguments and result) of every call in an strace -o file, in order."""
    calls = []
    for line in path.read_text(errors="replace").splitlines():
        found = STRACE_CALL.match(line)
        if found:
            calls.append((found["name"], found["args"]))
    return calls


def wait_until(condition: Callable[[], bool], timeout: float = 30, step: float = 0.005) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()
