"""Classification of a token: a pure function of the token, the time and the horizon."""

from __future__ import annotations

import enum
from typing import NamedTuple

from token_refresh.token import Token

FUTURE_TOLERANCE_SECS = 300  # issued_at further ahead than this means a clock is wrong


class State(str, enum.Enum):
    """What a run should do with a token."""

    VALID = "valid"
    NEEDS_REFRESH = "needs_refresh"
    EXPIRED = "expired"

    def __str__(self) -> str:
        return self.value


class Assessment(NamedTuple):
    """The verdict and the figures behind it; times are UTC epoch seconds."""

    state: State
    reason: str
    access_expires_at: float
    refresh_expires_at: float | None
    access_left: float
    refresh_left: float | None
    has_refresh_token: bool
    issued_in_future: bool


def classify(token: Token, *, now: float, horizon: float) -> Assessment:
    """Classify ``token`` at ``now`` for a next run ``horizon`` seconds away."""
    access_expires_at = token.issued_at + token.expires_in
    refresh_expires_at = (
        None if token.refresh_token_expires_in is None else token.issued_at + token.refresh_token_expires_in
    )
    access_left = access_expires_at - now
    refresh_left = None if refresh_expires_at is None else refresh_expires_at - now
    has_refresh = token.refresh_token is not None
    in_future = token.issued_at - now > FUTURE_TOLERANCE_SECS

    def verdict(state: State, reason: str) -> Assessment:
        return Assessment(
            state,
            reason,
            access_expires_at,
            refresh_expires_at,
            access_left,
            refresh_left,
            has_refresh,
            in_future,
        )

    if not has_refresh:
        if access_left <= 0:
            return verdict(State.EXPIRED, "access token expired and there is no refresh token")
        return verdict(State.VALID, "access token valid; no refresh token (cannot be refreshed)")
    if refresh_left is not None and refresh_left <= 0:
        return verdict(State.EXPIRED, "refresh token expired")
    if in_future:
        return verdict(State.NEEDS_REFRESH, "issued_at is in the future (clock trouble?)")
    # a due token is the normal state between refreshes: say it is fine and what happens next
    if access_left <= 0:
        return verdict(State.NEEDS_REFRESH, "access token expired; the next run refreshes it")
    if access_left <= horizon:
        return verdict(
            State.NEEDS_REFRESH,
            f"valid; the next run refreshes it (access token within the {horizon:.0f} s horizon)",
        )
    if refresh_left is not None and refresh_left <= horizon:
        return verdict(
            State.NEEDS_REFRESH,
            f"valid; the next run refreshes it (refresh token within the {horizon:.0f} s horizon)",
        )
    if refresh_left is None:
        # without refresh_token_expires_in (plain OAuth2) nobody knows when the refresh token dies
        return verdict(State.VALID, "access token outlives the next run; refresh token lifetime unknown")
    return verdict(State.VALID, "access and refresh token outlive the next run")
