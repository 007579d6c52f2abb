"""Scenario 2: twenty processes start together on a due cache; the token is spent exactly once."""

from __future__ import annotations

import pytest
from harness import Runner, temp_files

PROCESSES = 20


def _race(e2e: Runner, argvs: list[list[str]]) -> list[tuple[int, str]]:
    procs = [e2e.spawn(*argv) for argv in argvs]
    return [e2e.finish(p) for p in procs]


def test_twenty_runs_on_a_due_cache_spend_it_once(e2e: Runner) -> None:
    e2e.seed_due()
    e2e.saxo.delay = 0.3  # keep the winner inside the lock while the others arrive
    results = _race(e2e, [["run"]] * PROCESSES)
    assert [code for code, _ in results] == [0] * PROCESSES, [err for _, err in results]
    assert len(e2e.refresh_requests()) == 1
    assert e2e.saxo.refreshes == 1
    assert e2e.saxo.reuses == 0
    assert not any("invalid_grant" in err for _, err in results)
    assert sum("token refreshed:" in err for _, err in results) == 1
    e2e.assert_holds_newest()
    assert temp_files(e2e.cache) == []


@pytest.mark.parametrize("due", [True, False], ids=["due", "valid"])
def test_run_and_force_mixed_never_reuse_a_token(e2e: Runner, due: bool) -> None:
    before = e2e.seed_due() if due else e2e.seed()
    e2e.saxo.delay = 0.2
    forced = PROCESSES // 2
    results = _race(e2e, [["run", "--force"] if i % 2 else ["run"] for i in range(PROCESSES)])
    assert [code for code, _ in results] == [0] * PROCESSES, [err for _, err in results]
    requests = e2e.refresh_requests()
    # a --force that loaded the cache after a refresh forces another one, with the newest token
    assert 1 <= len(requests) <= forced + (1 if due else 0)
    assert e2e.saxo.reuses == 0
    assert len({r["refresh_token"] for r in requests}) == len(requests)
    assert not any("invalid_grant" in err for _, err in results)
    e2e.assert_holds_newest()
    assert e2e.cache.read_bytes() != before
    assert temp_files(e2e.cache) == []
