"""``token-refresh authorize``: the authorization-code flow that starts a new token chain."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Callable, NamedTuple, TextIO

from token_refresh import capture, endpoint, fmt, oauth, redact, store
from token_refresh import token as tokens
from token_refresh.errors import AuthorizationRefused, ReauthorizationRequired
from token_refresh.freshness import Assessment, classify
from token_refresh.token import Token

if TYPE_CHECKING:
    from token_refresh.config import Config
    from token_refresh.endpoint import Credentials
    from token_refresh.transport import Transport

__all__ = ["Result", "authorize", "exchange_and_save", "preflight", "summary"]

log = logging.getLogger(__name__)

Clock = Callable[[], float]
# invalid_request is what a server that wants PKCE answers a request without it (RFC 7636 §4.4.1)
PKCE_ADVICE = "the app may require PKCE: run authorize again with --pkce"
TransportFactory = Callable[[], "Transport"]


class Result(NamedTuple):
    """The token saved by a successful authorization."""

    token: Token
    assessment: Assessment
    path: str
    replaced: Token | None
    notes: tuple[str, ...] = ()


def preflight(path: str) -> None:
    """Prove, before anyone logs in, that the cache is readable and its directory writable."""
    store.load_previous(path)
    with store.PendingWrite(path, reserve=store.RESERVE_SLACK):
        pass


def exchange_and_save(
    *,
    config: Config,
    request: oauth.AuthRequest,
    code: str,
    credentials: Credentials,
    clock: Clock,
    transport_factory: TransportFactory,
) -> Result:
    """Under the cache lock: reserve the new file, exchange the code, save atomically."""
    redact.register(code)
    path = store.resolve(config.cache_path)
    with store.lock(path, config.lock_timeout_secs):
        store.recover_temps(path)
        previous = store.load_previous(path)
        with store.PendingWrite(path, reserve=previous.size + store.RESERVE_SLACK) as pending:
            sent_at = clock()
            try:
                granted = endpoint.code_grant(
                    transport_factory(),
                    token_url=config.token_url,
                    code=code,
                    redirect_uri=request.redirect_uri,
                    verifier=request.verifier,
                    credentials=credentials,
                    timeout=config.http_timeout_secs,
                )
            except ReauthorizationRequired as e:
                if e.oauth_error == "invalid_request" and request.verifier is None:
                    advice = PKCE_ADVICE
                else:
                    advice = "a code is single-use and expires within minutes: run authorize again"
                raise AuthorizationRefused(e.reason, advice=advice) from None
            token = pending.save(tokens.merge_authorization(previous.data, granted.fields, sent_at=sent_at))
    assessment = classify(token, now=clock(), horizon=config.horizon_secs)
    return Result(token, assessment, path, previous.token, tuple(granted.notes))


def authorize(
    *,
    config: Config,
    credentials: Credentials,
    mode: oauth.Mode,
    pkce: bool,
    open_browser: bool,
    timeout: float,
    clock: Clock,
    transport_factory: TransportFactory,
    stdin: TextIO,
    out: TextIO,
) -> Result:
    """Run the whole flow: URL, browser, redirect, exchange, save. Raises TokenRefreshError."""
    path = store.resolve(config.cache_path)
    preflight(path)
    request = oauth.new_request(config, client_id=credentials.app_key, pkce=pkce)
    if open_browser and not (oauth.has_display() or os.environ.get("BROWSER")):
        # over SSH a console browser would take the terminal that the paste is read from
        log.info("no display: not starting a browser; open the URL on any machine")
        open_browser = False

    def announce() -> None:
        out.write(f"Open this URL in a browser and log in:\n\n  {request.url}\n\n")
        out.flush()
        if open_browser:
            capture.open_browser(request.url)

    def finish(redirect: oauth.Redirect, *, require_state: bool) -> Result:
        try:
            code = oauth.check_redirect(redirect, expected_state=request.state, require_state=require_state)
        except AuthorizationRefused as e:
            if redirect.error == "invalid_request" and request.verifier is None:
                raise AuthorizationRefused(e.reason, advice=PKCE_ADVICE) from None
            raise
        if redirect.state is None:
            log.info("a bare code was given: its state could not be checked")
        return exchange_and_save(
            config=config,
            request=request,
            code=code,
            credentials=credentials,
            clock=clock,
            transport_factory=transport_factory,
        )

    if mode == "listen":
        results: list[Result] = []

        def on_redirect(redirect: oauth.Redirect) -> str:
            results.append(finish(redirect, require_state=True))
            return "token-refresh saved the new token"

        capture.wait_for_redirect(
            request.redirect_uri, timeout=timeout, on_redirect=on_redirect, ready=announce
        )
        return results[0]
    announce()
    out.write(
        "After logging in, the browser is sent to the redirect URL (the page may fail to load).\n"
        "Paste that whole URL from the address bar (or just the code), then press Enter:\n"
    )
    out.flush()
    return finish(oauth.parse_redirect(capture.read_pasted(stdin, timeout=timeout)), require_state=False)


def summary(result: Result, *, client: str = "") -> str:
    """One line for the log: fingerprints and expiries, never a token; ``client`` says who asked."""
    a, token = result.assessment, result.token
    fp = redact.fingerprint
    names = f"access {fp(token.access_token)}, refresh {fp(token.refresh_token)}"
    refresh = fmt.left(a.refresh_left, a.refresh_expires_at)
    if token.refresh_token is None:
        refresh = "none (this token cannot be refreshed)"
    text = (
        f"authorized: new token saved: access token {fmt.left(a.access_left, a.access_expires_at)}, "
        f"refresh token {refresh} [{names}]"
    )
    if result.replaced is not None:
        text += f"; replaced access {fp(result.replaced.access_token)}"
    by = f" by a {client}" if client else ""
    return f"{text}{by} (cache {result.path})"
