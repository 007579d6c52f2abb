"""Scenario 7: no secret in any output. Every scenario's output is scanned at teardown (conftest.e2e);
these runs add the paths most likely to print one."""

from __future__ import annotations

import pytest
from harness import Runner


def test_the_scan_finds_a_planted_secret(e2e: Runner) -> None:
    e2e.seed()
    e2e.record(f"oops {e2e.saxo.issued_refresh[-1]} leaked")
    assert e2e.leaks()
    e2e.record(f"oops {e2e.saxo.app_secret}")
    assert len(e2e.leaks()) == 2
    e2e.outputs.clear()


def test_a_server_that_echoes_the_secrets_is_redacted(e2e: Runner) -> None:
    e2e.seed_due()
    e2e.fault("echo-secrets")
    done = e2e.run("run")
    assert done.returncode == 77, done.stderr
    assert "<redacted>" in done.stderr  # the echo reached the log line, without the secrets
    assert e2e.leaks() == []


@pytest.mark.parametrize(
    "args", [["run"], ["run", "--force"], ["run", "--dry-run"], ["status"], ["status", "--json"]]
)
def test_every_command_at_full_verbosity_prints_no_secret(e2e: Runner, args: list[str]) -> None:
    e2e.seed_due()
    done = e2e.run(*args)
    assert done.returncode == 0, done.stderr
    assert done.stdout or done.stderr
    assert e2e.leaks() == []
