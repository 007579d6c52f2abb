"""Scenario 1: ten forced refreshes in a row; each spends the newest refresh token exactly once."""

from __future__ import annotations

from harness import Runner, load_json


def test_ten_forced_refreshes_follow_the_chain(e2e: Runner) -> None:
    e2e.seed(consumer_note="kept across rewrites")
    issued_at = []
    for i in range(10):
        before = load_json(e2e.cache)
        done = e2e.run("--force")
        assert done.returncode == 0, done.stderr
        assert "token refreshed" in done.stderr
        requests = e2e.refresh_requests()
        assert len(requests) == i + 1
        assert requests[-1]["refresh_token"] == before["refresh_token"]  # the newest one, not an older one
        assert requests[-1]["auth_ok"]
        data = e2e.assert_holds_newest()
        assert data["consumer_note"] == "kept across rewrites"
        assert isinstance(data["issued_at"], int)
        issued_at.append(data["issued_at"])
    assert e2e.saxo.refreshes == 10
    assert e2e.saxo.reuses == 0
    assert issued_at == sorted(issued_at)
    assert e2e.cache.stat().st_mode & 0o777 == 0o600
