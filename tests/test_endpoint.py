"""The token endpoint's protocol in-process: what the server sees, and how every answer maps to an error.

A fake ``Transport`` records each ``Request`` and plays a canned answer: no sockets, no sleeps.
The redaction registry starts empty in every test, so a secret missing from a message proves that
the grant functions themselves registered it.
"""

from __future__ import annotations

import base64
import json
import math
import secrets
from typing import Any, Callable, Union
from urllib.parse import quote, quote_plus, unquote_plus

import pytest

from token_refresh import endpoint, redact
from token_refresh.endpoint import Credentials, Granted
from token_refresh.errors import (
    ClientRejected,
    EndpointError,
    EndpointMisconfigured,
    EndpointUnavailable,
    EndpointUnreachable,
    ExitCode,
    NoAnswer,
    ReauthorizationRequired,
    TokenRefreshError,
    UnusableResponse,
)
from token_refresh.transport import Request, Response

URL = "https://sim.logonvalidation.net/token"
REDIRECT_URI = "http://127.0.0.1:8765/callback"
APP_KEY = "te-app-key-1234"
APP_SECRET = "te-app-secret-5678"
CONFIDENTIAL = Credentials(APP_KEY, APP_SECRET)
PUBLIC = Credentials(APP_KEY, None)
OLD_REFRESH = "te-old-refresh-token"
ACCESS = "eyJ.te-access.token"
NEW_REFRESH = "te-new-refresh-token"
TOKEN: dict[str, Any] = {
    "access_token": ACCESS,
    "token_type": "Bearer",
    "expires_in": 1200,
    "refresh_token": NEW_REFRESH,
    "refresh_token_expires_in": 3600,
    "base_uri": None,
}
DROP = object()  # in a table row: remove this key

Answer = Union[Response, BaseException, Callable[[Request], Response]]


class FakeTransport:
    """Records every request; answers each with the next canned Response, exception or function."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.requests: list[Request] = []

    def __call__(self, request: Request) -> Response:
        self.requests.append(request)
        assert self.answers, "the endpoint sent more requests than the test expected"
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        if isinstance(answer, Response):
            return answer
        return answer(request)


def reply(status: int, body: object = None, *, headers: dict[str, str] | None = None) -> Response:
    """A Response: ``body`` bytes as they are (HTML if it looks so), else JSON (NaN allowed, as sent)."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    ctype = "text/html" if raw.startswith(b"<") else "application/json"
    all_headers = {"content-type": ctype}
    all_headers.update({k.lower(): v for k, v in (headers or {}).items()})
    return Response(status, all_headers, raw)


def refresh(
    transport: FakeTransport, credentials: Credentials = CONFIDENTIAL, refresh_token: str = OLD_REFRESH
) -> Granted:
    return endpoint.refresh_grant(
        transport, token_url=URL, refresh_token=refresh_token, credentials=credentials, timeout=7.0
    )


def exchange(
    transport: FakeTransport,
    credentials: Credentials = CONFIDENTIAL,
    code: str = "te-code-abcdef",
    verifier: str | None = None,
) -> Granted:
    return endpoint.code_grant(
        transport,
        token_url=URL,
        code=code,
        redirect_uri=REDIRECT_URI,
        verifier=verifier,
        credentials=credentials,
        timeout=5.0,
    )


def grant(kind: str, transport: FakeTransport, credentials: Credentials, *spent: str) -> Granted:
    """A refresh grant spending ``spent[0]``, or a code grant spending (code, verifier)."""
    if kind == "refresh":
        return refresh(transport, credentials, *spent)
    return exchange(transport, credentials, *spent)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def edited(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = {**base, **changes}
    return {k: v for k, v in out.items() if v is not DROP}


@pytest.fixture(autouse=True)
def empty_redaction_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redact, "_secrets", set())


# -- what the server sees ------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201])
def test_refresh_success_sends_form_and_basic_auth(status: int) -> None:
    transport = FakeTransport(reply(status, TOKEN))
    granted = refresh(transport)
    assert granted == Granted(TOKEN, [], status)
    (request,) = transport.requests
    assert (request.method, request.url, request.timeout) == ("POST", URL, 7.0)
    assert request.form == {"grant_type": "refresh_token", "refresh_token": OLD_REFRESH}
    assert request.headers == {"Authorization": basic(APP_KEY, APP_SECRET), "Accept": "application/json"}


@pytest.mark.parametrize(
    ("app_key", "app_secret"),
    [
        pytest.param(APP_KEY, "s3cr+t%25:€uro-1", id="plus-percent-colon-euro"),
        pytest.param(APP_KEY, "a:b:c:d", id="colons"),
        pytest.param("te key+odd/€", "p%20q r+s", id="odd-key-too"),
    ],
)
def test_basic_auth_form_encodes_both_halves_before_base64(app_key: str, app_secret: str) -> None:
    transport = FakeTransport(reply(201, TOKEN))
    refresh(transport, Credentials(app_key, app_secret))
    header = transport.requests[0].headers["Authorization"]
    assert header.startswith("Basic ")
    decoded = base64.b64decode(header[len("Basic ") :], validate=True).decode("ascii")  # encoded: pure ASCII
    assert decoded.count(":") == 1  # the secret's own colons are %3A, so the split is unambiguous
    user, password = decoded.split(":")
    assert (unquote_plus(user), unquote_plus(password)) == (app_key, app_secret)
    assert header != basic(app_key, app_secret)


def test_hex_secret_gives_the_plain_key_colon_secret_header() -> None:
    hex_secret = "0123456789abcdef0123456789abcdef"
    transport = FakeTransport(reply(201, TOKEN))
    refresh(transport, Credentials(APP_KEY, hex_secret))
    expected = base64.b64encode(f"{APP_KEY}:{hex_secret}".encode()).decode()
    assert transport.requests[0].headers["Authorization"] == f"Basic {expected}"


@pytest.mark.parametrize("no_secret", [None, ""], ids=["None", "empty"])
def test_public_client_sends_client_id_and_no_authorization(no_secret: str | None) -> None:
    transport = FakeTransport(reply(201, TOKEN))
    refresh(transport, Credentials(APP_KEY, no_secret))
    (request,) = transport.requests
    assert request.form == {"grant_type": "refresh_token", "refresh_token": OLD_REFRESH, "client_id": APP_KEY}
    assert request.headers == {"Accept": "application/json"}


@pytest.mark.parametrize(
    ("credentials", "verifier", "extra_form", "headers"),
    [
        pytest.param(
            CONFIDENTIAL, None, {}, {"Authorization": basic(APP_KEY, APP_SECRET)}, id="confidential"
        ),
        pytest.param(
            CONFIDENTIAL,
            "te-verifier-" + "v" * 40,
            {"code_verifier": "te-verifier-" + "v" * 40},
            {"Authorization": basic(APP_KEY, APP_SECRET)},
            id="confidential+pkce-sends-both",
        ),
        pytest.param(
            PUBLIC,
            "te-verifier-" + "w" * 40,
            {"code_verifier": "te-verifier-" + "w" * 40, "client_id": APP_KEY},
            {},
            id="public+pkce",
        ),
        pytest.param(PUBLIC, None, {"client_id": APP_KEY}, {}, id="public"),
    ],
)
def test_code_grant_sends_code_redirect_uri_and_verifier(
    credentials: Credentials, verifier: str | None, extra_form: dict[str, str], headers: dict[str, str]
) -> None:
    transport = FakeTransport(reply(201, TOKEN))
    granted = exchange(transport, credentials, "te-code-abcdef", verifier)
    assert granted == Granted(TOKEN, [], 201)
    (request,) = transport.requests
    assert (request.method, request.url, request.timeout) == ("POST", URL, 5.0)
    assert request.form == {
        "grant_type": "authorization_code",
        "code": "te-code-abcdef",
        "redirect_uri": REDIRECT_URI,
        **extra_form,
    }
    assert request.headers == {**headers, "Accept": "application/json"}


# -- answers to errors ---------------------------------------------------------------------

HTML = b"<html>nope</html>"
ELSEWHERE = {"Location": "https://elsewhere.example/token"}


@pytest.mark.parametrize(
    ("status", "body", "headers", "error", "code", "words"),
    [
        # invalid_grant wins whatever the status
        (400, {"error": "invalid_grant", "error_description": "token expired"}, {},
         ReauthorizationRequired, 77,
         ["refused the refresh grant", "HTTP 400", "invalid_grant: token expired",
          "Manual re-authorization required"]),
        (401, {"error": "invalid_grant"}, {}, ReauthorizationRequired, 77, ["HTTP 401", "invalid_grant"]),
        (503, {"error": "invalid_grant"}, {}, ReauthorizationRequired, 77, ["HTTP 503", "invalid_grant"]),
        (200, {"error": "invalid_grant"}, {}, ReauthorizationRequired, 77, ["HTTP 200", "invalid_grant"]),
        # any other 400 is a refusal too, unless it names the client
        (400, {"error": "invalid_request", "error_description": "malformed"}, {},
         ReauthorizationRequired, 77, ["HTTP 400", "invalid_request: malformed"]),
        (400, {"error": "unsupported_grant_type"}, {}, ReauthorizationRequired, 77,
         ["unsupported_grant_type"]),
        (400, HTML, {}, ReauthorizationRequired, 77, ["HTTP 400", "text/html, 17 bytes"]),
        # the client's credentials
        (400, {"error": "invalid_client"}, {}, ClientRejected, 78,
         ["rejected the client credentials", "HTTP 400", "invalid_client", "check the app key and secret"]),
        (400, {"error": "unauthorized_client", "error_description": "not for this app"}, {},
         ClientRejected, 78, ["HTTP 400", "unauthorized_client: not for this app"]),
        (200, {"error": "invalid_client"}, {}, ClientRejected, 78, ["HTTP 200", "invalid_client"]),
        (401, HTML, {}, ClientRejected, 78, ["rejected the client credentials", "HTTP 401"]),
        (403, {"error": "access_denied"}, {}, ClientRejected, 78, ["HTTP 403", "access_denied"]),
        # come back later
        (429, b"", {}, EndpointUnavailable, 75, ["unavailable", "HTTP 429", "0 bytes", "try again later"]),
        (500, HTML, {}, EndpointUnavailable, 75, ["unavailable", "HTTP 500", "text/html, 17 bytes"]),
        # a gateway answered in the endpoint's place: the grant may have been made behind it
        (502, HTML, {}, NoAnswer, 75, ["a gateway answered HTTP 502", "may already be spent"]),
        (503, {"error": "temporarily_unavailable"}, {}, EndpointUnavailable, 75,
         ["HTTP 503", "temporarily_unavailable"]),
        (504, HTML, {}, NoAnswer, 75, ["a gateway answered HTTP 504", "text/html", "may already be spent"]),
        (599, HTML, {}, EndpointUnavailable, 75, ["HTTP 599"]),
        # a 2xx without a usable token: it may have spent the refresh token
        (200, b"<html>maintenance</html>", {}, UnusableResponse, 75,
         ["unusable token response", "HTTP 200", "not a JSON object", "refresh token may", "spent"]),
        (201, b'{"access_token": "eyJ', {}, UnusableResponse, 75, ["HTTP 201", "not a JSON object"]),
        (200, ["a"], {}, UnusableResponse, 75, ["not a JSON object"]),
        (200, b"\xff\xfe{}", {}, UnusableResponse, 75, ["not a JSON object"]),
        (204, b"", {}, UnusableResponse, 75, ["HTTP 204", "not a JSON object"]),
        (200, {}, {}, UnusableResponse, 75, ["neither 'access_token' nor 'refresh_token'"]),
        (201, {"access_token": 12, "refresh_token": ["a"], "expires_in": "1200"}, {}, UnusableResponse, 75,
         ["neither 'access_token' nor 'refresh_token'"]),
        (200, {"access_token": "", "refresh_token": "", "expires_in": 1200}, {}, UnusableResponse, 75,
         ["neither"]),
        # token_url is wrong
        (301, b"", ELSEWHERE, EndpointMisconfigured, 78,
         ["HTTP 301", "redirected to https://elsewhere.example/token", "check token_url"]),
        (302, HTML, ELSEWHERE, EndpointMisconfigured, 78, ["HTTP 302", "redirected to https://elsewhere.example"]),
        (307, b"", ELSEWHERE, EndpointMisconfigured, 78, ["HTTP 307", "redirected to https://elsewhere.example"]),
        (308, b"", ELSEWHERE, EndpointMisconfigured, 78, ["HTTP 308", "redirected to https://elsewhere.example"]),
        (302, b"", {}, EndpointMisconfigured, 78, ["HTTP 302", "no Location header"]),
        (404, {"error": "not_found"}, {}, EndpointMisconfigured, 78,
         ["HTTP 404", "not_found", "check token_url"]),
        (404, HTML, {}, EndpointMisconfigured, 78, ["HTTP 404", "17 bytes", "check token_url"]),
        (405, HTML, {}, EndpointMisconfigured, 78, ["HTTP 405"]),
        (418, HTML, {}, EndpointMisconfigured, 78, ["HTTP 418"]),
    ],
)  # fmt: skip
def test_answers_map_to_errors(
    status: int,
    body: object,
    headers: dict[str, str],
    error: type[TokenRefreshError],
    code: int,
    words: list[str],
) -> None:
    transport = FakeTransport(reply(status, body, headers=headers))
    with pytest.raises(error) as info:
        refresh(transport)
    e = info.value
    assert type(e) is error
    assert e.exit_code == code
    for word in words:
        assert word in str(e)
    if isinstance(e, EndpointError):
        assert e.status == status
    assert len(transport.requests) == 1


@pytest.mark.parametrize(
    ("status", "body", "oauth_error"),
    [
        (400, {"error": "invalid_grant", "error_description": "token already used"}, "invalid_grant"),
        (401, {"error": "invalid_grant"}, "invalid_grant"),
        (400, {"error": "invalid_request", "error_description": "malformed"}, "invalid_request"),
        (400, {"error": 42}, None),
        (400, HTML, None),
    ],
)
def test_refusal_keeps_the_oauth_error(status: int, body: object, oauth_error: str | None) -> None:
    with pytest.raises(ReauthorizationRequired) as info:
        refresh(FakeTransport(reply(status, body)))
    assert info.value.oauth_error == oauth_error
    assert info.value.exit_code == ExitCode.NOPERM


@pytest.mark.parametrize(
    ("credentials", "advice", "not_said"),
    [
        (CONFIDENTIAL, "check the app key and secret", "no secret was sent"),
        (PUBLIC, "no secret was sent: a public client", "check the app key and secret"),
    ],
    ids=["confidential", "public"],
)
@pytest.mark.parametrize("kind", ["refresh", "code"])
def test_client_rejected_says_whether_a_secret_was_sent(
    credentials: Credentials, advice: str, not_said: str, kind: str
) -> None:
    transport = FakeTransport(reply(401, {"error": "invalid_client"}))
    spent = [OLD_REFRESH] if kind == "refresh" else ["te-code-abcdef", "te-verifier-" + "x" * 40]
    with pytest.raises(ClientRejected) as info:
        grant(kind, transport, credentials, *spent)
    assert advice in str(info.value)
    assert not_said not in str(info.value)
    assert info.value.exit_code == ExitCode.CONFIG


@pytest.mark.parametrize(
    "failure",
    [
        NoAnswer("ReadTimeout: read timed out"),
        EndpointUnreachable("ConnectionRefusedError: refused (3 attempts over 2.0 s)"),
        UnusableResponse("the body is larger than 8 MiB", status=200),
    ],
    ids=lambda e: type(e).__name__,
)
def test_transport_failures_pass_through_unchanged(failure: EndpointError) -> None:
    transport = FakeTransport(failure)
    with pytest.raises(type(failure)) as info:
        refresh(transport)
    assert info.value is failure
    assert info.value.exit_code == ExitCode.TEMPFAIL


# -- 2xx normalisation (token.from_response, as refresh_grant returns it) -----------------


@pytest.mark.parametrize(
    ("changes", "field_changes", "notes"),
    [
        pytest.param({}, {}, [], id="clean"),
        pytest.param({"expires_in": -60}, {"expires_in": 0},
                     ["'expires_in' is not believable (-60): saved as 0"], id="expires_in-negative"),
        pytest.param({"expires_in": 0}, {"expires_in": 0}, ["'expires_in' is not believable (0): saved as 0"],
                     id="expires_in-zero"),
        pytest.param({"expires_in": DROP}, {"expires_in": 0}, ["'expires_in' is missing: saved as 0"],
                     id="expires_in-missing"),
        pytest.param({"expires_in": "1200"}, {"expires_in": 1200},
                     ["'expires_in' was a string: saved as a number"], id="expires_in-string"),
        pytest.param({"expires_in": " 90.5 "}, {"expires_in": 90.5},
                     ["'expires_in' was a string: saved as a number"], id="expires_in-float-string"),
        pytest.param({"expires_in": 1e10}, {"expires_in": 0}, ["'expires_in' is not believable"],
                     id="expires_in-1e10"),
        pytest.param({"expires_in": True}, {"expires_in": 0}, ["'expires_in' is a bool"],
                     id="expires_in-bool"),
        pytest.param({"expires_in": "soon"}, {"expires_in": 0}, ["'expires_in' is not believable ('soon')"],
                     id="expires_in-word"),
        pytest.param({"refresh_token_expires_in": "3600"}, {"refresh_token_expires_in": 3600},
                     ["'refresh_token_expires_in' was a string: saved as a number"], id="rt-lifetime-string"),
        pytest.param({"refresh_token_expires_in": -1}, {"refresh_token_expires_in": DROP},
                     ["'refresh_token_expires_in' is not believable (-1): saved as unknown"],
                     id="rt-lifetime-negative"),
        pytest.param({"weird": math.nan}, {}, ["dropped field 'weird' (not finite"], id="extra-nan"),
        pytest.param({"weird": math.inf}, {}, ["dropped field 'weird'"], id="extra-inf"),
        pytest.param({"weird": {"a": [1, -math.inf]}}, {}, ["dropped field 'weird'"], id="extra-nested-inf"),
        pytest.param({"blob": "x" * 70_000}, {},
                     ["dropped field 'blob' (not finite, or larger than 65536 bytes)"], id="extra-huge"),
        pytest.param({"blob": "x" * 1000}, {"blob": "x" * 1000}, [], id="extra-small-kept"),
        pytest.param({"issued_at": 1}, {}, [], id="server-issued_at-ignored"),
        pytest.param({"access_token": DROP}, {"access_token": "", "expires_in": 0},
                     ["no access token in the answer: saved without one"], id="no-access-token"),
        pytest.param({"access_token": ""}, {"access_token": "", "expires_in": 0},
                     ["no access token in the answer"], id="empty-access-token"),
        pytest.param({"refresh_token": DROP}, {"refresh_token": DROP},
                     ["no new refresh token in the answer: the old one is kept (RFC 6749 §6)"],
                     id="no-refresh-token"),
        pytest.param({"refresh_token": 7}, {"refresh_token": DROP}, ["RFC 6749 §6"],
                     id="refresh-token-not-str"),
    ],
)  # fmt: skip
def test_2xx_is_normalised_with_notes(
    changes: dict[str, Any], field_changes: dict[str, Any], notes: list[str]
) -> None:
    granted = refresh(FakeTransport(reply(200, edited(TOKEN, changes))))
    assert granted.fields == edited(TOKEN, field_changes)
    assert json.dumps(granted.fields, allow_nan=False)  # whatever is kept can be saved as strict JSON
    assert len(granted.notes) == len(notes), granted.notes
    for words, note in zip(notes, granted.notes):
        assert words in note


def test_code_grant_without_refresh_token_has_no_rotation_note() -> None:
    body = edited(TOKEN, {"refresh_token": DROP})
    granted = exchange(FakeTransport(reply(201, body)))
    assert granted.fields == body
    assert granted.notes == []


def test_huge_integer_expires_in_is_saved_as_zero() -> None:
    granted = refresh(
        FakeTransport(reply(200, b'{"access_token": "eyJ.te", "expires_in": 1' + b"0" * 400 + b"}"))
    )
    assert granted.fields["expires_in"] == 0


# -- no secret reaches a message -----------------------------------------------------------

SPLITS: dict[str, Callable[[str], str]] = {
    "plain": lambda s: s,
    "form-encoded": quote_plus,
    "percent-encoded": lambda s: quote(s, safe=""),
    # 15 characters of "invalid_grant: " + 175 dots: the secret straddles the 200-character cut
    "across the 200-character cut": lambda s: "." * 175 + s,
    "split by ESC": lambda s: s[:6] + "\x1b" + s[6:],
    "split by a newline": lambda s: s[:6] + "\n" + s[6:],
    "split by a zero-width space": lambda s: s[:6] + "\u200b" + s[6:],
}


def leaked(secret: str, text: str, width: int = 8) -> list[str]:
    """Every ``width``-character piece of ``secret`` found in ``text``."""
    return [secret[i : i + width] for i in range(len(secret) - width + 1) if secret[i : i + width] in text]


def fresh_secrets() -> tuple[str, str]:
    """A refresh token and an app secret never registered before, with characters URL-encoding changes."""
    return f"te/rt+{secrets.token_hex(12)}=", f"te+s%c:r€t-{secrets.token_hex(8)}"


@pytest.mark.parametrize("split", list(SPLITS))
@pytest.mark.parametrize(
    ("which", "status", "oauth_error", "error"),
    [
        ("refresh token", 400, "invalid_grant", ReauthorizationRequired),
        ("app secret", 401, "invalid_client", ClientRejected),
    ],
)
def test_echoed_secret_never_reaches_the_message(
    split: str, which: str, status: int, oauth_error: str, error: type[TokenRefreshError]
) -> None:
    refresh_token, app_secret = fresh_secrets()
    secret = refresh_token if which == "refresh token" else app_secret
    echoed = SPLITS[split](secret)
    transport = FakeTransport(reply(status, {"error": oauth_error, "error_description": echoed}))
    with pytest.raises(error) as info:
        refresh(transport, Credentials(APP_KEY, app_secret), refresh_token)
    assert leaked(secret, str(info.value)) == []
    assert leaked(secret, repr(info.value)) == []
    assert "<redacted" in str(info.value)  # the rest of the text is kept (the cut may take the ">")


def _echo_everything(request: Request) -> str:
    form = request.form or {}
    return " ".join(
        [
            f"auth={request.headers.get('Authorization', '')}",
            *(f"{k}={v}" for k, v in form.items()),
            *(f"{k}~{quote_plus(v)}" for k, v in form.items()),
        ]
    )


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, ReauthorizationRequired),
        (401, ClientRejected),
        (503, EndpointUnavailable),
        (404, EndpointMisconfigured),
    ],
)
@pytest.mark.parametrize("kind", ["refresh", "code"])
def test_a_server_quoting_the_whole_request_shows_no_secret(
    status: int, error: type[TokenRefreshError], kind: str
) -> None:
    refresh_token, app_secret = fresh_secrets()
    code, verifier = secrets.token_urlsafe(16), secrets.token_urlsafe(32)  # no prefix a field name shares
    transport = FakeTransport(
        lambda r: reply(status, {"error": "oops", "error_description": _echo_everything(r)})
    )
    spent = [refresh_token] if kind == "refresh" else [code, verifier]
    with pytest.raises(error) as info:
        grant(kind, transport, Credentials(APP_KEY, app_secret), *spent)
    sent = transport.requests[0]
    for secret in [app_secret, sent.headers["Authorization"].split()[1], *spent]:
        assert leaked(secret, str(info.value)) == []
    assert "grant_type=" in str(info.value)  # the rest of the text is kept


def test_redirect_location_quoting_the_refresh_token_is_redacted() -> None:
    refresh_token, _ = fresh_secrets()
    location = f"https://elsewhere.example/token?rt={quote_plus(refresh_token)}&raw={refresh_token}"
    with pytest.raises(EndpointMisconfigured) as info:
        refresh(FakeTransport(reply(302, b"", headers={"Location": location})), refresh_token=refresh_token)
    assert "redirected to https://elsewhere.example/token?rt=<redacted>&raw=<redacted>" in str(info.value)
    assert leaked(refresh_token, str(info.value)) == []


def test_new_tokens_in_a_refused_answer_are_redacted() -> None:
    access, new_refresh = f"eyJ.{secrets.token_urlsafe(24)}", f"te-{secrets.token_hex(16)}"
    body = {"error": "invalid_grant", "error_description": f"issued {access} {new_refresh} anyway"}
    with pytest.raises(ReauthorizationRequired) as info:
        refresh(FakeTransport(reply(400, {**body, "access_token": access, "refresh_token": new_refresh})))
    assert leaked(access, str(info.value)) == []
    assert leaked(new_refresh, str(info.value)) == []
