"""Every `token-refresh ...` command in docs/RUNBOOK.md uses subcommands and flags that exist."""

from __future__ import annotations

import re
import shlex

from deploy_support import REPO, invocation_problems

RUNBOOK = REPO / "docs" / "RUNBOOK.md"

# Commands that other changes are adding in parallel; the runbook already names them so their
# text can be merged. The lead deletes each entry when the branch that adds it is merged.
PENDING: frozenset[tuple[str, str]] = frozenset()

# `token-refresh` as a program: at the start of a command, or a venv's .../bin/token-refresh;
# not the repository folder, the image `token-refresh:local` or the service `token-refresh-cron`.
PROGRAM = re.compile(r"(?:^|(?<=[\s;&|(`]))(?:\S*/bin/)?token-refresh(?=[\s`]|$)")
END_OF_COMMAND = re.compile(r"`|\s(?:\||;|&&|\|\||>|2>|#)")


def code_lines() -> list[str]:
    """Lines of fenced code blocks (continuations joined) and inline code spans."""
    text = RUNBOOK.read_text()
    lines: list[str] = []
    for lang, block in re.findall(r"^\s*```([a-z]*)\n(.*?)^\s*```", text, re.M | re.S):
        if lang in ("yaml", "json"):  # data, not commands (a hook's text may name the program)
            continue
        lines.extend(block.replace("\\\n", " ").splitlines())
    prose = re.sub(r"^\s*```[a-z]*\n.*?^\s*```", "", text, flags=re.M | re.S)
    lines.extend(" ".join(span.split()) for span in re.findall(r"`([^`]+)`", prose))
    return lines


def runbook_invocations() -> list[list[str]]:
    """The arguments of every `token-refresh` invocation in the runbook."""
    found = []
    for line in code_lines():
        for match in PROGRAM.finditer(line):
            rest = line[match.end() :]
            end = END_OF_COMMAND.search(rest)
            found.append(shlex.split(rest[: end.start()] if end else rest))
    return found


def test_runbook_names_enough_commands_to_be_checked() -> None:
    invocations = runbook_invocations()
    assert len(invocations) >= 15
    shapes = {
        " ".join(a for a in args if a.startswith("-") or a in ("run", "status")) for args in invocations
    }
    assert {"run", "run --force -v", "run --dry-run", "status", "status --json"} <= shapes


def test_every_runbook_command_uses_existing_subcommands_and_flags() -> None:
    problems = {
        shlex.join(args): p for args in runbook_invocations() if (p := invocation_problems(args, PENDING))
    }
    assert problems == {}


def test_pending_entries_are_still_needed() -> None:
    """Fails once a pending command exists for real, so the allow-list cannot go stale."""
    used = {(args[0], "") for args in runbook_invocations() if args and (args[0], "") in PENDING}
    used |= {
        (args[0] if args and not args[0].startswith("-") else "run", a)
        for args in runbook_invocations()
        for a in args
        if a.startswith("-")
    }
    for entry in PENDING:
        assert entry in used, f"{entry} is no longer in the runbook"
        assert invocation_problems([entry[0], entry[1]] if entry[1] else [entry[0]]) != [], (
            f"{entry} exists now: remove it from PENDING"
        )


def test_every_compose_command_uses_the_same_file_and_env_file() -> None:
    for line in code_lines():
        if re.search(r"docker compose (?!version)\S", line):
            assert "-f docker-compose.cron.yml --env-file /volume1/aegis/.env" in line, line


def test_runbook_has_the_sections_operators_need() -> None:
    headings = set(re.findall(r"^##+ (.+)$", RUNBOOK.read_text(), re.M))
    assert {
        "What it is",
        "Prerequisites",
        "Start, stop and remove the sidecar",
        "Install the DSM task",
        "Ad-hoc refresh",
        "How to verify it is working",
        "Re-authorize",
        "Parallel observation phase",
        "Cutover",
        "Rollback (under a minute)",
        "By exit status",
        "By symptom",
    } <= headings
