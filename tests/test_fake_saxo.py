"""The fake Saxo endpoint itself, over HTTP on 127.0.0.1: its dialects and faults do what they claim."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import secrets
import time
from typing import Any, Callable, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from fake_saxo import APP_KEY, APP_SECRET, PROBE_PATH, PROBE_USER, SPOILS, FakeSaxo, basic_header

REDIRECT = "https://app.example.test/cb"
ODD_SECRET = "a+b%c:d€"


@pytest.fixture
def fake() -> Iterator[Callable[..., FakeSaxo]]:
    """Start a FakeSaxo built with the given arguments; all are stopped after the test."""
    started: list[FakeSaxo] = []

    def build(**kwargs: Any) -> FakeSaxo:
        server = FakeSaxo(**kwargs).start()
        started.append(server)
        return server

    yield build
    for server in started:
        server.stop()


def _http() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # no proxy between the test and 127.0.0.1
    return session


def post(saxo: FakeSaxo, form: dict[str, str], auth: str | None = None, **kwargs: Any) -> requests.Response:
    """POST a form to the token endpoint, with ``auth`` as the Authorization header if given."""
    headers = {"Authorization": auth} if auth is not None else {}
    kwargs.setdefault("timeout", 10)
    return _http().post(saxo.token_url, data=form, headers=headers, allow_redirects=False, **kwargs)


def refresh(saxo: FakeSaxo, token: str, **kwargs: Any) -> requests.Response:
    """A refresh grant as the app must send it: form-encoded Basic (RFC 6749 §2.3.1), client_id if public."""
    form = {"grant_type": "refresh_token", "refresh_token": token}
    if saxo.app_secret is None:
        return post(saxo, {**form, "client_id": saxo.app_key}, **kwargs)
    return post(saxo, form, basic_header(saxo.app_key, saxo.app_secret), **kwargs)


def seed(saxo: FakeSaxo) -> str:
    """A refresh token the server will accept next."""
    token = saxo.seed_cache()["refresh_token"]
    assert isinstance(token, str)
    return token


def pkce_pair() -> tuple[str, str]:
    """A code_verifier and its S256 code_challenge (RFC 7636 §4.1, §4.2)."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).decode().rstrip("=")


def login(saxo: FakeSaxo, challenge: str | None = None) -> dict[str, str]:
    """The query the login page redirects back with (a code, or an error)."""
    params = {"response_type": "code", "client_id": saxo.app_key, "redirect_uri": REDIRECT, "state": "s1"}
    if challenge is not None:
        params.update(code_challenge=challenge, code_challenge_method="S256")
    answer = _http().get(saxo.authorize_url, params=params, allow_redirects=False, timeout=10)
    assert answer.status_code == 302, answer.text
    return {k: v[0] for k, v in parse_qs(urlsplit(answer.headers["Location"]).query).items()}


def exchange_form(code: str, verifier: str | None = None, **extra: str) -> dict[str, str]:
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, **extra}
    if verifier is not None:
        form["code_verifier"] = verifier
    return form


def error_of(answer: requests.Response) -> str:
    body = answer.json()
    assert isinstance(body, dict)
    return f"{body.get('error')}: {body.get('error_description')}"


def assert_rotated(saxo: FakeSaxo, old: str) -> str:
    """The old refresh token is spent: presenting it again is invalid_grant; return the new one."""
    new = saxo.current_refresh
    assert new is not None
    assert new != old
    assert new == saxo.issued_refresh[-1]
    reused = refresh(saxo, old)
    assert reused.status_code == 400
    assert error_of(reused).startswith("invalid_grant")
    assert saxo.reuses == 1
    return new


# -- client authentication (RFC 6749 §2.3.1) -------------------------------------------------


def test_default_app_keeps_its_behaviour(saxo: FakeSaxo) -> None:
    old = seed(saxo)
    answer = _http().post(
        saxo.token_url,
        data={"grant_type": "refresh_token", "refresh_token": old},
        auth=(APP_KEY, APP_SECRET),  # requests' raw Basic: identical to the form-encoded one here
        timeout=10,
    )
    assert answer.status_code == 201
    body = answer.json()
    assert body["refresh_token"] == saxo.current_refresh
    assert body["expires_in"] == 1200
    assert body["refresh_token_expires_in"] == 3600
    [record] = saxo.requests
    assert (record["auth_ok"], record["client_auth"], record["fault"]) == (True, "basic", None)
    assert basic_header(APP_KEY, APP_SECRET) == basic_header(APP_KEY, APP_SECRET, form_encode=False)


@pytest.mark.parametrize("secret", [ODD_SECRET, "plus+only", "stray%zz", "escape%41"])
def test_raw_secret_with_plus_or_percent_fails_and_form_encoded_passes(
    fake: Callable[..., FakeSaxo], secret: str
) -> None:
    saxo = fake(app_secret=secret)
    token = seed(saxo)
    form = {"grant_type": "refresh_token", "refresh_token": token}
    raw = post(saxo, form, basic_header(APP_KEY, secret, form_encode=False))
    assert raw.status_code == 401
    assert error_of(raw).startswith("invalid_client")
    assert saxo.refreshes == 0
    encoded = post(saxo, form, basic_header(APP_KEY, secret))
    assert encoded.status_code == 201, encoded.text
    assert [(r["client_auth"], r["auth_ok"]) for r in saxo.requests] == [("basic", False), ("basic", True)]
    assert secret in saxo.secrets_seen()


def test_hex_secret_is_the_same_raw_or_form_encoded(fake: Callable[..., FakeSaxo]) -> None:
    saxo = fake(app_secret=secrets.token_hex(16))
    assert saxo.app_secret is not None
    for form_encode in (False, True):
        token = seed(saxo)
        auth = basic_header(APP_KEY, saxo.app_secret, form_encode=form_encode)
        answer = post(saxo, {"grant_type": "refresh_token", "refresh_token": token}, auth)
        assert answer.status_code == 201, answer.text


def test_body_credentials_pass_but_never_beside_basic(saxo: FakeSaxo) -> None:
    token = seed(saxo)
    both = {"grant_type": "refresh_token", "refresh_token": token, "client_secret": APP_SECRET}
    twice = post(saxo, both, basic_header(APP_KEY, APP_SECRET))  # one method per request (§2.3)
    assert twice.status_code == 401
    body = post(saxo, {**both, "client_id": APP_KEY})
    assert body.status_code == 201, body.text
    assert [(r["client_auth"], r["auth_ok"]) for r in saxo.requests] == [("basic", False), ("body", True)]
    saxo.body_credentials = False
    refused = post(saxo, {**both, "client_id": APP_KEY, "refresh_token": body.json()["refresh_token"]})
    assert refused.status_code == 401


# -- the public app (RFC 6749 §2.1, §3.2.1) ----------------------------------------------------


def test_public_app_refresh_needs_client_id_and_nothing_else(fake: Callable[..., FakeSaxo]) -> None:
    saxo = fake(app_secret=None)
    assert saxo.public
    token = seed(saxo)
    grant = {"grant_type": "refresh_token", "refresh_token": token}
    refusals = [
        post(saxo, grant),  # no client_id
        post(saxo, {**grant, "client_id": "someone-else"}),
        post(saxo, {**grant, "client_id": APP_KEY}, basic_header(APP_KEY, "")),
        post(saxo, {**grant, "client_id": APP_KEY, "client_secret": "anything"}),
    ]
    assert [r.status_code for r in refusals] == [401] * 4
    assert saxo.refreshes == 0
    answer = refresh(saxo, token)
    assert answer.status_code == 201, answer.text
    assert saxo.requests[-1]["client_auth"] == "none"
    assert saxo.requests[-1]["auth_ok"]
    assert_rotated(saxo, token)


def test_public_app_codes_require_pkce(fake: Callable[..., FakeSaxo]) -> None:
    saxo = fake(app_secret=None)
    refused = login(saxo)
    assert refused["error"] == "invalid_request"
    assert "code_challenge" in refused["error_description"]
    assert saxo.issued_codes == []

    verifier, challenge = pkce_pair()
    code = login(saxo, challenge)["code"]
    missing = post(saxo, exchange_form(code, client_id=APP_KEY))
    assert missing.status_code == 400
    assert error_of(missing) == "invalid_request: code_verifier required"
    basic = post(saxo, exchange_form(code, verifier, client_id=APP_KEY), basic_header(APP_KEY, ""))
    assert basic.status_code == 401
    answer = post(saxo, exchange_form(code, verifier, client_id=APP_KEY))  # the code was not spent
    assert answer.status_code == 201, answer.text
    assert saxo.code_exchanges == 1

    seen = saxo.secrets_seen()
    assert all(seen)
    assert {verifier, code, answer.json()["access_token"], answer.json()["refresh_token"]} <= set(seen)


def test_confidential_app_with_required_pkce_needs_basic_and_verifier(fake: Callable[..., FakeSaxo]) -> None:
    saxo = fake(require_pkce=True)
    refused = login(saxo)
    assert refused["error"] == "invalid_request"
    assert "PKCE" in refused["error_description"]

    verifier, challenge = pkce_pair()
    code = login(saxo, challenge)["code"]
    auth = basic_header(APP_KEY, APP_SECRET)
    no_basic = post(saxo, exchange_form(code, verifier, client_id=APP_KEY))
    assert no_basic.status_code == 401
    wrong_basic = post(saxo, exchange_form(code, verifier), basic_header(APP_KEY, "wrong"))
    assert wrong_basic.status_code == 401
    no_verifier = post(saxo, exchange_form(code), auth)
    assert no_verifier.status_code == 400
    assert "code_verifier" in error_of(no_verifier)
    assert error_of(no_verifier).startswith("invalid_request")
    answer = post(saxo, exchange_form(code, verifier), auth)
    assert answer.status_code == 201, answer.text
    assert saxo.code_exchanges == 1


def test_default_app_still_lets_a_pkce_exchange_go_by_client_id(saxo: FakeSaxo) -> None:
    verifier, challenge = pkce_pair()
    code = login(saxo, challenge)["code"]
    answer = post(saxo, exchange_form(code, verifier, client_id=APP_KEY))
    assert answer.status_code == 201, answer.text
    assert saxo.requests[-1]["client_auth"] == "none"
    assert not saxo.requests[-1]["auth_ok"]


# -- plain OAuth2 answers ---------------------------------------------------------------------


def test_plain_oauth2_dialect(fake: Callable[..., FakeSaxo]) -> None:
    saxo = fake()
    saxo.success_status, saxo.refresh_ttl = 200, None
    saxo.extra_fields = {"scope": "openapi read", "id_token": "eyJ.fake-id-token.sig"}
    answer = refresh(saxo, seed(saxo))
    assert answer.status_code == 200
    body = answer.json()
    assert body["scope"] == "openapi read"
    assert body["id_token"] == "eyJ.fake-id-token.sig"
    assert "refresh_token_expires_in" not in body
    assert body["refresh_token"] == saxo.current_refresh
    assert "eyJ.fake-id-token.sig" in saxo.secrets_seen()
    code = login(saxo)["code"]
    exchanged = post(saxo, exchange_form(code), basic_header(APP_KEY, APP_SECRET))
    assert exchanged.status_code == 200
    assert exchanged.json()["scope"] == "openapi read"


# -- the OpenAPI probe ------------------------------------------------------------------------


def probe(saxo: FakeSaxo, bearer: str | None, timeout: float = 10) -> requests.Response:
    headers = {"Authorization": f"Bearer {bearer}"} if bearer is not None else {}
    return _http().get(saxo.openapi_url + "/port/v1/users/me", headers=headers, timeout=timeout)


def test_probe_accepts_only_the_newest_access_token(saxo: FakeSaxo) -> None:
    cache = saxo.seed_cache()
    assert saxo.openapi_url + "/port/v1/users/me" == saxo.base_url + PROBE_PATH
    ok = probe(saxo, cache["access_token"])
    assert ok.status_code == 200
    assert ok.json() == PROBE_USER
    assert cache["access_token"] not in ok.text
    assert probe(saxo, None).status_code == 401
    garbage = probe(saxo, "not-a-token")
    assert garbage.status_code == 401
    assert "invalid_token" in garbage.headers["WWW-Authenticate"]
    assert refresh(saxo, cache["refresh_token"]).status_code == 201
    assert probe(saxo, cache["access_token"]).status_code == 401  # superseded by the refresh
    assert probe(saxo, saxo.issued_access[-1]).status_code == 200
    assert [(r["has_bearer"], r["bearer_ok"]) for r in saxo.probe_requests] == [
        (True, True),
        (False, False),
        (True, False),
        (True, False),
        (True, True),
    ]
    recorded = json.dumps(saxo.probe_requests)
    assert not [token for token in saxo.issued_access if token in recorded]


@pytest.mark.parametrize("status", [403, 429, 503])
def test_probe_faults(saxo: FakeSaxo, status: int) -> None:
    access = saxo.seed_cache()["access_token"]
    saxo.probe_fault, saxo.probe_fault_arg, saxo.probe_fault_limit = str(status), 7, 1
    faulty = probe(saxo, access)
    assert faulty.status_code == status
    if status != 403:
        assert faulty.headers["Retry-After"] == "7"
    assert probe(saxo, access).status_code == 200  # the limit is used up
    assert [r["fault"] for r in saxo.probe_requests] == [str(status), None]


def test_probe_hang(saxo: FakeSaxo) -> None:
    saxo.probe_fault, saxo.probe_fault_arg = "hang", 30  # stop() cuts the wait short at teardown
    with pytest.raises(requests.ReadTimeout):
        probe(saxo, saxo.seed_cache()["access_token"], timeout=0.3)


# -- faults after rotation --------------------------------------------------------------------


def _check_spoil(spoil: str, body: dict[str, Any], raw: bytes, saxo: FakeSaxo, old_access: str) -> None:
    checks: dict[str, Callable[[], bool]] = {
        "expires_in-negative": lambda: body["expires_in"] < 0,
        "expires_in-zero": lambda: body["expires_in"] == 0,
        "expires_in-missing": lambda: "expires_in" not in body,
        "expires_in-1e10": lambda: body["expires_in"] == 1e10 and b'"expires_in": 1e10' in raw,
        "rt-expires-string": lambda: body["refresh_token_expires_in"] == "3600",
        "extra-nan": lambda: math.isnan(body["x_nan"]) and b'"x_nan": NaN' in raw,
        "extra-huge": lambda: math.isinf(body["x_huge"]) and b'"x_huge": 1e400' in raw,
        "big-body": lambda: len(raw) > 2_000_000,
        "access-missing": lambda: "access_token" not in body and saxo.issued_access[-1] == old_access,
    }
    assert checks.keys() == set(SPOILS)
    assert checks[spoil](), raw[:300]


@pytest.mark.parametrize("spoil", SPOILS)
def test_spoiled_after_rotation_spends_the_token(saxo: FakeSaxo, spoil: str) -> None:
    cache = saxo.seed_cache()
    saxo.fault, saxo.spoil = "spoiled-after-rotation", spoil
    answer = refresh(saxo, cache["refresh_token"])
    assert answer.status_code == 201
    body = json.loads(answer.content)  # Python's json reads NaN and 1e400 (as inf)
    assert body["refresh_token"] == saxo.current_refresh
    _check_spoil(spoil, body, answer.content, saxo, cache["access_token"])
    saxo.fault = None
    new = assert_rotated(saxo, cache["refresh_token"])
    assert refresh(saxo, new).status_code == 201


def test_unknown_spoil_spends_nothing(saxo: FakeSaxo) -> None:
    token = seed(saxo)
    saxo.fault, saxo.spoil = "spoiled-after-rotation", "expires_in-typo"
    answer = refresh(saxo, token)
    assert answer.status_code == 500
    assert "unknown spoil" in answer.text
    assert (saxo.refreshes, saxo.current_refresh) == (0, token)


def test_delay_after_rotation_rotates_before_it_waits(saxo: FakeSaxo) -> None:
    token = seed(saxo)
    saxo.fault, saxo.fault_arg = "delay-after-rotation", 30  # stop() cuts the wait short at teardown
    with pytest.raises(requests.ReadTimeout):
        refresh(saxo, token, timeout=0.3)
    deadline = time.monotonic() + 5  # well inside the 30 s delay, even on a loaded machine
    while saxo.refreshes == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert saxo.refreshes == 1
    saxo.fault = None
    assert_rotated(saxo, token)


def test_delay_after_rotation_then_answers_normally(saxo: FakeSaxo) -> None:
    token = seed(saxo)
    saxo.fault, saxo.fault_arg = "delay-after-rotation", 0.3
    started = time.monotonic()
    answer = refresh(saxo, token)
    assert time.monotonic() - started >= 0.3
    assert answer.status_code == 201
    assert answer.json()["refresh_token"] == saxo.current_refresh != token


def test_drip_beats_a_per_read_timeout_but_not_a_deadline(saxo: FakeSaxo) -> None:
    token = seed(saxo)
    saxo.fault, saxo.fault_arg = "drip-after-rotation", 0.005  # about 1.5 s for a 300-byte body
    started = time.monotonic()
    answer = refresh(saxo, token, stream=True, timeout=1)  # the headers come at once
    assert answer.status_code == 201
    length = int(answer.headers["Content-Length"])
    assert saxo.refreshes == 1  # spent before a byte of the body was sent
    got = b""
    while time.monotonic() - started < 1.0 and len(got) < length:
        got += answer.raw.read(1)
    assert 0 < len(got) < length  # bytes trickle in, and a 1 s whole-body deadline is not enough
    while len(got) < length:  # a 1 s per-read timeout never fires: each byte comes within 5 ms
        got += answer.raw.read(1)
    assert time.monotonic() - started > 1.0
    assert json.loads(got)["refresh_token"] == saxo.current_refresh != token


def test_drip_can_drip_the_headers_too(saxo: FakeSaxo) -> None:
    token = seed(saxo)
    saxo.fault, saxo.fault_arg, saxo.drip_headers = "drip-after-rotation", 0.001, True
    started = time.monotonic()
    answer = refresh(saxo, token, timeout=1)
    assert time.monotonic() - started > 60 * 0.001  # status line and headers: more than 60 bytes
    assert answer.json()["refresh_token"] == saxo.current_refresh


def test_drip_ends_when_the_client_hangs_up(saxo: FakeSaxo) -> None:
    saxo.fault, saxo.fault_arg = "drip-after-rotation", 0.02
    answer = refresh(saxo, seed(saxo), stream=True)
    answer.raw.read(1)
    answer.close()  # not read to the end: the connection is closed
    deadline = time.monotonic() + 3
    while saxo.disconnects == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert saxo.disconnects == 1


def test_stop_is_not_held_up_by_a_drip(fake: Callable[..., FakeSaxo]) -> None:
    saxo = fake()
    saxo.fault, saxo.fault_arg = "drip-after-rotation", 1.0  # minutes for the whole body
    answer = refresh(saxo, seed(saxo), stream=True)
    started = time.monotonic()
    saxo.stop()
    assert time.monotonic() - started < 2.0  # the drip alone would take minutes
    with pytest.raises(requests.exceptions.ChunkedEncodingError):  # the body ends short: the server hung up
        _ = answer.content


def test_504_after_rotation_loses_the_new_token(saxo: FakeSaxo) -> None:
    token = seed(saxo)
    saxo.fault, saxo.fault_limit = "504-after-rotation", 1
    answer = refresh(saxo, token)
    assert answer.status_code == 504
    assert saxo.refreshes == 1
    new = assert_rotated(saxo, token)
    assert refresh(saxo, new).status_code == 201  # the limit is used up: answered normally
    assert [r["fault"] for r in saxo.requests] == ["504-after-rotation", None, None]


def test_after_rotation_faults_leave_a_failed_grant_alone(saxo: FakeSaxo) -> None:
    seed(saxo)
    saxo.fault = "504-after-rotation"
    answer = refresh(saxo, "not-the-current-token")
    assert answer.status_code == 400
    assert error_of(answer).startswith("invalid_grant")


# -- faults before the grant ------------------------------------------------------------------


@pytest.mark.parametrize(("arg", "status"), [(0, 307), (301, 301), (308, 308)])
def test_redirect_location_adds_a_slash(saxo: FakeSaxo, arg: float, status: int) -> None:
    token = seed(saxo)
    saxo.fault, saxo.fault_arg, saxo.fault_limit = "redirect-location", arg, 1
    answer = refresh(saxo, token)
    assert answer.status_code == status
    assert answer.headers["Location"] == saxo.token_url + "/"
    assert (saxo.refreshes, saxo.current_refresh) == (0, token)
    moved = _http().post(answer.headers["Location"], data={"grant_type": "refresh_token"}, timeout=10)
    assert moved.status_code == 404


def test_invalid_request_pkce_strikes_code_exchanges_only(saxo: FakeSaxo) -> None:
    saxo.fault = "invalid_request-pkce"
    auth = basic_header(APP_KEY, APP_SECRET)
    assert refresh(saxo, seed(saxo)).status_code == 201
    code = login(saxo)["code"]
    refused = post(saxo, exchange_form(code), auth)
    assert refused.status_code == 400
    assert error_of(refused) == "invalid_request: code_verifier required"
    saxo.fault = None
    assert post(saxo, exchange_form(code), auth).status_code == 201  # the code was not spent


def test_secrets_seen_holds_the_secret_in_every_header_form(fake: Callable[..., FakeSaxo]) -> None:
    saxo = fake(app_secret=ODD_SECRET)
    seen = saxo.secrets_seen()
    assert ODD_SECRET in seen
    assert basic_header(APP_KEY, ODD_SECRET).split()[1] in seen
    assert basic_header(APP_KEY, ODD_SECRET, form_encode=False).split()[1] in seen
    public = fake(app_secret=None)
    public.seed_cache()
    assert all(public.secrets_seen())
    assert len(public.secrets_seen()) == 2
