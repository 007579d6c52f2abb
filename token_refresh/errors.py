"""Every failure the program knows, one class per cause, and the only place exit statuses are decided.

Each class carries its data, builds its message in ``__str__`` (never holding a secret) and has
exactly one exit status (sysexits). ``EXIT_TABLE`` is rendered from the classes' ``summary``
lines into ``--help`` and checked against the README by a test.
"""

from __future__ import annotations

import enum
from typing import ClassVar, Iterable

__all__ = [
    "EXIT_MEANINGS",
    "AccessExpired",
    "AuthorizationRefused",
    "AuthorizationTimeout",
    "CacheInvalid",
    "CacheMissing",
    "CacheWriteError",
    "CheckInconclusive",
    "ClientRejected",
    "ConfigError",
    "CriteriaNotMet",
    "EndpointError",
    "EndpointMisconfigured",
    "EndpointUnavailable",
    "EndpointUnreachable",
    "ExitCode",
    "Interrupted",
    "JournalInvalid",
    "JournalMissing",
    "ListenerUnavailable",
    "LockFileError",
    "LockTimeout",
    "NoAnswer",
    "ProbeMisconfigured",
    "ProbeRefused",
    "ProbeUnavailable",
    "ReauthorizationRequired",
    "RedirectMismatch",
    "SnapshotInvalid",
    "SnapshotMissing",
    "TokenRefreshError",
    "UnusableResponse",
    "exit_status",
    "exit_table",
    "worst",
]


class ExitCode(enum.IntEnum):
    """Exit statuses, following sysexits.h; 129, 130 and 143 are 128 + the signal."""

    OK = 0
    USAGE = 2
    DATAERR = 65
    NOINPUT = 66
    UNAVAILABLE = 69
    SOFTWARE = 70
    IOERR = 74
    TEMPFAIL = 75
    NOPERM = 77
    CONFIG = 78
    SIGHUP = 129
    SIGINT = 130
    SIGTERM = 143

    def __str__(self) -> str:
        # the number, as Python 3.11 prints an IntEnum; 3.9 and 3.10 would print "ExitCode.OK"
        return str(self.value)


# What each status means, for every command; the causes behind 65-78 are listed by the classes.
EXIT_MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "success: the token is valid, or was refreshed or authorized and saved",
    ExitCode.USAGE: "command-line usage error",
    ExitCode.DATAERR: "input unusable as what it should be",
    ExitCode.NOINPUT: "input missing or not readable",
    ExitCode.UNAVAILABLE: "the keeper is not doing its job (sysexits EX_UNAVAILABLE)",
    ExitCode.SOFTWARE: "unexpected internal error (traceback with -v)",
    ExitCode.IOERR: "a file could not be written",
    ExitCode.TEMPFAIL: "temporary failure: the next run (or a retry) can fix it",
    ExitCode.NOPERM: "a person must log in again: run token-refresh authorize",
    ExitCode.CONFIG: "configuration error",
    ExitCode.SIGHUP: "stopped by SIGHUP before anything was at stake",
    ExitCode.SIGINT: "stopped by Ctrl-C (SIGINT) before anything was at stake",
    ExitCode.SIGTERM: "stopped by SIGTERM (docker stop) before anything was at stake",
}


class TokenRefreshError(Exception):
    """Root of every expected failure; ``str(e)`` is safe to print."""

    exit_code: ExitCode = ExitCode.SOFTWARE
    summary: ClassVar[str] = ""  # one line of the exit table
    stopped_by: int | None = None  # a stop signal held while a request was in flight
    attempts: int = 0  # requests made before this failure (run only)
    elapsed: float = 0.0  # seconds those requests took
    counts_attempts: ClassVar[bool] = False  # the message already says how many attempts

    def __str__(self) -> str:
        return self.summary


class ConfigError(TokenRefreshError):
    """The config file, the environment or the credentials are wrong."""

    exit_code = ExitCode.CONFIG
    summary = "the config file, the environment or the credentials"

    def __init__(self, source: str, problems: Iterable[str]) -> None:
        self.source = source
        self.problems = list(problems)
        super().__init__(source, self.problems)

    def __str__(self) -> str:
        if len(self.problems) == 1:
            return f"configuration error ({self.source}): {self.problems[0]}"
        lines = "".join(f"\n  - {p}" for p in self.problems)
        return f"configuration error ({self.source}): {len(self.problems)} problems:{lines}"


class _PathError(TokenRefreshError):
    """A failure about one file; the message starts with what the file is."""

    what: ClassVar[str] = "file"

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(path, reason)

    def __str__(self) -> str:
        return f"{self.what} {self.path}: {self.reason}"


class CacheMissing(_PathError):
    """The cache file does not exist or cannot be read."""

    exit_code = ExitCode.NOINPUT
    summary = "the token cache is missing or not readable"
    what = "token cache"
    hint: str | None = None  # what to do next, set by the command that knows where the path came from

    @property
    def absent(self) -> bool:
        """The file does not exist (rather than being unreadable)."""
        return self.reason == "does not exist"

    def __str__(self) -> str:
        text = super().__str__()
        return f"{text}; {self.hint}" if self.hint else text


class CacheInvalid(_PathError):
    """The cache exists but is not a usable token."""

    exit_code = ExitCode.DATAERR
    summary = "the token cache is not a token: not JSON, not an object, a field missing or wrong"
    what = "token cache"


class CacheWriteError(_PathError):
    """The new cache cannot be written; ``kept_at`` names the temp holding an unsaved new token."""

    exit_code = ExitCode.IOERR
    summary = "the new token cache cannot be written (checked before anything is spent)"
    what = "token cache"

    def __init__(self, path: str, reason: str, *, kept_at: str | None = None) -> None:
        super().__init__(path, reason)
        self.kept_at = kept_at

    def __str__(self) -> str:
        text = super().__str__()
        if self.kept_at:
            text += (
                f"; the refresh token WAS spent: the new token is kept in {self.kept_at}, "
                "which the next run adopts once the directory is writable"
            )
        return text


class LockFileError(_PathError):
    """The lock file cannot be opened or created (permissions, a read-only directory)."""

    exit_code = ExitCode.IOERR
    summary = "the lock file cannot be opened or created (owner, mode, read-only directory)"
    what = "lock file"


class LockTimeout(TokenRefreshError):
    """Another run held the lock for longer than ``lock_timeout_secs``."""

    exit_code = ExitCode.TEMPFAIL
    summary = "the lock was held by another run for longer than lock_timeout_secs"

    def __init__(self, lock_path: str, timeout: float) -> None:
        self.lock_path = lock_path
        self.timeout = timeout
        super().__init__(lock_path, timeout)

    def __str__(self) -> str:
        return f"lock {self.lock_path} still held by another run after {self.timeout:g} s; nothing was sent"


class EndpointError(TokenRefreshError):
    """The token endpoint answered or failed in a way that ends the run."""

    def __init__(self, detail: str, *, status: int | None = None) -> None:
        self.detail = detail
        self.status = status
        super().__init__(detail, status)

    @property
    def where(self) -> str:
        return "no answer" if self.status is None else f"HTTP {self.status}"


class EndpointUnreachable(EndpointError):
    """No connection to the token endpoint within the retry budget; nothing was sent."""

    exit_code = ExitCode.TEMPFAIL
    summary = "the token endpoint cannot be reached (DNS, connection refused, TLS) within the retry budget"
    counts_attempts = True  # transport.Retrying puts them in the detail

    def __str__(self) -> str:
        return f"cannot reach the token endpoint: {self.detail}; nothing was spent, the next run retries"


class NoAnswer(EndpointError):
    """The request was sent but no complete answer came within its deadline, or a gateway answered."""

    exit_code = ExitCode.TEMPFAIL
    summary = "sent, but no complete answer in time, or a gateway answered 502/504 (never retried)"

    def __str__(self) -> str:
        return f"no complete answer: {self.detail}; the refresh token may already be spent"


class EndpointUnavailable(EndpointError):
    """429 or 5xx, after the retries the budget allowed."""

    exit_code = ExitCode.TEMPFAIL
    summary = "the token endpoint answered 429, 503 or another 5xx, after retries"

    def __str__(self) -> str:
        return f"token endpoint unavailable ({self.where}, {self.detail}); try again later"


class UnusableResponse(EndpointError):
    """A 2xx whose body holds no usable new token."""

    exit_code = ExitCode.TEMPFAIL
    summary = "a 2xx answer without a usable new token"

    def __str__(self) -> str:
        return (
            f"unusable token response ({self.where}, {self.detail}); the refresh token may already be spent"
        )


class ClientRejected(EndpointError):
    """401, 403, invalid_client or unauthorized_client: the app's credentials."""

    exit_code = ExitCode.CONFIG
    summary = "the token endpoint refused the client: 401, 403, invalid_client"

    def __init__(self, detail: str, *, status: int | None = None, sent_secret: bool = True) -> None:
        super().__init__(detail, status=status)
        self.sent_secret = sent_secret

    def __str__(self) -> str:
        check = (
            "check the app key and secret, and that live/sim match"
            if self.sent_secret
            else "check the app key, and that live/sim match (no secret was sent: a public client)"
        )
        return f"the token endpoint rejected the client credentials ({self.where}, {self.detail}); {check}"


class EndpointMisconfigured(EndpointError):
    """A redirect, 404 or another unexpected status: token_url is probably wrong."""

    exit_code = ExitCode.CONFIG
    summary = "the token URL looks wrong: a redirect, 404 or another unexpected status"

    def __init__(self, detail: str, *, status: int | None = None, location: str | None = None) -> None:
        super().__init__(detail, status=status)
        self.location = location

    def __str__(self) -> str:
        moved = f", redirected to {self.location}" if self.location else ""
        return f"token endpoint answered {self.where}{moved} ({self.detail}); check token_url"


class CheckInconclusive(EndpointError):
    """run --check-credentials: the endpoint's answers cannot tell whether it accepted the client."""

    exit_code = ExitCode.CONFIG
    summary = "run --check-credentials: the token endpoint's answers prove nothing about the credentials"

    def __str__(self) -> str:
        return f"the credential check proves nothing: {self.detail}; a refresh (run --force) would tell"


class ReauthorizationRequired(TokenRefreshError):
    """No usable refresh token is left: a person must log in again."""

    exit_code = ExitCode.NOPERM
    summary = "re-authorization required: invalid_grant, the chain was refused, or no refresh token"

    def __init__(self, reason: str, *, refused_at: str | None = None, oauth_error: str | None = None) -> None:
        self.reason = reason
        self.refused_at = refused_at
        self.oauth_error = oauth_error
        super().__init__(reason)

    def __str__(self) -> str:
        when = f" (refused at {self.refused_at})" if self.refused_at else ""
        return f"{self.reason}{when}; Manual re-authorization required (run: token-refresh authorize)"


class AuthorizationRefused(TokenRefreshError):
    """authorize: error= in the redirect, or the endpoint refused the code."""

    exit_code = ExitCode.NOPERM
    summary = "authorize: the login was refused (error= in the redirect, or the code was rejected)"

    def __init__(self, reason: str, *, advice: str = "nothing was saved, run authorize again") -> None:
        self.reason = reason
        self.advice = advice
        super().__init__(reason)

    def __str__(self) -> str:
        return f"{self.reason}; {self.advice}"


class RedirectMismatch(TokenRefreshError):
    """authorize: what came back does not answer this request."""

    exit_code = ExitCode.DATAERR
    summary = "authorize: the redirect does not answer this request (state, no code, nothing pasted)"

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)

    def __str__(self) -> str:
        return self.reason


class AuthorizationTimeout(TokenRefreshError):
    """authorize: no redirect or paste within ``--timeout``."""

    exit_code = ExitCode.TEMPFAIL
    summary = "authorize: no redirect within --timeout"

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        super().__init__(timeout)

    def __str__(self) -> str:
        return (
            f"no redirect within {self.timeout:g} s; nothing was saved, "
            "run authorize again (or raise --timeout)"
        )


class ListenerUnavailable(TokenRefreshError):
    """authorize --listen: the redirect port cannot be bound."""

    exit_code = ExitCode.TEMPFAIL
    summary = "authorize: the redirect port is busy"

    def __init__(self, address: str, reason: str) -> None:
        self.address = address
        self.reason = reason
        super().__init__(address, reason)

    def __str__(self) -> str:
        return (
            f"cannot listen on {self.address} for the redirect: {self.reason}; "
            "is another authorize running? or use --paste"
        )


class SnapshotMissing(_PathError):
    """status --since: the snapshot file is missing or unreadable."""

    exit_code = ExitCode.NOINPUT
    summary = "status --since: the snapshot file is missing"
    what = "--since snapshot"


class SnapshotInvalid(_PathError):
    """status --since: the file is not a ``status --json`` output."""

    exit_code = ExitCode.DATAERR
    summary = "status --since: the file is not a status --json snapshot"
    what = "--since snapshot"


class AccessExpired(TokenRefreshError):
    """status: the access token has expired, but a run can still refresh it."""

    exit_code = ExitCode.TEMPFAIL
    summary = "status: the access token has expired but the next run refreshes it"


class ProbeRefused(TokenRefreshError):
    """status --probe: the OpenAPI answered 401 or 403 to the cached access token."""

    exit_code = ExitCode.NOPERM
    summary = "status --probe: the OpenAPI refused the access token (401, 403): consumers are refused now"

    def __init__(self, status: int) -> None:
        self.status = status
        super().__init__(status)

    def __str__(self) -> str:
        return f"the OpenAPI refused the cached access token (HTTP {self.status}): consumers are refused now"


class ProbeUnavailable(TokenRefreshError):
    """status --probe: no answer, or 429/5xx, within the retry budget."""

    exit_code = ExitCode.TEMPFAIL
    summary = "status --probe: the OpenAPI could not be reached or answered 429/5xx"

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(detail)

    def __str__(self) -> str:
        return f"the OpenAPI probe got no usable answer: {self.detail}"


class ProbeMisconfigured(TokenRefreshError):
    """status --probe: a redirect, 404 or another unexpected status; openapi_url is probably wrong."""

    exit_code = ExitCode.CONFIG
    summary = "status --probe: the OpenAPI answered a redirect, 404 or another unexpected status"

    def __init__(self, status: int) -> None:
        self.status = status
        super().__init__(status)

    def __str__(self) -> str:
        return f"the OpenAPI probe got HTTP {self.status}; check openapi_url"


class JournalMissing(_PathError):
    """report: there is no run journal beside the cache, or it cannot be read."""

    exit_code = ExitCode.NOINPUT
    summary = "report: the run journal beside the cache is missing or not readable"
    what = "run journal"


class JournalInvalid(_PathError):
    """report: the run journal is not a journal."""

    exit_code = ExitCode.DATAERR
    summary = "report: the run journal is damaged"
    what = "run journal"


class CriteriaNotMet(TokenRefreshError):
    """report: at least one observation criterion does not hold."""

    exit_code = ExitCode.UNAVAILABLE
    summary = "report: an observation criterion does not hold (the table says which)"

    def __init__(self, names: Iterable[str]) -> None:
        self.names = list(names)
        super().__init__(self.names)

    def __str__(self) -> str:
        return f"observation criteria not met: {', '.join(self.names)}"


class Interrupted(TokenRefreshError):
    """A stop signal arrived while nothing was at stake."""

    summary = "stopped by a signal before anything was at stake"

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.exit_code = ExitCode(128 + signum) if 128 + signum in _SIGNAL_CODES else ExitCode.SIGTERM
        super().__init__(signum)

    def __str__(self) -> str:
        import signal

        return f"stopped by {signal.Signals(self.signum).name}; nothing was spent, the cache is unchanged"


_SIGNAL_CODES = frozenset({ExitCode.SIGHUP, ExitCode.SIGINT, ExitCode.SIGTERM})


def exit_status(error: BaseException) -> ExitCode:
    """The exit status for ``error``: its own for ours, 130 for Ctrl-C, 70 for a bug."""
    if isinstance(error, TokenRefreshError):
        return error.exit_code
    if isinstance(error, KeyboardInterrupt):
        return ExitCode.SIGINT
    return ExitCode.SOFTWARE


# Most severe first, for the status of several caches. 77: a person must log in again. 66: the cache
# is gone and no run can recreate it. 65: damaged, the same but it exists. 69: report's verdict on a
# journal that could be read. 75: a run will fix it.
SEVERITY: tuple[ExitCode, ...] = (
    ExitCode.NOPERM,
    ExitCode.CONFIG,
    ExitCode.NOINPUT,
    ExitCode.DATAERR,
    ExitCode.IOERR,
    ExitCode.UNAVAILABLE,
    ExitCode.TEMPFAIL,
    ExitCode.OK,
)


def severity_text() -> str:
    """``SEVERITY`` as shown in help and docs: ``77 > 78 > ...``."""
    return " > ".join(str(int(code)) for code in SEVERITY)


def rank(code: int) -> int:
    """Position in ``SEVERITY``, lower is worse; an unknown status (a bug) is -1, worse than all."""
    return SEVERITY.index(ExitCode(code)) if code in SEVERITY else -1


def worst(codes: Iterable[int]) -> int:
    """The most severe exit status by ``SEVERITY``; an unknown status (a bug) is worse than all."""
    ranked = [(rank(c), c) for c in codes]
    return min(ranked)[1] if ranked else ExitCode.OK


def _causes() -> list[type[TokenRefreshError]]:
    found: list[type[TokenRefreshError]] = []
    todo: list[type[TokenRefreshError]] = [TokenRefreshError]
    while todo:
        cls = todo.pop(0)
        if cls.summary and cls is not TokenRefreshError and cls is not Interrupted:
            found.append(cls)
        todo += cls.__subclasses__()
    return found


def exit_rows() -> list[tuple[int, str]]:
    """(status, meaning) for every status, causes listed after the meaning; the README's table."""
    rows = []
    for code, meaning in EXIT_MEANINGS.items():
        causes = [cls.summary for cls in _causes() if cls.exit_code == code]
        rows.append((int(code), meaning + "".join(f"; {c}" for c in causes)))
    return rows


def exit_table(width: int = 78) -> str:
    """The exit-status table for ``--help``, wrapped to ``width``."""
    import textwrap

    lines = ["exit status:"]
    for code, meaning in exit_rows():
        lines += textwrap.wrap(
            meaning, width=max(width, 40), initial_indent=f"  {code:<4}", subsequent_indent=" " * 6
        )
    return "\n".join(lines) + "\n"
