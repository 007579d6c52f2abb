"""Classification at every boundary, with ``now`` passed in."""

from __future__ import annotations

from typing import Any

import pytest

from token_refresh.freshness import FUTURE_TOLERANCE_SECS, State, classify
from token_refresh.token import Token, parse

T0 = 1_800_000_000  # issued_at of every token below
HORIZON = 900 + 120  # the defaults: interval_secs + margin_secs


def token(
    expires_in: float = 1200, refresh: str | None = "rt-abcdef", rt_expires_in: float | None = 3600
) -> Token:
    data: dict[str, Any] = {"access_token": "at-abcdef", "issued_at": T0, "expires_in": expires_in}
    if refresh is not None:
        data["refresh_token"] = refresh
    if rt_expires_in is not None:
        data["refresh_token_expires_in"] = rt_expires_in
    return parse(data)


@pytest.mark.parametrize(
    ("tok", "elapsed", "expected"),
    [
        # a fresh Saxo token is valid; it becomes due when 1020 s are left (at 180 s)
        (token(), 0, State.VALID),
        (token(), 1200 - HORIZON - 1, State.VALID),
        (token(), 1200 - HORIZON, State.NEEDS_REFRESH),
        (token(), 1200 - HORIZON + 1, State.NEEDS_REFRESH),
        # the run 900 s after a refresh refreshes
        (token(), 900, State.NEEDS_REFRESH),
        # an expired access token with a live refresh token can still be refreshed
        (token(), 1200, State.NEEDS_REFRESH),
        (token(), 3599, State.NEEDS_REFRESH),
        # the refresh token expires at 3600 s
        (token(), 3600 - 1, State.NEEDS_REFRESH),
        (token(), 3600, State.EXPIRED),
        (token(), 3600 + 1, State.EXPIRED),
        # a long-lived access token is refreshed when the refresh token would die first
        (token(expires_in=86400, rt_expires_in=3600), 3600 - HORIZON - 1, State.VALID),
        (token(expires_in=86400, rt_expires_in=3600), 3600 - HORIZON, State.NEEDS_REFRESH),
        # unknown refresh-token lifetime: only the access token counts
        (token(rt_expires_in=None), 1200 - HORIZON - 1, State.VALID),
        (token(rt_expires_in=None), 10_000, State.NEEDS_REFRESH),
        # no refresh token (24-hour developer token): valid until the access token expires
        (token(expires_in=86400, refresh=None, rt_expires_in=None), 86400 - 1, State.VALID),
        (token(expires_in=86400, refresh=None, rt_expires_in=None), 86400, State.EXPIRED),
        (token(expires_in=86400, refresh="", rt_expires_in=None), 86400 + 1, State.EXPIRED),
        # a negative expires_in (Saxo: a code exchanged late) is an expired access token
        (token(expires_in=-5), 0, State.NEEDS_REFRESH),
        (token(expires_in=-5, refresh=None, rt_expires_in=None), 0, State.EXPIRED),
    ],
)
def test_classify_boundaries(tok: Token, elapsed: float, expected: State) -> None:
    assert classify(tok, now=T0 + elapsed, horizon=HORIZON).state is expected


@pytest.mark.parametrize(
    ("ahead", "expected", "flagged"),
    [
        (FUTURE_TOLERANCE_SECS, State.VALID, False),
        (FUTURE_TOLERANCE_SECS + 1, State.NEEDS_REFRESH, True),
        (86400 * 365, State.NEEDS_REFRESH, True),
    ],
)
def test_issued_at_in_the_future_forces_a_refresh(ahead: float, expected: State, flagged: bool) -> None:
    verdict = classify(token(), now=T0 - ahead, horizon=HORIZON)
    assert (verdict.state, verdict.issued_in_future) == (expected, flagged)


def test_figures_are_seconds_left() -> None:
    verdict = classify(token(), now=T0 + 100, horizon=HORIZON)
    assert verdict.access_expires_at == T0 + 1200
    assert verdict.refresh_expires_at == T0 + 3600
    assert verdict.access_left == 1100
    assert verdict.refresh_left == 3500
