"""Stop signals (SIGTERM, SIGINT, SIGHUP): prompt while nothing is at stake, held while something is.

From the moment a request that may spend the refresh token is on the wire until the new token
is saved, a stop would break the chain, so the signal waits; the wait is bounded by the
request's deadline (docs/DESIGN.md, "Stop signals"). Before and between attempts a signal
ends the run at once with ``Interrupted``.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

from token_refresh.errors import Interrupted

__all__ = ["STOP_SIGNALS", "StopGuard"]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class _Stop(BaseException):
    """Raised by the handler; a BaseException so that no library's ``except Exception`` eats it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class StopGuard:
    """A context manager that owns the stop signals; it is also the transport's ``Flight``."""

    def __init__(self, *, install: bool = True) -> None:
        self.install = install  # False: a caller that handles signals itself; nothing is held
        self.at_stake = False
        self.pending: int | None = None  # a signal that arrived while something was at stake
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopGuard:
        if self.install and threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in STOP_SIGNALS}
        return self

    def __exit__(self, kind: object, error: object, tb: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
        if isinstance(error, _Stop):
            raise Interrupted(error.signum) from None

    def _handle(self, signum: int, frame: object) -> None:
        if self.at_stake:
            if self.pending is None:
                self.pending = signum
            return
        raise _Stop(signum)

    def sent(self) -> None:
        """A request that may spend the token goes out: hold signals from now on."""
        self.at_stake = True

    def landed(self) -> None:
        """The answer spent nothing (a retryable status): a held signal ends the run now."""
        self.at_stake = False
        if self.pending is not None:
            signum, self.pending = self.pending, None
            raise _Stop(signum)

    def settled(self) -> int | None:
        """The new token is saved: a signal held so far (or arriving until the guard exits) is returned.

        Holding continues until the guard exits, so a stop after the save is never reported as
        "nothing was spent".
        """
        return self.pending
