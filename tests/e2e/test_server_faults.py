"""Scenario 5: a misbehaving token endpoint; each fault has its documented exit status, the cache stays."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Callable

import pytest
from harness import TALLY, Runner, temp_files

# fault, its argument, documented exit status, requests the server sees, words the error must contain
FAULTS: list[tuple[str, float, int, int, str]] = [
    ("500-html", 0, 75, 1, "HTTP 500"),
    ("200-html", 0, 75, 1, "unusable token response"),
    ("truncated", 0, 75, 1, "unusable token response"),
    ("wrong-types", 0, 75, 1, "neither 'access_token' nor 'refresh_token' is a non-empty string"),
    ("429", 30, 75, 1, "HTTP 429"),  # Retry-After beyond the budget: no second try
    ("redirect", 0, 78, 1, "redirect"),
    ("404", 0, 78, 1, "HTTP 404"),
    ("invalid_client", 0, 78, 1, "client credentials"),
    ("bad-request", 0, 77, 1, "Manual re-authorization required"),
]


def _assert_untouched(e2e: Runner, before: bytes) -> None:
    assert e2e.cache.read_bytes() == before
    assert temp_files(e2e.cache) == []
    assert e2e.saxo.refreshes == 0


@pytest.mark.parametrize(("fault", "arg", "code", "requests", "words"), FAULTS, ids=[f[0] for f in FAULTS])
def test_fault_gives_its_exit_status_and_keeps_the_cache(
    e2e: Runner, fault: str, arg: float, code: int, requests: int, words: str
) -> None:
    before = e2e.seed_due()
    e2e.fault(fault, arg)
    done = e2e.run("run")
    assert done.returncode == code, done.stderr
    assert words in done.stderr
    assert len(e2e.refresh_requests()) == requests
    _assert_untouched(e2e, before)


def test_503_with_retry_after_is_retried_within_the_budget(
    e2e: Runner, config_file: Callable[..., Path]
) -> None:
    e2e.config = config_file(retry_budget_secs=2.5)  # room for one retry even on a loaded machine
    before = e2e.seed_due()
    e2e.fault("503", 1)
    done = e2e.run("run")
    assert done.returncode == 75, done.stderr
    requests = e2e.refresh_requests()
    assert 2 <= len(requests) <= 3
    gaps = [b["time"] - a["time"] for a, b in zip(requests, requests[1:])]
    assert min(gaps) >= 0.9  # Retry-After: 1 was honoured
    _assert_untouched(e2e, before)


def test_one_503_then_success_spends_the_token_once(e2e: Runner) -> None:
    e2e.seed_due()
    e2e.fault("503", 0, limit=1)
    done = e2e.run("run")
    assert done.returncode == 0, done.stderr
    assert len(e2e.refresh_requests()) == 2
    assert e2e.saxo.refreshes == 1
    assert e2e.saxo.reuses == 0
    e2e.assert_holds_newest()


def test_no_answer_is_a_read_timeout_and_never_retried(e2e: Runner, config_file: Callable[..., Path]) -> None:
    e2e.config = config_file(http_timeout_secs=1)
    before = e2e.seed_due()
    e2e.fault("hang", 3)
    done = e2e.run("run")
    assert done.returncode == 75, done.stderr
    assert "did not answer within 1 s" in done.stderr
    assert "may already be spent" in done.stderr
    assert len(e2e.refresh_requests()) == 1
    _assert_untouched(e2e, before)


def test_refused_connection_is_a_temporary_failure(e2e: Runner, config_file: Callable[..., Path]) -> None:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    e2e.config = config_file(token_url=f"http://127.0.0.1:{port}/token", retry_budget_secs=1)
    before = e2e.seed_due()
    TALLY.faults += 1
    done = e2e.run("run")
    assert done.returncode == 75, done.stderr
    assert "cannot reach the token endpoint" in done.stderr
    assert "refused" in done.stderr.lower()
    assert e2e.refresh_requests() == []
    _assert_untouched(e2e, before)


def test_answer_lost_after_the_spend_is_75_then_77(e2e: Runner, config_file: Callable[..., Path]) -> None:
    e2e.config = config_file(http_timeout_secs=1)
    before = e2e.seed_due()
    e2e.saxo.delay = 3  # Saxo spends the token, then the answer comes too late
    TALLY.faults += 1
    done = e2e.run("run")
    assert done.returncode == 75, done.stderr
    assert "may already be spent" in done.stderr
    assert e2e.saxo.refreshes == 1
    assert e2e.cache.read_bytes() == before
    assert temp_files(e2e.cache) == []
    e2e.saxo.delay = 0
    again = e2e.run("run")
    assert again.returncode == 77, again.stderr
    assert "Manual re-authorization required" in again.stderr
    assert e2e.cache.read_bytes() == before
