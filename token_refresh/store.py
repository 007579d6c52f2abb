"""Everything that touches the cache's directory: reads, the durable write, temps, roll-forward, the lock.

The write protocol (docs/DESIGN.md, "The durable write"): a temp file named for this cache is
created and its space reserved *before* the token is spent; the new bytes are written into it,
fsynced, renamed over the cache, and the directory is fsynced. A temp that holds a complete,
newer token is a write-ahead record: the next run under the lock adopts it instead of deleting it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
from typing import Any, Iterator, NamedTuple

from token_refresh import token as tokens
from token_refresh.errors import CacheInvalid, CacheMissing, CacheWriteError, LockFileError, LockTimeout
from token_refresh.token import Token, TokenSchemaError

__all__ = [
    "MAX_CACHE_BYTES",
    "RESERVE_SLACK",
    "PendingWrite",
    "Previous",
    "load",
    "load_previous",
    "lock",
    "lock_path",
    "recover_temps",
    "remove_stale_parts",
    "replace_atomically",
    "resolve",
    "serialize",
]

log = logging.getLogger(__name__)

MAX_CACHE_BYTES = 1 << 20  # a token cache is a few KiB; anything this big is not one
RESERVE_SLACK = 16 * 1024  # room for a new token larger than the old one
TEMP_TAG = "tr-"
PART_SUFFIX = ".part"  # temps of the small files beside the cache: never a cache temp
LOCK_MODE = 0o664  # group-writable, so keepers running as different users of one group share it


def resolve(path: str) -> str:
    """The cache path every command works on: symlinks resolved, so one file has one lock."""
    return os.path.realpath(path)


def lock_path(cache_path: str) -> str:
    """The sidecar lock file; the cache itself is replaced, so it cannot carry the lock."""
    return cache_path + ".lock"


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(MAX_CACHE_BYTES + 1)
    except FileNotFoundError:
        raise CacheMissing(path, "does not exist") from None
    except IsADirectoryError:
        raise CacheMissing(path, "is a directory, not a file") from None
    except OSError as e:
        raise CacheMissing(path, f"cannot be read: {e.strerror or e}") from None


def _parse(raw: bytes, path: str) -> Token:
    if len(raw) > MAX_CACHE_BYTES:
        raise CacheInvalid(path, f"is larger than {MAX_CACHE_BYTES} bytes; not a token cache")
    if not raw.strip():
        raise CacheInvalid(path, "is empty")
    try:
        return tokens.parse(tokens.decode_json(raw), raw=raw)
    except TokenSchemaError as e:
        raise CacheInvalid(path, str(e)) from None


def load(path: str) -> Token:
    """Read and parse the cache: 66 when it cannot be read, 65 when it is not a token."""
    return _parse(_read(path), path)


class Previous(NamedTuple):
    """What ``authorize`` keeps of an old cache: its object, its token if any, its size."""

    data: dict[str, Any]
    token: Token | None
    size: int


def load_previous(path: str) -> Previous:
    """The lenient read for ``authorize``: a missing or broken cache is replaced, not refused."""
    try:
        raw = _read(path)
    except CacheMissing as e:
        if e.reason == "does not exist":
            return Previous({}, None, 0)
        raise
    try:
        data = tokens.decode_json(raw)
    except TokenSchemaError:
        data = None
    if not isinstance(data, dict):
        log.warning("the previous cache %s is not a JSON object; it is replaced whole", path)
        return Previous({}, None, len(raw))
    from token_refresh import redact

    redact.register(data.get("access_token"), data.get("refresh_token"))
    try:
        return Previous(data, tokens.parse(data, raw=raw), len(raw))
    except TokenSchemaError:
        return Previous(data, None, len(raw))


def serialize(data: dict[str, Any]) -> bytes:
    """The bytes written to disk: indented JSON with a final newline."""
    return (json.dumps(data, indent=2, allow_nan=False) + "\n").encode("utf-8")


# -- the lock ------------------------------------------------------------------------------


@contextlib.contextmanager
def lock(cache_path: str, timeout: float) -> Iterator[None]:
    """Hold the cache's sidecar lock: 75 after ``timeout`` s, 74 if the lock file cannot be used.

    The lock never degrades to a marker file (docs/DESIGN.md, "The lock"): filelock's soft
    fallback on ENOSYS would leave a file that blocks every later run after a kill.
    """
    import filelock

    path = lock_path(cache_path)
    _refuse_hard_links(cache_path)
    try:
        lock_ = filelock.UnixFileLock(path, timeout=timeout, mode=LOCK_MODE, fallback_to_soft=False)
    except TypeError:
        # no switch: safe only before 3.24, which has no soft fallback to refuse
        if _version(filelock.__version__) >= (3, 24):
            raise LockFileError(
                path,
                f"filelock {filelock.__version__} cannot refuse its soft-lock fallback; "
                "install filelock>=3.30",
            ) from None
        lock_ = filelock.UnixFileLock(path, timeout=timeout, mode=LOCK_MODE)
    try:
        lock_.acquire()
    except filelock.Timeout:
        raise LockTimeout(path, timeout) from None
    except OSError as e:
        if e.errno == errno.ENOSYS:
            reason = (
                "the filesystem does not support flock (a network share?); keep the cache on a local disk"
            )
        else:
            reason = f"cannot open or create it: {e.strerror or e}"
        raise LockFileError(path, reason) from None
    try:
        yield
    finally:
        lock_.release()


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:2]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def _refuse_hard_links(cache_path: str) -> None:
    """Two names of one file would get two locks, and a rename splits them anyway."""
    try:
        links = os.stat(cache_path).st_nlink
    except OSError:
        return
    if links > 1:
        raise CacheWriteError(
            cache_path,
            f"has {links} hard links: each name would get its own lock and a save would split them; "
            "keep one name (a symlink to it is fine)",
        )


# -- temporary files -------------------------------------------------------------------------


def _temp_pattern(path: str, *, tag: str = TEMP_TAG, suffix: str = ".tmp") -> re.Pattern[str]:
    # mkstemp's 8 random characters: no other file's temp (tok.json.sim's for tok.json) can match
    name = re.escape(os.path.basename(path))
    return re.compile(rf"\.{name}\.{re.escape(tag)}[a-z0-9_]{{8}}{re.escape(suffix)}\Z")


def _temp_prefix(path: str) -> str:
    return f".{os.path.basename(path)}.{TEMP_TAG}"


def _fsync_dir(directory: str) -> None:
    try:
        dir_fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass  # some filesystems refuse fsync on a directory; the rename itself is done
    finally:
        os.close(dir_fd)


def _write_all(fd: int, content: bytes) -> None:
    view = memoryview(content)
    while view:
        view = view[os.write(fd, view) :]


def replace_atomically(path: str, content: bytes, *, mode: int, group: int | None = None) -> None:
    """A small file beside the cache (journal, metrics): temp ``.<name>.XXXXXXXX.part``, fsync, rename.

    The ``.part`` suffix keeps it apart from the cache's own ``.tmp`` temps (``recover_temps``)
    and from the ``*.prom`` files node_exporter collects. ``mode`` is set whatever the umask.
    """
    import tempfile

    directory = os.path.dirname(path) or "."
    fd, temp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=PART_SUFFIX, dir=directory)
    try:
        try:
            os.fchmod(fd, mode)
            if group is not None:
                with contextlib.suppress(PermissionError):  # not a member of that group: keep ours
                    os.fchown(fd, -1, group)
            _write_all(fd, content)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    _fsync_dir(directory)


def remove_stale_parts(path: str) -> None:
    """Remove ``replace_atomically``'s temps for ``path`` left by killed writers; call it only when
    no writer of ``path`` can be live (under the cache's lock)."""
    directory = os.path.dirname(path) or "."
    pattern = _temp_pattern(path, tag="", suffix=PART_SUFFIX)
    with contextlib.suppress(OSError):
        for name in os.listdir(directory):
            if pattern.match(name):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(directory, name))


def _complete_token(temp: str) -> Token | None:
    """The token a temp holds if it is complete; trailing NULs are the unwritten reservation."""
    try:
        with open(temp, "rb") as f:
            raw = f.read(MAX_CACHE_BYTES + RESERVE_SLACK + 1)
    except OSError:
        return None
    raw = raw.rstrip(b"\0")
    if not raw.strip() or len(raw) > MAX_CACHE_BYTES:
        return None
    try:
        return tokens.parse(tokens.decode_json(raw), raw=raw)
    except TokenSchemaError:
        return None


def _newer(candidate: Token, current: Token | None) -> bool:
    if current is None:
        return True
    return candidate.refresh_token != current.refresh_token and candidate.issued_at > current.issued_at


def recover_temps(path: str) -> Token | None:
    """Under the lock: adopt the newest complete temp holding a newer token, remove the rest.

    Returns the adopted token, or None. Only regular files of our own, named for this cache,
    are touched; anything else is left alone with a warning.
    """
    directory = os.path.dirname(path) or "."
    pattern = _temp_pattern(path)
    try:
        names = sorted(e for e in os.listdir(directory) if pattern.match(e))
    except OSError:
        return None
    if not names:
        return None
    try:
        current: Token | None = load(path)
    except (CacheMissing, CacheInvalid):
        current = None
    # ours: made by this user, or by root for the cache's owner (PendingWrite copies the owner)
    owners = {os.geteuid()}
    if os.geteuid() == 0:
        with contextlib.suppress(OSError):
            owners.add(os.stat(path).st_uid)
    ours: list[tuple[str, Token | None]] = []
    for name in names:
        temp = os.path.join(directory, name)
        try:
            st = os.lstat(temp)
        except FileNotFoundError:
            continue
        if not (_is_regular(st.st_mode) and st.st_uid in owners):
            log.warning("left %s alone: not a regular file of this user's", temp)
            continue
        ours.append((temp, _complete_token(temp)))
    newer = [(temp, tok) for temp, tok in ours if tok is not None and _newer(tok, current)]
    adopted = None
    if newer:
        temp, adopted = max(newer, key=lambda item: item[1].issued_at)
        try:
            with open(temp, "rb+") as f:
                f.truncate(len(adopted.raw))
                os.fsync(f.fileno())
            os.replace(temp, path)
        except OSError as e:
            raise CacheWriteError(path, f"cannot adopt {temp}: {e.strerror or e}", kept_at=temp) from None
        _fsync_dir(directory)
        from token_refresh import redact

        log.warning(
            "adopted %s, left by a run that was stopped after its refresh (refresh token %s replaces %s)",
            os.path.basename(temp),
            redact.fingerprint(adopted.refresh_token),
            redact.fingerprint(None if current is None else current.refresh_token),
        )
    for temp, _ in ours:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            continue
        except OSError as e:
            log.warning("cannot remove %s left by an interrupted run: %s", temp, e.strerror or e)
            continue
        log.warning("removed %s left by an interrupted run", os.path.basename(temp))
    return adopted


def _is_regular(mode: int) -> bool:
    import stat

    return stat.S_ISREG(mode)


def _mount_points() -> set[str]:
    """Mount points from /proc/self/mountinfo, decoded whatever bytes their names hold."""
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            lines = f.read().splitlines()
    except OSError:
        return set()
    points = set()
    for line in lines:
        fields = line.split(b" ")
        if len(fields) > 4:
            # octal escapes for space, tab, newline and backslash; any other byte as the OS gives it
            raw = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m[1], 8)]), fields[4])
            points.add(os.fsdecode(raw))
    return points


class PendingWrite:
    """A temp file, created and sized before the token is spent, that becomes the new cache.

    Creating it proves the directory is writable and reserves the disk space, so the save after
    a refresh cannot fail for a predictable reason (docs/DESIGN.md, "The durable write").
    """

    def __init__(self, path: str, *, reserve: int) -> None:
        self.path = path
        self.directory = os.path.dirname(path) or "."
        self.keep = False  # set once the temp holds a spent-for token: never delete it then
        if path in _mount_points():
            raise CacheWriteError(
                path,
                "is a mount point (a single-file bind mount?); it cannot be replaced atomically, "
                "mount its directory instead",
            )
        import tempfile

        try:
            fd, self.temp_path = tempfile.mkstemp(
                prefix=_temp_prefix(path), suffix=".tmp", dir=self.directory
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

    def save(self, data: dict[str, Any]) -> Token:
        """Commit ``data`` as the new cache and return it parsed, as the next run will load it."""
        content = serialize(data)
        self.commit(content)
        return tokens.parse(tokens.decode_json(content), raw=content)

    def commit(self, content: bytes) -> None:
        """Write ``content``, fsync, rename over the cache, fsync the directory.

        From the first byte written the temp is a write-ahead record: a failure keeps it for
        the next run to adopt, and the error says where it is.
        """
        assert self.fd is not None
        fd = self.fd
        self.keep = True
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            _write_all(fd, content)
            os.ftruncate(fd, len(content))
            os.fsync(fd)
            os.close(fd)
            self.fd = None
            os.replace(self.temp_path, self.path)
        except OSError as e:
            if self.fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self.fd)
                self.fd = None
            raise CacheWriteError(
                self.path, f"cannot save the new token: {e.strerror or e}", kept_at=self.temp_path
            ) from None
        self.temp_path = ""
        _fsync_dir(self.directory)

    def discard(self) -> None:
        """Close and remove the temp unless it holds a new token; safe to call twice, never raises."""
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None
        if self.temp_path and not self.keep:
            try:
                os.unlink(self.temp_path)
            except FileNotFoundError:
                pass
            except OSError as e:
                log.warning("cannot remove %s: %s", self.temp_path, e.strerror or e)
            self.temp_path = ""

    def __enter__(self) -> PendingWrite:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()
