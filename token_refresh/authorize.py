"""``token-refresh authorize``: the OAuth authorization-code flow that starts a new token chain.

Pure parts (URL building, redirect parsing, PKCE) are plain functions; the interactive parts
(loopback listener, reading a pasted URL) take their streams and deadlines as arguments.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import secrets
import sys
import time
from typing import TYPE_CHECKING, Any, Callable, Mapping, NamedTuple, TextIO
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from token_refresh import cache, redact
from token_refresh.cache import Token
from token_refresh.config import Config, Credentials
from token_refresh.errors import (
    AuthorizationFailed,
    CacheMissingError,
    ConfigError,
    ExitCode,
    ReauthorizationRequired,
    TokenRefreshError,
)
from token_refresh.freshness import Assessment, classify

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)

Clock = Callable[[], float]
SessionFactory = Callable[[], "requests.Session"]

LISTEN_HOSTS = ("localhost", "127.0.0.1")
DEFAULT_TIMEOUT_SECS = 300.0
MAX_PASTE_BYTES = 64 * 1024  # a redirect URL is well under 1 KiB; stop reading garbage early
GRANT = "authorization code"


class AuthRequest(NamedTuple):
    """One authorization attempt: the URL to open and what the answer must match."""

    url: str
    state: str
    redirect_uri: str
    verifier: str | None  # PKCE only


class Redirect(NamedTuple):
    """The parameters the authorization server sent back (any may be missing)."""

    code: str | None
    state: str | None
    error: str | None
    error_description: str | None


class Result(NamedTuple):
    """The token saved by a successful authorization."""

    token: Token
    assessment: Assessment
    path: str
    replaced: Token | None


# -- pure functions -----------------------------------------------------------------


def new_verifier() -> str:
    """A PKCE code verifier: 64 unreserved characters (RFC 7636 allows 43-128)."""
    return secrets.token_urlsafe(48)


def code_challenge(verifier: str) -> str:
    """The S256 challenge: base64url(SHA-256(verifier)) without padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def build_authorize_url(
    authorize_url: str,
    *,
    client_id: str,
    redirect_uri: str,
    state: str,
    challenge: str | None = None,
) -> str:
    """The URL the person opens; any query already in ``authorize_url`` is kept."""
    params = [
        ("response_type", "code"),
        ("client_id", client_id),
        ("state", state),
        ("redirect_uri", redirect_uri),
    ]
    if challenge is not None:
        params += [("code_challenge", challenge), ("code_challenge_method", "S256")]
    parts = urlsplit(authorize_url)
    query = "&".join(q for q in (parts.query, urlencode(params)) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def new_request(config: Config, *, client_id: str, pkce: bool) -> AuthRequest:
    """A fresh state (and verifier) and the authorize URL carrying them."""
    redirect_uri = require_redirect_uri(config)
    state = secrets.token_urlsafe(24)
    verifier = new_verifier() if pkce else None
    redact.register(verifier)
    url = build_authorize_url(
        config.authorize_url,
        client_id=client_id,
        redirect_uri=redirect_uri,
        state=state,
        challenge=None if verifier is None else code_challenge(verifier),
    )
    return AuthRequest(url=url, state=state, redirect_uri=redirect_uri, verifier=verifier)


def parse_redirect(text: str) -> Redirect:
    """Read a redirected URL, its query string, or a bare code, as pasted by a person."""
    text = text.strip()
    query = None
    if "://" in text:
        parts = urlsplit(text)
        # some servers answer in the fragment; the query wins when both are present
        query = parts.query or parts.fragment
    elif "=" in text:
        query = text.lstrip("?#")
    if query is None:
        redact.register(text)
        return Redirect(code=text or None, state=None, error=None, error_description=None)
    values = {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items()}
    code = values.get("code") or None
    redact.register(code)
    return Redirect(
        code=code,
        state=values.get("state"),
        error=values.get("error") or None,
        error_description=values.get("error_description") or None,
    )


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)[:200]


def check_redirect(redirect: Redirect, *, expected_state: str) -> str:
    """Return the code, or raise with the status the failure maps to."""
    if redirect.error is not None:
        detail = _printable(redirect.error)
        if redirect.error_description:
            detail += f": {_printable(redirect.error_description)}"
        raise AuthorizationFailed(
            f"the authorization server refused ({detail}); nothing was saved, run authorize again",
            exit_code=ExitCode.NOPERM,
        )
    if redirect.state is not None and not secrets.compare_digest(redirect.state, expected_state):
        raise AuthorizationFailed(
            "the redirect's state does not match this request (a stale or foreign login?); "
            "nothing was saved, run authorize again and use the new URL",
            exit_code=ExitCode.DATAERR,
        )
    if redirect.code is None:
        raise AuthorizationFailed(
            "the redirect holds no authorization code; paste the whole URL the browser was sent to",
            exit_code=ExitCode.DATAERR,
        )
    if redirect.state is None:
        log.info("a bare code was given: its state could not be checked")
    return redirect.code


def listen_address(redirect_uri: str) -> tuple[str, int, str] | None:
    """(host, port, path) to serve for an http loopback redirect_uri, else None."""
    parts = urlsplit(redirect_uri)
    if parts.scheme != "http" or parts.hostname not in LISTEN_HOSTS:
        return None
    try:
        port = parts.port or 80
    except ValueError:
        return None
    return "127.0.0.1", port, parts.path or "/"


def require_redirect_uri(config: Config) -> str:
    """``redirect_uri`` from the config, or exit 78 naming the key."""
    uri = config.redirect_uri
    if not uri:
        raise ConfigError(
            config.source,
            ["redirect_uri: required by authorize (the redirect URL registered for the app at Saxo)"],
        )
    if "#" in uri:
        raise ConfigError(config.source, [f"redirect_uri: must not contain a fragment, got {uri!r}"])
    return uri


def has_display(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether a graphical browser can be started here (macOS and Windows always can)."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY"))


def choose_mode(config: Config, requested: str | None) -> str:
    """``listen`` or ``paste``: as requested, else listen when it can work here."""
    uri = require_redirect_uri(config)
    loopback = listen_address(uri) is not None
    if requested == "listen" and not loopback:
        raise ConfigError(
            config.source,
            [
                f"redirect_uri: --listen needs http://localhost:PORT/... or http://127.0.0.1:PORT/..., "
                f"got {uri!r}; use --paste"
            ],
        )
    if requested is not None:
        return requested
    return "listen" if loopback and has_display() else "paste"


# -- getting the redirect back --------------------------------------------------------

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>token-refresh</title></head>
<body><h1>{title}</h1><p>{text}</p></body></html>
"""


def wait_for_redirect(
    redirect_uri: str,
    *,
    timeout: float,
    on_redirect: Callable[[Redirect], str],
    ready: Callable[[], None] = lambda: None,
) -> None:
    """Serve the redirect path on 127.0.0.1 until one redirect is handled or ``timeout`` passes.

    ``on_redirect`` does the work and returns the text shown in the browser; an exception it
    raises is shown there too, then re-raised here. ``ready`` runs once the port is bound.
    """
    import html
    from http.server import BaseHTTPRequestHandler, HTTPServer

    address = listen_address(redirect_uri)
    assert address is not None
    host, port, path = address
    outcome: list[BaseException | str] = []

    class Handler(BaseHTTPRequestHandler):
        timeout = 10  # a connection that never sends its request cannot hold the listener

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            # the path only: a query may hold a code nobody has registered yet
            log.debug("listener: %s %s -> %s", self.command, urlsplit(self.path).path, code)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("listener: a request was refused (%s)", type(self).__name__)

        def _page(self, status: int, title: str, text: str) -> None:
            body = PAGE.format(title=html.escape(title), text=html.escape(redact.redact(text))).encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            if parts.path != path:
                self._page(404, "Not found", "token-refresh serves only its redirect path.")
                return
            redirect = parse_redirect("?" + parts.query)
            if redirect.code is None and redirect.error is None:
                self._page(400, "No authorization code", "This request carries no code; still waiting.")
                return
            try:
                message = on_redirect(redirect)
            except BaseException as e:  # shown in the browser, re-raised in the main thread
                outcome.append(e)
                shown = str(e) if isinstance(e, TokenRefreshError) else "unexpected error"
                self._page(400, "Authorization failed", f"{shown}. See the terminal.")
                return
            outcome.append(message)
            self._page(200, "Authorization complete", f"{message}. You can close this tab.")

    try:
        server = HTTPServer((host, port), Handler)
    except OSError as e:
        raise AuthorizationFailed(
            f"cannot listen on {host}:{port} for the redirect: {e.strerror or e}; "
            "is another authorize running? or use --paste",
            exit_code=ExitCode.TEMPFAIL,
        ) from None
    deadline = time.monotonic() + timeout
    try:
        log.info("waiting up to %g s for the browser to be redirected to %s", timeout, redirect_uri)
        ready()
        while not outcome:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _timed_out(timeout)
            server.timeout = min(left, 1.0)
            server.handle_request()
    finally:
        server.server_close()
    if isinstance(outcome[0], BaseException):
        raise outcome[0]


def _timed_out(timeout: float) -> AuthorizationFailed:
    return AuthorizationFailed(
        f"no redirect within {timeout:g} s; nothing was saved, run authorize again (or raise --timeout)",
        exit_code=ExitCode.TEMPFAIL,
    )


def read_pasted(stream: TextIO, *, timeout: float) -> str:
    """The first non-empty line of ``stream``, waiting at most ``timeout`` seconds."""
    import select

    fd = stream.fileno()
    deadline = time.monotonic() + timeout
    buffer = b""
    while True:
        line, newline, rest = buffer.partition(b"\n")
        if newline and line.strip():
            break
        if newline:
            buffer = rest
            continue
        left = deadline - time.monotonic()
        if left <= 0:
            raise _timed_out(timeout)
        readable, _, _ = select.select([fd], [], [], left)
        if not readable:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            if buffer.strip():
                line = buffer
                break
            raise AuthorizationFailed(
                "end of input before a redirect URL or code was pasted; nothing was saved",
                exit_code=ExitCode.DATAERR,
            )
        buffer += chunk
        if len(buffer) > MAX_PASTE_BYTES:
            raise AuthorizationFailed(
                f"more than {MAX_PASTE_BYTES} bytes without a line end: not a redirect URL",
                exit_code=ExitCode.DATAERR,
            )
    text = line.decode("utf-8", "replace").strip()
    redact.register(text)  # it holds the code
    return text


# -- exchange and save ---------------------------------------------------------------


def _previous(path: str) -> tuple[dict[str, Any], Token | None, int]:
    """The old cache's object (for its non-token fields), its token if any, and its size."""
    try:
        with open(path, "rb") as f:
            raw = f.read(cache.MAX_CACHE_BYTES + 1)
    except FileNotFoundError:
        return {}, None, 0
    except OSError as e:
        raise CacheMissingError(path, f"exists but cannot be read: {e.strerror or e}") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        data = None
    if not isinstance(data, dict):
        log.warning("the previous cache %s is not a JSON object; it is replaced whole", path)
        return {}, None, len(raw)
    redact.register(data.get("access_token"), data.get("refresh_token"))
    try:
        token: Token | None = cache.parse_token(data, path=path, raw=raw)
    except TokenRefreshError:
        token = None
    return data, token, len(raw)


def new_cache_object(previous: dict[str, Any], response: dict[str, Any], *, sent_at: float) -> dict[str, Any]:
    """The old object's non-token fields, then the response, issued_at = when the request was sent."""
    data = {k: v for k, v in previous.items() if k not in cache.TOKEN_FIELDS}
    data.update(response)
    style = "float"
    if "issued_at" in previous:
        with contextlib.suppress(ValueError, OverflowError):
            style = cache.parse_issued_at(previous["issued_at"])[1]
    data["issued_at"] = cache.format_issued_at(sent_at, style)
    return data


def preflight(path: str) -> None:
    """Prove, before anyone logs in, that the cache is readable and its directory writable."""
    _previous(path)
    with cache.PendingWrite(path, reserve=cache.RESERVE_SLACK):
        pass


def exchange_and_save(
    *,
    config: Config,
    request: AuthRequest,
    code: str,
    client_id: str,
    credentials: Credentials | None,
    clock: Clock,
    session_factory: SessionFactory,
) -> Result:
    """Under the cache lock: reserve the new file, exchange the code, save atomically."""
    from token_refresh import saxo
    from token_refresh.cycle import acquire_lock, lock_path

    redact.register(code)
    path = os.path.realpath(config.cache_path)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": request.redirect_uri}
    if request.verifier is not None:
        form.update(client_id=client_id, code_verifier=request.verifier)
        credentials = None  # PKCE: the verifier, not the secret, proves who asks
    with acquire_lock(lock_path(path), config.lock_timeout_secs):
        for name in cache.remove_stale_temps(path):
            log.warning("removed %s left by an interrupted run", name)
        previous, old_token, old_size = _previous(path)
        with cache.PendingWrite(path, reserve=old_size + cache.RESERVE_SLACK) as pending:
            session = session_factory()
            sent_at = clock()
            try:
                response = saxo.post_token_request(
                    session,
                    token_url=config.token_url,
                    form=form,
                    credentials=credentials,
                    timeout=config.http_timeout_secs,
                    grant=GRANT,
                )
            except ReauthorizationRequired as e:
                raise AuthorizationFailed(
                    f"{e.reason}; a code is single-use and expires within minutes: run authorize again",
                    exit_code=ExitCode.NOPERM,
                ) from None
            content = cache.serialize(new_cache_object(previous, response, sent_at=sent_at))
            pending.commit(content)
    token = cache.parse_token(json.loads(content), path=path, raw=content)
    assessment = classify(token, now=clock(), horizon=config.horizon_secs)
    return Result(token=token, assessment=assessment, path=path, replaced=old_token)


# -- the command ----------------------------------------------------------------------


def _open_browser(url: str) -> None:
    """Start the browser in the background: a console browser blocks until it quits."""
    import threading
    import webbrowser

    def run() -> None:
        try:
            opened = webbrowser.open(url)
        except Exception as e:  # a broken browser setup must not end the login
            log.debug("webbrowser failed: %s", e)
            opened = False
        if not opened:
            log.warning("could not start a browser; open the URL above yourself")

    threading.Thread(target=run, name="browser", daemon=True).start()


def authorize(
    *,
    config: Config,
    client_id: str,
    credentials: Credentials | None,
    mode: str,
    pkce: bool,
    open_browser: bool,
    timeout: float,
    clock: Clock,
    session_factory: SessionFactory,
    stdin: TextIO,
    out: TextIO,
) -> Result:
    """Run the whole flow: URL, browser, redirect, exchange, save. Raises TokenRefreshError."""
    path = os.path.realpath(config.cache_path)
    preflight(path)
    request = new_request(config, client_id=client_id, pkce=pkce)
    if open_browser and not (has_display() or os.environ.get("BROWSER")):
        # over SSH a console browser would take the terminal that the paste is read from
        log.info("no display: not starting a browser; open the URL on any machine")
        open_browser = False

    def announce() -> None:
        out.write(f"Open this URL in a browser and log in to Saxo:\n\n  {request.url}\n\n")
        out.flush()
        if open_browser:
            _open_browser(request.url)

    def finish(redirect: Redirect) -> Result:
        code = check_redirect(redirect, expected_state=request.state)
        return exchange_and_save(
            config=config,
            request=request,
            code=code,
            client_id=client_id,
            credentials=credentials,
            clock=clock,
            session_factory=session_factory,
        )

    if mode == "listen":
        results: list[Result] = []

        def on_redirect(redirect: Redirect) -> str:
            results.append(finish(redirect))
            return "token-refresh saved the new token"

        wait_for_redirect(request.redirect_uri, timeout=timeout, on_redirect=on_redirect, ready=announce)
        return results[0]
    announce()
    out.write(
        "After logging in, the browser is sent to the redirect URL (the page may fail to load).\n"
        "Paste that whole URL from the address bar (or just the code), then press Enter:\n"
    )
    out.flush()
    return finish(parse_redirect(read_pasted(stdin, timeout=timeout)))


def _expiry(left: float | None, at: float | None) -> str:
    if left is None or at is None:
        return "unknown"
    return f"{left:.0f} s left, expires {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(at))}"


def summary(result: Result) -> str:
    """One line for the log: fingerprints and expiries, never a token."""
    a, token = result.assessment, result.token
    fp = redact.fingerprint
    names = f"access {fp(token.access_token)}, refresh {fp(token.refresh_token)}"
    text = (
        f"authorized: new token saved: access token {_expiry(a.access_left, a.access_expires_at)}, "
        f"refresh token {_expiry(a.refresh_left, a.refresh_expires_at)} [{names}]"
    )
    if result.replaced is not None:
        text += f"; replaced access {redact.fingerprint(result.replaced.access_token)}"
    return f"{text} (cache {result.path})"
