"""End-to-end fixtures: a Runner per scenario, the leak scan at teardown, the tally at the end."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fake_saxo import FakeSaxo
from harness import TALLY, Runner

HERE = Path(__file__).parent


def _is_e2e(nodeid: str) -> bool:
    return "tests/e2e/" in nodeid or nodeid.startswith("e2e/")


@pytest.fixture
def e2e(
    request: pytest.FixtureRequest, saxo: FakeSaxo, cache_path: Path, config_file: Callable[..., Path]
) -> Iterator[Runner]:
    """A scenario's world; after the test every recorded output is scanned for secrets (scenario 7)."""
    runner = Runner(saxo, cache_path, config_file(lock_timeout_secs=60))
    yield runner
    leaks = runner.leaks()
    assert not leaks, f"secrets in the program's output: {leaks}"


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if not _is_e2e(report.nodeid):
        return
    if report.when == "call":
        TALLY.tests += 1
        scenario = report.nodeid.split("::")[0].rsplit("/", 1)[-1].removeprefix("test_").removesuffix(".py")
        TALLY.scenarios.add(scenario)
    if report.failed:
        TALLY.failures += 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not TALLY.tests:
        return
    terminalreporter.section("end-to-end tally (issue 3)")
    for line in TALLY.lines():
        terminalreporter.write_line(line)
