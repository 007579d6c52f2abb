"""The redaction backstop: registered secrets vanish from every formatted log record."""

from __future__ import annotations

import base64
import logging

from token_refresh import redact


def format_record(message: str, exc: BaseException | None = None) -> str:
    formatter = redact.RedactingFormatter("%(levelname)s %(message)s")
    exc_info = (type(exc), exc, exc.__traceback__) if exc else None
    record = logging.LogRecord("t", logging.ERROR, __file__, 1, message, None, exc_info)
    return formatter.format(record)


def test_secret_and_its_encodings_are_redacted() -> None:
    secret = "rt/with+odd=chars"
    redact.register(secret)
    out = format_record(
        f"raw {secret} form refresh_token=rt%2Fwith%2Bodd%3Dchars plus rt%2Fwith%2Bodd%3Dchars"
    )
    assert "rt/with" not in out
    assert "odd" not in out
    assert out.count(redact.REDACTED) == 3


def test_basic_auth_header_is_redacted() -> None:
    redact.register_basic_auth("app-key-42", "app-secret-42")
    header = base64.b64encode(b"app-key-42:app-secret-42").decode()
    out = format_record(f"Authorization: Basic {header} secret app-secret-42")
    assert header not in out
    assert "app-secret-42" not in out


def test_traceback_is_redacted() -> None:
    redact.register("tb-secret-value-1")
    try:
        raise ValueError("failed with tb-secret-value-1")
    except ValueError as e:
        out = format_record("boom", e)
    assert "Traceback" in out
    assert "tb-secret-value-1" not in out


def test_fingerprint_is_short_stable_and_not_the_value() -> None:
    assert redact.fingerprint("abc") == "ba7816bf"
    assert redact.fingerprint(None) == "none"
