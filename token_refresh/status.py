"""``token-refresh status``: what the cache holds, without lock, network, write or credentials."""

from __future__ import annotations

import os
import time
from typing import Any, Mapping

from token_refresh import cache
from token_refresh.errors import ExitCode
from token_refresh.freshness import Assessment, State, classify


def iso(epoch: float | None) -> str | None:
    """UTC ISO-8601 with a Z, to the second."""
    if epoch is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def secs(value: float | None) -> float | None:
    """Seconds as shown in ``status --json`` and log fields: one decimal."""
    return None if value is None else round(value, 1)


def health_exit_code(assessment: Assessment) -> ExitCode:
    """0: consumers work; 75: access expired but a run will fix it; 77: a person is needed."""
    if assessment.state is State.EXPIRED:
        return ExitCode.NOPERM
    if assessment.access_left <= 0:
        return ExitCode.TEMPFAIL
    return ExitCode.OK


def report(path: str, *, now: float, horizon: float) -> tuple[dict[str, Any], ExitCode]:
    """The status of one cache as a JSON-able dict and its exit status; raises Cache*Error."""
    token = cache.load_cache(path)
    assessment = classify(token, now=now, horizon=horizon)
    try:
        mtime: float | None = os.stat(path).st_mtime
    except OSError:
        mtime = None

    info = {
        "path": path,
        "state": assessment.state.value,
        "issued_at": iso(token.issued_at),
        "access_expires_at": iso(assessment.access_expires_at),
        "refresh_expires_at": iso(assessment.refresh_expires_at),
        "access_expires_in_secs": secs(assessment.access_left),
        "refresh_expires_in_secs": secs(assessment.refresh_left),
        "has_refresh_token": assessment.has_refresh_token,
        "mtime": iso(mtime),
        "age_secs": secs(None if mtime is None else now - mtime),
        "reason": assessment.reason,
    }
    return info, health_exit_code(assessment)


def _left(value: float | None, expires_at: str | None) -> str:
    if value is None:
        return "unknown"
    word = "left" if value > 0 else "ago (expired)"
    return f"{abs(value):.0f} s {word}, at {expires_at}"


def lifetimes_text(info: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The access token, refresh token and file age rows of a ``report`` for a person."""
    refresh = _left(info["refresh_expires_in_secs"], info["refresh_expires_at"])
    if not info["has_refresh_token"]:
        refresh = "none (cannot be refreshed)"
    age = info["age_secs"]
    return [
        ("access token", _left(info["access_expires_in_secs"], info["access_expires_at"])),
        ("refresh token", refresh),
        ("file age", "unknown" if age is None else f"{age:.0f} s (modified {info['mtime']})"),
    ]


def render_text(info: Mapping[str, Any]) -> str:
    """Aligned lines for a person."""
    rows = [
        ("path", info["path"]),
        ("state", f"{info['state']} ({info['reason']})"),
        ("issued_at", info["issued_at"]),
        *lifetimes_text(info),
    ]
    return "\n".join(f"{name + ':':15} {value}" for name, value in rows)
