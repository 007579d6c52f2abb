"""The token cache file: strict loading, and atomic, durable, permission-keeping saving."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
from typing import Any, NamedTuple

from token_refresh import redact
from token_refresh.errors import CacheFormatError, CacheMissingError, CacheWriteError

MAX_CACHE_BYTES = 1 << 20  # a token cache is a few KiB; anything this big is not one
TMP_SUFFIX = ".tmp"
RESERVE_SLACK = 16 * 1024  # room for a new token larger than the old one
MAX_LIFETIME_SECS = 10 * 365 * 86400  # lifetimes beyond this are garbage and break date arithmetic
TOKEN_FIELDS = ("access_token", "refresh_token", "issued_at", "expires_in", "refresh_token_expires_in")


class Token(NamedTuple):
    """A parsed cache file; ``data`` is the whole JSON object, unknown fields included."""

    data: dict[str, Any]
    access_token: str
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
    return isinstance(value, (int, float)) and math.isfinite(value) and abs(value) <= MAX_LIFETIME_SECS


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a valid JSON number")


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


def parse_token(data: object, *, path: str, raw: bytes = b"") -> Token:
    """Check the fields a refresh needs; the message names the first bad one."""
    if not isinstance(data, dict):
        raise CacheFormatError(path, f"not a JSON object (got {type(data).__name__})")

    def bad(field: str, why: str) -> CacheFormatError:
        return CacheFormatError(path, f"field {field!r} {why}")

    for field in ("access_token", "issued_at", "expires_in"):
        if field not in data:
            raise bad(field, "is missing")
    access_token = data["access_token"]
    if not isinstance(access_token, str) or not access_token:
        raise bad("access_token", f"must be a non-empty string, got {type(access_token).__name__}")
    refresh_token = data.get("refresh_token")
    if refresh_token is not None and not isinstance(refresh_token, str):
        raise bad("refresh_token", f"must be a string, got {type(refresh_token).__name__}")
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


def load_cache(path: str) -> Token:
    """Read and parse the cache; 66 when it cannot be read, 65 when it is not a token."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CACHE_BYTES + 1)
    except FileNotFoundError:
        raise CacheMissingError(path, "does not exist") from None
    except IsADirectoryError:
        raise CacheMissingError(path, "is a directory, not a file") from None
    except OSError as e:
        raise CacheMissingError(path, f"cannot be read: {e.strerror or e}") from None
    if len(raw) > MAX_CACHE_BYTES:
        raise CacheFormatError(path, f"is larger than {MAX_CACHE_BYTES} bytes; not a token cache")
    if not raw.strip():
        raise CacheFormatError(path, "is empty")
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise CacheFormatError(path, "is not UTF-8 text") from None
    except ValueError as e:
        # JSONDecodeError's message holds a position only, never the document.
        raise CacheFormatError(path, f"is not valid JSON ({e})") from None
    return parse_token(data, path=path, raw=raw)


def serialize(data: dict[str, Any]) -> bytes:
    """The bytes written to disk: indented JSON with a final newline."""
    return (json.dumps(data, indent=2, allow_nan=False) + "\n").encode("utf-8")


def _mount_points() -> set[str]:
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return set()
    points = set()
    for line in lines:
        fields = line.split(" ")
        if len(fields) > 4:
            # mountinfo escapes space, tab, newline and backslash as octal.
            points.add(fields[4].encode("latin-1").decode("unicode_escape"))
    return points


def temp_prefix(path: str) -> str:
    """Temporary files for ``path`` are ``.<name>.<random>.tmp`` in the same directory."""
    return f".{os.path.basename(path)}."


def remove_stale_temps(path: str) -> list[str]:
    """Delete temporary files a killed run left; call only while holding the lock."""
    directory = os.path.dirname(path) or "."
    prefix = temp_prefix(path)
    removed: list[str] = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        if entry.name.startswith(prefix) and entry.name.endswith(TMP_SUFFIX):
            try:
                os.unlink(entry.path)
                removed.append(entry.name)
            except FileNotFoundError:
                pass
    return removed


class PendingWrite:
    """A temporary file, created and sized before the token is spent, that becomes the new cache.

    Creating it proves the directory is writable and reserves the disk space, so that the
    save after a refresh cannot fail for a predictable reason (context.md: "the save cannot
    fail ... after the token is spent").
    """

    def __init__(self, path: str, *, reserve: int) -> None:
        self.path = path
        self.directory = os.path.dirname(path) or "."
        if path in _mount_points():
            raise CacheWriteError(
                path,
                "is a mount point (a single-file bind mount?); it cannot be replaced atomically, "
                "mount its directory instead",
            )
        import tempfile

        try:
            fd, self.temp_path = tempfile.mkstemp(
                prefix=temp_prefix(path), suffix=TMP_SUFFIX, dir=self.directory
            )
        except OSError as e:
            raise CacheWriteError(
                path, f"cannot create a file in {self.directory}: {e.strerror or e}"
            ) from None
        self.fd: int | None = fd
        try:
            self._copy_ownership()
            self._reserve(reserve)
        except OSError as e:
            self.discard()
            raise CacheWriteError(
                path, f"cannot reserve {reserve} bytes in {self.directory}: {e.strerror or e}"
            ) from None

    def _copy_ownership(self) -> None:
        assert self.fd is not None
        try:
            st = os.stat(self.path)
        except OSError:
            return  # a new cache keeps mkstemp's 0600
        os.fchmod(self.fd, st.st_mode & 0o7777)
        # root keeps the owner too, so that a consumer running as that user can still read it
        uid = st.st_uid if os.geteuid() == 0 else -1
        # not a member of the group: the file gets our primary group
        with contextlib.suppress(PermissionError):
            os.fchown(self.fd, uid, st.st_gid)

    def _reserve(self, size: int) -> None:
        assert self.fd is not None
        try:
            os.posix_fallocate(self.fd, 0, size)
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
            os.write(self.fd, b"\0" * size)
        os.fsync(self.fd)

    def commit(self, content: bytes) -> None:
        """Write ``content``, fsync, rename over the cache, fsync the directory."""
        assert self.fd is not None
        fd = self.fd
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view) :]
            os.ftruncate(fd, len(content))
            os.fsync(fd)
            os.close(fd)
            self.fd = None
            os.replace(self.temp_path, self.path)
        except OSError as e:
            self.discard()
            raise CacheWriteError(self.path, f"cannot save the new token: {e.strerror or e}") from None
        self.temp_path = ""
        try:
            dir_fd = os.open(self.directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError:
            pass  # the rename is done; some filesystems refuse fsync on a directory

    def discard(self) -> None:
        """Close and remove the temporary file; safe to call twice."""
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None
        if self.temp_path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.temp_path)
            self.temp_path = ""

    def __enter__(self) -> PendingWrite:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()
