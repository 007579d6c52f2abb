"""One error root; every failure carries the exit status it maps to (sysexits)."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Exit statuses, following sysexits.h."""

    OK = 0
    USAGE = 2
    DATAERR = 65  # cache unreadable as a token
    NOINPUT = 66  # cache missing or not readable
    SOFTWARE = 70  # unexpected internal error
    IOERR = 74  # the new cache could not be written
    TEMPFAIL = 75  # try again later: network, 429/5xx, lock busy
    NOPERM = 77  # re-authorization required
    CONFIG = 78  # configuration or credentials

    def __str__(self) -> str:
        # the number, as Python 3.11 prints an IntEnum; 3.9 and 3.10 would print "ExitCode.OK"
        return str(self.value)


class TokenRefreshError(Exception):
    """Root of every expected failure; ``str(e)`` is safe to print."""

    exit_code: ExitCode = ExitCode.SOFTWARE


class ConfigError(TokenRefreshError):
    """The config file, the environment or the credentials are wrong."""

    exit_code = ExitCode.CONFIG

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = list(problems)
        super().__init__(source, self.problems)

    def __str__(self) -> str:
        if len(self.problems) == 1:
            return f"configuration error ({self.source}): {self.problems[0]}"
        lines = "".join(f"\n  - {p}" for p in self.problems)
        return f"configuration error ({self.source}): {len(self.problems)} problems:{lines}"


class CacheMissingError(TokenRefreshError):
    """The cache file does not exist or cannot be read."""

    exit_code = ExitCode.NOINPUT

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(path, reason)

    def __str__(self) -> str:
        return f"token cache {self.path}: {self.reason}"


class CacheFormatError(CacheMissingError):
    """The cache exists but is not a usable token."""

    exit_code = ExitCode.DATAERR


class CacheWriteError(CacheMissingError):
    """The new cache cannot be written."""

    exit_code = ExitCode.IOERR


class LockTimeoutError(TokenRefreshError):
    """Another run held the lock for longer than ``lock_timeout_secs``."""

    exit_code = ExitCode.TEMPFAIL

    def __init__(self, lock_path: str, timeout: float) -> None:
        self.lock_path = lock_path
        self.timeout = timeout
        super().__init__(lock_path, timeout)

    def __str__(self) -> str:
        return (
            f"lock {self.lock_path} still held by another run after {self.timeout:g} s; nothing was refreshed"
        )


class Failure(TokenRefreshError):
    """A failure whose exit status is decided where it happens; the message never holds a secret."""

    def __init__(self, message: str, *, exit_code: ExitCode) -> None:
        self.message = message
        self.exit_code = exit_code
        super().__init__(message)

    def __str__(self) -> str:
        return self.message


class TokenEndpointError(Failure):
    """The token endpoint refused or failed."""

    def __init__(self, message: str, *, exit_code: ExitCode, status: int | None = None) -> None:
        super().__init__(message, exit_code=exit_code)
        self.status = status


class AuthorizationFailed(Failure):
    """The browser step of ``authorize`` did not yield a usable code; the cache was not touched."""


class ReauthorizationRequired(TokenRefreshError):
    """No usable refresh token is left: a person must log in again."""

    exit_code = ExitCode.NOPERM

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)

    def __str__(self) -> str:
        return f"{self.reason}; Manual re-authorization required (run: token-refresh authorize)"
