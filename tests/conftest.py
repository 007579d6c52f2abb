"""Shared fixtures: the fake Saxo endpoint on 127.0.0.1, cache and config builders, the process runner
whose outputs are scanned for secrets, and the end-to-end Runner with its tally."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

# the helpers are imported by name, from tests/ and tests/e2e/
sys.path.insert(0, str(Path(__file__).parent / "e2e"))
sys.path.insert(0, str(Path(__file__).parent))
from fake_saxo import FakeSaxo
from harness import TALLY, Runner
from support import Processes, RunCli


@pytest.fixture
def saxo() -> Iterator[FakeSaxo]:
    """A running fake token endpoint."""
    with FakeSaxo() as server:
        yield server


@pytest.fixture
def cache_path(tmp_path: Path) -> Path:
    """Where the token cache lives (the directory exists, the file does not yet)."""
    folder = tmp_path / "tokens"
    folder.mkdir()
    return folder / "saxobank_tokens_live.json"


@pytest.fixture
def config_file(tmp_path: Path, saxo: FakeSaxo, cache_path: Path) -> Callable[..., Path]:
    """Build a YAML config pointing at the fake endpoint and the test cache."""

    def build(**overrides: Any) -> Path:
        values: dict[str, Any] = {
            "environment": "live",
            "token_url": saxo.token_url,
            "cache_path": str(cache_path),
            "retry_budget_secs": 3,
            "http_timeout_secs": 5,
            "lock_timeout_secs": 20,
        }
        values.update(overrides)
        path = tmp_path / "token_refresh.yaml"
        path.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in values.items() if v is not None))
        return path

    return build


@pytest.fixture
def processes(request: pytest.FixtureRequest) -> Iterator[Processes]:
    """Every process the test starts; after it, their output is scanned for every secret the test's
    fake server (``saxo``) issued or knows, and the fake app secret (invariant 3)."""
    with Processes() as started:
        yield started
        saxo = request.node.funcargs.get("saxo") if isinstance(request.node, pytest.Function) else None
        if isinstance(saxo, FakeSaxo):
            started.secrets.update(saxo.secrets_seen())


@pytest.fixture
def run_cli(processes: Processes) -> RunCli:
    """Run the installed ``token-refresh ARGS`` as a separate process (``Processes.cli``)."""
    return processes.cli


# -- end to end (tests/e2e) ----------------------------------------------------------------------


@pytest.fixture
def e2e(
    saxo: FakeSaxo, cache_path: Path, config_file: Callable[..., Path], processes: Processes
) -> Iterator[Runner]:
    """A scenario's world; its processes' output is scanned for secrets by ``processes`` (scenario 7)."""
    runner = Runner(saxo, cache_path, config_file(lock_timeout_secs=60), processes)
    yield runner
    TALLY.processes += processes.started
    TALLY.bytes_scanned += sum(len(text.encode()) for text in processes.outputs)


def _is_e2e(nodeid: str) -> bool:
    path = nodeid.split("::")[0]  # not the parameter ids, which may name paths
    return path.startswith(("tests/e2e/", "e2e/"))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if not _is_e2e(report.nodeid):
        return
    if report.when == "call":
        TALLY.tests += 1
        scenario = report.nodeid.split("::")[0].rsplit("/", 1)[-1].removeprefix("test_").removesuffix(".py")
        TALLY.scenarios.add(scenario)
    if report.failed:
        TALLY.failures += 1


# With pytest-xdist (`make test` runs two workers) processes, kills, faults and bytes are counted
# in the workers; each sends its counts back when it ends and the controller adds them up. Tests,
# scenarios and failures are counted above from the reports, which reach the controller anyway.
WORKER_COUNTS = ("processes", "kills", "faults", "bytes_scanned")


def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["tally"] = {name: getattr(TALLY, name) for name in WORKER_COUNTS}
        workeroutput["tally_kills"] = dict(TALLY.kill_outcomes)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    output = getattr(node, "workeroutput", {})
    for name, value in output.get("tally", {}).items():
        setattr(TALLY, name, getattr(TALLY, name) + value)
    TALLY.kill_outcomes.update(output.get("tally_kills", {}))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not TALLY.tests:
        return
    terminalreporter.section("end-to-end tally")
    for line in TALLY.lines():
        terminalreporter.write_line(line)
