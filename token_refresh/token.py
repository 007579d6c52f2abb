"""The token schema: the one validator for cache files and token responses, and the merge rules.

A token response is first normalised (``from_response``) into what a cache may hold, then
checked by the same ``parse`` that checks a cache file, so whatever a run saves, the next run
can load (docs/DESIGN.md, "One schema").
"""

from __future__ import annotations

import contextlib
import json
from typing import Any, NamedTuple

__all__ = [
    "MAX_LIFETIME_SECS",
    "TOKEN_FIELDS",
    "Token",
    "TokenSchemaError",
    "decode_json",
    "format_issued_at",
    "from_response",
    "merge_authorization",
    "merge_refresh",
    "parse",
    "parse_issued_at",
]

MAX_LIFETIME_SECS = 10 * 365 * 86400  # lifetimes beyond this are garbage and break date arithmetic
MAX_EXTRA_FIELD_BYTES = 64 * 1024  # an unknown field larger than this is dropped from a response
TOKEN_FIELDS = ("access_token", "refresh_token", "issued_at", "expires_in", "refresh_token_expires_in")


class TokenSchemaError(ValueError):
    """What is wrong with a token object; the message names the field, never its value."""


class Token(NamedTuple):
    """A parsed token; ``data`` is the whole JSON object, unknown fields included."""

    data: dict[str, Any]
    access_token: str  # may be "" when a refresh token is kept without one: then it is due
    refresh_token: str | None
    issued_at: float  # UTC epoch seconds
    issued_at_style: str  # how issued_at was written: int, float, iso-z, iso-offset, iso-naive
    expires_in: float
    refresh_token_expires_in: float | None
    raw: bytes


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_lifetime(value: object) -> bool:
    # JSON's 1e400 parses as inf, and inf - inf = nan would classify as valid forever
    # abs() of a huge int is exact (math.isfinite would overflow); inf and nan compare False
    return _is_number(value) and abs(value) <= MAX_LIFETIME_SECS  # type: ignore[arg-type]


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a valid JSON number")


def decode_json(raw: bytes, *, strict: bool = True) -> object:
    """JSON from bytes; ``strict`` refuses NaN and Infinity. Raises TokenSchemaError."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise TokenSchemaError("is not UTF-8 text") from None
    try:
        if strict:
            return json.loads(text, parse_constant=_reject_constant)
        return json.loads(text)
    except RecursionError:
        raise TokenSchemaError("is nested too deeply to be a token") from None
    except ValueError as e:
        # JSONDecodeError's message holds a position only, never the document.
        raise TokenSchemaError(f"is not valid JSON ({e})") from None


def parse_issued_at(value: object) -> tuple[float, str]:
    """Return (epoch seconds, style); raise ValueError for anything else."""
    from datetime import datetime, timezone

    if _is_number(value):
        assert isinstance(value, (int, float))
        epoch = float(value)
        # out of datetime's range (or inf) would crash every later date computation
        datetime.fromtimestamp(epoch, timezone.utc)
        return epoch, "int" if isinstance(value, int) else "float"
    if isinstance(value, str):
        text = value.strip()
        style = "iso-offset"
        if text.endswith(("Z", "z")):
            text, style = text[:-1] + "+00:00", "iso-z"
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment, style = moment.replace(tzinfo=timezone.utc), "iso-naive"
        return moment.timestamp(), style
    raise ValueError(f"must be epoch seconds or an ISO-8601 string, got {type(value).__name__}")


def format_issued_at(epoch: float, style: str) -> int | float | str:
    """Write ``epoch`` back in the representation the cache used."""
    if style == "float":
        return round(epoch, 3)
    if style == "int":
        return int(epoch)
    from datetime import datetime, timezone

    moment = datetime.fromtimestamp(int(epoch), timezone.utc)
    if style == "iso-naive":
        return moment.replace(tzinfo=None).isoformat()
    text = moment.isoformat()
    return text.replace("+00:00", "Z") if style == "iso-z" else text


def parse(data: object, *, raw: bytes = b"") -> Token:
    """Check the fields a refresh needs; the message names the first bad one."""
    from token_refresh import redact

    if not isinstance(data, dict):
        raise TokenSchemaError(f"not a JSON object (got {type(data).__name__})")

    def bad(field: str, why: str) -> TokenSchemaError:
        return TokenSchemaError(f"field {field!r} {why}")

    for field in ("access_token", "issued_at", "expires_in"):
        if field not in data:
            raise bad(field, "is missing")
    access_token = data["access_token"]
    refresh_token = data.get("refresh_token")
    if refresh_token is not None and not isinstance(refresh_token, str):
        raise bad("refresh_token", f"must be a string, got {type(refresh_token).__name__}")
    if not isinstance(access_token, str) or not (access_token or refresh_token):
        raise bad("access_token", f"must be a non-empty string, got {type(access_token).__name__}")
    redact.register(access_token, refresh_token)
    try:
        issued_at, style = parse_issued_at(data["issued_at"])
    except (ValueError, OverflowError, OSError) as e:
        raise bad("issued_at", f"is not a time: {e}") from None
    expires_in = data["expires_in"]
    if not _is_number(expires_in):
        raise bad("expires_in", f"must be a number, got {type(expires_in).__name__}")
    rt_expires_in = data.get("refresh_token_expires_in")
    if rt_expires_in is not None and not _is_number(rt_expires_in):
        raise bad("refresh_token_expires_in", f"must be a number, got {type(rt_expires_in).__name__}")
    for field, value in (("expires_in", expires_in), ("refresh_token_expires_in", rt_expires_in)):
        if value is not None and not _is_lifetime(value):
            raise bad(field, f"must be finite and within {MAX_LIFETIME_SECS} s, got {value!r}")
    return Token(
        data=data,
        access_token=access_token,
        refresh_token=refresh_token or None,
        issued_at=issued_at,
        issued_at_style=style,
        expires_in=float(expires_in),
        refresh_token_expires_in=None if rt_expires_in is None else float(rt_expires_in),
        raw=raw,
    )


def _number(value: object) -> float | int | None:
    """A JSON number, or a numeric string as one; None for anything else."""
    if _is_number(value):
        return value  # type: ignore[return-value]
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
        return int(number) if number.is_integer() and abs(number) < 2**53 else number
    return None


def _finite(value: object) -> bool:
    """Whether ``value`` (any JSON) holds only finite numbers and is small enough to keep."""
    try:
        encoded = json.dumps(value, allow_nan=False)
    except (ValueError, TypeError, RecursionError):
        return False
    return len(encoded) <= MAX_EXTRA_FIELD_BYTES


def from_response(body: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A 2xx body as the token fields a cache may hold, and what was odd about it.

    Raises TokenSchemaError only when the body holds neither a refresh nor an access token.
    A missing or unbelievable ``expires_in`` is saved as 0, so the next run treats it as due.
    """
    from token_refresh import redact

    notes: list[str] = []
    access = body.get("access_token")
    refresh = body.get("refresh_token")
    refresh = refresh if isinstance(refresh, str) and refresh else None
    access = access if isinstance(access, str) and access else None
    redact.register(access, refresh)
    if refresh is None and access is None:
        raise TokenSchemaError("neither 'access_token' nor 'refresh_token' is a non-empty string")
    out: dict[str, Any] = {}
    for key, value in body.items():
        if key in TOKEN_FIELDS or key == "issued_at":
            continue
        if _finite(value):
            out[key] = value
        else:
            notes.append(f"dropped field {key!r} (not finite, or larger than {MAX_EXTRA_FIELD_BYTES} bytes)")
    out["access_token"] = access or ""
    if access is None:
        notes.append("no access token in the answer: saved without one, so the next run refreshes")
    if refresh is not None:
        out["refresh_token"] = refresh
    expires_in, odd = _lifetime(body, "expires_in")
    if access is None:
        expires_in, odd = None, None  # already said: without an access token it is due anyway
    if expires_in is None:
        if odd:
            notes.append(f"{odd}: saved as 0, so the next run refreshes")
        expires_in = 0
    elif odd:
        notes.append(odd)
    out["expires_in"] = expires_in
    if "refresh_token_expires_in" in body:
        rt, odd = _lifetime(body, "refresh_token_expires_in")
        if rt is not None:
            out["refresh_token_expires_in"] = rt
        if odd:
            notes.append(odd if rt is not None else f"{odd}: saved as unknown")
    return out, notes


def _lifetime(body: dict[str, Any], key: str) -> tuple[float | int | None, str | None]:
    """A lifetime from an answer and what was odd about it: None when missing or not believable."""
    raw = body.get(key)
    value = _number(raw)
    if value is None or not _is_lifetime(value) or value <= 0:
        return None, f"{key!r} is {_describe(raw)}"
    return value, None if _is_number(raw) else f"{key!r} was a string: saved as a number"


def _describe(value: object) -> str:
    if value is None:
        return "missing"
    if _is_number(value) or isinstance(value, str):
        text = repr(value)
        return f"not believable ({text[:20]})" if len(text) <= 20 else "not believable"
    return f"a {type(value).__name__}"


def merge_refresh(old: Token, fields: dict[str, Any], *, sent_at: float) -> dict[str, Any]:
    """The cache after a refresh: old fields kept, the response's over them, issued_at = sent."""
    data = dict(old.data)
    if "refresh_token_expires_in" not in fields:
        data.pop("refresh_token_expires_in", None)  # never pair a new token with an old lifetime
    if "refresh_token" not in fields and old.refresh_token:
        fields = {**fields, "refresh_token": old.refresh_token}  # RFC 6749 §6: the old one stays valid
    data.update(fields)
    data["issued_at"] = format_issued_at(sent_at, old.issued_at_style)
    return data


def merge_authorization(
    previous: dict[str, Any], fields: dict[str, Any], *, sent_at: float
) -> dict[str, Any]:
    """The cache after a login: the old object's non-token fields, then the response's."""
    data = {k: v for k, v in previous.items() if k not in TOKEN_FIELDS}
    data.update(fields)
    style = "float"
    if "issued_at" in previous:
        with contextlib.suppress(ValueError, OverflowError, OSError):
            style = parse_issued_at(previous["issued_at"])[1]
    data["issued_at"] = format_issued_at(sent_at, style)
    return data
