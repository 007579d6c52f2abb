"""Scenario 4: SIGKILL a refreshing run at random points; the cache survives and the next run copes."""

from __future__ import annotations

import random
import time

import pytest
from harness import TALLY, Runner, temp_files

from token_refresh.store import load as load_cache

DELAY = 0.4  # the server answers this long after spending the token: a wide window to land a kill in
SEED = 3  # fixed, so that a failure can be replayed
# (when, offset): "start" kills that long after the process starts (mostly before its request);
# "request" kills that long after the request reached the server (while it is slow, around the save).
_rng = random.Random(SEED)
KILL_POINTS = [
    ("start", 0.0),
    ("start", 0.02),
    *[("start", round(_rng.uniform(0.03, 0.12), 3)) for _ in range(2)],
    ("request", 0.0),
    *[("request", round(_rng.uniform(0.0, DELAY), 3)) for _ in range(3)],
    *[("request", round(_rng.uniform(DELAY - 0.02, DELAY + 0.08), 3)) for _ in range(4)],
]


@pytest.mark.parametrize(("when", "offset"), KILL_POINTS, ids=[f"{w}+{o}" for w, o in KILL_POINTS])
def test_sigkill_never_corrupts_and_the_next_run_copes(e2e: Runner, when: str, offset: float) -> None:
    before = e2e.seed_due()
    e2e.saxo.delay = DELAY
    proc = e2e.spawn("run")
    if when == "request":
        assert e2e.wait_for_requests(1), "the run never reached the server"
    time.sleep(offset)
    e2e.kill(proc)
    spent = e2e.saxo.refreshes == 1
    after_kill = load_cache(str(e2e.cache))  # whatever happened, the cache parses
    saved = after_kill.refresh_token == e2e.saxo.current_refresh and spent
    assert after_kill.raw == before or saved  # old or new, nothing in between
    left = temp_files(e2e.cache)

    e2e.saxo.delay = 0
    done = e2e.run("run")
    assert temp_files(e2e.cache) == [], "a killed run's temp file outlived the next run"
    load_cache(str(e2e.cache))
    landed = "after the save" if saved else "after the spend" if spent else "before the spend"
    TALLY.kill_outcomes[landed + (", temp file left" if left else "")] += 1
    if spent and not saved:
        # the kill landed after Saxo spent the token and before the save: the chain is broken
        assert done.returncode == 77, done.stderr
        assert "Manual re-authorization required" in done.stderr
    else:
        assert done.returncode == 0, done.stderr
        e2e.assert_holds_newest()
        assert e2e.saxo.reuses == 0
        assert ("token valid" in done.stderr) == saved
