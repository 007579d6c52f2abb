"""Stop signals (docs/DESIGN.md, "Stop signals"): prompt while nothing is at stake, bounded while
something is.

Each test sends one signal at one moment of a refreshing run and times how long the run takes to end.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import time
from pathlib import Path
from typing import Callable, Iterator

from harness import TALLY, Runner, temp_files
from support import Live
from tools import wait_until

PROMPT = 1.0  # seconds a stop may take while nothing is at stake


def _stop(live: Live, sig: signal.Signals) -> float:
    """Send ``sig``; return the seconds until the process ended (it is killed after 15 s)."""
    sent = time.monotonic()
    live.proc.send_signal(sig)
    with contextlib.suppress(Exception):
        live.proc.wait(timeout=15)
    return time.monotonic() - sent


def _has_socket(pid: int) -> bool:
    with contextlib.suppress(OSError):
        return any(
            os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:") for fd in os.listdir(f"/proc/{pid}/fd")
        )
    return False


@contextlib.contextmanager
def _unanswered_port() -> Iterator[int]:
    """A port whose accept queue is full: a connect() to it waits for its timeout."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = int(server.getsockname()[1])
        fillers = []
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        try:
            yield port
        finally:
            for filler in fillers:
                filler.close()


def _assert_stopped(e2e: Runner, live: Live, sig: signal.Signals, took: float, before: bytes) -> None:
    done = e2e.processes.finish_live(live)
    print(f"\n{sig.name}: the run ended {took:.2f} s after the signal")
    assert done.returncode == 128 + sig.value, done.stderr
    assert took < PROMPT, f"{sig.name} took {took:.2f} s"
    named = [line for line in done.stderr.splitlines() if sig.name in line]
    assert len(named) == 1, done.stderr
    assert "ERROR" in named[0]
    assert "nothing was spent" in named[0]
    assert e2e.cache.read_bytes() == before
    assert temp_files(e2e.cache) == []
    assert e2e.saxo.refreshes == 0


def test_sighup_while_connecting_ends_the_run_at_once(e2e: Runner, config_file: Callable[..., Path]) -> None:
    with _unanswered_port() as port:
        e2e.config = config_file(token_url=f"http://127.0.0.1:{port}/token", http_timeout_secs=30)
        before = e2e.seed_due()
        live = e2e.processes.spawn_live(e2e.argv("run"))
        assert wait_until(lambda: _has_socket(live.proc.pid), 30)
        time.sleep(0.1)  # inside connect()
        took = _stop(live, signal.SIGHUP)
    TALLY.faults += 1
    _assert_stopped(e2e, live, signal.SIGHUP, took, before)


def test_sigterm_between_retries_ends_the_run_at_once(e2e: Runner, config_file: Callable[..., Path]) -> None:
    e2e.config = config_file(retry_budget_secs=30)
    before = e2e.seed_due()
    e2e.fault("503", 10)  # Retry-After: 10 within a 30 s budget: the run sleeps before its retry
    live = e2e.processes.spawn_live(e2e.argv("run"))
    assert e2e.wait_for_requests(1)
    assert wait_until(lambda: "retrying in 10.0 s" in live.stderr(), 10)
    took = _stop(live, signal.SIGTERM)
    _assert_stopped(e2e, live, signal.SIGTERM, took, before)
    assert len(e2e.refresh_requests()) == 1


def test_sigint_while_waiting_for_the_lock_ends_the_run_at_once(e2e: Runner) -> None:
    before = e2e.seed_due()
    with open(e2e.cache.with_name(e2e.cache.name + ".lock"), "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another run holds the lock: nothing has been sent
        live = e2e.processes.spawn_live(e2e.argv("run"))
        assert wait_until(lambda: "classified" in live.stderr(), 30)
        time.sleep(0.2)  # queued on the lock
        took = _stop(live, signal.SIGINT)
    TALLY.faults += 1
    _assert_stopped(e2e, live, signal.SIGINT, took, before)
    assert e2e.refresh_requests() == []


def test_sigterm_in_flight_waits_no_longer_than_the_whole_request_deadline(
    e2e: Runner, config_file: Callable[..., Path]
) -> None:
    """A server dripping its answer a byte at a time beats every per-read timeout, not the deadline.

    The held signal still skips the failure hooks: a stop must not wait for them.
    """
    marker = e2e.cache.parent / "on_failure-ran"
    e2e.config = config_file(http_timeout_secs=2, hooks={"on_failure": [f"touch {marker}"]})
    before = e2e.seed_due()
    e2e.fault("drip-after-rotation", 0.05)  # the whole answer would take about 20 s
    live = e2e.processes.spawn_live(e2e.argv("run"))
    assert e2e.wait_for_requests(1)
    took = _stop(live, signal.SIGTERM)
    done = e2e.processes.finish_live(live)
    print(f"\nSIGTERM in flight: the run ended {took:.2f} s after the signal (sent as the request arrived)")
    assert done.returncode == 75, done.stderr
    assert "did not answer within 2 s" in done.stderr
    assert "may already be spent" in done.stderr
    assert "SIGTERM arrived during the request; hooks skipped" in done.stderr
    assert not marker.exists()
    assert took < 2 + PROMPT, f"held for {took:.2f} s"
    assert e2e.cache.read_bytes() == before
    assert temp_files(e2e.cache) == []


def test_sigterm_held_until_the_save_then_ends_the_run_without_hooks(
    e2e: Runner, tmp_path: Path, config_file: Callable[..., Path]
) -> None:
    marker = tmp_path / "hook-ran"
    e2e.config = config_file(hooks={"on_refresh": [f"touch {marker}"]})
    e2e.seed_due()
    e2e.fault("delay-after-rotation", 0.5)
    live = e2e.processes.spawn_live(e2e.argv("run"))
    assert e2e.wait_for_requests(1)
    took = _stop(live, signal.SIGTERM)
    done = e2e.processes.finish_live(live)
    print(f"\nSIGTERM held until the save: the run ended {took:.2f} s after the signal")
    assert done.returncode == 0, done.stderr  # the token is saved: a success
    assert "SIGTERM arrived during the refresh and waited until the new token was saved" in done.stderr
    assert "hooks skipped" in done.stderr
    assert not marker.exists()
    assert took < 0.5 + PROMPT
    e2e.assert_holds_newest()
    assert e2e.saxo.reuses == 0
    assert temp_files(e2e.cache) == []
