"""The OAuth2 protocol as the installed program speaks it, against the local fake endpoint.

Public apps (no secret: PKCE, ``client_id`` in the body), confidential apps with PKCE, client
credentials form-encoded in the Basic header (RFC 6749 §2.3.1), plain messages, and valid
OAuth2 answers that differ from Saxo's (200, no refresh lifetime, extra fields).
"""

from __future__ import annotations

import base64
import json
import queue
import re
import subprocess
import threading
from pathlib import Path
from typing import IO, Any, Callable, Iterator
from urllib.parse import parse_qs, quote_plus, urlsplit

import pytest
import requests
from fake_saxo import APP_KEY, APP_SECRET, FakeSaxo, basic_header
from support import COMMAND, base_env, write_json

from token_refresh import endpoint, redact
from token_refresh.oauth import code_challenge
from token_refresh.transport import Response

RunCli = Callable[..., "subprocess.CompletedProcess[str]"]
URL_RE = re.compile(r"(http://127\.0\.0\.1:\d+/authorize\?\S+)")
REDIRECT_URI = "https://app.example.test/callback"
# every character RFC 6749 §2.3.1 makes a client form-encode, and one outside ASCII
ODD_SECRET = "a+b%c:d€ e/f=g&h"
SECRET = "SAXOBANK_APP_SECRET_LIVE"


class RecordingSaxo(FakeSaxo):
    """The fake endpoint, also keeping each token request's raw Authorization header."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.authorizations: list[str] = []

    def client_auth(self, form: dict[str, str], authorization: str) -> tuple[str, bool]:
        self.authorizations.append(authorization)
        return super().client_auth(form, authorization)


@pytest.fixture
def fake_args() -> dict[str, Any]:
    """FakeSaxo's constructor arguments; a test overrides them with ``parametrize("fake_args", ...)``."""
    return {}


@pytest.fixture
def saxo(fake_args: dict[str, Any]) -> Iterator[RecordingSaxo]:
    """The fake endpoint built with ``fake_args`` (overrides conftest's default one)."""
    server = RecordingSaxo(**fake_args)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def env_for(secret: str | None = APP_SECRET, *, tmp_path: Path | None = None, **extra: str) -> dict[str, str]:
    """The environment of a run: the app key, and the secret directly, from a file, or not at all."""
    env = base_env(**extra)
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "BROWSER"):
        env.pop(name, None)  # never start a real browser from a test
    del env[SECRET]
    if secret is not None and tmp_path is None:
        env[SECRET] = secret
    elif secret is not None:
        assert tmp_path is not None
        path = tmp_path / "app-secret"
        path.write_text(secret + "\n", encoding="utf-8")  # as `echo` or a Docker secret writes it
        env[f"{SECRET}_FILE"] = str(path)
    return env


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def authorize(config: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``authorize --paste``, play the browser at the fake login page and paste the redirect back."""
    command = [*COMMAND, "authorize", "--paste", "--no-browser", "--config", str(config), *args]
    proc = subprocess.Popen(
        command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    assert proc.stdin is not None
    lines: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=_pump, args=(proc.stderr, lines), daemon=True)
    reader.start()
    err: list[str] = []
    try:
        while True:
            line = lines.get(timeout=30)
            if line is None:
                break
            err.append(line)
            found = URL_RE.search(line)
            if found:
                session = requests.Session()
                session.trust_env = False  # no proxy between the test and 127.0.0.1
                answer = session.get(found.group(1), allow_redirects=False, timeout=10)
                assert answer.status_code == 302, answer.text
                proc.stdin.write(answer.headers["Location"] + "\n")
                proc.stdin.close()
                break
        out = proc.stdout.read() if proc.stdout is not None else ""
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(timeout=10)
    while not lines.empty():
        line = lines.get()
        err.append(line or "")
    return subprocess.CompletedProcess(command, proc.returncode, out, "".join(err))


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def login_url(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    found = URL_RE.search(result.stderr)
    assert found, result.stderr
    return query_of(found.group(1))


def assert_no_secrets(
    saxo: FakeSaxo, *runs: subprocess.CompletedProcess[str], also: tuple[str, ...] = ()
) -> None:
    """No token, code, verifier, id_token or app secret (in any encoding) in anything printed."""
    forms = set(also)
    for value in [*saxo.secrets_seen(), *also]:
        forms.update({value, quote_plus(value)})
    if saxo.app_secret is not None:
        forms.add(basic_header(saxo.app_key, saxo.app_secret).split()[1])
    for run in runs:
        text = run.stdout + run.stderr
        for form in forms:
            assert form not in text, f"a secret ({form[:4]}...) leaked into the output"


@pytest.fixture
def auth_config(saxo: FakeSaxo, config_file: Callable[..., Path]) -> Callable[..., Path]:
    """A config with the fake login page, a registered redirect_uri and a short retry budget."""

    def build(**overrides: Any) -> Path:
        saxo.registered_redirect_uri = REDIRECT_URI
        values: dict[str, Any] = {"authorize_url": saxo.authorize_url, "redirect_uri": REDIRECT_URI}
        values.update(overrides)
        return config_file(**values)

    return build


# -- 1. public apps ------------------------------------------------------------------------------


@pytest.mark.parametrize("fake_args", [{"app_secret": None}])
def test_public_app_authorizes_with_pkce_and_refreshes_with_client_id_only(
    saxo: RecordingSaxo, auth_config: Callable[..., Path], cache_path: Path, run_cli: RunCli
) -> None:
    config = auth_config()
    env = env_for(None)  # the app key alone
    authorized = authorize(config, env)  # no --pkce: a public client uses it anyway

    assert authorized.returncode == 0, authorized.stderr
    sent = login_url(authorized)
    assert sent["code_challenge_method"] == "S256"
    assert "no app secret configured: a public client, so PKCE is used" in authorized.stderr
    assert "by a public client with PKCE" in authorized.stderr
    [exchange] = saxo.requests
    assert (exchange["client_auth"], exchange["client_id"], exchange["auth_ok"]) == ("none", APP_KEY, True)
    assert saxo.authorizations == [""]
    assert code_challenge(exchange["code_verifier"]) == sent["code_challenge"]

    refreshed = run_cli("run", "--force", "--config", str(config), env=env)
    assert refreshed.returncode == 0, refreshed.stderr
    refresh = saxo.requests[-1]
    assert refresh["grant_type"] == "refresh_token"
    assert (refresh["client_auth"], refresh["client_id"], refresh["auth_ok"]) == ("none", APP_KEY, True)
    assert saxo.authorizations[-1] == ""
    assert saxo.refreshes == 1
    assert json.loads(cache_path.read_text())["refresh_token"] == saxo.issued_refresh[-1]
    [summary] = [line for line in refreshed.stderr.splitlines() if "token refreshed" in line]
    assert "by a public client" in summary

    status = run_cli("status", "--config", str(config), env=env)
    assert status.returncode == 0, status.stderr
    assert re.search(r"^client: +public\b", status.stdout, re.M), status.stdout
    rows = json.loads(run_cli("status", "--json", "--config", str(config), env=env).stdout)
    assert rows[0]["client"] == "public"
    assert_no_secrets(saxo, authorized, refreshed, status)


def test_a_secret_makes_a_confidential_client_that_status_and_the_summary_name(
    saxo: RecordingSaxo, config_file: Callable[..., Path], cache_path: Path, run_cli: RunCli, tmp_path: Path
) -> None:
    write_json(cache_path, saxo.seed_cache(age=100))
    config = str(config_file())
    env = env_for(APP_SECRET, tmp_path=tmp_path)  # SAXOBANK_APP_SECRET_LIVE_FILE

    refreshed = run_cli("run", "--force", "--config", config, env=env)
    assert refreshed.returncode == 0, refreshed.stderr
    assert (saxo.requests[-1]["client_auth"], saxo.requests[-1]["auth_ok"]) == ("basic", True)
    assert "by a confidential client" in refreshed.stderr
    status = run_cli("status", "--config", config, env=env)
    assert re.search(r"^client: +confidential\b", status.stdout, re.M), status.stdout
    assert_no_secrets(saxo, refreshed, status)


def test_a_public_client_refused_by_a_confidential_app_is_told_no_secret_was_sent(
    saxo: RecordingSaxo, config_file: Callable[..., Path], cache_path: Path, run_cli: RunCli
) -> None:
    raw = write_json(cache_path, saxo.seed_cache(age=100))
    result = run_cli("run", "--force", "--config", str(config_file()), env=env_for(None))

    assert result.returncode == 78, result.stderr
    assert "no secret was sent" in result.stderr
    assert saxo.requests[-1]["client_auth"] == "none"
    assert cache_path.read_bytes() == raw
    assert saxo.refreshes == 0


def test_without_the_app_key_only_the_key_is_asked_for(
    config_file: Callable[..., Path], cache_path: Path, run_cli: RunCli
) -> None:
    env = env_for(None)
    del env["SAXOBANK_APP_KEY_LIVE"]
    result = run_cli("run", "--force", "--config", str(config_file()), env=env)

    assert result.returncode == 78, result.stderr
    assert "SAXOBANK_APP_KEY_LIVE is not set" in result.stderr
    assert SECRET not in result.stderr


# -- 2. confidential apps with PKCE -----------------------------------------------------------------


@pytest.mark.parametrize("fake_args", [{"require_pkce": True}])
def test_confidential_app_with_pkce_sends_basic_and_the_verifier(
    saxo: RecordingSaxo, auth_config: Callable[..., Path], cache_path: Path
) -> None:
    authorized = authorize(auth_config(), env_for(APP_SECRET), "--pkce")

    assert authorized.returncode == 0, authorized.stderr
    [exchange] = saxo.requests
    assert (exchange["client_auth"], exchange["auth_ok"]) == ("basic", True)
    assert code_challenge(exchange["code_verifier"]) == login_url(authorized)["code_challenge"]
    assert saxo.code_exchanges == 1
    assert json.loads(cache_path.read_text())["access_token"] == saxo.issued_access[-1]
    assert "by a confidential client with PKCE" in authorized.stderr
    assert_no_secrets(saxo, authorized)


@pytest.mark.parametrize("fake_args", [{"require_pkce": True}])
def test_an_app_that_requires_pkce_refusing_the_login_says_use_pkce(
    saxo: RecordingSaxo, auth_config: Callable[..., Path], cache_path: Path
) -> None:
    refused = authorize(auth_config(), env_for(APP_SECRET))

    assert refused.returncode == 77, refused.stderr
    assert "--pkce" in refused.stderr
    assert saxo.requests == []  # the redirect carried the error: nothing to exchange
    assert not cache_path.exists()


def test_invalid_request_from_the_code_exchange_says_use_pkce(
    saxo: RecordingSaxo, auth_config: Callable[..., Path], cache_path: Path
) -> None:
    saxo.fault = "invalid_request-pkce"
    refused = authorize(auth_config(), env_for(APP_SECRET))

    assert refused.returncode == 77, refused.stderr
    assert "run authorize again with --pkce" in refused.stderr
    assert "single-use" not in refused.stderr
    assert saxo.requests[-1]["grant_type"] == "authorization_code"
    assert not cache_path.exists()


# -- 3. form-encoded client credentials (RFC 6749 §2.3.1) ----------------------------------------


@pytest.mark.parametrize("fake_args", [{"app_secret": ODD_SECRET}])
@pytest.mark.parametrize("source", ["variable", "file"])
def test_a_secret_with_reserved_and_non_ascii_characters_authenticates(
    saxo: RecordingSaxo,
    auth_config: Callable[..., Path],
    cache_path: Path,
    run_cli: RunCli,
    tmp_path: Path,
    source: str,
) -> None:
    config = auth_config()
    env = env_for(ODD_SECRET, tmp_path=tmp_path if source == "file" else None)
    authorized = authorize(config, env, "-v")
    refreshed = run_cli("run", "--force", "-v", "--config", str(config), env=env)

    assert authorized.returncode == 0, authorized.stderr
    assert refreshed.returncode == 0, refreshed.stderr
    assert [r["grant_type"] for r in saxo.requests] == ["authorization_code", "refresh_token"]
    assert all(r["client_auth"] == "basic" and r["auth_ok"] for r in saxo.requests)
    encoded = basic_header(APP_KEY, ODD_SECRET)
    assert saxo.authorizations == [encoded, encoded]
    assert encoded != basic_header(APP_KEY, ODD_SECRET, form_encode=False)
    assert_no_secrets(saxo, authorized, refreshed)


HEX_SECRET = "0123456789abcdef0123456789abcdef"  # the shape of a Saxo app secret


@pytest.mark.parametrize("fake_args", [{"app_secret": HEX_SECRET}])
def test_a_hex_secret_is_sent_byte_for_byte(
    saxo: RecordingSaxo, config_file: Callable[..., Path], cache_path: Path, run_cli: RunCli
) -> None:
    write_json(cache_path, saxo.seed_cache(age=100))
    result = run_cli("run", "--force", "--config", str(config_file()), env=env_for(HEX_SECRET))

    assert result.returncode == 0, result.stderr
    raw = base64.b64encode(f"{APP_KEY}:{HEX_SECRET}".encode()).decode()
    assert saxo.authorizations == [f"Basic {raw}"]


# -- 4. plain messages --------------------------------------------------------------------------


@pytest.mark.parametrize("code", [307, 308])
def test_a_redirect_from_the_token_url_shows_its_location(
    saxo: RecordingSaxo, config_file: Callable[..., Path], cache_path: Path, run_cli: RunCli, code: int
) -> None:
    raw = write_json(cache_path, saxo.seed_cache(age=100))
    saxo.fault, saxo.fault_arg = "redirect-location", float(code)
    result = run_cli("run", "--force", "--config", str(config_file()), env=env_for())

    assert result.returncode == 78, result.stderr
    assert f"HTTP {code}, redirected to {saxo.token_url}/ " in result.stderr
    assert "check token_url" in result.stderr
    assert cache_path.read_bytes() == raw
    assert saxo.refreshes == 0


@pytest.mark.parametrize(
    ("fault", "code"),
    [("invalid_client", 78), ("bad-request", 77), ("404", 78), ("503", 75), ("redirect", 78)],
)
def test_messages_name_the_token_endpoint_not_saxo(
    saxo: RecordingSaxo,
    config_file: Callable[..., Path],
    cache_path: Path,
    run_cli: RunCli,
    fault: str,
    code: int,
) -> None:
    write_json(cache_path, saxo.seed_cache(age=100))
    saxo.fault = fault
    result = run_cli("run", "--force", "--config", str(config_file(retry_budget_secs=0)), env=env_for())

    assert result.returncode == code, result.stderr
    assert "token endpoint" in result.stderr
    assert "Saxo" not in result.stderr


def test_a_missing_redirect_uri_does_not_name_saxo(config_file: Callable[..., Path], run_cli: RunCli) -> None:
    result = run_cli("authorize", "--paste", "--config", str(config_file()), env=env_for(), input="")

    assert result.returncode == 78, result.stderr
    assert "redirect_uri" in result.stderr
    assert "Saxo" not in result.stderr


# -- 5. valid OAuth2 that differs from Saxo's ----------------------------------------------------

ID_TOKEN = (
    base64.urlsafe_b64encode(b'{"alg":"RS256"}').decode().rstrip("=")
    + ".eyJzdWIiOiJmYWtlLXVzZXIifQ.c2lnbmF0dXJlLW9mLXRoZS1pZC10b2tlbg"
)
PLAIN = {
    "success_status": 200,
    "refresh_ttl": None,
    "extra_fields": {"scope": "openid trade", "id_token": ID_TOKEN},
}


def _plain(saxo: FakeSaxo) -> None:
    for name, value in PLAIN.items():
        setattr(saxo, name, value)


def test_a_plain_oauth2_refresh_answer_is_saved_and_its_unknown_lifetime_said(
    saxo: RecordingSaxo, config_file: Callable[..., Path], cache_path: Path, run_cli: RunCli
) -> None:
    write_json(cache_path, saxo.seed_cache(age=100))  # a Saxo answer, with refresh_token_expires_in
    _plain(saxo)
    config = str(config_file())
    refreshed = run_cli("run", "--force", "-v", "--config", config, env=env_for())

    assert refreshed.returncode == 0, refreshed.stderr
    data = json.loads(cache_path.read_text())
    assert data["refresh_token"] == saxo.issued_refresh[-1]
    assert "refresh_token_expires_in" not in data  # the old lifetime is not paired with the new token
    assert (data["scope"], data["id_token"]) == ("openid trade", ID_TOKEN)
    assert "WARNING" not in refreshed.stderr

    status = run_cli("status", "--config", config, env=env_for())
    assert status.returncode == 0, status.stdout + status.stderr
    assert "refresh token outlive" not in status.stdout
    assert re.search(r"^state: +valid \(.*refresh token lifetime unknown\)", status.stdout, re.M), (
        status.stdout
    )
    assert re.search(r"^refresh token: +unknown", status.stdout, re.M), status.stdout
    valid = run_cli("run", "--config", config, env=env_for())
    assert valid.returncode == 0, valid.stderr
    assert "token valid" in valid.stderr
    assert_no_secrets(saxo, refreshed, status, valid, also=(ID_TOKEN,))


def test_a_plain_oauth2_code_exchange_is_saved(
    saxo: RecordingSaxo, auth_config: Callable[..., Path], cache_path: Path
) -> None:
    _plain(saxo)
    authorized = authorize(auth_config(), env_for(), "-v")

    assert authorized.returncode == 0, authorized.stderr
    data = json.loads(cache_path.read_text())
    assert data["access_token"] == saxo.issued_access[-1]
    assert data["id_token"] == ID_TOKEN
    assert "refresh_token_expires_in" not in data
    assert "refresh token unknown" in authorized.stderr
    assert_no_secrets(saxo, authorized, also=(ID_TOKEN,))


def test_an_id_token_in_an_answer_is_registered_with_the_redactor() -> None:
    id_token = "eyJhbGciOiJSUzI1NiJ9.registered-id-token-body.c2lnbmF0dXJl"
    body = {"access_token": "a" * 40, "refresh_token": "r" * 36, "expires_in": 1200, "id_token": id_token}
    answer = Response(200, {"content-type": "application/json"}, json.dumps(body).encode())

    granted = endpoint.interpret(answer, grant=endpoint.REFRESH)

    assert granted.fields["id_token"] == id_token
    assert redact.redact(f"id_token={id_token}") == f"id_token={redact.REDACTED}"
