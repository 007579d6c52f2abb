"""One run: load, classify, and (under the lock) reload, reclassify, refresh and save."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from typing import TYPE_CHECKING, Any, Callable, Iterator, NamedTuple

from token_refresh import cache
from token_refresh.cache import Token
from token_refresh.config import Config, Credentials
from token_refresh.errors import LockTimeoutError, ReauthorizationRequired
from token_refresh.freshness import Assessment, State, classify

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)

Clock = Callable[[], float]
SessionFactory = Callable[[], "requests.Session"]


class Outcome(NamedTuple):
    """What a run did, and the token it left behind."""

    action: str  # valid | refreshed | would_refresh | refreshed_by_other
    token: Token
    assessment: Assessment
    path: str


def lock_path(cache_path: str) -> str:
    """The sidecar lock file; the cache itself is replaced, so it cannot carry the lock."""
    return cache_path + ".lock"


@contextlib.contextmanager
def acquire_lock(path: str, timeout: float) -> Iterator[None]:
    """Hold the sidecar lock; a LockTimeoutError (75) after ``timeout`` seconds."""
    import filelock

    kwargs: dict[str, Any] = {"timeout": timeout, "mode": 0o664}  # group-writable: see context.md
    if int(filelock.__version__.split(".")[0]) >= 4:
        # never degrade to a marker file: a killed run would leave it and block every later run
        kwargs["fallback_to_soft"] = False
    lock = filelock.FileLock(path, **kwargs)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise LockTimeoutError(path, timeout) from None
    except OSError as e:
        from token_refresh.errors import CacheWriteError

        raise CacheWriteError(path, f"cannot open or create the lock file: {e.strerror or e}") from None
    try:
        yield
    finally:
        lock.release()


@contextlib.contextmanager
def _signals_held() -> Iterator[list[int]]:
    """Hold SIGTERM, SIGINT and SIGHUP from sending the request until the new token is saved.

    Once Saxo has spent the refresh token, dying before the save breaks the chain
    (context.md); a scheduler's stop signal can wait the few seconds that takes.
    """
    import signal
    import threading

    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received  # signal handlers can only be set from the main thread
        return

    def hold(signum: int, frame: object) -> None:
        received.append(signum)

    held = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    previous = {sig: signal.signal(sig, hold) for sig in held}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _reauth_if_expired(assessment: Assessment) -> None:
    if assessment.state is State.EXPIRED:
        raise ReauthorizationRequired(f"token expired: {assessment.reason}")


def merge_response(token: Token, response: dict[str, Any], *, sent_at: float) -> dict[str, Any]:
    """The new cache object: old fields kept, the response's fields over them, issued_at = sent."""
    data = dict(token.data)
    if "refresh_token_expires_in" not in response:
        data.pop("refresh_token_expires_in", None)  # never pair a new token with an old lifetime
    data.update(response)
    data["issued_at"] = cache.format_issued_at(sent_at, token.issued_at_style)
    return data


def run_cycle(
    *,
    config: Config,
    credentials: Credentials,
    clock: Clock,
    session_factory: SessionFactory,
    force: bool = False,
    dry_run: bool = False,
) -> Outcome:
    """Run one load -> classify -> refresh -> save cycle; raise a TokenRefreshError on failure."""
    path = os.path.realpath(config.cache_path)
    horizon = config.horizon_secs
    token = cache.load_cache(path)
    assessment = classify(token, now=clock(), horizon=horizon)
    log.debug("classified %s: %s", assessment.state, assessment.reason)
    if assessment.issued_in_future:
        # here, not after the run: a refresh replaces the token and with it the evidence
        log.warning("issued_at is more than 300 s in the future; check the clocks (treated as due)")
    _reauth_if_expired(assessment)
    if force and token.refresh_token is None:
        raise ReauthorizationRequired(
            "--force: the cache has no refresh token (a 24-hour developer token cannot be refreshed)"
        )
    if assessment.state is State.VALID and not force:
        return Outcome("valid", token, assessment, path)
    if dry_run:
        return Outcome("would_refresh", token, assessment, path)

    with acquire_lock(lock_path(path), config.lock_timeout_secs):
        for name in cache.remove_stale_temps(path):
            log.warning("removed %s left by an interrupted run", name)
        latest = cache.load_cache(path)
        assessment = classify(latest, now=clock(), horizon=horizon)
        _reauth_if_expired(assessment)
        if latest.raw != token.raw and (assessment.state is State.VALID or force):
            # another run refreshed while we waited: its token is the one to keep
            return Outcome("refreshed_by_other", latest, assessment, path)
        if assessment.state is State.VALID and not force:
            return Outcome("valid", latest, assessment, path)
        assert latest.refresh_token is not None  # EXPIRED otherwise
        return _refresh(config, credentials, clock, session_factory, latest, path)


def _refresh(
    config: Config,
    credentials: Credentials,
    clock: Clock,
    session_factory: SessionFactory,
    token: Token,
    path: str,
) -> Outcome:
    from token_refresh import saxo

    assert token.refresh_token is not None
    reserve = len(token.raw) + cache.RESERVE_SLACK
    with cache.PendingWrite(path, reserve=reserve) as pending:
        session = session_factory()
        with _signals_held() as received:
            sent_at = clock()
            response = saxo.refresh_grant(
                session,
                token_url=config.token_url,
                refresh_token=token.refresh_token,
                credentials=credentials,
                timeout=config.http_timeout_secs,
            )
            content = cache.serialize(merge_response(token, response, sent_at=sent_at))
            pending.commit(content)
    if received:
        log.warning(
            "signal %d arrived during the refresh; it waited until the new token was saved", received[0]
        )
    new_token = cache.parse_token(json.loads(content), path=path, raw=content)
    new_assessment = classify(new_token, now=clock(), horizon=config.horizon_secs)
    return Outcome("refreshed", new_token, new_assessment, path)
