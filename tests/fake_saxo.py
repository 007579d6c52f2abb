"""A Saxo-compatible OAuth2 token endpoint on 127.0.0.1, for tests and ``make demo``.

It rotates the refresh token on every refresh (as Saxo does) and answers a reused or
unknown refresh token with ``invalid_grant``, so a test sees at once if a token is spent twice.
``fault`` switches on one misbehaviour for the next requests.

``GET /authorize`` plays Saxo's login page for a browser that logs in at once: it redirects to
``redirect_uri`` with a single-use, expiring code (or ``error=access_denied`` when ``fault`` is
``"access_denied"``), and ``grant_type=authorization_code`` exchanges the code, checking
``redirect_uri`` and, for PKCE, that base64url(SHA-256(code_verifier)) equals the challenge.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

APP_KEY = "demo-app-key-1234"
APP_SECRET = "demo-app-secret-s3cr3t-5678"
ACCESS_TTL = 1200
REFRESH_TTL = 3600
CODE_TTL = 60.0  # Saxo's codes are short-lived; tests shorten this to see one expire


def _new_access_token() -> str:
    header = base64.urlsafe_b64encode(b'{"alg":"ES256","x5t":"fake"}').decode().rstrip("=")
    return f"{header}.{secrets.token_urlsafe(48)}.{secrets.token_urlsafe(32)}"


class FakeSaxo:
    """State of the fake endpoint; every attribute may be read by a test while it runs."""

    def __init__(self, app_key: str = APP_KEY, app_secret: str = APP_SECRET) -> None:
        self.app_key = app_key
        self.app_secret = app_secret
        self.lock = threading.Lock()
        self.current_refresh: str | None = None
        self.spent: set[str] = set()
        self.issued_access: list[str] = []
        self.issued_refresh: list[str] = []
        self.requests: list[dict[str, Any]] = []  # every POST /token, in order
        self.refreshes = 0  # successful refreshes
        self.reuses = 0  # refresh tokens presented a second time
        self.fault: str | None = None
        self.fault_arg: float = 0.0
        self.fault_limit: int | None = None  # answer only this many requests with the fault, then normally
        self.delay = 0.0  # seconds to wait after spending a token, before answering
        self.access_ttl = ACCESS_TTL
        self.refresh_ttl: int | None = REFRESH_TTL
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
        return [self.app_secret, *self.issued_access, *self.issued_refresh, *self.issued_codes, *verifiers]

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

    def exchange_code(self, form: dict[str, str], *, auth_ok: bool) -> tuple[int, dict[str, Any]]:
        """An authorization_code grant: client check, then single use, expiry, redirect_uri, PKCE."""

        def refuse(why: str) -> tuple[int, dict[str, Any]]:
            return 400, {"error": "invalid_grant", "error_description": why}

        code = form.get("code", "")
        with self.lock:
            grant = self.codes.get(code)
            pkce = grant is not None and grant["challenge"] is not None
            if not (auth_ok or (pkce and form.get("client_id") == self.app_key)):
                return 401, {"error": "invalid_client", "error_description": "bad client credentials"}
            if grant is None:
                if code in self.used_codes:
                    self.code_reuses += 1
                    return refuse("authorization code already used")
                return refuse("unknown authorization code")
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
                    return refuse("code_verifier does not match the code_challenge")
            self.code_exchanges += 1
            return 201, self.issue()

    # -- server -------------------------------------------------------------------
    @property
    def token_url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/token"

    @property
    def authorize_url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/authorize"

    def start(self) -> FakeSaxo:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.server.daemon_threads = True
        # a short poll keeps shutdown() (every test's teardown) from waiting the default 0.5 s
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()
        return self

    def stop(self) -> None:
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

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: tests read state, not logs

        def _send(self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, obj: object, headers: dict[str, str] | None = None) -> None:
            self._send(status, json.dumps(obj).encode(), "application/json", headers)

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            if parts.path != "/authorize":
                self._send(405, b"method not allowed", "text/plain")
                return
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            status, where = saxo.authorize_redirect(query)
            if status == 302:
                self._send(302, b"", "text/plain", {"Location": where})
            else:
                self._send(status, where.encode(), "text/plain")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            auth = self.headers.get("Authorization", "")
            expected = base64.b64encode(f"{saxo.app_key}:{saxo.app_secret}".encode()).decode()
            record = {
                "path": self.path,
                "grant_type": form.get("grant_type"),
                "refresh_token": form.get("refresh_token"),
                "auth_ok": auth == f"Basic {expected}",
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
                fault = saxo.fault
                if fault and saxo.fault_limit is not None:
                    fault = fault if saxo.fault_limit > 0 else None
                    saxo.fault_limit -= 1
            self.presented = form.get("refresh_token", "")
            self.auth = auth
            if fault and self._fault(fault):
                return
            if self.path != "/token":
                self._json(404, {"error": "not_found"})
                return
            if form.get("grant_type") == "authorization_code":
                self._json(*saxo.exchange_code(form, auth_ok=record["auth_ok"]))
                return
            if not record["auth_ok"]:
                self._json(401, {"error": "invalid_client", "error_description": "bad client credentials"})
                return
            if form.get("grant_type") != "refresh_token":
                self._json(400, {"error": "unsupported_grant_type"})
                return
            presented = form.get("refresh_token", "")
            with saxo.lock:
                if presented in saxo.spent:
                    saxo.reuses += 1
                    status, body = 400, {"error": "invalid_grant", "error_description": "token already used"}
                elif presented != saxo.current_refresh:
                    status, body = 400, {"error": "invalid_grant", "error_description": "unknown token"}
                else:
                    saxo.spent.add(presented)
                    saxo.refreshes += 1
                    status, body = 201, saxo.issue()
                delay = saxo.delay
            if delay:
                time.sleep(delay)
            self._json(status, body)

        def _fault(self, fault: str) -> bool:
            """Answer with a misbehaviour; return False to answer normally."""
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
                time.sleep(arg)
                self._json(503, {"error": "too late"})
            elif fault == "redirect":
                self._send(302, b"", "text/plain", {"Location": "https://example.invalid/token"})
            elif fault == "404":
                self._json(404, {"error": "not_found"})
            elif fault == "invalid_client":
                self._json(401, {"error": "invalid_client"})
            elif fault == "echo-secrets":  # a careless server quotes what it was sent
                text = f"refresh token {self.presented} rejected for {self.auth}"
                self._json(400, {"error": "invalid_grant", "error_description": text})
            elif fault == "bad-request":
                self._json(400, {"error": "invalid_request", "error_description": "malformed"})
            else:
                return False
            return True

    return Handler
