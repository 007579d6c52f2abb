"""``exchange_and_save`` and ``authorize(mode="paste")`` in-process, against the fake endpoint.

The person at the browser is ``fakes.PastingBrowser``: it reads the login URL the program
prints, logs in at the fake endpoint and writes the redirect into a pipe that is the
program's stdin. No socket, no browser, no sleep.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import stat
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO
from urllib.parse import parse_qs, urlsplit

import pytest
from fake_saxo import basic_header
from fakes import (
    APP_KEY,
    APP_SECRET,
    NOW,
    FakeClock,
    FakeEndpoint,
    PastingBrowser,
    answer,
)
from support import load_json, temp_files, write_json

from token_refresh import oauth, store
from token_refresh.authorize import Result, authorize, exchange_and_save
from token_refresh.config import Config
from token_refresh.endpoint import Credentials
from token_refresh.errors import (
    AuthorizationRefused,
    ClientRejected,
    EndpointMisconfigured,
    EndpointUnavailable,
    RedirectMismatch,
    TokenRefreshError,
    UnusableResponse,
)
from token_refresh.freshness import State

REDIRECT_URI = "https://app.example.test/saxo/callback"
CONFIDENTIAL = Credentials(APP_KEY, APP_SECRET)
PUBLIC = Credentials(APP_KEY)
OLD_RT = "old-refresh-token-0000"
PREVIOUS: dict[str, Any] = {
    "access_token": "old-access-token-0000",
    "refresh_token": OLD_RT,
    "issued_at": "2023-11-14T20:00:00Z",
    "expires_in": 1200,
    "refresh_token_expires_in": 3600,
    "token_type": "Bearer",
    "account": {"id": "acct-1"},
    "note": "written by the operator",
}


@pytest.fixture
def cache(cache_path: Path) -> Path:
    """The cache these in-process runs use: conftest's ``cache_path``."""
    return cache_path


@pytest.fixture
def stdin() -> Iterator[tuple[TextIO, int]]:
    """(the program's stdin, the fd a person pastes into): a pipe, since read_pasted selects on it."""
    read_fd, write_fd = os.pipe()
    stream = os.fdopen(read_fd, "r")
    try:
        yield stream, write_fd
    finally:
        stream.close()
        with contextlib.suppress(OSError):  # the test may have closed it to send end-of-input
            os.close(write_fd)


def config_for(cache: Path) -> Config:
    return Config(
        cache_path=str(cache),
        token_url="http://127.0.0.1:1/token",
        redirect_uri=REDIRECT_URI,
        lock_timeout_secs=0,
        http_timeout_secs=10,
    )


def log_in(endpoint: FakeEndpoint, request: oauth.AuthRequest) -> str:
    """Play the login page for ``request``'s URL: the code it redirects with."""
    query = {k: v[0] for k, v in parse_qs(urlsplit(request.url).query).items()}
    assert query["state"] == request.state
    return endpoint.login(
        client_id=query["client_id"],
        redirect_uri=query["redirect_uri"],
        challenge=query.get("code_challenge"),
    )


def exchange(
    cache: Path,
    endpoint: FakeEndpoint,
    *,
    pkce: bool = False,
    credentials: Credentials = CONFIDENTIAL,
    code: str | None = None,
) -> Result:
    config = config_for(cache)
    request = oauth.new_request(config, client_id=credentials.app_key, pkce=pkce)
    return exchange_and_save(
        config=config,
        request=request,
        code=log_in(endpoint, request) if code is None else code,
        credentials=credentials,
        clock=FakeClock(),
        transport_factory=endpoint.plain,
    )


def paste(
    cache: Path,
    endpoint: FakeEndpoint,
    stdin: tuple[TextIO, int],
    *,
    tamper: Callable[[str, str], str] | None = None,
    credentials: Credentials = CONFIDENTIAL,
    pkce: bool = False,
    log_in: bool = True,
) -> tuple[Result, PastingBrowser]:
    """``authorize --paste`` in-process; the browser logs in and pastes (unless ``log_in`` is false)."""
    stream, paste_fd = stdin
    browser = PastingBrowser(endpoint, paste_fd, tamper)
    result = authorize(
        config=config_for(cache),
        credentials=credentials,
        mode="paste",
        pkce=pkce,
        open_browser=False,
        timeout=5,
        clock=FakeClock(),
        transport_factory=endpoint.plain,
        stdin=stream,
        out=browser if log_in else io.StringIO(),
    )
    return result, browser


# -- exchange_and_save -------------------------------------------------------------------------------


def test_exchange_saves_the_token_and_keeps_the_previous_non_token_fields(cache: Path) -> None:
    write_json(cache, PREVIOUS, mode=0o640)
    endpoint = FakeEndpoint()

    result = exchange(cache, endpoint)

    saved = load_json(cache)
    assert saved["access_token"] == "fake-access-token-001"
    assert saved["refresh_token"] == "fake-refresh-token-001"
    assert saved["expires_in"] == 1200
    assert saved["refresh_token_expires_in"] == 3600
    assert saved["issued_at"] == "2023-11-14T22:13:20Z"  # sent_at, in the previous cache's style
    assert saved["account"] == PREVIOUS["account"]
    assert saved["note"] == PREVIOUS["note"]
    assert stat.S_IMODE(cache.stat().st_mode) == 0o640
    assert store.load(str(cache)).raw == result.token.raw == cache.read_bytes()
    assert result.replaced is not None
    assert result.replaced.refresh_token == OLD_RT
    assert result.assessment.state is State.VALID
    assert result.path == os.path.realpath(cache)
    assert temp_files(cache) == []
    assert len(endpoint.requests) == 1
    assert endpoint.form()["grant_type"] == "authorization_code"
    assert endpoint.form()["redirect_uri"] == REDIRECT_URI


def test_exchange_into_a_new_cache(cache: Path) -> None:
    endpoint = FakeEndpoint()

    result = exchange(cache, endpoint)

    assert result.replaced is None
    saved = load_json(cache)
    assert saved["refresh_token"] == "fake-refresh-token-001"
    assert saved["issued_at"] == NOW  # no previous style: epoch seconds with a fraction
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600


def test_exchange_replaces_a_cache_that_is_not_a_token(cache: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache.write_bytes(b"[1, 2, 3]\n")
    endpoint = FakeEndpoint()

    with caplog.at_level(logging.WARNING, logger="token_refresh"):
        result = exchange(cache, endpoint)

    assert result.replaced is None
    assert "replaced whole" in caplog.text
    assert store.load(str(cache)).refresh_token == "fake-refresh-token-001"


@pytest.mark.parametrize("reuse", [False, True], ids=["unknown-code", "reused-code"])
def test_a_refused_code_says_run_authorize_again(cache: Path, reuse: bool) -> None:
    endpoint = FakeEndpoint()
    if reuse:
        first = exchange(cache, endpoint)
        code = "fake-code-001-xyz"  # the one just spent
        assert first.token.refresh_token == "fake-refresh-token-001"
    else:
        write_json(cache, PREVIOUS)
        code = "a-code-nobody-issued"
    before = cache.read_bytes()

    with pytest.raises(AuthorizationRefused) as error:
        exchange(cache, endpoint, code=code)

    assert error.value.exit_code == 77
    assert "invalid_grant" in str(error.value)
    assert "run authorize again" in str(error.value)
    assert "--pkce" not in str(error.value)
    assert cache.read_bytes() == before
    assert temp_files(cache) == []


def test_invalid_request_without_pkce_advises_pkce(cache: Path) -> None:
    before = write_json(cache, PREVIOUS)
    endpoint = FakeEndpoint(require_pkce=True)

    with pytest.raises(AuthorizationRefused) as error:
        exchange(cache, endpoint, pkce=False)

    assert error.value.exit_code == 77
    assert "--pkce" in str(error.value)
    assert "code_verifier" not in endpoint.form()
    assert cache.read_bytes() == before
    assert temp_files(cache) == []


def test_invalid_request_with_pkce_does_not_advise_pkce(cache: Path) -> None:
    endpoint = FakeEndpoint().then(answer(400, {"error": "invalid_request"}))

    with pytest.raises(AuthorizationRefused) as error:
        exchange(cache, endpoint, pkce=True)

    assert "--pkce" not in str(error.value)
    assert "run authorize again" in str(error.value)
    assert not cache.exists()


def test_confidential_client_with_pkce_sends_basic_and_the_verifier(cache: Path) -> None:
    endpoint = FakeEndpoint()
    config = config_for(cache)
    request = oauth.new_request(config, client_id=APP_KEY, pkce=True)
    assert request.verifier is not None

    result = exchange_and_save(
        config=config,
        request=request,
        code=log_in(endpoint, request),
        credentials=CONFIDENTIAL,
        clock=FakeClock(),
        transport_factory=endpoint.plain,
    )

    sent = endpoint.requests[0]
    assert sent.headers["Authorization"] == basic_header(APP_KEY, APP_SECRET)  # key and secret form-encoded
    assert endpoint.form()["code_verifier"] == request.verifier  # and the endpoint checked its S256
    assert "client_id" not in endpoint.form()
    assert result.token.refresh_token == "fake-refresh-token-001"


def test_public_client_sends_client_id_and_no_authorization_header(cache: Path) -> None:
    endpoint = FakeEndpoint(app_secret=None)

    result = exchange(cache, endpoint, pkce=True, credentials=PUBLIC)

    sent = endpoint.requests[0]
    assert "Authorization" not in sent.headers
    assert endpoint.form()["client_id"] == APP_KEY
    assert endpoint.form()["code_verifier"]
    assert APP_SECRET not in json.dumps(dict(sent.headers)) + json.dumps(endpoint.form())
    assert result.token.refresh_token == "fake-refresh-token-001"


@pytest.mark.parametrize(
    ("response", "cls", "code"),
    [
        (answer(503, b"busy"), EndpointUnavailable, 75),
        (answer(401, {"error": "invalid_client"}), ClientRejected, 78),
        (answer(404, b"not found"), EndpointMisconfigured, 78),
        (answer(200, {"token_type": "Bearer"}), UnusableResponse, 75),
        (answer(200, b"not json"), UnusableResponse, 75),
        (answer(400, {"error": "invalid_grant"}), AuthorizationRefused, 77),
    ],
    ids=["503", "401", "404", "no-tokens", "not-json", "invalid_grant"],
)
def test_a_failed_exchange_leaves_the_cache_untouched(
    cache: Path, response: Any, cls: type[TokenRefreshError], code: int
) -> None:
    before = write_json(cache, PREVIOUS, mode=0o640)
    endpoint = FakeEndpoint().then(response)

    with pytest.raises(TokenRefreshError) as error:
        exchange(cache, endpoint)

    assert type(error.value) is cls
    assert error.value.exit_code == code
    assert len(endpoint.requests) == 1
    assert cache.read_bytes() == before
    assert stat.S_IMODE(cache.stat().st_mode) == 0o640
    assert temp_files(cache) == []


# -- authorize --paste -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("credentials", "pkce"), [(CONFIDENTIAL, False), (PUBLIC, True)], ids=["confidential", "public-pkce"]
)
def test_paste_the_whole_redirect_url(
    cache: Path, stdin: tuple[TextIO, int], credentials: Credentials, pkce: bool
) -> None:
    write_json(cache, PREVIOUS)
    endpoint = FakeEndpoint(app_secret=credentials.app_secret)

    result, browser = paste(cache, endpoint, stdin, credentials=credentials, pkce=pkce)

    assert browser.login_url is not None
    assert "Paste that whole URL" in browser.getvalue()
    assert ("code_challenge=" in browser.login_url) is pkce
    assert result.token.refresh_token == "fake-refresh-token-001" == load_json(cache)["refresh_token"]
    assert result.replaced is not None
    assert result.replaced.refresh_token == OLD_RT
    assert load_json(cache)["note"] == PREVIOUS["note"]
    assert len(endpoint.requests) == 1
    assert endpoint.form()["redirect_uri"] == REDIRECT_URI
    assert temp_files(cache) == []


def test_paste_a_bare_code(cache: Path, stdin: tuple[TextIO, int], caplog: pytest.LogCaptureFixture) -> None:
    endpoint = FakeEndpoint()

    with caplog.at_level(logging.INFO, logger="token_refresh"):
        result, _ = paste(cache, endpoint, stdin, tamper=lambda line, code: f"  {code}  ")

    assert "bare code" in caplog.text
    assert result.token.refresh_token == "fake-refresh-token-001"
    assert endpoint.form()["code"] == "fake-code-001-xyz"


@pytest.mark.parametrize(
    ("tamper", "cls", "code"),
    [
        (lambda line, code: line.replace("state=", "state=x"), RedirectMismatch, 65),
        (lambda line, code: line.split("?")[0] + "?state=" + line.split("state=")[1], RedirectMismatch, 65),
        (
            lambda line, code: line.split("?")[0] + "?error=access_denied&" + line.split("&")[1],
            AuthorizationRefused,
            77,
        ),
    ],
    ids=["state-mismatch", "no-code", "access-denied"],
)
def test_a_pasted_redirect_that_does_not_answer_sends_nothing(
    cache: Path,
    stdin: tuple[TextIO, int],
    tamper: Callable[[str, str], str],
    cls: type[TokenRefreshError],
    code: int,
) -> None:
    before = write_json(cache, PREVIOUS)
    endpoint = FakeEndpoint()

    with pytest.raises(TokenRefreshError) as error:
        paste(cache, endpoint, stdin, tamper=tamper)

    assert type(error.value) is cls
    assert error.value.exit_code == code
    assert endpoint.requests == []
    assert cache.read_bytes() == before
    assert temp_files(cache) == []


def test_end_of_input_before_a_paste(cache: Path, stdin: tuple[TextIO, int]) -> None:
    _, paste_fd = stdin
    os.write(paste_fd, b"\n   \n")
    os.close(paste_fd)
    endpoint = FakeEndpoint()

    with pytest.raises(RedirectMismatch) as error:
        paste(cache, endpoint, stdin, log_in=False)  # nobody logs in

    assert "end of input" in str(error.value)
    assert endpoint.requests == []
    assert not cache.exists()
    assert temp_files(cache) == []
