"""Scenario 9: properties of classification and of the cache format, over generated tokens."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from harness import TALLY
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from token_refresh import store
from token_refresh import token as tokens
from token_refresh.freshness import FUTURE_TOLERANCE_SECS, State, classify

RANK = {State.VALID: 0, State.NEEDS_REFRESH: 1, State.EXPIRED: 2}
NOW = 1_700_000_000.0
secs = st.floats(min_value=-10 * 86400, max_value=10 * 86400, allow_nan=False)
lifetimes = st.floats(min_value=-3600, max_value=30 * 86400, allow_nan=False)


def _token(
    issued_at: float, expires_in: float, rt_expires_in: float | None, has_refresh: bool
) -> tokens.Token:
    data: dict[str, Any] = {"access_token": "a" * 40, "issued_at": issued_at, "expires_in": expires_in}
    if has_refresh:
        data["refresh_token"] = "r" * 36
    if rt_expires_in is not None:
        data["refresh_token_expires_in"] = rt_expires_in
    return tokens.parse(data)


@settings(max_examples=400, deadline=None)
@given(
    offset=secs,
    expires_in=lifetimes,
    rt_expires_in=st.none() | lifetimes,
    has_refresh=st.booleans(),
    horizon=st.floats(min_value=0, max_value=90000),
    t1=secs,
    later=st.floats(min_value=0, max_value=10 * 86400),
)
def test_classification_never_becomes_valid_again_later(
    offset: float,
    expires_in: float,
    rt_expires_in: float | None,
    has_refresh: bool,
    horizon: float,
    t1: float,
    later: float,
) -> None:
    token = _token(NOW + offset, expires_in, rt_expires_in, has_refresh)
    first = classify(token, now=NOW + t1, horizon=horizon)
    second = classify(token, now=NOW + t1 + later, horizon=horizon)
    if first.issued_in_future and has_refresh:
        # documented exception: clock trouble makes a refreshable token due until the clocks agree
        assert first.state is not State.VALID
        return
    assert RANK[second.state] >= RANK[first.state], (first, second)


@settings(max_examples=200, deadline=None)
@given(offset=secs, expires_in=lifetimes, rt_expires_in=st.none() | st.floats(min_value=1, max_value=86400))
def test_a_refreshable_token_issued_in_the_future_is_due(
    offset: float, expires_in: float, rt_expires_in: float | None
) -> None:
    token = _token(NOW + FUTURE_TOLERANCE_SECS + 1 + abs(offset), expires_in, rt_expires_in, True)
    assert classify(token, now=NOW, horizon=1020).state is State.NEEDS_REFRESH


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
epochs = st.integers(min_value=0, max_value=4_000_000_000)
issued_ats = st.one_of(
    epochs.map(lambda e: ("int", e)),
    epochs.map(lambda e: ("float", e + 0.25)),
    epochs.map(lambda e: ("iso-z", tokens.format_issued_at(e, "iso-z"))),
    epochs.map(lambda e: ("iso-offset", tokens.format_issued_at(e, "iso-offset"))),
    epochs.map(lambda e: ("iso-naive", tokens.format_issued_at(e, "iso-naive"))),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    unknown=st.dictionaries(
        st.text().filter(lambda k: k not in tokens.TOKEN_FIELDS), json_values, max_size=5
    ),
    issued=issued_ats,
    sent_at=epochs,
)
def test_save_load_round_trip_keeps_unknown_fields_and_issued_at_style(
    unknown: dict[str, Any], issued: tuple[str, Any], sent_at: int
) -> None:
    TALLY.scenarios.add("properties")
    style, issued_at = issued
    data = {
        **unknown,
        "access_token": "a" * 40,
        "refresh_token": "r" * 36,
        "issued_at": issued_at,
        "expires_in": 1200,
    }
    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "cache.json")
        with store.PendingWrite(path, reserve=64) as pending:
            pending.commit(store.serialize(data))
        loaded = store.load(path)
        assert loaded.data == data
        assert loaded.issued_at_style == style
        # a refresh rewrites the cache: unknown fields survive, issued_at keeps its representation
        response = {"access_token": "b" * 40, "refresh_token": "s" * 36, "expires_in": 1200}
        merged = tokens.merge_refresh(loaded, response, sent_at=float(sent_at))
        with store.PendingWrite(path, reserve=64) as pending:
            pending.commit(store.serialize(merged))
        again = store.load(path)
    assert {k: again.data[k] for k in unknown} == unknown
    assert again.issued_at_style == style
    assert again.issued_at == float(sent_at)
    assert json.loads(again.raw)["refresh_token"] == "s" * 36
