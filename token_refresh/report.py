"""``token-refresh report``: the observation phase's acceptance criteria, answered from the run journal.

Each cache's journal (``<cache>.runs.json``) is read, never written; no lock, network or credentials.
A row per cache; the exit status is 0 when every criterion holds for every cache, else the worst
of the rows' problems (docs/RUNBOOK.md, "Parallel observation phase").
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from token_refresh import fmt, journal, logs, store
from token_refresh.errors import (
    CriteriaNotMet,
    ExitCode,
    JournalInvalid,
    JournalMissing,
    TokenRefreshError,
    worst,
)

if TYPE_CHECKING:
    from token_refresh.config import Config

__all__ = ["CRITERIA", "collect", "render_text", "summarize"]

log = logging.getLogger("token_refresh")

CRITERIA = ("max_gap", "failures", "invalid_grant", "issued_at_monotonic", "access_expired_at_start")
REFRESHING = journal.REFRESHING
TOLERATED = ExitCode.TEMPFAIL  # a failure the runbook accepts when the next run succeeds


def _criterion(name: str, ok: bool, detail: str) -> dict[str, Any]:
    return {"name": name, "ok": ok, "detail": detail}


def _allowed_gap(record: Mapping[str, Any] | None, *, interval: float, horizon: float) -> float:
    """How long after a successful run the next may come: one missed run, plus what the token had left
    beyond the horizon (a valid run is not journaled: docs/DESIGN.md, "Journal")."""
    left = None if record is None else record.get("access_left_secs")
    spare = max(0.0, float(left) - horizon) if isinstance(left, (int, float)) else 0.0
    return 2 * interval + spare


def _gaps(
    before: Sequence[Mapping[str, Any]],
    window: Sequence[Mapping[str, Any]],
    *,
    start: float,
    now: float,
    interval: float,
    horizon: float,
) -> dict[str, Any]:
    """The longest gap between successful runs, the window's edges included, and the worst overrun."""
    last: Mapping[str, Any] | None = next((r for r in reversed(before) if r["exit_status"] == 0), None)
    points: list[tuple[float, Mapping[str, Any] | None]] = [(start, last)]
    points += [(float(r["epoch"]), r) for r in window if r["exit_status"] == 0]
    points.append((now, None))
    longest, worst_over, worst_at, allowed_at_worst = 0.0, 0.0, start, 0.0
    for (t0, r0), (t1, _) in zip(points, points[1:]):
        gap = t1 - t0
        longest = max(longest, gap)
        allowed = _allowed_gap(r0, interval=interval, horizon=horizon)
        if r0 is None and t0 == start:
            allowed = 2 * interval  # the journal does not reach back to the window's start
        if gap - allowed > worst_over:
            worst_over, worst_at, allowed_at_worst = gap - allowed, t0, allowed
    return {
        "max_gap_secs": fmt.secs(longest),
        "over": worst_over,
        "at": worst_at,
        "allowed": allowed_at_worst,
    }


def _monotonic(before: Sequence[Mapping[str, Any]], window: Sequence[Mapping[str, Any]]) -> str | None:
    """None if ``issued_at`` never moved backwards from one run to the next, else where it did.

    Equal is fine: a failed run leaves the cache as it was, and a cache that writes whole seconds
    gives two refreshes within one second the same ``issued_at``.
    """
    known = [r for r in [*before[-1:], *window] if isinstance(r.get("issued_at_epoch"), (int, float))]
    for previous, record in zip(known, known[1:]):
        if float(record["issued_at_epoch"]) < float(previous["issued_at_epoch"]):
            return f"went back from {previous['issued_at']} to {record['issued_at']} at {record['time']}"
    return None


def _failures_ok(window: Sequence[Mapping[str, Any]]) -> str | None:
    """None if every failure was a 75 that the next run recovered from, else the first that was not."""
    for i, record in enumerate(window):
        if record["exit_status"] == 0:
            continue
        if record["exit_status"] != TOLERATED:
            return f"exit {record['exit_status']} at {record['time']}"
        following = window[i + 1 : i + 2]
        if not following or following[0]["exit_status"] != 0:
            return f"exit 75 at {record['time']} was not followed by a successful run"
    return None


def summarize(
    path: str,
    records: Sequence[Mapping[str, Any]],
    *,
    since: float,
    now: float,
    interval: float,
    horizon: float,
) -> dict[str, Any]:
    """The report for one journal's records (oldest first) over ``[now - since, now]``; pure."""
    start = now - since
    before = [r for r in records if float(r["epoch"]) < start]
    window = [r for r in records if start <= float(r["epoch"]) <= now]
    failures = Counter(str(r["exit_status"]) for r in window if r["exit_status"] != 0)
    refused = sum(1 for r in window if r.get("action") == journal.REFUSED)
    expired = [r for r in window if r.get("access_expired_at_start") is True]
    gaps = _gaps(before, window, start=start, now=now, interval=interval, horizon=horizon)
    backwards = _monotonic(before, window)
    bad_failure = _failures_ok(window)
    longest = gaps["max_gap_secs"]
    if gaps["over"] > 0:
        gap_detail = (
            f"{gaps['over'] + gaps['allowed']:.0f} s without a successful run from {fmt.iso(gaps['at'])}, "
            f"more than the {gaps['allowed']:.0f} s allowed"
        )
    else:
        gap_detail = (
            f"longest {longest:.0f} s, within what the cadence allows ({2 * interval:.0f} s and more)"
        )
    total_failures = sum(failures.values())
    criteria = [
        _criterion("max_gap", gaps["over"] <= 0, gap_detail),
        _criterion(
            "failures",
            bad_failure is None,
            bad_failure
            or ("none" if not total_failures else f"{total_failures}, each 75 and recovered at once"),
        ),
        _criterion("invalid_grant", refused == 0, f"{refused} refusal{'s' if refused != 1 else ''}"),
        _criterion("issued_at_monotonic", backwards is None, backwards or "only moved forward"),
        _criterion(
            "access_expired_at_start",
            not expired,
            "never" if not expired else f"{len(expired)} run(s), first at {expired[0]['time']}",
        ),
    ]
    return {
        "path": path,
        "since": fmt.iso(start),
        "until": fmt.iso(now),
        "window_secs": fmt.secs(since),
        "runs": len(window),
        "refreshes": sum(1 for r in window if r.get("action") in REFRESHING),
        "authorizations": sum(1 for r in window if r.get("action") == journal.AUTHORIZED),
        "failures": dict(sorted(failures.items())),
        "invalid_grant": refused,
        "max_gap_secs": longest,
        "issued_at_monotonic": backwards is None,
        "access_expired_at_start": len(expired),
        "criteria": criteria,
        "ok": all(c["ok"] for c in criteria),
    }


def _one(
    path: str, config: Config, since: float, now: float
) -> tuple[dict[str, Any], TokenRefreshError | None]:
    resolved = store.resolve(path)
    where = journal.journal_path(resolved)
    try:
        records = journal.read(resolved)
    except journal.JournalUnreadable as e:
        raise (JournalMissing if e.io else JournalInvalid)(where, str(e)) from None
    if records is None:
        raise JournalMissing(where, "does not exist (no run that refreshed, failed or authorized yet)")
    row = summarize(
        path, records, since=since, now=now, interval=config.interval_secs, horizon=config.horizon_secs
    )
    failed = [c["name"] for c in row["criteria"] if not c["ok"]]
    return row, CriteriaNotMet(failed) if failed else None


def collect(
    paths: Sequence[str], *, config: Config, since: float, now: float
) -> tuple[list[dict[str, Any]], int]:
    """One report per cache (a journal that cannot be read gets a row with ``error``) and the exit status."""
    rows: list[dict[str, Any]] = []
    for path in paths:
        try:
            row, problem = _one(path, config, since, now)
            row["error"] = None
        except TokenRefreshError as e:
            problem = e
            row = {"path": path, "error": str(e), "criteria": [], "ok": False}
            log.error(
                "report: %s", e, extra=logs.fields(command="report", cache=path, exit_status=int(e.exit_code))
            )
        row["exit_status"] = int(ExitCode.OK if problem is None else problem.exit_code)
        rows.append(row)
    return rows, worst(row["exit_status"] for row in rows)


def _failures_text(failures: Mapping[str, int]) -> str:
    if not failures:
        return "none"
    return ", ".join(f"exit {code}: {count}" for code, count in failures.items())


def _render_one(row: Mapping[str, Any]) -> str:
    if row.get("error"):
        lines = [("path", row["path"]), ("error", row["error"])]
    else:
        lines = [
            ("path", row["path"]),
            ("window", f"{fmt.span(row['window_secs'])}: {row['since']} to {row['until']}"),
            (
                "runs",
                f"{row['runs']} journaled ({row['refreshes']} refreshes, {row['authorizations']} logins)",
            ),
            ("failures", _failures_text(row["failures"])),
            ("invalid_grant", str(row["invalid_grant"])),
            ("longest gap", f"{row['max_gap_secs']:.0f} s between successful runs"),
        ]
        for i, c in enumerate(row["criteria"]):
            lines.append(
                ("criteria" if i == 0 else "", f"[{'ok' if c['ok'] else 'FAIL'}] {c['name']}: {c['detail']}")
            )
        failed = [c["name"] for c in row["criteria"] if not c["ok"]]
        lines.append(
            ("result", "ok: every criterion holds" if not failed else f"NOT MET: {', '.join(failed)}")
        )
    lines.append(("exit status", str(row["exit_status"])))
    return "\n".join(f"{name + ':' if name else '':15} {value}" for name, value in lines)


def render_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """One block per cache, separated by a blank line."""
    return "\n\n".join(_render_one(row) for row in rows)
