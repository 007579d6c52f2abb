"""Log output: text or one JSON object per line, and ``run --quiet``'s single line; always redacted."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, Mapping

from token_refresh import redact

FORMAT_ENV = "TOKEN_REFRESH_LOG_FORMAT"
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(message)s"
# attributes of a LogRecord that carry meaning for this program (set through ``extra=``)
FIELDS_ATTR = "token_refresh_fields"
FINAL_ATTR = "token_refresh_final"


def fields(*, final: bool = False, **values: Any) -> dict[str, Any]:
    """``extra=`` for a log call: structured fields for JSON lines; ``final`` marks the run's outcome line."""
    return {FIELDS_ATTR: values, FINAL_ATTR: final}


def _iso_millis(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"


def _scrub(value: Any) -> Any:
    """Redact string values before serializing: JSON escaping could hide a secret from the final pass."""
    if callable(value):  # a field computed only when a JSON line needs it
        value = value()
    if isinstance(value, str):
        return redact.redact(value)
    if isinstance(value, Mapping):
        return {str(k): _scrub(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(v) for v in value]
    return value


class JsonFormatter(logging.Formatter):
    """One JSON object per line: timestamp, level, logger, message and the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, Any] = {
            "timestamp": _iso_millis(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in getattr(record, FIELDS_ATTR, {}).items():
            obj.setdefault(key, value)
        if record.exc_info:
            obj["exception"] = self.formatException(record.exc_info)
        line = json.dumps(_scrub(obj), ensure_ascii=False, default=str)
        return redact.redact(line)  # the guarantee is about the bytes written, so check them last


def text_formatter() -> logging.Formatter:
    """The human format: UTC timestamp, level, message; secrets redacted."""
    formatter = redact.RedactingFormatter(TEXT_FORMAT, datefmt="%Y-%m-%dT%H:%M:%SZ")
    formatter.converter = time.gmtime
    return formatter


class QuietHandler(logging.Handler):
    """``run --quiet``: hold every warning, error and outcome line; ``flush_one`` prints at most one."""

    def __init__(self, target: logging.Handler) -> None:
        super().__init__(logging.DEBUG)
        self.target = target
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING or getattr(record, FINAL_ATTR, False):
            self.records.append(record)

    def flush_one(self, exit_code: int) -> None:
        """Nothing for a success without warnings; else one line, the other messages folded into it."""
        records, self.records = self.records, []
        warnings = [r for r in records if r.levelno >= logging.WARNING]
        if exit_code == 0 and not warnings:
            return  # cron mails any output: a kept token is no news
        if exit_code == 0:
            records = warnings  # the success line itself is no news, only what was odd
        if not records:
            return
        finals = [r for r in records if getattr(r, FINAL_ATTR, False)]
        main = finals[-1] if finals else records[-1]
        others = [_one_line(r.getMessage()) for r in records if r is not main]
        merged = logging.makeLogRecord(main.__dict__)
        merged.msg, merged.args = _one_line(main.getMessage()), None
        if others:
            merged.msg += "; also: " + "; ".join(others)
            merged.__dict__[FIELDS_ATTR] = {**getattr(main, FIELDS_ATTR, {}), "also": others}
        self.target.handle(merged)


def _one_line(message: str) -> str:
    return " ".join(part.strip() for part in message.splitlines() if part.strip())


def setup(level: int, log_format: str = "text", *, quiet: bool = False) -> QuietHandler | None:
    """Send logs to stderr in ``log_format``; with ``quiet`` return the handler that prints one line."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else text_formatter())
    root = logging.getLogger()
    if quiet:
        quiet_handler = QuietHandler(handler)
        root.handlers[:] = [quiet_handler]
        root.setLevel(min(level, logging.INFO))  # the outcome line is INFO
        return quiet_handler
    root.handlers[:] = [handler]
    root.setLevel(level)
    return None
