"""``token-refresh status``: what one or several caches hold, without lock, write or credentials.

The network is used only by ``--probe``. Each cache gets one row (``StatusRow``); the exit
status is the worst of the rows' problems, decided by their error classes.
"""

from __future__ import annotations

import json
import logging
import os
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence, TypedDict

from token_refresh import fmt, journal, logs, store
from token_refresh.errors import (
    AccessExpired,
    CacheMissing,
    ExitCode,
    ReauthorizationRequired,
    SnapshotInvalid,
    SnapshotMissing,
    TokenRefreshError,
    rank,
    worst,
)
from token_refresh.freshness import State, classify
from token_refresh.token import parse_issued_at

if TYPE_CHECKING:
    from token_refresh.token import Token

__all__ = [
    "PROBE_PATH",
    "ROW_KEYS",
    "Probe",
    "StatusRow",
    "collect",
    "load_snapshot",
    "prober",
    "render_text",
    "report",
]

PROBE_PATH = "/port/v1/users/me"  # the OpenAPI's cheapest call that needs a valid access token
REFUSED = "refused"  # a row's state when the journal says the cache's refresh token was refused
Probe = Callable[["Token"], "tuple[dict[str, Any], TokenRefreshError | None]"]

log = logging.getLogger("token_refresh")


class StatusRow(TypedDict):
    """One cache in ``status --json``; a cache that cannot be read has every key null but path and error."""

    path: str
    state: str | None
    issued_at: str | None
    access_expires_at: str | None
    refresh_expires_at: str | None
    access_expires_in_secs: float | None
    refresh_expires_in_secs: float | None
    has_refresh_token: bool | None
    mtime: str | None
    age_secs: float | None
    reason: str | None
    refused_at: str | None  # when the token endpoint refused this refresh token (the run journal)


ROW_KEYS = tuple(StatusRow.__annotations__)


def report(
    path: str, *, now: float, horizon: float, probe: Probe | None = None
) -> tuple[dict[str, Any], TokenRefreshError | None]:
    """The status of one cache and its problem, if any; raises the cache's own errors."""
    token = store.load(path)
    assessment = classify(token, now=now, horizon=horizon)
    try:
        mtime: float | None = os.stat(path).st_mtime
    except OSError:
        mtime = None
    row: StatusRow = {
        "path": path,
        "state": assessment.state.value,
        "issued_at": fmt.iso(token.issued_at),
        "access_expires_at": fmt.iso(assessment.access_expires_at),
        "refresh_expires_at": fmt.iso(assessment.refresh_expires_at),
        "access_expires_in_secs": fmt.secs(assessment.access_left),
        "refresh_expires_in_secs": fmt.secs(assessment.refresh_left),
        "has_refresh_token": assessment.has_refresh_token,
        "mtime": fmt.iso(mtime),
        "age_secs": fmt.secs(None if mtime is None else now - mtime),
        "reason": assessment.reason,
        "refused_at": journal.refusal_of(store.resolve(path), token.refresh_token),
    }
    problem: TokenRefreshError | None = None
    if row["refused_at"] is not None:
        # the clock may still call it valid: the refusal is final (docs/DESIGN.md, "Journal")
        from token_refresh import redact

        refused = f"the token endpoint refused refresh token {redact.fingerprint(token.refresh_token)}"
        row["state"] = REFUSED
        row["reason"] = f"{refused} at {row['refused_at']} (invalid_grant); a person must log in again"
        problem = ReauthorizationRequired(f"{path}: {refused} (invalid_grant)", refused_at=row["refused_at"])
    elif assessment.state is State.EXPIRED:
        problem = ReauthorizationRequired(f"token expired: {assessment.reason}")
    elif assessment.access_left <= 0:
        problem = AccessExpired()
    info: dict[str, Any] = dict(row)
    if probe is not None:
        info["probe"], found = probe(token)
        if found is not None and (problem is None or rank(found.exit_code) < rank(problem.exit_code)):
            problem = found
    return info, problem


def prober(*, openapi_url: str, timeout: float, budget: float) -> Probe:
    """``status --probe``: GET ``openapi_url`` + PROBE_PATH with the cached access token as a Bearer.

    2xx: the consumers' token works; 401/403: 77; no answer, 429 or 5xx after the retry budget:
    75; anything else (a redirect, 404): 78, openapi_url is probably wrong. Never prints the token.
    """
    url = openapi_url.rstrip("/") + PROBE_PATH

    def probe(token: Token) -> tuple[dict[str, Any], TokenRefreshError | None]:
        from token_refresh import transport
        from token_refresh.errors import (
            EndpointError,
            EndpointUnreachable,
            NoAnswer,
            ProbeMisconfigured,
            ProbeRefused,
            ProbeUnavailable,
        )

        result: dict[str, Any] = {"url": url, "http_status": None, "result": "skipped", "detail": ""}
        if not token.access_token:
            result["detail"] = "the cache holds no access token"
            return result, None
        send = transport.new_transport(retry_budget_secs=budget)
        headers = {"Authorization": f"Bearer {token.access_token}", "Accept": "application/json"}
        try:
            response = send(transport.Request("GET", url, headers, None, timeout))
        except EndpointError as e:
            if isinstance(e, EndpointUnreachable):
                why = f"cannot connect: {e.detail}"
            elif isinstance(e, NoAnswer):
                why = f"no complete answer within {timeout:g} s"
            else:
                why = f"unusable answer: {e.detail}"
            result.update(result="unavailable", detail=why)
            return result, ProbeUnavailable(why)
        status = response.status
        tries = getattr(send, "attempts", 1)
        result["http_status"] = status
        problem: TokenRefreshError | None = None
        if 200 <= status <= 299:
            result.update(result="ok", detail="the access token works")
        elif status in (401, 403):
            problem = ProbeRefused(status)
            result.update(result="refused", detail=str(problem))
        elif status in transport.RETRY_STATUSES or 500 <= status <= 599:
            problem = ProbeUnavailable(f"HTTP {status} after {tries} attempt{'s' if tries > 1 else ''}")
            result.update(result="unavailable", detail=problem.detail)
        else:
            problem = ProbeMisconfigured(status)
            result.update(result="unexpected", detail=str(problem))
        return result, problem

    return probe


def lifetimes_text(info: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The access token, refresh token and file age rows for a person."""
    refresh = _left(info["refresh_expires_in_secs"], info["refresh_expires_at"])
    if not info["has_refresh_token"]:
        refresh = "none (cannot be refreshed)"
    elif info["refresh_expires_in_secs"] is None:
        refresh = "unknown lifetime (the token endpoint sent no refresh_token_expires_in)"
    age = info["age_secs"]
    return [
        ("access token", _left(info["access_expires_in_secs"], info["access_expires_at"])),
        ("refresh token", refresh),
        ("file age", "unknown" if age is None else f"{age:.0f} s (modified {info['mtime']})"),
    ]


def _left(value: float | None, at: str | None) -> str:
    if value is None:
        return "unknown"
    return f"{fmt.left(value)}, at {at}"


def _render_one(info: Mapping[str, Any]) -> str:
    rows = [
        ("path", info["path"]),
        ("state", f"{info['state']} ({info['reason']})"),
        ("issued_at", info["issued_at"]),
        *lifetimes_text(info),
    ]
    if info.get("probe"):
        rows.append(("probe", probe_text(info["probe"])))
    return "\n".join(f"{name + ':':15} {value}" for name, value in rows)


def probe_text(probe: Mapping[str, Any]) -> str:
    """``ok (HTTP 200 from URL)``, ``refused (HTTP 401 ...)``, ``unavailable: ...``."""
    status = probe.get("http_status")
    where = f"HTTP {status} from {probe['url']}" if status is not None else str(probe["url"])
    return f"{probe['result']} ({where}): {probe['detail']}"


def load_snapshot(path: str) -> dict[str, str | None]:
    """``issued_at`` by cache path from an earlier ``status --json`` (a list, or the older single object)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise SnapshotMissing(path, "does not exist") from None
    except OSError as e:
        raise SnapshotMissing(path, f"cannot be read: {e.strerror or e}") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise SnapshotInvalid(path, f"is not valid JSON ({type(e).__name__})") from None
    entries = [data] if isinstance(data, dict) else data
    if not isinstance(entries, list) or not all(
        isinstance(e, dict) and isinstance(e.get("path"), str) for e in entries
    ):
        raise SnapshotInvalid(path, "not a status --json snapshot (a list of objects with a path)")
    snapshot: dict[str, str | None] = {}
    for entry in entries:
        issued = entry.get("issued_at")
        snapshot[entry["path"]] = issued if isinstance(issued, str) else None
    return snapshot


def _previous(snapshot: Mapping[str, str | None], path: str) -> tuple[bool, str | None]:
    """(found, issued_at) for ``path``: the same spelling first, else the same file."""
    if path in snapshot:
        return True, snapshot[path]
    real = os.path.realpath(path)
    for other, issued in snapshot.items():
        if os.path.realpath(other) == real:
            return True, issued
    return False, None


def advanced(current: str | None, previous: str | None) -> bool | None:
    """True if ``issued_at`` moved forward, False if not, None if either side is unknown."""
    if current is None or previous is None:
        return None
    try:
        return parse_issued_at(current)[0] > parse_issued_at(previous)[0]
    except (ValueError, OverflowError):
        return None


def collect(
    paths: Sequence[str],
    *,
    now: float,
    horizon: float,
    snapshot: Mapping[str, str | None] | None = None,
    probe: Probe | None = None,
    missing_hint: str | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """One status object per cache (a broken cache gets a row with ``error``) and the worst exit status.

    ``missing_hint`` is added to the error of a cache that does not exist (what to do next).
    """
    rows: list[dict[str, Any]] = []
    for path in paths:
        try:
            info, problem = report(path, now=now, horizon=horizon, probe=probe)
            info["error"] = None
        except TokenRefreshError as e:
            if isinstance(e, CacheMissing) and e.absent:
                e.hint = missing_hint
            problem = e
            info = dict.fromkeys(ROW_KEYS)
            info.update(path=path, error=str(e))
            log.error(
                "status: %s", e, extra=logs.fields(command="status", cache=path, exit_status=int(e.exit_code))
            )
        info["exit_status"] = int(ExitCode.OK if problem is None else problem.exit_code)
        if snapshot is not None:
            found, before = _previous(snapshot, path)
            info["previous_issued_at"] = before
            info["issued_at_advanced"] = advanced(info["issued_at"], before) if found else None
        rows.append(info)
    return rows, worst(row["exit_status"] for row in rows)


def _advanced_text(info: Mapping[str, Any]) -> str:
    result, before = info["issued_at_advanced"], info["previous_issued_at"]
    if result is True:
        return f"yes (was {before})"
    if result is False:
        return f"NO (snapshot had {before})"
    return "unknown (not in the snapshot)" if before is None else "unknown"


LABELS = (
    "path",
    "error",
    "state",
    "reason",
    "issued_at",
    "access token",
    "refresh token",
    "file age",
    "probe",
    "advanced",
    "exit status",
)


def _rows(info: Mapping[str, Any]) -> list[tuple[str, str]]:
    rows = [("path", str(info["path"]))]
    if info.get("error"):
        rows.append(("error", str(info["error"])))
    else:
        rows += [
            ("state", str(info["state"])),
            ("reason", str(info["reason"])),
            ("issued_at", str(info["issued_at"])),
            *lifetimes_text(info),
        ]
    if info.get("probe"):
        rows.append(("probe", probe_text(info["probe"])))
    if "issued_at_advanced" in info:
        rows.append(("advanced", _advanced_text(info)))
    rows.append(("exit status", str(info["exit_status"])))
    return rows


def render_text(
    infos: Sequence[Mapping[str, Any]], *, client: str | None = None, width: int | None = None
) -> str:
    """One cache: the familiar lines; several: one column per cache, side by side.

    ``client`` (the OAuth client type, the same for every cache) ends the text when given. When
    the columns would be wider than ``width`` (the terminal's), each cache gets a block of its own.
    """
    tail = "" if client is None else f"\n{'client:':15} {client}"
    if len(infos) == 1 and not infos[0].get("error"):
        extra = [("advanced", _advanced_text(infos[0]))] if "issued_at_advanced" in infos[0] else []
        text = _render_one(infos[0])
        return text + "".join(f"\n{name + ':':15} {value}" for name, value in extra) + tail
    tables = [dict(_rows(info)) for info in infos]
    labels = [label for label in LABELS if any(label in table for table in tables)]
    columns = [[table.get(label, "") for label in labels] for table in tables]
    widths = [max(len(v) for v in column) for column in columns]
    lines = []
    for i, label in enumerate(labels):
        cells = [column[i].ljust(size) for column, size in zip(columns, widths)]
        lines.append(f"{label + ':':15} " + "   ".join(cells).rstrip())
    if width is not None and any(len(line) > width for line in lines):
        blocks = ["\n".join(f"{k + ':':15} {table[k]}" for k in labels if k in table) for table in tables]
        return "\n\n".join(blocks) + ("\n" + tail if tail else "")
    return "\n".join(lines) + tail
