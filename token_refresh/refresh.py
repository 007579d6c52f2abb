"""``token-refresh run``: one load -> classify -> (under the lock) recover, reload, refresh, save."""

from __future__ import annotations

import enum
import logging
from typing import TYPE_CHECKING, Callable, NamedTuple

from token_refresh import endpoint, store
from token_refresh.errors import ReauthorizationRequired, TokenRefreshError
from token_refresh.freshness import Assessment, State, classify
from token_refresh.token import Token

if TYPE_CHECKING:
    from token_refresh.config import Config
    from token_refresh.endpoint import Credentials
    from token_refresh.transport import Flight, Transport

__all__ = ["Action", "Outcome", "TransportFactory", "run_cycle"]

log = logging.getLogger(__name__)

Clock = Callable[[], float]
TransportFactory = Callable[["Flight"], "Transport"]


class Action(str, enum.Enum):
    """What a run did."""

    VALID = "valid"
    REFRESHED = "refreshed"
    REFRESHED_BY_OTHER = "refreshed_by_other"
    ADOPTED = "adopted"  # a token a stopped run had received was rolled forward
    WOULD_REFRESH = "would_refresh"

    def __str__(self) -> str:
        return self.value


class Outcome(NamedTuple):
    """What a run did, and the token it left behind."""

    action: Action
    token: Token
    assessment: Assessment
    path: str
    notes: tuple[str, ...] = ()  # odd things worth a warning
    attempts: int = 0
    elapsed: float = 0.0
    stopped_by: int | None = None  # a stop signal held until the new token was saved


def run_cycle(
    *,
    config: Config,
    credentials: Credentials,
    clock: Clock,
    transport_factory: TransportFactory,
    force: bool = False,
    dry_run: bool = False,
    guard_signals: bool = True,
    refused: Callable[[Token], str | None] | None = None,
) -> Outcome:
    """Run one cycle; raise a TokenRefreshError on failure.

    ``refused``, asked under the lock right before the request, returns when the token endpoint
    already refused this token's refresh token (None: never); such a token is not sent again,
    since a refusal is final (docs/DESIGN.md, "Journal").
    """
    path = store.resolve(config.cache_path)
    horizon = config.horizon_secs
    token = store.load(path)
    assessment = classify(token, now=clock(), horizon=horizon)
    log.debug("classified %s: %s", assessment.state, assessment.reason)
    if assessment.issued_in_future:
        # here, not after the run: a refresh replaces the token and with it the evidence
        log.warning("issued_at is more than 300 s in the future; check the clocks (treated as due)")
    _reauth_without_refresh_token(token, assessment, force=force)
    if assessment.state is State.VALID and not force:
        return Outcome(Action.VALID, token, assessment, path)
    if dry_run:
        return Outcome(Action.WOULD_REFRESH, token, assessment, path)

    from token_refresh.stops import StopGuard

    with StopGuard(install=guard_signals) as guard, store.lock(path, config.lock_timeout_secs):
        adopted = store.recover_temps(path)
        latest = store.load(path)
        assessment = classify(latest, now=clock(), horizon=horizon)
        _reauth_without_refresh_token(latest, assessment, force=force)
        if latest.raw != token.raw and assessment.access_left > 0:
            # another run (or a stopped one, rolled forward) saved a token while we waited:
            # keep it, even if it is due by the horizon (short-lived tokens, long cadences)
            action = Action.ADOPTED if adopted is not None else Action.REFRESHED_BY_OTHER
            return Outcome(action, latest, assessment, path)
        if assessment.state is State.VALID and not force:
            return Outcome(Action.VALID, latest, assessment, path)
        when = None if refused is None else refused(latest)
        if when is not None:
            from token_refresh import redact

            raise ReauthorizationRequired(
                f"the token endpoint refused refresh token {redact.fingerprint(latest.refresh_token)} "
                "(invalid_grant); it is not sent again",
                refused_at=when,
            )
        if assessment.state is State.EXPIRED:
            # the server decides: a skewed clock or a wrong lifetime must not force a login
            log.warning(
                "%s by the local clock; trying it anyway, the token endpoint decides", assessment.reason
            )
        transport = transport_factory(guard)
        try:
            outcome = _refresh(config, credentials, clock, transport, latest, path)
        except TokenRefreshError as e:
            # a stop held while the request was in flight still ends the run without hooks
            e.stopped_by = guard.settled()
            e.attempts = getattr(transport, "attempts", 0)
            e.elapsed = getattr(transport, "elapsed", 0.0)
            raise
        return outcome._replace(stopped_by=guard.settled())


def _reauth_without_refresh_token(token: Token, assessment: Assessment, *, force: bool) -> None:
    if token.refresh_token is not None:
        return
    if force:
        raise ReauthorizationRequired(
            "--force: the cache has no refresh token (a 24-hour developer token cannot be refreshed)"
        )
    if assessment.state is State.EXPIRED:
        raise ReauthorizationRequired(f"token expired: {assessment.reason}")


def _refresh(
    config: Config,
    credentials: Credentials,
    clock: Clock,
    transport: Transport,
    token: Token,
    path: str,
) -> Outcome:
    from token_refresh import token as tokens

    assert token.refresh_token is not None
    reserve = len(token.raw) + store.RESERVE_SLACK
    with store.PendingWrite(path, reserve=reserve) as pending:
        sent_at = clock()
        granted = endpoint.refresh_grant(
            transport,
            token_url=config.token_url,
            refresh_token=token.refresh_token,
            credentials=credentials,
            timeout=config.http_timeout_secs,
        )
        new_token = pending.save(tokens.merge_refresh(token, granted.fields, sent_at=sent_at))
    new_assessment = classify(new_token, now=clock(), horizon=config.horizon_secs)
    notes = list(granted.notes)
    if 0 < new_token.expires_in <= config.horizon_secs:
        notes.append(
            f"the endpoint's access tokens live {new_token.expires_in:.0f} s, no longer than "
            f"interval_secs + margin_secs ({config.horizon_secs:.0f} s): every run will refresh"
        )
    return Outcome(
        Action.REFRESHED,
        new_token,
        new_assessment,
        path,
        notes=tuple(notes),
        attempts=getattr(transport, "attempts", 1),
        elapsed=getattr(transport, "elapsed", 0.0),
    )
