"""Keep secrets out of every output: fingerprints for humans, a redacting log formatter as a backstop."""

from __future__ import annotations

import logging

REDACTED = "<redacted>"
_MIN_SECRET_LEN = 4  # shorter strings would shred ordinary text and are no secret anyway
# URL-encoding leaves these unchanged; JWTs, GUIDs and hex secrets need no urllib.parse (2 ms of a
# valid run: docs/DESIGN.md, "The valid path")
_URL_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_URLSAFE = str.maketrans("+/", "-_")
_secrets: set[str] = set()


def register(*values: object) -> None:
    """Remember values that must never be printed, with their encoded forms (URL, form, base64)."""
    for value in values:
        if not isinstance(value, str) or len(value) < _MIN_SECRET_LEN:
            continue
        _secrets.add(value)
        _secrets.update(_base64_forms(value))
        if _URL_UNRESERVED.issuperset(value):
            continue
        from urllib.parse import quote, quote_plus

        _secrets.update({quote(value, safe=""), quote_plus(value)})


def _base64_forms(value: str) -> set[str]:
    """base64 and base64url, padded and not: how a server or a header could carry the value."""
    import binascii  # built in: the valid path registers every token it loads

    encoded = binascii.b2a_base64(value.encode("utf-8"), newline=False).decode("ascii")
    urlsafe = encoded.translate(_URLSAFE)
    return {encoded, encoded.rstrip("="), urlsafe, urlsafe.rstrip("=")}


def register_basic_auth(user: str, password: str) -> None:
    """Remember the Authorization header value built from client credentials."""
    import base64

    register(password, base64.b64encode(f"{user}:{password}".encode()).decode("ascii"))


def redact(text: str) -> str:
    """Replace every registered secret in ``text``; longest first so that overlaps cannot leak."""
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def fingerprint(value: str | None) -> str:
    """A short, stable name for a token: 8 hex chars of its SHA-256."""
    if not value:
        return "none"
    import hashlib

    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:8]


class RedactingFormatter(logging.Formatter):
    """Formats like ``logging.Formatter`` then removes registered secrets, tracebacks included."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))
