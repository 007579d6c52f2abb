"""The token endpoint client: what it sends, and how every answer maps to an exit status."""

from __future__ import annotations

import base64
import time
from urllib.parse import parse_qs

import pytest
import requests
import requests_mock

from token_refresh import saxo
from token_refresh.config import Credentials
from token_refresh.errors import ExitCode, ReauthorizationRequired, TokenEndpointError

URL = "https://sim.logonvalidation.net/token"
CREDS = Credentials("app-key-1234", "app-secret-5678")
TOKEN = {
    "access_token": "eyJ.access.token",
    "token_type": "Bearer",
    "expires_in": 1200,
    "refresh_token": "new-refresh-token",
    "refresh_token_expires_in": 3600,
    "base_uri": None,
}


@pytest.fixture
def mocked():
    session = requests.Session()
    adapter = requests_mock.Adapter()
    session.mount("https://", adapter)
    return session, adapter


def refresh(session: requests.Session) -> dict:
    return saxo.refresh_grant(
        session, token_url=URL, refresh_token="old-refresh-token", credentials=CREDS, timeout=5
    )


@pytest.mark.parametrize("status", [200, 201])
def test_success_sends_form_and_basic_auth(mocked, status: int) -> None:
    session, adapter = mocked
    adapter.register_uri("POST", URL, status_code=status, json=TOKEN)
    assert refresh(session) == TOKEN
    request = adapter.last_request
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert parse_qs(request.text) == {"grant_type": ["refresh_token"], "refresh_token": ["old-refresh-token"]}
    expected = base64.b64encode(b"app-key-1234:app-secret-5678").decode()
    assert request.headers["Authorization"] == f"Basic {expected}"


@pytest.mark.parametrize(
    ("status", "body", "code", "words"),
    [
        # invalid_grant wins whatever the status
        (400, {"error": "invalid_grant", "error_description": "expired"}, ExitCode.NOPERM, "invalid_grant"),
        (401, {"error": "invalid_grant"}, ExitCode.NOPERM, "invalid_grant"),
        (500, {"error": "invalid_grant"}, ExitCode.NOPERM, "invalid_grant"),
        (400, {"error": "invalid_client"}, ExitCode.CONFIG, "client credentials"),
        (400, {"error": "unauthorized_client"}, ExitCode.CONFIG, "client credentials"),
        (401, None, ExitCode.CONFIG, "client credentials"),
        (403, {"error": "access_denied"}, ExitCode.CONFIG, "client credentials"),
        (400, {"error": "invalid_request"}, ExitCode.NOPERM, "refused"),
        (400, None, ExitCode.NOPERM, "refused"),
        (429, None, ExitCode.TEMPFAIL, "unavailable"),
        (500, None, ExitCode.TEMPFAIL, "unavailable"),
        (502, None, ExitCode.TEMPFAIL, "unavailable"),
        (503, {"error": "temporarily_unavailable"}, ExitCode.TEMPFAIL, "unavailable"),
        (504, None, ExitCode.TEMPFAIL, "unavailable"),
        (301, None, ExitCode.CONFIG, "redirect"),
        (302, None, ExitCode.CONFIG, "redirect"),
        (307, None, ExitCode.CONFIG, "redirect"),
        (404, None, ExitCode.CONFIG, "HTTP 404"),
        (405, None, ExitCode.CONFIG, "HTTP 405"),
        (418, None, ExitCode.CONFIG, "HTTP 418"),
    ],
)
def test_error_mapping(mocked, status: int, body, code: ExitCode, words: str) -> None:
    session, adapter = mocked
    kwargs = {"json": body} if body is not None else {"text": "<html>nope</html>"}
    headers = {"Location": "https://elsewhere.example/token"} if 300 <= status < 400 else {}
    adapter.register_uri("POST", URL, status_code=status, headers=headers, **kwargs)
    with pytest.raises((TokenEndpointError, ReauthorizationRequired)) as info:
        refresh(session)
    assert info.value.exit_code == code
    assert words in str(info.value)
    assert adapter.call_count == 1  # a redirect is never followed


def test_reauthorization_message_asks_for_a_person(mocked) -> None:
    session, adapter = mocked
    adapter.register_uri("POST", URL, status_code=400, json={"error": "invalid_grant"})
    with pytest.raises(ReauthorizationRequired, match="Manual re-authorization required"):
        refresh(session)


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"text": "<html>maintenance</html>"}, "not a JSON object"),
        ({"text": '{"access_token": "eyJ'}, "not a JSON object"),
        ({"json": ["a"]}, "not a JSON object"),
        ({"json": {**TOKEN, "access_token": ""}}, "'access_token'"),
        ({"json": {k: v for k, v in TOKEN.items() if k != "refresh_token"}}, "'refresh_token'"),
        ({"json": {**TOKEN, "refresh_token": 7}}, "'refresh_token'"),
        ({"json": {**TOKEN, "expires_in": "1200"}}, "'expires_in'"),
        ({"json": {**TOKEN, "expires_in": 0}}, "'expires_in'"),
        ({"json": {**TOKEN, "expires_in": -1}}, "'expires_in'"),
        ({"json": {**TOKEN, "expires_in": True}}, "'expires_in'"),
        ({"json": {**TOKEN, "refresh_token_expires_in": "x"}}, "'refresh_token_expires_in'"),
    ],
)
def test_unusable_2xx_is_temporary_and_warns_token_may_be_spent(mocked, caplog, kwargs, problem) -> None:
    session, adapter = mocked
    adapter.register_uri("POST", URL, status_code=201, **kwargs)
    with pytest.raises(TokenEndpointError) as info:
        refresh(session)
    assert info.value.exit_code == ExitCode.TEMPFAIL
    assert problem in str(info.value)
    assert "may already be spent" in caplog.text


def test_read_timeout_is_temporary_and_not_retried(mocked) -> None:
    session, adapter = mocked
    adapter.register_uri("POST", URL, exc=requests.exceptions.ReadTimeout)
    with pytest.raises(TokenEndpointError, match="did not answer within 5 s") as info:
        refresh(session)
    assert info.value.exit_code == ExitCode.TEMPFAIL
    assert adapter.call_count == 1


def test_connection_error_is_temporary(mocked) -> None:
    session, adapter = mocked
    adapter.register_uri("POST", URL, exc=requests.exceptions.ConnectionError("refused"))
    with pytest.raises(TokenEndpointError, match="cannot reach the token endpoint") as info:
        refresh(session)
    assert info.value.exit_code == ExitCode.TEMPFAIL


# Retries run inside urllib3, below requests-mock's adapter: they are tested over real HTTP.


def real_refresh(saxo_server, budget: float, refresh_token: str) -> dict:
    session = saxo.new_session(retry_budget_secs=budget)
    creds = Credentials(saxo_server.app_key, saxo_server.app_secret)
    return saxo.refresh_grant(
        session, token_url=saxo_server.token_url, refresh_token=refresh_token, credentials=creds, timeout=5
    )


@pytest.mark.parametrize("fault", ["503", "429"])
def test_retry_after_is_honoured_then_succeeds(saxo, fault: str) -> None:
    rt = saxo.seed_cache()["refresh_token"]
    saxo.fault, saxo.fault_arg, saxo.fault_limit = fault, 1, 2
    started = time.monotonic()
    body = real_refresh(saxo, budget=10, refresh_token=rt)
    elapsed = time.monotonic() - started
    assert body["refresh_token"] == saxo.current_refresh
    assert len(saxo.requests) == 3
    assert elapsed >= 2  # two Retry-After: 1 waits
    assert saxo.reuses == 0


def test_retry_after_beyond_budget_gives_up_at_once(saxo) -> None:
    rt = saxo.seed_cache()["refresh_token"]
    saxo.fault, saxo.fault_arg = "503", 120
    started = time.monotonic()
    with pytest.raises(TokenEndpointError, match="HTTP 503") as info:
        real_refresh(saxo, budget=5, refresh_token=rt)
    assert info.value.exit_code == ExitCode.TEMPFAIL
    assert time.monotonic() - started < 3
    assert len(saxo.requests) == 1


def test_500_is_not_retried(saxo) -> None:
    rt = saxo.seed_cache()["refresh_token"]
    saxo.fault = "500-html"
    with pytest.raises(TokenEndpointError, match="HTTP 500, text/html"):
        real_refresh(saxo, budget=10, refresh_token=rt)
    assert len(saxo.requests) == 1


def test_connection_refused_is_retried_within_budget() -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    session = saxo.new_session(retry_budget_secs=2)
    started = time.monotonic()
    with pytest.raises(TokenEndpointError, match="cannot reach the token endpoint") as info:
        saxo.refresh_grant(
            session,
            token_url=f"http://127.0.0.1:{port}/token",
            refresh_token="r" * 8,
            credentials=CREDS,
            timeout=2,
        )
    assert info.value.exit_code == ExitCode.TEMPFAIL
    assert 0.4 < time.monotonic() - started < 4  # it backed off and retried, then stopped
