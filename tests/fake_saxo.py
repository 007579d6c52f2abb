"""A Saxo-compatible OAuth2 token endpoint on 127.0.0.1, for tests and ``make demo``.

It rotates the refresh token on every refresh (as Saxo does) and answers a reused or
unknown refresh token with ``invalid_grant``, so a test sees at once if a token is spent twice.
``fault`` switches on one misbehaviour for the next requests (``FAULTS``, ``AFTER_ROTATION``).

``GET /authorize`` plays Saxo's login page for a browser that logs in at once: it redirects to
``redirect_uri`` with a single-use, expiring code (or ``error=access_denied`` when ``fault`` is
``"access_denied"``), and ``grant_type=authorization_code`` exchanges the code, checking
``redirect_uri`` and, for PKCE, that base64url(SHA-256(code_verifier)) equals the challenge.

Opt-in dialects: a public app (``app_secret=None``: client_id in the body, no secret, PKCE
required), a confidential app whose codes need PKCE (``require_pkce``), plain OAuth2 answers
(``success_status``, ``extra_fields``, ``refresh_ttl=None``). Basic credentials are decoded as
RFC 6749 §2.3.1 says (base64, split at the first ':', then form-decode each half), so only a
client that form-encodes a secret with '+' or '%' gets in. ``GET /openapi/port/v1/users/me`` is
an OpenAPI probe that accepts only the newest access token (``probe_fault`` for its faults).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote_plus, unquote_plus, urlencode, urlsplit

APP_KEY = "demo-app-key-1234"
APP_SECRET = "demo-app-secret-s3cr3t-5678"
ACCESS_TTL = 1200
REFRESH_TTL = 3600
CODE_TTL = 60.0  # Saxo's codes are short-lived; tests shorten this to see one expire
PROBE_PATH = "/openapi/port/v1/users/me"
PROBE_USER = {"UserId": "FAKE-USER-1", "Name": "Fake Saxo User"}
BIG_BODY = 2_000_000  # bytes of padding for the "big-body" spoil

# Faults answered instead of the grant: nothing is spent.
FAULTS = (
    "500-html",
    "503",  # Retry-After: fault_arg
    "429",  # Retry-After: fault_arg
    "200-html",
    "truncated",
    "missing-fields",
    "wrong-types",
    "hang",  # no answer for fault_arg s, then 503
    "redirect",  # 302 to another host
    "redirect-location",  # 307 (or fault_arg: 301/302/303/308) to the same URL plus '/'
    "404",
    "invalid_client",
    "echo-secrets",
    "echo-disguised",  # echoes the secrets split by a control character, in base64, and across a cut
    "bad-request",
    "invalid_request-pkce",  # code exchanges only: 400 "code_verifier required"
)
# Faults that strike after a successful grant: the refresh token (or code) IS spent, a new pair issued.
AFTER_ROTATION = (
    "spoiled-after-rotation",  # a 2xx body with the new refresh_token, odd in the way ``spoil`` names
    "delay-after-rotation",  # the normal answer, fault_arg s late
    "drip-after-rotation",  # the normal answer, one byte every fault_arg s
    "504-after-rotation",  # a gateway timed out: the new pair never reaches the client
)
SPOILS = (
    "expires_in-negative",  # -60: Saxo's demo notes a late code exchange can give this
    "expires_in-zero",
    "expires_in-missing",
    "expires_in-1e10",  # the bare JSON number 1e10 (a float to Python's json)
    "rt-expires-string",  # refresh_token_expires_in as "3600"
    "extra-nan",  # "x_nan": NaN, not valid JSON (RFC 8259 §6) but what Python's json writes
    "extra-huge",  # "x_huge": 1e400, beyond any double
    "big-body",  # "x_padding": about 2 MB
    "access-missing",  # no access_token; it is also dropped from issued_access
)
PROBE_FAULTS = ("403", "429", "503", "hang")  # 429/503 carry Retry-After: probe_fault_arg
_STRAY_PERCENT = re.compile("%(?![0-9A-Fa-f]{2})")
GATEWAY_TIMEOUT = b"<html><body><h1>504 Gateway Time-out</h1></body></html>"


def _new_access_token() -> str:
    header = base64.urlsafe_b64encode(b'{"alg":"ES256","x5t":"fake"}').decode().rstrip("=")
    return f"{header}.{secrets.token_urlsafe(48)}.{secrets.token_urlsafe(32)}"


def _basic_credentials(header: str) -> tuple[str, str] | None:
    """The (client_id, secret) of a Basic header, form-decoded per RFC 6749 §2.3.1; None if malformed."""
    scheme, _, param = header.strip().partition(" ")
    if scheme.lower() != "basic":  # auth schemes are case-insensitive (RFC 7235 §2.1)
        return None
    try:
        text = base64.b64decode(param.strip(), validate=True).decode("utf-8")
    except ValueError:  # binascii.Error and UnicodeDecodeError are both ValueErrors
        return None
    user, colon, password = text.partition(":")
    # a '%' that starts no escape is malformed here (WHATWG would keep it): a raw secret with '%' never passes
    if not colon or _STRAY_PERCENT.search(text):
        return None
    return unquote_plus(user), unquote_plus(password)


def basic_header(client_id: str, secret: str, *, form_encode: bool = True) -> str:
    """An Authorization value; form_encode=False sends the raw secret, as many clients do."""
    if form_encode:
        client_id, secret = quote_plus(client_id), quote_plus(secret)
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


class FakeSaxo:
    """State of the fake endpoint; every attribute may be read by a test while it runs."""

    def __init__(
        self, app_key: str = APP_KEY, app_secret: str | None = APP_SECRET, *, require_pkce: bool = False
    ) -> None:
        self.app_key = app_key
        self.app_secret = app_secret  # None: a public app (RFC 6749 §2.1) that has no secret
        self.require_pkce = require_pkce  # a confidential app whose codes also need PKCE
        self.body_credentials = True  # accept client_id + client_secret in the form (RFC 6749 §2.3.1)
        self.lock = threading.Lock()
        self.stopping = threading.Event()  # cuts every wait short, so stop() is never held up
        self.current_refresh: str | None = None
        self.spent: set[str] = set()
        self.issued_access: list[str] = []
        self.issued_refresh: list[str] = []
        self.requests: list[dict[str, Any]] = []  # every POST /token, in order
        self.refreshes = 0  # successful refreshes
        self.reuses = 0  # refresh tokens presented a second time
        self.disconnects = 0  # answers cut short because the client had gone (seen when a write fails)
        self.fault: str | None = None
        self.fault_arg: float = 0.0
        self.fault_limit: int | None = None  # answer only this many requests with the fault, then normally
        self.spoil: str | None = None  # which SPOILS variant "spoiled-after-rotation" sends
        self.drip_headers = False  # "drip-after-rotation" drips the status line and headers too
        self.delay = 0.0  # seconds to wait after spending a token, before answering
        self.access_ttl = ACCESS_TTL
        self.refresh_ttl: int | None = REFRESH_TTL  # None: no refresh_token_expires_in, as plain OAuth2
        self.success_status = 201  # Saxo answers a grant with 201; plain OAuth2 servers with 200
        self.extra_fields: dict[str, Any] = {}  # added to every successful grant, e.g. scope, id_token
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None
        # authorization codes
        self.registered_redirect_uri: str | None = None  # None: accept any redirect_uri
        self.code_ttl = CODE_TTL
        self.codes: dict[str, dict[str, Any]] = {}  # unspent code -> what it was issued for
        self.used_codes: set[str] = set()
        self.issued_codes: list[str] = []
        self.authorize_requests: list[dict[str, str]] = []  # every GET /authorize query
        self.code_exchanges = 0  # successful authorization_code grants
        self.code_reuses = 0
        # the OpenAPI probe
        self.probe_requests: list[dict[str, Any]] = []  # every GET of PROBE_PATH, without the token
        self.probe_fault: str | None = None  # one of PROBE_FAULTS
        self.probe_fault_arg: float = 0.0
        self.probe_fault_limit: int | None = None

    @property
    def public(self) -> bool:
        """Whether this is a public app: no secret, client_id in the body, PKCE (RFC 6749 §2.1)."""
        return self.app_secret is None

    # -- tokens -------------------------------------------------------------------
    def issue(self) -> dict[str, Any]:
        """A new token pair; the refresh token becomes the only one accepted."""
        access, refresh = _new_access_token(), secrets.token_hex(18)
        self.current_refresh = refresh
        self.issued_access.append(access)
        self.issued_refresh.append(refresh)
        body: dict[str, Any] = {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": self.access_ttl,
            "refresh_token": refresh,
            "base_uri": None,
        }
        if self.refresh_ttl is not None:
            body["refresh_token_expires_in"] = self.refresh_ttl
        return body

    def grant_answer(self) -> tuple[int, dict[str, Any]]:
        """A successful grant's answer: a new pair plus ``extra_fields``; call with the lock held."""
        body = self.issue()
        body.update(self.extra_fields)
        return self.success_status, body

    def seed_cache(self, *, age: float = 0.0, now: float | None = None, **extra: Any) -> dict[str, Any]:
        """A cache object holding a freshly issued token, ``age`` seconds old."""
        with self.lock:
            body = self.issue()
        body["issued_at"] = int((time.time() if now is None else now) - age)
        body.update(extra)
        return body

    def secrets_seen(self) -> list[str]:
        """Every value that must never appear in the program's output."""
        verifiers = [r["code_verifier"] for r in self.requests if r.get("code_verifier")]
        extra = [v for k, v in self.extra_fields.items() if k.endswith("token") and isinstance(v, str)]
        credentials: list[str] = []
        if self.app_secret is not None:
            credentials = [
                self.app_secret,
                basic_header(self.app_key, self.app_secret).split()[1],
                basic_header(self.app_key, self.app_secret, form_encode=False).split()[1],
            ]
        return [
            *credentials,
            *self.issued_access,
            *self.issued_refresh,
            *self.issued_codes,
            *verifiers,
            *extra,
        ]

    def client_auth(self, form: dict[str, str], authorization: str) -> tuple[str, bool]:
        """How a token request authenticated the client ("basic", "body", "none") and whether that holds."""
        client_id = form.get("client_id")
        if authorization:  # the token endpoint knows one header scheme: a Bearer here fails as Basic
            credentials = _basic_credentials(authorization)
            # one method per request (RFC 6749 §2.3); a client_id beside Basic must agree with it
            ok = (
                self.app_secret is not None
                and credentials == (self.app_key, self.app_secret)
                and "client_secret" not in form
                and client_id in (None, self.app_key)
            )
            return "basic", ok
        if "client_secret" in form:
            ok = (
                self.app_secret is not None
                and self.body_credentials
                and client_id == self.app_key
                and form["client_secret"] == self.app_secret
            )
            return "body", ok
        return "none", self.public and client_id == self.app_key  # RFC 6749 §3.2.1, public clients

    def refresh_grant(self, presented: str) -> tuple[int, dict[str, Any]]:
        """A refresh_token grant from an authenticated client: spend and rotate, or invalid_grant."""
        with self.lock:
            if presented in self.spent:
                self.reuses += 1
                return 400, {"error": "invalid_grant", "error_description": "token already used"}
            if presented != self.current_refresh:
                return 400, {"error": "invalid_grant", "error_description": "unknown token"}
            self.spent.add(presented)
            self.refreshes += 1
            return self.grant_answer()

    def spoiled(self, body: dict[str, Any], spoil: str) -> bytes:
        """The JSON text of a successful grant answer, spoiled the way ``spoil`` (one of SPOILS) names."""
        body = dict(body)
        raw = ""  # a member written as-is: json.dumps cannot write 1e400 or keep 1e10 as typed
        if spoil == "expires_in-negative":
            body["expires_in"] = -60
        elif spoil == "expires_in-zero":
            body["expires_in"] = 0
        elif spoil == "expires_in-missing":
            del body["expires_in"]
        elif spoil == "expires_in-1e10":
            del body["expires_in"]
            raw = '"expires_in": 1e10'
        elif spoil == "rt-expires-string":
            body["refresh_token_expires_in"] = str(
                REFRESH_TTL if self.refresh_ttl is None else self.refresh_ttl
            )
        elif spoil == "extra-nan":
            body["x_nan"] = math.nan
        elif spoil == "extra-huge":
            raw = '"x_huge": 1e400'
        elif spoil == "big-body":
            body["x_padding"] = "x" * BIG_BODY
        elif spoil == "access-missing":
            with self.lock:  # never sent, so never issued: issued_access[-1] stays what the client holds
                self.issued_access.remove(body.pop("access_token"))
        else:
            raise ValueError(f"unknown spoil {spoil!r}")
        text = json.dumps(body)
        return (text[:-1] + ", " + raw + "}" if raw else text).encode()

    def authorize_redirect(self, query: dict[str, str]) -> tuple[int, str]:
        """Answer a login: (302, Location) to the redirect_uri, or (400, reason) without one."""
        with self.lock:
            self.authorize_requests.append(dict(query))
            fault = self.fault
        redirect_uri = query.get("redirect_uri", "")
        if query.get("client_id") != self.app_key:
            return 400, "unknown client_id"
        if not redirect_uri or (
            self.registered_redirect_uri is not None and redirect_uri != self.registered_redirect_uri
        ):
            return 400, "redirect_uri is not registered for this app"
        back: dict[str, str] = {}
        challenge = query.get("code_challenge")
        if query.get("response_type") != "code":
            back["error"] = "unsupported_response_type"
        elif challenge is None and (self.public or self.require_pkce):
            back.update(error="invalid_request", error_description="PKCE required: code_challenge missing")
        elif challenge is not None and query.get("code_challenge_method") != "S256":
            back.update(error="invalid_request", error_description="code_challenge_method must be S256")
        elif fault == "access_denied":
            back.update(error="access_denied", error_description="The user denied the request")
        else:
            code = secrets.token_urlsafe(24)
            with self.lock:
                self.issued_codes.append(code)
                self.codes[code] = {
                    "redirect_uri": redirect_uri,
                    "challenge": challenge,
                    "expires_at": time.time() + self.code_ttl,
                }
            back["code"] = code
        if "state" in query:
            back["state"] = query["state"]
        separator = "&" if urlsplit(redirect_uri).query else "?"
        return 302, redirect_uri + separator + urlencode(back)

    def exchange_code(
        self, form: dict[str, str], *, auth_ok: bool, client_auth: str = "none"
    ) -> tuple[int, dict[str, Any]]:
        """An authorization_code grant: client check, then single use, expiry, redirect_uri, PKCE."""

        def refuse(why: str) -> tuple[int, dict[str, Any]]:
            return 400, {"error": "invalid_grant", "error_description": why}

        code = form.get("code", "")
        with self.lock:
            grant = self.codes.get(code)
            pkce_required = self.public or self.require_pkce
            pkce = pkce_required or (grant is not None and grant["challenge"] is not None)
            # Saxo lets a confidential app's PKCE exchange go by client_id alone, unless it must also
            # authenticate (require_pkce); a credential that is present but wrong never passes
            by_client_id = (
                pkce and not pkce_required and client_auth == "none" and form.get("client_id") == self.app_key
            )
            if not (auth_ok or by_client_id):
                return 401, {"error": "invalid_client", "error_description": "bad client credentials"}
            if grant is None:
                if code in self.used_codes:
                    self.code_reuses += 1
                    return refuse("authorization code already used")
                return refuse("unknown authorization code")
            if pkce_required and not form.get("code_verifier"):
                # a malformed request (RFC 6749 §5.2): refused before the code is spent
                return 400, {"error": "invalid_request", "error_description": "code_verifier required"}
            del self.codes[code]  # single use, whatever happens next
            self.used_codes.add(code)
            if time.time() > grant["expires_at"]:
                return refuse("authorization code expired")
            if form.get("redirect_uri") != grant["redirect_uri"]:
                return refuse("redirect_uri does not match the authorization request")
            if pkce:
                verifier = form.get("code_verifier", "")
                digest = hashlib.sha256(verifier.encode()).digest()
                if base64.urlsafe_b64encode(digest).decode().rstrip("=") != grant["challenge"]:
                    return refuse("code_verifier does not match the code_challenge")  # RFC 7636 §4.6
            self.code_exchanges += 1
            return self.grant_answer()

    def _count_down(self, fault: str | None, limit_attr: str) -> str | None:
        limit = getattr(self, limit_attr)
        if fault and limit is not None:
            fault = fault if limit > 0 else None
            setattr(self, limit_attr, limit - 1)
        return fault

    def next_fault(self) -> str | None:
        """The fault for this token request, counting down ``fault_limit``; call with the lock held."""
        return self._count_down(self.fault, "fault_limit")

    def next_probe_fault(self) -> str | None:
        """The fault for this probe, counting down ``probe_fault_limit``; call with the lock held."""
        return self._count_down(self.probe_fault, "probe_fault_limit")

    def pause(self, seconds: float) -> bool:
        """Wait ``seconds``; False if the server is stopping meanwhile."""
        return not self.stopping.wait(seconds)

    # -- server -------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/token"

    @property
    def authorize_url(self) -> str:
        return f"{self.base_url}/authorize"

    @property
    def openapi_url(self) -> str:
        """The OpenAPI base URL; the probe is ``openapi_url + "/port/v1/users/me"``."""
        return f"{self.base_url}/openapi"

    def start(self) -> FakeSaxo:
        self.stopping.clear()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.server.daemon_threads = True
        # a short poll keeps shutdown() (every test's teardown) from waiting the default 0.5 s
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def __enter__(self) -> FakeSaxo:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _handler_for(saxo: FakeSaxo) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        presented = ""
        auth = ""

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: tests read state, not logs

        def _gone(self) -> None:
            """The client hung up before the answer was complete: count it and close."""
            with saxo.lock:
                saxo.disconnects += 1
            self.close_connection = True

        def _write(self, data: bytes) -> bool:
            """Write to the client; False if it has gone."""
            try:
                self.wfile.write(data)
                self.wfile.flush()
            except ConnectionError:  # BrokenPipe or ConnectionReset, as the peer's close arrives
                self._gone()
                return False
            return True

        def _send(self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            try:
                self.end_headers()
                self.wfile.write(body)
            except ConnectionError:
                self._gone()

        def _json(self, status: int, obj: object, headers: dict[str, str] | None = None) -> None:
            self._send(status, json.dumps(obj).encode(), "application/json", headers)

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            if parts.path == PROBE_PATH:
                self._probe()
                return
            if parts.path != "/authorize":
                self._send(405, b"method not allowed", "text/plain")
                return
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            status, where = saxo.authorize_redirect(query)
            if status == 302:
                self._send(302, b"", "text/plain", {"Location": where})
            else:
                self._send(status, where.encode(), "text/plain")

        def _probe(self) -> None:
            """The OpenAPI probe: 200 with a user for the newest access token, else 401 (RFC 6750 §3)."""
            scheme, _, token = self.headers.get("Authorization", "").strip().partition(" ")
            bearer = token.strip() if scheme.lower() == "bearer" else ""
            with saxo.lock:
                # a refresh supersedes the previous access token here (Saxo's JWTs would live on until
                # they expire): stricter, so a test sees which token a client probes with
                ok = bool(bearer) and bool(saxo.issued_access) and bearer == saxo.issued_access[-1]
                fault = saxo.next_probe_fault()
                saxo.probe_requests.append(
                    {
                        "path": urlsplit(self.path).path,  # never the query: a token may ride there
                        "time": time.time(),
                        "has_bearer": bool(bearer),
                        "bearer_ok": ok,
                        "fault": fault,
                    }
                )
                arg = saxo.probe_fault_arg
            if fault == "hang":
                saxo.pause(arg)
                self._json(503, {"Message": "too late"})
            elif fault in ("429", "503"):
                self._json(int(fault), {"Message": "try again later"}, {"Retry-After": f"{arg:g}"})
            elif fault == "403":
                self._json(403, {"ErrorCode": "Forbidden", "Message": "not allowed for this app"})
            elif ok:
                self._json(200, PROBE_USER)
            else:
                self._send(401, b"", "application/json", {"WWW-Authenticate": 'Bearer error="invalid_token"'})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            auth = self.headers.get("Authorization", "")
            method, auth_ok = saxo.client_auth(form, auth)
            record = {
                "path": self.path,
                "grant_type": form.get("grant_type"),
                "refresh_token": form.get("refresh_token"),
                "auth_ok": auth_ok,
                "client_auth": method,
                "content_type": self.headers.get("Content-Type"),
                "time": time.time(),
                "has_auth": bool(auth),
                "code": form.get("code"),
                "code_verifier": form.get("code_verifier"),
                "client_id": form.get("client_id"),
                "redirect_uri": form.get("redirect_uri"),
            }
            with saxo.lock:
                saxo.requests.append(record)
                fault = saxo.next_fault()
                record["fault"] = fault
            self.presented = form.get("refresh_token", "")
            self.auth = auth
            if fault and self._fault(fault, form):
                return
            if self.path != "/token":
                self._json(404, {"error": "not_found"})
                return
            delay = 0.0
            if form.get("grant_type") == "authorization_code":
                status, body = saxo.exchange_code(form, auth_ok=auth_ok, client_auth=method)
            elif not auth_ok:
                status, body = 401, {"error": "invalid_client", "error_description": "bad client credentials"}
            elif form.get("grant_type") != "refresh_token":
                status, body = 400, {"error": "unsupported_grant_type"}
            else:
                status, body = saxo.refresh_grant(form.get("refresh_token", ""))
                delay = saxo.delay
            if fault in AFTER_ROTATION and 200 <= status < 300:
                self._after_rotation(fault, status, body)
                return
            if delay:
                saxo.pause(delay)
            self._json(status, body)

        def _fault(self, fault: str, form: dict[str, str]) -> bool:
            """Answer with a misbehaviour before the grant; return False to go on with it."""
            arg = saxo.fault_arg
            if fault == "500-html":
                self._send(500, b"<html><body>Internal Server Error</body></html>", "text/html")
            elif fault in ("503", "429"):
                self._json(int(fault), {"error": "temporarily_unavailable"}, {"Retry-After": f"{arg:g}"})
            elif fault == "200-html":
                self._send(200, b"<html>maintenance</html>", "text/html")
            elif fault == "truncated":
                self._send(201, b'{"access_token": "eyJ', "application/json")
            elif fault == "missing-fields":
                self._json(201, {"access_token": "x" * 40, "token_type": "Bearer"})
            elif fault == "wrong-types":
                self._json(201, {"access_token": 12, "refresh_token": ["a"], "expires_in": "1200"})
            elif fault == "hang":
                saxo.pause(arg)
                self._json(503, {"error": "too late"})
            elif fault == "redirect":
                self._send(302, b"", "text/plain", {"Location": "https://example.invalid/token"})
            elif fault == "redirect-location":
                status = int(arg) if int(arg) in (301, 302, 303, 307, 308) else 307
                parts = urlsplit(self.path)
                where = saxo.base_url + parts.path + "/" + (f"?{parts.query}" if parts.query else "")
                self._send(status, b"", "text/plain", {"Location": where})
            elif fault == "404":
                self._json(404, {"error": "not_found"})
            elif fault == "invalid_client":
                self._json(401, {"error": "invalid_client"})
            elif fault == "echo-secrets":  # a careless server quotes what it was sent
                text = f"refresh token {self.presented} rejected for {self.auth}"
                self._json(400, {"error": "invalid_grant", "error_description": text})
            elif fault == "echo-disguised":
                self._json(400, {"error": "invalid_grant", "error_description": self._disguised(arg)})
            elif fault == "bad-request":
                self._json(400, {"error": "invalid_request", "error_description": "malformed"})
            elif fault == "invalid_request-pkce" and form.get("grant_type") == "authorization_code":
                self._json(400, {"error": "invalid_request", "error_description": "code_verifier required"})
            elif fault == "spoiled-after-rotation" and saxo.spoil not in SPOILS:
                # refused before anything is spent, so a typo in a test cannot burn a token
                self._send(500, f"fake_saxo: unknown spoil {saxo.spoil!r}".encode(), "text/plain")
            else:
                return False
            return True

        def _disguised(self, cut: float) -> str:
            """The presented refresh token split by a BEL, it and the app secret in base64, then the token
            again so that it straddles character ``cut`` of "invalid_grant: <description>" (0: no padding)."""
            token, secret = self.presented, saxo.app_secret or ""
            text = (
                f"token {token[:10]}\a{token[10:]} in base64 {base64.b64encode(token.encode()).decode()} "
                f"secret in base64 {base64.b64encode(secret.encode()).decode()} "
            )
            before = int(cut) - len("invalid_grant: ") - len(token) // 2
            return text + "x" * max(0, before - len(text) - 1) + " " + token + " rejected"

        def _after_rotation(self, fault: str, status: int, body: dict[str, Any]) -> None:
            """Answer a grant that has been made (token spent, new pair issued) in an odd way."""
            arg = saxo.fault_arg
            if fault == "504-after-rotation":
                self._send(504, GATEWAY_TIMEOUT, "text/html")
            elif fault == "delay-after-rotation":
                saxo.pause(arg)
                self._json(status, body)
            elif fault == "drip-after-rotation":
                self._drip(status, json.dumps(body).encode(), arg)
            else:
                assert saxo.spoil is not None  # checked in _fault
                self._send(status, saxo.spoiled(body, saxo.spoil), "application/json")

        def _drip(self, status: int, body: bytes, interval: float) -> None:
            """Send a whole answer one byte every ``interval`` s: it beats any per-read timeout."""
            head = (
                f"HTTP/1.1 {status} {self.responses[status][0]}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            self.close_connection = True  # the connection is not reused after a drip, complete or not
            data = head + body
            if not saxo.drip_headers:
                if not self._write(head):
                    return
                data = body
            for i in range(len(data)):
                if not saxo.pause(interval) or not self._write(data[i : i + 1]):
                    return

    return Handler
