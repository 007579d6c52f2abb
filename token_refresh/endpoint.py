"""The token endpoint's protocol (RFC 6749): grants, client authentication, answers to typed errors.

It speaks through a ``Transport`` and never imports requests; it decides no exit status, it
raises the error class that names what happened.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, NamedTuple

from token_refresh import fmt, redact
from token_refresh import token as tokens
from token_refresh.errors import (
    CheckInconclusive,
    ClientRejected,
    EndpointMisconfigured,
    EndpointUnavailable,
    NoAnswer,
    ReauthorizationRequired,
    UnusableResponse,
)

if TYPE_CHECKING:
    from token_refresh.transport import Response, Transport

__all__ = ["Credentials", "Granted", "check_client", "code_grant", "interpret", "refresh_grant"]

log = logging.getLogger(__name__)

REFRESH = "refresh"
CODE = "authorization code"


class Credentials(NamedTuple):
    """The OAuth client; no secret means a public client (RFC 6749 §2.1). ``repr`` hides the secret."""

    app_key: str
    app_secret: str | None = None

    @property
    def public(self) -> bool:
        return not self.app_secret

    @property
    def client_type(self) -> str:
        """``public`` or ``confidential``, as the log and ``status`` name it."""
        return "public" if self.public else "confidential"

    @property
    def kind(self) -> str:
        return f"{self.client_type} client ({'no secret; PKCE' if self.public else 'app secret'})"

    def __repr__(self) -> str:
        secret = "None" if self.app_secret is None else "<SECRET>"
        return f"Credentials(app_key={self.app_key!r}, app_secret={secret})"


class Granted(NamedTuple):
    """A usable answer: the token fields a cache may hold, and what was odd about the answer."""

    fields: dict[str, Any]
    notes: list[str]
    status: int


def client_auth(credentials: Credentials) -> tuple[dict[str, str], dict[str, str]]:
    """(headers, form fields) that authenticate the client.

    A confidential client uses HTTP Basic with both halves form-encoded first (RFC 6749 §2.3.1),
    so a secret with ``+``, ``%``, ``:`` or non-ASCII survives; a hex secret is unchanged. A public
    client sends only ``client_id`` in the body (RFC 6749 §3.2.1).
    """
    if credentials.public:
        return {}, {"client_id": credentials.app_key}
    import base64
    from urllib.parse import quote_plus

    assert credentials.app_secret is not None
    pair = f"{quote_plus(credentials.app_key)}:{quote_plus(credentials.app_secret)}"
    basic = base64.b64encode(pair.encode("utf-8")).decode("ascii")
    # the secret with its encoded forms and both header values: this one and the unencoded one
    redact.register_basic_auth(credentials.app_key, credentials.app_secret)
    redact.register(basic)
    return {"Authorization": f"Basic {basic}"}, {}


def _post(
    transport: Transport, *, token_url: str, form: dict[str, str], credentials: Credentials, timeout: float
) -> Response:
    from token_refresh.transport import Request

    headers, extra = client_auth(credentials)
    headers["Accept"] = "application/json"
    return transport(Request("POST", token_url, headers, {**form, **extra}, timeout))


def refresh_grant(
    transport: Transport, *, token_url: str, refresh_token: str, credentials: Credentials, timeout: float
) -> Granted:
    """Spend ``refresh_token`` for a new token (Saxo rotates the refresh token every time; RFC 6749 §6)."""
    redact.register(refresh_token)
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    response = _post(transport, token_url=token_url, form=form, credentials=credentials, timeout=timeout)
    return interpret(response, grant=REFRESH, sent_secret=not credentials.public)


def code_grant(
    transport: Transport,
    *,
    token_url: str,
    code: str,
    redirect_uri: str,
    verifier: str | None,
    credentials: Credentials,
    timeout: float,
) -> Granted:
    """Exchange an authorization code (RFC 6749 §4.1.3), with the PKCE verifier when there is one."""
    redact.register(code, verifier)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
    if verifier is not None:
        form["code_verifier"] = verifier  # RFC 7636 §4.5
    response = _post(transport, token_url=token_url, form=form, credentials=credentials, timeout=timeout)
    return interpret(response, grant=CODE, sent_secret=not credentials.public)


# Belongs to no token family, so a server's reuse detection has nothing to revoke for it.
CHECK_REFRESH_TOKEN = "token-refresh-credential-check"  # noqa: S105 - a deliberately invalid token
CHECK_WRONG_SECRET = "not-the-app-secret-token-refresh-check"  # noqa: S105 - deliberately wrong


def check_client(transport: Transport, *, token_url: str, credentials: Credentials, timeout: float) -> str:
    """Prove the endpoint accepts the client without spending anything; return what proved it.

    A refresh grant with a made-up refresh token: a server authenticates the client before it
    validates the grant (RFC 6749 §6), so ``invalid_grant`` means the client was accepted and
    ``invalid_client``/401 that it was not (RFC 6749 §5.2). A control request with a wrong secret
    (a public client: a wrong app key) must then be refused as a client, or the endpoint looked
    at the grant first and its ``invalid_grant`` proved nothing.
    """
    answer = _made_up_grant(transport, token_url=token_url, credentials=credentials, timeout=timeout)
    if answer != "invalid_grant":
        raise CheckInconclusive(f"a made-up refresh token got {answer}, not invalid_grant")
    wrong, what = (
        (Credentials(CHECK_REFRESH_TOKEN), "app key")
        if credentials.public
        else (Credentials(credentials.app_key, CHECK_WRONG_SECRET), "secret")
    )
    try:
        control = _made_up_grant(transport, token_url=token_url, credentials=wrong, timeout=timeout)
    except ClientRejected as e:
        return f"invalid_grant for a made-up refresh token, {e.where} for a wrong {what}"
    raise CheckInconclusive(f"a wrong {what} got {control} too: the endpoint looks at the grant first")


def _made_up_grant(transport: Transport, *, token_url: str, credentials: Credentials, timeout: float) -> str:
    """The endpoint's answer to a refresh grant with ``CHECK_REFRESH_TOKEN``; a refused client raises."""
    form = {"grant_type": "refresh_token", "refresh_token": CHECK_REFRESH_TOKEN}
    try:
        response = _post(transport, token_url=token_url, form=form, credentials=credentials, timeout=timeout)
        granted = interpret(response, grant="credential check", sent_secret=not credentials.public)
    except ReauthorizationRequired as e:
        return e.oauth_error or "HTTP 400 without an OAuth error"
    except UnusableResponse as e:
        return f"{e.where} without a usable token"
    except NoAnswer as e:  # nothing is at stake in a check: a lost answer is only unavailable
        raise EndpointUnavailable(e.detail, status=e.status) from None
    return f"HTTP {granted.status} with a new token"


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        data = tokens.decode_json(body, strict=False)
    except tokens.TokenSchemaError:
        return None
    return data if isinstance(data, dict) else None


def _summary(response: Response) -> str:
    ctype = response.headers.get("content-type", "no content type").split(";")[0]
    return f"{fmt.printable(ctype, 60)}, {len(response.body)} bytes"


def interpret(response: Response, *, grant: str, sent_secret: bool = True) -> Granted:
    """Map an answer to the new token fields, or raise the error that says what happened."""
    status = response.status
    body = _json_object(response.body)
    if body:
        # a well-formed answer holds fresh tokens: register them before anything can print them;
        # an OpenID Connect id_token (a signed JWT about the user) is kept in the cache, never printed
        redact.register(body.get("access_token"), body.get("refresh_token"), body.get("id_token"))
    error = body.get("error") if body else None
    error = error if isinstance(error, str) else None
    detail = None
    if error is not None:
        description = body.get("error_description") if body else None
        detail = fmt.printable(f"{error}: {description}" if isinstance(description, str) else error)
    where = f"HTTP {status}"

    if error == "invalid_grant" or (status == 400 and error not in ("invalid_client", "unauthorized_client")):
        raise ReauthorizationRequired(
            f"the token endpoint refused the {grant} grant ({where}, {detail or _summary(response)})",
            oauth_error=error,
        )
    if error in ("invalid_client", "unauthorized_client") or status in (401, 403):
        raise ClientRejected(detail or _summary(response), status=status, sent_secret=sent_secret)
    if status in (502, 504):
        # a gateway answered in the endpoint's place: the grant may have been made behind it
        raise NoAnswer(
            f"a gateway answered {where} in the token endpoint's place ({detail or _summary(response)})",
            status=status,
        )
    if status == 429 or 500 <= status <= 599:
        raise EndpointUnavailable(detail or _summary(response), status=status)
    if 200 <= status <= 299:
        if body is None:
            raise UnusableResponse(f"not a JSON object: {_summary(response)}", status=status)
        try:
            fields, notes = tokens.from_response(body)
        except tokens.TokenSchemaError as e:
            raise UnusableResponse(str(e), status=status) from None
        if grant == REFRESH and "refresh_token" not in fields:
            notes.append("no new refresh token in the answer: the old one is kept (RFC 6749 §6)")
        return Granted(fields, notes, status)
    location = None
    if 300 <= status <= 399:
        location = fmt.printable(response.headers.get("location", "no Location header"), 300)
    raise EndpointMisconfigured(detail or _summary(response), status=status, location=location)
