"""``token-refresh authorize``: the installed program against the fake Saxo login and token endpoint.

The test plays the browser: it reads the printed URL, "logs in" at the fake /authorize (which
redirects at once), and hands the redirect back by stdin (--paste) or by requesting it (--listen).
"""

from __future__ import annotations

import json
import re
import socket
import stat
import subprocess
import time
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest
import requests
from fake_saxo import APP_KEY, FakeSaxo
from support import COMMAND, Processes, base_env, write_json

from token_refresh.errors import TokenRefreshError
from token_refresh.oauth import (
    Redirect,
    build_authorize_url,
    check_redirect,
    code_challenge,
    listen_address,
    parse_redirect,
)
from token_refresh.token import merge_authorization

URL_RE = re.compile(r"(http://127\.0\.0\.1:\d+/authorize\?\S+)")
PASTE_REDIRECT = "https://app.example.test/saxo/callback"


def _env(**extra: str) -> dict[str, str]:
    env = base_env(**extra)
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "BROWSER"):
        env.pop(name, None)  # never start a real browser from a test
    env.update(extra)
    return env


def _http() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # no proxy between the test and 127.0.0.1
    return session


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Interactive:
    """The program as a process whose stderr is read while it runs."""

    def __init__(
        self,
        processes: Processes,
        args: list[str],
        env: dict[str, str],
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        self.processes = processes
        self.live = processes.spawn_live([*COMMAND, *args], env=env, preexec_fn=preexec_fn)
        self.proc = self.live.proc
        self.started = time.monotonic()

    def url(self, timeout: float = 30) -> str:
        """The authorize URL the program printed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = URL_RE.search(self.live.stderr())
            if found:
                return found.group(1)
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.proc.kill()
        raise AssertionError(f"no authorize URL printed; stderr:\n{self.live.stderr()}")

    def finish(self, paste: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self.processes.finish_live(self.live, input=paste, timeout=timeout)


def login(url: str) -> str:
    """Play the browser at the login page: return where it redirects to."""
    answer = _http().get(url, allow_redirects=False, timeout=30)
    assert answer.status_code == 302, answer.text
    return answer.headers["Location"]


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


@pytest.fixture
def auth_config(saxo: FakeSaxo, config_file: Callable[..., Path]) -> Callable[..., Path]:
    """A config with the fake login page and a redirect_uri (an https app URL by default)."""

    def build(redirect_uri: str | None = PASTE_REDIRECT, **overrides: Any) -> Path:
        saxo.registered_redirect_uri = redirect_uri
        return config_file(authorize_url=saxo.authorize_url, redirect_uri=redirect_uri, **overrides)

    return build


Start = Callable[..., Interactive]


@pytest.fixture
def start(processes: Processes) -> Start:
    """Start ``token-refresh authorize -v --config CONFIG ARGS`` (see Interactive)."""

    def begin(
        config: Path,
        *args: str,
        env: dict[str, str] | None = None,
        preexec_fn: Callable[[], None] | None = None,
    ) -> Interactive:
        argv = ["authorize", "-v", "--config", str(config), *args]
        return Interactive(processes, argv, _env() if env is None else env, preexec_fn)

    return begin


# -- full flows -------------------------------------------------------------------------------


def test_paste_flow_creates_a_cache_that_run_can_refresh(
    start: Start, saxo: FakeSaxo, auth_config: Callable[..., Path], cache_path: Path, run_cli: Any
) -> None:
    config = auth_config()
    app = start(config, "--paste", "--no-browser")
    url = app.url()
    sent = query_of(url)
    assert sent["response_type"] == "code"
    assert sent["client_id"] == APP_KEY
    assert sent["redirect_uri"] == PASTE_REDIRECT
    assert len(sent["state"]) >= 20
    assert "code_challenge" not in sent
    before = time.time()
    result = app.finish(login(url) + "\n")
    after = time.time()

    assert result.returncode == 0, result.stderr
    data = json.loads(cache_path.read_text())
    assert data["access_token"] == saxo.issued_access[-1]
    assert data["refresh_token"] == saxo.issued_refresh[-1]
    assert before - 1 <= data["issued_at"] <= after
    assert stat.S_IMODE(cache_path.stat().st_mode) == 0o600
    [exchange] = saxo.requests
    assert exchange["grant_type"] == "authorization_code"
    assert exchange["auth_ok"]
    assert exchange["redirect_uri"] == PASTE_REDIRECT
    assert exchange["code_verifier"] is None
    assert data["issued_at"] <= exchange["time"]  # when the request was sent, not answered
    assert saxo.code_exchanges == 1
    assert "authorized: new token saved" in result.stderr
    import hashlib

    assert hashlib.sha256(data["access_token"].encode()).hexdigest()[:8] in result.stderr

    # the new chain works: the keeper can spend its refresh token
    refreshed = run_cli("run", "--force", "-v", "--config", str(config), env=_env())
    assert refreshed.returncode == 0, refreshed.stderr
    assert saxo.refreshes == 1
    assert saxo.reuses == 0


def test_paste_bare_code_replaces_old_token_and_keeps_other_fields(
    start: Start, saxo: FakeSaxo, auth_config: Callable[..., Path], cache_path: Path
) -> None:
    old = saxo.seed_cache(age=5000, consumer_note="kept", account="A1")
    write_json(cache_path, old, mode=0o640)
    config = auth_config()
    app = start(config, "--paste", "--no-browser")
    code = query_of(login(app.url()))["code"]
    result = app.finish(f"\n  {code}  \n")

    assert result.returncode == 0, result.stderr
    data = json.loads(cache_path.read_text())
    assert data["consumer_note"] == "kept"
    assert data["account"] == "A1"
    assert data["access_token"] == saxo.issued_access[-1] != old["access_token"]
    assert data["refresh_token"] == saxo.issued_refresh[-1]
    assert isinstance(data["issued_at"], int)  # the old cache's representation
    assert stat.S_IMODE(cache_path.stat().st_mode) == 0o640
    assert "state could not be checked" in result.stderr
    assert not [p for p in cache_path.parent.iterdir() if p.name.endswith(".tmp")]


BROWSER_SCRIPT = """\
#!{python}
import os, sys, urllib.error, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({{}}))
try:
    with opener.open(sys.argv[1], timeout=30) as answer:
        status, body = answer.status, answer.read()
except urllib.error.HTTPError as e:
    status, body = e.code, e.read()
with open({out!r} + ".part", "wb") as f:
    f.write(b"%d\\n" % status + body)
os.replace({out!r} + ".part", {out!r})
"""


def test_listen_flow_with_the_browser_playing_along(
    start: Start, saxo: FakeSaxo, auth_config: Callable[..., Path], cache_path: Path, tmp_path: Path
) -> None:
    import sys

    page = tmp_path / "browser-page.txt"
    browser = tmp_path / "fake-browser"
    browser.write_text(BROWSER_SCRIPT.format(python=sys.executable, out=str(page)))
    browser.chmod(0o755)
    config = auth_config(f"http://localhost:{free_port()}/callback")
    app = start(config, "--listen", env=_env(BROWSER=str(browser)))
    result = app.finish(timeout=60)

    assert result.returncode == 0, result.stderr
    deadline = time.monotonic() + 20
    while not page.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    status, _, body = page.read_text().partition("\n")
    assert status == "200"
    assert "Authorization complete" in body
    assert json.loads(cache_path.read_text())["access_token"] == saxo.issued_access[-1]
    assert saxo.code_exchanges == 1


def test_pkce_sends_the_verifier_and_no_secret(
    start: Start, saxo: FakeSaxo, auth_config: Callable[..., Path], cache_path: Path
) -> None:
    env = _env()
    del env["SAXOBANK_APP_SECRET_LIVE"]  # a PKCE exchange needs only the app key
    app = start(auth_config(), "--paste", "--pkce", "--no-browser", env=env)
    url = app.url()
    sent = query_of(url)
    assert sent["code_challenge_method"] == "S256"
    result = app.finish(login(url) + "\n")

    assert result.returncode == 0, result.stderr
    [exchange] = saxo.requests
    assert not exchange["has_auth"]
    assert exchange["client_id"] == APP_KEY
    verifier = exchange["code_verifier"]
    assert 43 <= len(verifier) <= 128
    assert code_challenge(verifier) == sent["code_challenge"]  # the server checked it too
    assert json.loads(cache_path.read_text())["access_token"] == saxo.issued_access[-1]
    assert verifier in saxo.secrets_seen()


# -- refusals leave the cache untouched --------------------------------------------------------


def _tamper_state(location: str) -> str:
    parts = urlsplit(location)
    query = query_of(location)
    query["state"] = "not-the-state-we-sent"
    return urlunsplit(parts._replace(query=urlencode(query)))


def test_state_mismatch_pasted_is_refused(
    start: Start, saxo: FakeSaxo, auth_config: Callable[..., Path], cache_path: Path
) -> None:
    raw = write_json(cache_path, saxo.seed_cache(age=5000))
    app = start(auth_config(), "--paste", "--no-browser")
    result = app.finish(_tamper_state(login(app.url())) + "\n")

    assert result.returncode == 65, result.stderr
    assert "state does not match" in result.stderr
    assert cache_path.read_bytes() == raw
    assert saxo.requests == []  # the code was never exchanged


def test_listener_ignores_redirects_without_this_requests_state(
    start: Start, saxo: FakeSaxo, auth_config: Callable[..., Path], cache_path: Path
) -> None:
    """Login CSRF: a forged link (another state, or none) is refused and the real redirect still works."""
    write_json(cache_path, saxo.seed_cache(age=5000))
    app = start(auth_config(f"http://127.0.0.1:{free_port()}/cb"), "--listen", "--no-browser")
    redirect = login(app.url())
    http = _http()
    assert http.get(redirect.replace("/cb?", "/other?"), timeout=30).status_code == 404
    forged = http.get(_tamper_state(redirect), timeout=30)
    stateless = http.get(redirect.split("&state=")[0], timeout=30)
    assert saxo.requests == []  # nothing was exchanged for either
    page = http.get(redirect, timeout=30)
    result = app.finish()

    assert forged.status_code == stateless.status_code == 400
    assert "Not this login" in forged.text
    assert page.status_code == 200
    assert result.returncode == 0, result.stderr
    assert [r["grant_type"] for r in saxo.requests] == ["authorization_code"]
    assert json.loads(cache_path.read_text())["refresh_token"] == saxo.current_refresh


def test_access_denied_in_the_redirect(
    start: Start, saxo: FakeSaxo, auth_config: Callable[..., Path], cache_path: Path
) -> None:
    raw = write_json(cache_path, saxo.seed_cache(age=5000))
    saxo.fault = "access_denied"
    app = start(auth_config(), "--paste", "--no-browser")
    result = app.finish(login(app.url()) + "\n")

    assert result.returncode == 77, result.stderr
    assert "refused (access_denied: The user denied the request)" in result.stderr
    assert cache_path.read_bytes() == raw
    assert saxo.requests == []


def test_expired_code_is_refused_by_saxo(
    start: Start, saxo: FakeSaxo, auth_config: Callable[..., Path], cache_path: Path
) -> None:
    raw = write_json(cache_path, saxo.seed_cache(age=5000))
    saxo.code_ttl = -1
    app = start(auth_config(), "--paste", "--no-browser")
    result = app.finish(login(app.url()) + "\n")

    assert result.returncode == 77, result.stderr
    assert "authorization code grant" in result.stderr
    assert "authorization code expired" in result.stderr
    assert "run authorize again" in result.stderr
    assert "refresh failed" not in result.stderr
    assert cache_path.read_bytes() == raw
    assert not [p for p in cache_path.parent.iterdir() if p.name.endswith(".tmp")]


def test_reused_code_is_refused_by_saxo(
    start: Start, saxo: FakeSaxo, auth_config: Callable[..., Path], cache_path: Path
) -> None:
    config = auth_config()
    first = start(config, "--paste", "--no-browser")
    location = login(first.url())
    done = first.finish(location + "\n")
    assert done.returncode == 0, done.stderr
    raw = cache_path.read_bytes()

    again = start(config, "--paste", "--no-browser")
    again.url()
    result = again.finish(query_of(location)["code"] + "\n")

    assert result.returncode == 77, result.stderr
    assert "already used" in result.stderr
    assert saxo.code_reuses == 1
    assert cache_path.read_bytes() == raw


def test_timeout_waiting_at_the_listener(
    start: Start, saxo: FakeSaxo, auth_config: Callable[..., Path], cache_path: Path
) -> None:
    raw = write_json(cache_path, saxo.seed_cache(age=5000))
    app = start(
        auth_config(f"http://127.0.0.1:{free_port()}/cb"), "--listen", "--no-browser", "--timeout", "1"
    )
    app.url()
    result = app.finish(timeout=30)

    assert result.returncode == 75, result.stderr
    assert time.monotonic() - app.started < 15  # 1 s asked; generous for a loaded machine
    assert "no redirect within 1 s" in result.stderr
    assert cache_path.read_bytes() == raw
    assert saxo.requests == []


def test_timeout_waiting_for_the_paste(
    start: Start, saxo: FakeSaxo, auth_config: Callable[..., Path], cache_path: Path
) -> None:
    raw = write_json(cache_path, saxo.seed_cache(age=5000))
    app = start(auth_config(), "--paste", "--no-browser", "--timeout", "1")
    app.url()
    app.proc.wait(timeout=30)  # stdin stays open: only the timeout can end the wait
    result = app.finish()

    assert result.returncode == 75, result.stderr
    assert time.monotonic() - app.started < 15
    assert "no redirect within 1 s" in result.stderr
    assert cache_path.read_bytes() == raw


def test_end_of_input_without_a_paste(saxo: FakeSaxo, auth_config: Callable[..., Path], run_cli: Any) -> None:
    result = run_cli(
        "authorize", "--paste", "--no-browser", "--config", str(auth_config()), input="", env=_env()
    )
    assert result.returncode == 65, result.stderr
    assert "end of input" in result.stderr


# -- refused before anyone logs in ------------------------------------------------------------


def test_missing_redirect_uri_is_a_config_error(
    saxo: FakeSaxo, auth_config: Callable[..., Path], run_cli: Any
) -> None:
    result = run_cli("authorize", "--paste", "--config", str(auth_config(None)), input="", env=_env())
    assert result.returncode == 78
    assert "redirect_uri: required by authorize" in result.stderr
    assert saxo.authorize_requests == []


def test_listen_needs_a_loopback_redirect(
    saxo: FakeSaxo, auth_config: Callable[..., Path], run_cli: Any
) -> None:
    result = run_cli("authorize", "--listen", "--config", str(auth_config()), input="", env=_env())
    assert result.returncode == 78
    assert "redirect_uri: --listen needs http://localhost:PORT/" in result.stderr


def test_unwritable_cache_directory_fails_before_the_login(
    saxo: FakeSaxo, auth_config: Callable[..., Path], tmp_path: Path, run_cli: Any
) -> None:
    missing = tmp_path / "no-such-dir" / "tokens.json"  # unwritable even for root
    config = auth_config()
    result = run_cli(
        "authorize", "--paste", "--config", str(config), "--cache", str(missing), input="x\n", env=_env()
    )
    assert result.returncode == 74, result.stderr
    assert "cannot create a file in" in result.stderr
    assert "Open this URL" not in result.stderr
    assert saxo.requests == []


def test_no_room_for_the_new_cache_fails_before_the_code_is_spent(
    start: Start, saxo: FakeSaxo, auth_config: Callable[..., Path], cache_path: Path
) -> None:
    import resource

    # the login passes the preflight (16 KiB), but reserving old size + 16 KiB before the
    # exchange hits the file-size limit (root cannot bypass it; Python ignores SIGXFSZ)
    raw = write_json(cache_path, saxo.seed_cache(age=5000, padding="x" * 20_000))

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (30_000, 30_000))

    app = start(auth_config(), "--paste", "--no-browser", preexec_fn=limit)
    result = app.finish(login(app.url()) + "\n")

    assert result.returncode == 74, result.stderr
    assert "cannot reserve" in result.stderr
    assert saxo.requests == []  # the code was not spent: authorize can simply be run again
    assert cache_path.read_bytes() == raw


def test_help_documents_the_exit_statuses(run_cli: Any) -> None:
    result = run_cli("authorize", "--help", env=_env())
    assert result.returncode == 0
    for text in ("--paste", "--listen", "--pkce", "--timeout", "authorize: the redirect", "refused"):
        assert text in result.stdout


# -- the pure parts ----------------------------------------------------------------------------


def test_code_challenge_matches_rfc7636_appendix_b() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert code_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_build_authorize_url_keeps_an_existing_query() -> None:
    url = build_authorize_url(
        "https://sim.logonvalidation.net/authorize?lang=en",
        client_id="key",
        redirect_uri="http://localhost:8765/cb",
        state="s1",
        challenge="c1",
    )
    assert url.startswith("https://sim.logonvalidation.net/authorize?lang=en&response_type=code&")
    assert query_of(url) == {
        "lang": "en",
        "response_type": "code",
        "client_id": "key",
        "state": "s1",
        "redirect_uri": "http://localhost:8765/cb",
        "code_challenge": "c1",
        "code_challenge_method": "S256",
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://app.example/cb?code=abc123&state=s1", Redirect("abc123", "s1", None, None)),
        ("  code=abc123&state=s1\n", Redirect("abc123", "s1", None, None)),
        ("?code=abc123", Redirect("abc123", None, None, None)),
        ("abc123", Redirect("abc123", None, None, None)),
        ("http://localhost/cb#code=abc123&state=s1", Redirect("abc123", "s1", None, None)),
        (
            "https://app.example/cb?error=access_denied&error_description=No+thanks&state=s1",
            Redirect(None, "s1", "access_denied", "No thanks"),
        ),
        ("", Redirect(None, None, None, None)),
    ],
)
def test_parse_redirect(text: str, expected: Redirect) -> None:
    assert parse_redirect(text) == expected


@pytest.mark.parametrize(
    ("redirect", "status"),
    [
        (Redirect("c0de", "other", None, None), 65),
        (Redirect(None, "s1", None, None), 65),
        (Redirect(None, "s1", "access_denied", None), 77),
        (Redirect("c0de", "other", "server_error", "down"), 65),  # not this request's: ignored
        (Redirect(None, None, "access_denied", None), 77),
    ],
)
def test_check_redirect_refusals(redirect: Redirect, status: int) -> None:
    with pytest.raises(TokenRefreshError) as caught:
        check_redirect(redirect, expected_state="s1")
    assert caught.value.exit_code == status


def test_check_redirect_returns_the_code() -> None:
    assert check_redirect(Redirect("c0de", "s1", None, None), expected_state="s1") == "c0de"
    assert check_redirect(Redirect("c0de", None, None, None), expected_state="s1") == "c0de"


@pytest.mark.parametrize(
    ("uri", "address"),
    [
        ("http://localhost:8765/cb", ("127.0.0.1", 8765, "/cb")),
        ("http://127.0.0.1:9000", ("127.0.0.1", 9000, "/")),
        ("https://localhost:8765/cb", None),
        ("http://[::1]:8765/cb", None),
        ("https://app.example/cb", None),
    ],
)
def test_listen_address(uri: str, address: tuple[str, int, str] | None) -> None:
    assert listen_address(uri) == address


def test_new_cache_object_drops_old_token_fields() -> None:
    previous = {
        "access_token": "old-a",
        "refresh_token": "old-r",
        "refresh_token_expires_in": 3600,
        "issued_at": "2026-01-01T00:00:00Z",
        "expires_in": 1200,
        "note": "kept",
    }
    response = {"access_token": "new-a", "refresh_token": "new-r", "expires_in": 1200}
    data = merge_authorization(previous, response, sent_at=1_800_000_000.5)
    assert data == {
        "note": "kept",
        "access_token": "new-a",
        "refresh_token": "new-r",
        "expires_in": 1200,
        "issued_at": "2027-01-15T08:00:00Z",
    }
    assert merge_authorization({}, response, sent_at=1.25)["issued_at"] == 1.25
