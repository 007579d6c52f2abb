"""The pure parts of the authorization-code flow: PKCE, the login URL, reading and checking redirects."""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import sys
from typing import Literal, Mapping, NamedTuple, Protocol
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from token_refresh import fmt, redact
from token_refresh.errors import AuthorizationRefused, ConfigError, RedirectMismatch

__all__ = [
    "AuthRequest",
    "LoginSettings",
    "Mode",
    "Redirect",
    "build_authorize_url",
    "check_redirect",
    "choose_mode",
    "code_challenge",
    "listen_address",
    "new_request",
    "new_verifier",
    "parse_redirect",
    "require_redirect_uri",
]

LISTEN_HOSTS = ("localhost", "127.0.0.1")


class LoginSettings(Protocol):
    """What the code flow needs of the configuration (``config.Config`` has it; no import upward)."""

    @property
    def redirect_uri(self) -> str | None: ...

    @property
    def authorize_url(self) -> str: ...

    @property
    def source(self) -> str: ...


Mode = Literal["listen", "paste"]  # how the redirect comes back: our listener, or a pasted URL


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


def new_request(config: LoginSettings, *, client_id: str, pkce: bool) -> AuthRequest:
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


def check_redirect(redirect: Redirect, *, expected_state: str, require_state: bool = False) -> str:
    """Return the code, or raise: 77 for a refusal, 65 for a redirect that is not this request's.

    ``require_state`` (the listener) accepts nothing without this request's state, so a forged
    link cannot make us exchange someone else's code (login CSRF, RFC 6749 §10.12).
    """
    state_ok = redirect.state is not None and secrets.compare_digest(redirect.state, expected_state)
    if (redirect.state is not None and not state_ok) or (require_state and not state_ok):
        raise RedirectMismatch(
            "the redirect's state does not match this request (a stale or foreign login?); "
            "nothing was exchanged; use the URL this run printed"
        )
    if redirect.error is not None:
        detail = fmt.printable(redirect.error)
        if redirect.error_description:
            detail += f": {fmt.printable(redirect.error_description)}"
        raise AuthorizationRefused(f"the authorization server refused ({detail})")
    if redirect.code is None:
        raise RedirectMismatch(
            "the redirect holds no authorization code; paste the whole URL the browser was sent to"
        )
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


def require_redirect_uri(config: LoginSettings) -> str:
    """``redirect_uri`` from the config, or exit 78 naming the key."""
    uri = config.redirect_uri
    if not uri:
        raise ConfigError(
            config.source,
            [
                "redirect_uri: required by authorize "
                "(the redirect URL registered for the app with the authorization server)"
            ],
        )
    if "#" in uri:
        raise ConfigError(config.source, [f"redirect_uri: must not contain a fragment, got {uri!r}"])
    return uri


def has_display(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether a graphical browser can be started here (macOS and Windows always can)."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY"))


def choose_mode(config: LoginSettings, requested: Mode | None) -> Mode:
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
