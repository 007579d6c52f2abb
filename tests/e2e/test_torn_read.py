"""Scenario 3: a reader in another process never sees a torn cache while 200 refreshes run."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from harness import Runner
from support import TIMEOUT, base_env

from token_refresh import cli

REFRESHES = 200


def test_reader_never_sees_a_torn_file(
    e2e: Runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    e2e.seed()
    for name, value in base_env().items():
        if name.startswith("SAXOBANK_"):
            monkeypatch.setenv(name, value)
    stop, ready = tmp_path / "stop", tmp_path / "ready"
    reader = e2e.processes.spawn(
        [sys.executable, str(Path(__file__).with_name("reader.py")), str(e2e.cache), str(stop), str(ready)]
    )
    try:
        deadline = time.monotonic() + TIMEOUT
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        # the refreshes run in this process through the CLI's main(); the reader is another process
        codes = [cli.main(["run", "--force", "--config", str(e2e.config), "-v"]) for _ in range(REFRESHES)]
    finally:
        stop.touch()
        out = e2e.processes.finish(reader).stdout
    e2e.record(*capsys.readouterr())
    assert codes == [0] * REFRESHES
    assert e2e.saxo.refreshes == REFRESHES
    assert e2e.saxo.reuses == 0
    result = json.loads(out)
    assert result["torn_count"] == 0, result["torn"]
    assert result["reads"] >= 100
    assert result["tokens"] >= 2  # it really read while the cache changed
    e2e.assert_holds_newest()
