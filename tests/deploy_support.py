"""Helpers for the static deployment checks: what the installed CLI accepts, read from its --help."""

from __future__ import annotations

import configparser
import functools
import re
import shlex
from pathlib import Path
from typing import Sequence

from support import COMMAND, Processes

REPO = Path(__file__).resolve().parent.parent


def console_script_name() -> str:
    """The console script that setup.cfg installs (``token-refresh``)."""
    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg")
    lines = [ln for ln in parser["options.entry_points"]["console_scripts"].splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    return lines[0].split("=")[0].strip()


def _help(*args: str) -> str:
    with Processes() as processes:  # cached across tests, so not the test's own ``processes``
        result = processes.cli(*args, "--help")
    assert result.returncode == 0, (args, result.stderr)
    return result.stdout


@functools.cache
def subcommands() -> frozenset[str]:
    """The subcommands listed by ``token-refresh --help`` (``{run,status,...}``)."""
    match = re.search(r"\{([a-z,-]+)\}", _help())
    assert match, "no subcommand list in --help"
    return frozenset(match.group(1).split(","))


@functools.cache
def options(subcommand: str) -> frozenset[str]:
    """Every option string that ``token-refresh SUBCOMMAND --help`` shows ("" for the top level)."""
    text = _help(subcommand) if subcommand else _help()
    return frozenset(re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", text))


def invocation_problems(args: Sequence[str], allowed: frozenset[tuple[str, str]] = frozenset()) -> list[str]:
    """What is wrong with ``token-refresh ARGS``: an unknown subcommand or flag (``[]`` if none).

    ``allowed`` holds (subcommand, flag) pairs (flag "" for a whole subcommand) that may be missing.
    """
    args = list(args)
    top_level = options("") - options("run")  # --version: main() does not insert `run` for it
    if args and args[0] in top_level:
        return [f"top level: unknown option {a!r}" for a in args if a.startswith("-") and a not in top_level]
    sub = "run"
    if args and not args[0].startswith("-"):
        sub = args.pop(0)
    if sub not in subcommands():
        return [] if (sub, "") in allowed else [f"unknown subcommand {sub!r}"]
    known = options(sub)
    problems = []
    for arg in args:
        if not arg.startswith("-") or arg == "-":
            continue
        flag = arg.split("=", 1)[0]
        if flag not in known and (sub, flag) not in allowed and ("*", flag) not in allowed:
            problems.append(f"{sub}: unknown option {flag!r}")
    return problems


def cli_bin_dir(tmp_path: Path) -> Path:
    """A directory holding ``token-refresh`` (the installed program) for a script's PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    wrapper = bin_dir / "token-refresh"
    wrapper.write_text(f'#!/bin/sh\nexec {" ".join(shlex.quote(c) for c in COMMAND)} "$@"\n')
    wrapper.chmod(0o755)
    return bin_dir
