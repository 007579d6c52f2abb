"""The run journal ``<cache>.runs.json``: what each ``run`` and ``authorize`` did; the only code touching it.

One record per run that went beyond finding the token valid (docs/DESIGN.md, "Journal"): its time,
action, exit status, the cache's ``issued_at`` and time left afterwards, and fingerprints of the
refresh tokens involved, never a token. ``status`` and ``run`` ask it whether the cache's refresh
token was refused; ``report`` reads it whole. The file is rewritten atomically (temp file and
rename in the cache's directory), mode 0664 like the lock file, and kept to the last
``KEEP_SECS`` and at most ``KEEP_RECORDS`` records. A journal that is missing, damaged or cannot
be written never stops a run: callers log a warning.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:
    from token_refresh.freshness import Assessment
    from token_refresh.token import Token

__all__ = [
    "KEEP_RECORDS",
    "KEEP_SECS",
    "JournalUnreadable",
    "append",
    "journal_path",
    "new_record",
    "read",
    "refusal_of",
    "refused_at",
]

log = logging.getLogger(__name__)

SUFFIX = ".runs.json"
VERSION = 1
KEEP_SECS = 7 * 86400
KEEP_RECORDS = 1000
MAX_BYTES = 8 << 20  # 1000 records are about 400 KB; anything far larger is not our journal
MODE = 0o664  # as the lock file (store.LOCK_MODE): keepers of one group share it
# the writer's spelling of a refusal record; lets a reader skip parsing a journal without one
_REFUSAL_MARK = b'"action": "refused"'

# Actions a record may carry: a run's Action values, plus these.
REFUSED = "refused"  # the token endpoint answered invalid_grant to this run's refresh token
FAILED = "failed"  # any other failure
AUTHORIZED = "authorized"
REFRESHING = ("refreshed", "adopted")  # the run actions that put a newly issued token in the cache


class JournalUnreadable(Exception):
    """The journal exists but cannot be read (``io``) or is not a journal; ``str(e)`` says why."""

    def __init__(self, reason: str, *, io: bool = False) -> None:
        super().__init__(reason)
        self.io = io


def journal_path(cache_path: str) -> str:
    """The journal beside ``cache_path`` (already resolved, as every command resolves it)."""
    return cache_path + SUFFIX


def _decode(raw: bytes) -> list[dict[str, Any]]:
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise JournalUnreadable(f"is not valid JSON ({type(e).__name__})") from None
    runs = data.get("runs") if isinstance(data, dict) else None
    if not isinstance(runs, list):
        raise JournalUnreadable('is not a run journal (no "runs" list)')
    return [r for r in runs if isinstance(r, dict) and _well_formed(r)]


def _well_formed(record: Mapping[str, Any]) -> bool:
    """The fields every reader relies on; a record without them is skipped, not fatal."""
    epoch, status = record.get("epoch"), record.get("exit_status")
    return (
        isinstance(epoch, (int, float))
        and not isinstance(epoch, bool)
        and isinstance(status, int)
        and not isinstance(status, bool)
        and isinstance(record.get("action"), str)
        and isinstance(record.get("time"), str)
    )


def _read_raw(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise JournalUnreadable(f"cannot be read: {e.strerror or e}", io=True) from None
    if len(raw) > MAX_BYTES:
        raise JournalUnreadable(f"is larger than {MAX_BYTES >> 20} MiB")
    return raw


def _oldest_first(raw: bytes) -> list[dict[str, Any]]:
    return sorted(_decode(raw), key=lambda r: float(r["epoch"]))


def read(cache_path: str) -> list[dict[str, Any]] | None:
    """The records, oldest first; None when there is no journal. Raises JournalUnreadable."""
    raw = _read_raw(journal_path(cache_path))
    return None if raw is None else _oldest_first(raw)


def refused_at(records: Sequence[Mapping[str, Any]], fingerprint: str) -> str | None:
    """When the refresh token named ``fingerprint`` was refused, unless a later success kept it."""
    for record in reversed(records):
        if record.get("action") == REFUSED and record.get("refused_fingerprint") == fingerprint:
            when = record.get("time")
            return when if isinstance(when, str) else "an unknown time"
        if record.get("exit_status") == 0 and record.get("refresh_fingerprint") == fingerprint:
            return None  # e.g. a --force run it succeeded for, on a server that keeps refresh tokens
    return None


def refusal_of(cache_path: str, refresh_token: str | None) -> str | None:
    """When ``refresh_token`` was refused by the token endpoint, per the journal; None if never.

    Cheap when nothing was ever refused: the file is read but not parsed, and nothing hashed.
    A journal that cannot be read is logged as a warning and taken as no refusal.
    """
    if not refresh_token:
        return None
    try:
        raw = _read_raw(journal_path(cache_path))
        if raw is None or _REFUSAL_MARK not in raw:
            return None
        records = _oldest_first(raw)
    except JournalUnreadable as e:
        log.warning(
            "the run journal %s %s; it cannot tell whether the token was refused", journal_path(cache_path), e
        )
        return None
    from token_refresh import redact

    return refused_at(records, redact.fingerprint(refresh_token))


def new_record(
    *,
    command: str,
    action: str,
    exit_status: int,
    started_at: float,
    duration_secs: float | None,
    token: Token | None,
    assessment: Assessment | None,
    spent: str | None = None,
    refused: str | None = None,
    access_expired_at_start: bool | None = None,
    attempts: int = 0,
) -> dict[str, Any]:
    """One record: ``token`` and ``assessment`` are the cache after the run; ``spent`` and
    ``refused`` the refresh token this run spent or had refused. Tokens become fingerprints here."""
    from token_refresh import fmt, redact

    def fp(value: str | None) -> str | None:
        return None if value is None else redact.fingerprint(value)

    a = assessment
    return {
        "time": fmt.iso(started_at),
        "epoch": round(started_at, 3),
        "command": command,
        "action": action,
        "exit_status": int(exit_status),
        "issued_at": None if token is None else fmt.iso(token.issued_at),
        "issued_at_epoch": None if token is None else round(token.issued_at, 3),
        "access_left_secs": None if a is None else fmt.secs(a.access_left),
        "refresh_left_secs": None if a is None else fmt.secs(a.refresh_left),
        "refresh_fingerprint": None if token is None else fp(token.refresh_token),
        "spent_fingerprint": fp(spent),
        "refused_fingerprint": fp(refused),
        "access_expired_at_start": access_expired_at_start,
        "attempts": attempts,
        "duration_secs": None if duration_secs is None else round(duration_secs, 3),
    }


def _encode(records: Sequence[Mapping[str, Any]]) -> bytes:
    # one record per line: readable, and _REFUSAL_MARK holds for json.dumps' default separators
    lines = ",\n".join(json.dumps(r, ensure_ascii=True, allow_nan=False) for r in records)
    return f'{{"version": {VERSION}, "runs": [\n{lines}\n]}}\n'.encode("ascii")


def _bounded(records: list[dict[str, Any]], now: float) -> list[dict[str, Any]]:
    kept = [r for r in records if float(r["epoch"]) >= now - KEEP_SECS]
    return kept[-KEEP_RECORDS:]


def append(cache_path: str, record: Mapping[str, Any], *, now: float, locked: bool) -> None:
    """Add ``record``, drop what is too old or too many, and replace the file atomically.

    ``locked``: the caller holds the cache's lock, so no other writer can interleave and stale
    temps can be removed. Raises OSError when the file cannot be written and JournalUnreadable when
    it cannot be read; a damaged journal is replaced by a new one (with a warning).
    """
    path = journal_path(cache_path)
    group: int | None = None
    raw = _read_raw(path)  # unreadable: raised, the caller warns
    try:
        records = [] if raw is None else _decode(raw)
    except JournalUnreadable as e:
        log.warning("the run journal %s %s; starting a new one", path, e)
        records = []
    with contextlib.suppress(OSError):
        group = os.stat(path).st_gid
    from token_refresh import store

    if locked:  # no other writer can be mid-write: what is left was killed
        store.remove_stale_parts(path)
    records.append(dict(record))
    records.sort(key=lambda r: float(r["epoch"]))
    store.replace_atomically(path, _encode(_bounded(records, now)), mode=MODE, group=group)
