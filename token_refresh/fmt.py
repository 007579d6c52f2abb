"""The only formatting of times, durations and untrusted text."""

from __future__ import annotations

import time

__all__ = ["iso", "left", "printable", "secs", "span"]

TEXT_LIMIT = 200  # characters of a server's text that reach a log line


def iso(epoch: float | None) -> str | None:
    """UTC ISO-8601 with a Z, to the second; None stays None."""
    if epoch is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def secs(value: float | None) -> float | None:
    """Seconds as shown in JSON output and log fields: one decimal."""
    return None if value is None else round(value, 1)


def left(seconds: float | None, at: float | None = None) -> str:
    """``1195 s left`` / ``5 s ago (expired)``, with the moment when ``at`` is given."""
    if seconds is None:
        return "unknown"
    text = f"{seconds:.0f} s left" if seconds > 0 else f"{abs(seconds):.0f} s ago (expired)"
    return text if at is None else f"{text}, at {iso(at)}"


def span(seconds: float) -> str:
    """A whole duration in its largest exact unit: ``7d``, ``24h``, ``90m``, ``45s`` (days from two on)."""
    whole = round(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole >= (2 * size if unit == "d" else size) and whole % size == 0:  # 24h, not 1d
            return f"{whole // size}{unit}"
    return f"{whole}s"


def printable(text: str, limit: int = TEXT_LIMIT) -> str:
    """Untrusted text for one log line: redacted, control characters dropped, redacted again, cut.

    Redacting before the cut means a secret straddling it is still found; dropping control
    characters (not replacing them) and redacting again finds a secret a server split with one
    (docs/DESIGN.md, "No secret reaches an output").
    """
    from token_refresh import redact

    clean = "".join(c for c in redact.redact(text) if c.isprintable())
    clean = redact.redact(clean)
    return clean if len(clean) <= limit else clean[:limit] + "..."
