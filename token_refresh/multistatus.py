"""``status`` over several caches side by side, and whether each ``issued_at`` advanced since a snapshot."""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Iterable, Mapping, Sequence

from token_refresh import logs, status
from token_refresh.cache import parse_issued_at
from token_refresh.errors import ExitCode, Failure, TokenRefreshError

log = logging.getLogger("token_refresh")

# The keys of ``status.report``; a cache that cannot be read gets them all, as null.
INFO_KEYS = (
    "path",
    "state",
    "issued_at",
    "access_expires_at",
    "refresh_expires_at",
    "access_expires_in_secs",
    "refresh_expires_in_secs",
    "has_refresh_token",
    "mtime",
    "age_secs",
    "reason",
)
# Most severe first. 77: a person must log in again. 66: the cache is gone, consumers fail and no
# run can recreate it. 65: the cache is damaged, the same but it exists. 75: the access token has
# expired but the next run refreshes it. 0: consumers work. A status outside this list (a bug) counts
# as worse than all of them.
SEVERITY: tuple[int, ...] = (
    ExitCode.NOPERM,
    ExitCode.NOINPUT,
    ExitCode.DATAERR,
    ExitCode.TEMPFAIL,
    ExitCode.OK,
)


def worst(codes: Iterable[int]) -> int:
    """The most severe exit status by ``SEVERITY``; 0 for none."""
    ranked = [(SEVERITY.index(c) if c in SEVERITY else -1, c) for c in codes]
    return min(ranked)[1] if ranked else ExitCode.OK


class SnapshotError(Failure):
    """The ``--since`` file is missing (66) or not a ``status --json`` snapshot (65)."""

    def __init__(self, path: str, reason: str, exit_code: ExitCode) -> None:
        super().__init__(f"--since snapshot {path}: {reason}", exit_code=exit_code)


def load_snapshot(path: str) -> dict[str, str | None]:
    """``issued_at`` by cache path from an earlier ``status --json`` (a list, or the older single object)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise SnapshotError(path, "does not exist", ExitCode.NOINPUT) from None
    except OSError as e:
        raise SnapshotError(path, f"cannot be read: {e.strerror or e}", ExitCode.NOINPUT) from None
    except (UnicodeDecodeError, ValueError) as e:
        raise SnapshotError(path, f"is not valid JSON ({e})", ExitCode.DATAERR) from None
    entries = [data] if isinstance(data, dict) else data
    if not isinstance(entries, list) or not all(
        isinstance(e, dict) and isinstance(e.get("path"), str) for e in entries
    ):
        raise SnapshotError(
            path, "not a status --json snapshot (a list of objects with a path)", ExitCode.DATAERR
        )
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
) -> tuple[list[dict[str, Any]], int]:
    """One status object per cache (a broken cache gets a row with ``error``) and the worst exit status."""
    rows: list[dict[str, Any]] = []
    for path in paths:
        try:
            info, code = status.report(path, now=now, horizon=horizon)
            info["error"] = None
        except TokenRefreshError as e:
            code = e.exit_code
            info = dict.fromkeys(INFO_KEYS)
            info.update(path=path, error=str(e))
            log.error("status: %s", e, extra=logs.fields(command="status", cache=path, exit_status=int(code)))
        info["exit_status"] = int(code)
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
            *status.lifetimes_text(info),
        ]
    if "issued_at_advanced" in info:
        rows.append(("advanced", _advanced_text(info)))
    rows.append(("exit status", str(info["exit_status"])))
    return rows


def render_text(infos: Sequence[Mapping[str, Any]]) -> str:
    """One cache: the familiar lines; several: one column per cache, side by side."""
    if len(infos) == 1 and not infos[0].get("error"):
        extra = [("advanced", _advanced_text(infos[0]))] if "issued_at_advanced" in infos[0] else []
        text = status.render_text(infos[0])
        return text + "".join(f"\n{name + ':':15} {value}" for name, value in extra)
    tables = [dict(_rows(info)) for info in infos]
    labels = [label for label in LABELS if any(label in table for table in tables)]
    columns = [[table.get(label, "") for label in labels] for table in tables]
    widths = [max(len(v) for v in column) for column in columns]
    lines = []
    for i, label in enumerate(labels):
        cells = [column[i].ljust(width) for column, width in zip(columns, widths)]
        lines.append(f"{label + ':':15} " + "   ".join(cells).rstrip())
    return "\n".join(lines)
