"""In-process fakes for the use-case tests: a Saxo-like token endpoint as a ``Transport``, and a clock.

``FakeEndpoint`` is what ``run_cycle``'s ``transport_factory`` and ``exchange_and_save``'s
``transport_factory`` return: a callable taking a ``Request`` and answering a ``Response``, with
no socket. Like Saxo it rotates the refresh token on every successful refresh and answers a
reused one with 400 ``invalid_grant``, so a test sees at once if a token is presented twice.
``then()`` scripts the next requests: a canned answer, or a callback run before the request
goes out or after the endpoint has acted on it (another process writing the cache, a stop
signal, a directory turning read-only).

``FakeClock`` returns a settable time and can run a callback on its n-th call: the seam used to
act between two steps of a run (``run_cycle`` reads the clock once before the lock and once
after the reload under it).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
from typing import Any, Callable, NamedTuple
from urllib.parse import parse_qs, quote_plus, urlsplit

from token_refresh.transport import Flight, Request, Response, Transport

__all__ = [
    "APP_KEY",
    "APP_SECRET",
    "NOW",
    "FakeClock",
    "FakeEndpoint",
    "Hook",
    "PastingBrowser",
    "answer",
]

APP_KEY = "fake-app-key-0123"
APP_SECRET = "fake-app-secret+with:odd%chars"
NOW = 1_700_000_000.5  # 2023-11-14T22:13:20.5Z
ACCESS_TTL = 1200
REFRESH_TTL = 3600

Hook = Callable[[Flight], None]


def answer(status: int, body: dict[str, Any] | bytes, headers: dict[str, str] | None = None) -> Response:
    """A canned response; a dict is sent as JSON."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Response(status, {"content-type": "application/json", **(headers or {})}, raw)


class FakeClock:
    """A clock that returns ``now``; ``on_call(n, fn)`` runs ``fn`` on the n-th call, before it returns."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now
        self.calls = 0
        self._hooks: dict[int, list[Callable[[], None]]] = {}

    def on_call(self, n: int, fn: Callable[[], None]) -> None:
        self._hooks.setdefault(n, []).append(fn)

    def __call__(self) -> float:
        self.calls += 1
        for fn in self._hooks.pop(self.calls, []):
            fn()
        return self.now


class _Step(NamedTuple):
    response: Response | None  # None: answer as the endpoint would
    before_sent: Hook | None
    before_answer: Hook | None


class _NoFlight:
    def sent(self) -> None:
        pass

    def landed(self) -> None:
        pass


class FakeEndpoint:
    """A Saxo-like token endpoint that a test calls directly; every attribute is for the test to read.

    ``app_secret=None`` makes it expect a public client (``client_id`` in the form, no
    Authorization header); otherwise it checks HTTP Basic as RFC 6749 §2.3.1 builds it.
    """

    def __init__(
        self,
        *,
        refresh_token: str | None = None,
        app_key: str = APP_KEY,
        app_secret: str | None = APP_SECRET,
        access_ttl: float | str = ACCESS_TTL,
        refresh_ttl: float | str | None = REFRESH_TTL,
        require_pkce: bool = False,
    ) -> None:
        self.current_refresh = refresh_token  # the only refresh token accepted
        self.app_key = app_key
        self.app_secret = app_secret
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl
        self.require_pkce = require_pkce
        self.requests: list[Request] = []  # every request that went out, in order
        self.flights: list[Flight] = []  # what each transport_factory call was given
        self.spent: list[str] = []  # refresh tokens accepted, in order
        self.issued: list[dict[str, Any]] = []  # every token body answered
        self.codes: dict[str, tuple[str, str | None]] = {}  # unspent code -> (redirect_uri, challenge)
        self._script: list[_Step] = []

    # -- what the test sets up -------------------------------------------------------------

    def then(
        self,
        response: Response | None = None,
        *,
        before_sent: Hook | None = None,
        before_answer: Hook | None = None,
    ) -> FakeEndpoint:
        """Script the next unscripted request: a canned ``response``, and callbacks around it.

        ``before_sent`` runs before ``flight.sent()`` (nothing is on the wire yet);
        ``before_answer`` runs after the endpoint has acted on the request (a refresh token
        spent), before the answer reaches the caller.
        """
        self._script.append(_Step(response, before_sent, before_answer))
        return self

    def login(self, *, client_id: str, redirect_uri: str, challenge: str | None = None) -> str:
        """Play the login page: a single-use code for this client, redirect URI and PKCE challenge."""
        assert client_id == self.app_key, "the authorize URL names another client"
        code = f"fake-code-{len(self.codes) + len(self.issued) + 1:03d}-xyz"
        self.codes[code] = (redirect_uri, challenge)
        return code

    # -- what the code under test calls ----------------------------------------------------

    def factory(self, flight: Flight) -> Transport:
        """``run_cycle``'s transport_factory: a transport that reports to ``flight``."""
        self.flights.append(flight)

        def transport(request: Request) -> Response:
            return self.send(request, flight)

        return transport

    def plain(self) -> Transport:
        """``exchange_and_save``'s transport_factory (no flight)."""
        return self

    def __call__(self, request: Request) -> Response:
        return self.send(request, _NoFlight())

    def send(self, request: Request, flight: Flight) -> Response:
        step = self._script.pop(0) if self._script else _Step(None, None, None)
        if step.before_sent is not None:
            step.before_sent(flight)
        flight.sent()
        self.requests.append(request)
        response = step.response if step.response is not None else self._answer(request)
        if step.before_answer is not None:
            step.before_answer(flight)
        return response

    # -- what the test reads ---------------------------------------------------------------

    @property
    def presented(self) -> list[str | None]:
        """The refresh token of every request, in order (None for a code grant)."""
        return [(r.form or {}).get("refresh_token") for r in self.requests]

    def form(self, index: int = -1) -> dict[str, str]:
        return dict(self.requests[index].form or {})

    # -- the endpoint ----------------------------------------------------------------------

    def _issue(self) -> dict[str, Any]:
        n = len(self.issued) + 1
        body: dict[str, Any] = {
            "access_token": f"fake-access-token-{n:03d}",
            "token_type": "Bearer",
            "expires_in": self.access_ttl,
            "refresh_token": f"fake-refresh-token-{n:03d}",
            "base_uri": None,
        }
        if self.refresh_ttl is not None:
            body["refresh_token_expires_in"] = self.refresh_ttl
        self.issued.append(body)
        self.current_refresh = body["refresh_token"]
        return body

    def _client_ok(self, request: Request, form: dict[str, str]) -> bool:
        header = request.headers.get("Authorization")
        if self.app_secret is None:
            return header is None and form.get("client_id") == self.app_key
        pair = f"{quote_plus(self.app_key)}:{quote_plus(self.app_secret)}"
        return header == "Basic " + base64.b64encode(pair.encode()).decode()

    def _answer(self, request: Request) -> Response:
        form = dict(request.form or {})
        if request.method != "POST":
            return answer(405, {"error": "invalid_request"})
        if not self._client_ok(request, form):
            return answer(401, {"error": "invalid_client", "error_description": "bad client credentials"})
        grant = form.get("grant_type")
        if grant == "refresh_token":
            presented = form.get("refresh_token")
            if presented is None or presented != self.current_refresh:
                return answer(400, {"error": "invalid_grant", "error_description": "refresh token not valid"})
            self.spent.append(presented)
            return answer(200, self._issue())
        if grant == "authorization_code":
            return self._exchange(form)
        return answer(400, {"error": "unsupported_grant_type"})

    def _exchange(self, form: dict[str, str]) -> Response:
        verifier = form.get("code_verifier")
        if self.require_pkce and verifier is None:
            return answer(400, {"error": "invalid_request", "error_description": "code_verifier is required"})
        found = self.codes.pop(form.get("code", ""), None)  # single use, whatever happens next
        if found is None:
            return answer(400, {"error": "invalid_grant", "error_description": "unknown or used code"})
        redirect_uri, challenge = found
        if form.get("redirect_uri") != redirect_uri:
            return answer(400, {"error": "invalid_grant", "error_description": "redirect_uri mismatch"})
        if challenge is not None:
            digest = hashlib.sha256((verifier or "").encode()).digest()
            if base64.urlsafe_b64encode(digest).decode().rstrip("=") != challenge:
                return answer(400, {"error": "invalid_grant", "error_description": "code_verifier mismatch"})
        return answer(201, self._issue())


class PastingBrowser(io.StringIO):
    """An ``out`` stream for ``authorize(mode="paste")`` that plays the person at the browser.

    When the program prints the login URL, it logs in at ``endpoint`` and writes the redirect
    into the pipe that is the program's stdin, as a person would paste it. ``tamper`` may
    rewrite the pasted line (a wrong state, a bare code).
    """

    def __init__(
        self, endpoint: FakeEndpoint, paste_fd: int, tamper: Callable[[str, str], str] | None = None
    ) -> None:
        super().__init__()
        self.endpoint = endpoint
        self.paste_fd = paste_fd
        self.tamper = tamper
        self.login_url: str | None = None

    def write(self, s: str) -> int:
        for word in s.split():
            if self.login_url is None and "/authorize?" in word:
                self.login_url = word
                self._log_in(word)
        return super().write(s)

    def _log_in(self, url: str) -> None:
        query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
        redirect_uri = query["redirect_uri"]
        code = self.endpoint.login(
            client_id=query["client_id"], redirect_uri=redirect_uri, challenge=query.get("code_challenge")
        )
        line = f"{redirect_uri}?code={code}&state={query['state']}"
        if self.tamper is not None:
            line = self.tamper(line, code)
        os.write(self.paste_fd, (line + "\n").encode())
