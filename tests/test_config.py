"""Configuration: defaults, precedence, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from token_refresh.config import Config, load_config, load_credentials
from token_refresh.endpoint import Credentials
from token_refresh.errors import ConfigError, ExitCode


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return str(path)


def test_defaults_without_file() -> None:
    config = load_config(None, environ={})
    assert config == Config(
        source="built-in defaults", cache_source="the built-in default for environment live"
    )
    assert config.token_url == "https://live.logonvalidation.net/token"
    assert config.cache_path == "/data/tokens/saxobank_tokens_live.json"
    assert config.horizon_secs == 1020


def test_sim_changes_url_and_cache(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "environment: sim\n"), environ={})
    assert config.token_url == "https://sim.logonvalidation.net/token"
    assert config.cache_path == "/data/tokens/saxobank_tokens_sim.json"


def test_config_env_variable_is_used(tmp_path: Path) -> None:
    path = write(tmp_path, "interval_secs: 600\n")
    assert load_config(None, environ={"TOKEN_REFRESH_CONFIG": path}).interval_secs == 600


@pytest.mark.parametrize(
    ("override", "env", "expected"),
    [
        ("/cli.json", "/env.json", "/cli.json"),
        (None, "/env.json", "/env.json"),
        (None, None, "/file.json"),
    ],
)
def test_cache_path_precedence(tmp_path: Path, override: str | None, env: str | None, expected: str) -> None:
    path = write(tmp_path, "cache_path: /file.json\n")
    environ = {"AEGIS_SAXO_TOKEN_CACHE_PATH": env} if env else {}
    assert load_config(path, environ=environ, cache_override=override).cache_path == expected


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("bogus: 1\n", "unknown key 'bogus'"),
        ("environment: paper\n", "environment: must be one of live, sim"),
        ("interval_secs: -900\n", "interval_secs: must be between 60 and 86400"),
        ("interval_secs: '900'\n", "interval_secs: must be a number"),
        ("margin_secs: true\n", "margin_secs: must be a number"),
        ("http_timeout_secs: 0\n", "http_timeout_secs: must be between 1 and 300"),
        ("token_url: http://live.logonvalidation.net/token\n", "token_url: must be an https:// URL"),
        ("token_url: 42\n", "token_url: must be a non-empty string"),
        ("cache_path: ''\n", "cache_path: must be a non-empty string"),
        ("- a list\n", "must be a YAML mapping"),
        ("a: [unclosed\n", "not valid YAML"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), environ={})
    assert named in str(info.value)
    assert info.value.exit_code == ExitCode.CONFIG


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "bogus: 1\ninterval_secs: 5\nlock_timeout_secs: x\n"), environ={})
    message = str(info.value)
    assert "3 problems" in message
    for key in ("bogus", "interval_secs", "lock_timeout_secs"):
        assert key in message


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(str(tmp_path / "nope.yaml"), environ={})


def test_loopback_http_token_url_is_allowed(tmp_path: Path) -> None:
    path = write(tmp_path, "token_url: http://127.0.0.1:8080/token\n")
    assert load_config(path, environ={}).token_url == "http://127.0.0.1:8080/token"


LIVE = {"SAXOBANK_APP_KEY_LIVE": "key-1234", "SAXOBANK_APP_SECRET_LIVE": "secret-5678"}


def test_credentials_from_environment() -> None:
    assert load_credentials("live", LIVE) == Credentials("key-1234", "secret-5678")


def test_credentials_from_files(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("key-1234\n")
    (tmp_path / "secret").write_text("secret-5678\r\n")
    environ = {
        "SAXOBANK_APP_KEY_SIM_FILE": str(tmp_path / "key"),
        "SAXOBANK_APP_SECRET_SIM_FILE": str(tmp_path / "secret"),
    }
    assert load_credentials("sim", environ) == Credentials("key-1234", "secret-5678")


def test_missing_credentials_name_every_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_credentials("live", {})
    assert "SAXOBANK_APP_KEY_LIVE is not set" in str(info.value)
    assert "SECRET" not in str(info.value)  # no secret: a public client, not an error


def test_no_secret_is_a_public_client() -> None:
    credentials = load_credentials("live", {"SAXOBANK_APP_KEY_LIVE": "key-1234"})
    assert credentials.public
    assert credentials.app_secret is None


@pytest.mark.parametrize("name", ["SAXOBANK_APP_KEY_LIVE", "SAXOBANK_APP_SECRET_LIVE"])
def test_empty_credential_says_empty(name: str) -> None:
    with pytest.raises(ConfigError, match=f"{name} is empty"):
        load_credentials("live", {**LIVE, name: " "})


def test_both_forms_set_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "s").write_text("secret-5678")
    environ = dict(LIVE, SAXOBANK_APP_SECRET_LIVE_FILE=str(tmp_path / "s"))
    with pytest.raises(ConfigError, match="both SAXOBANK_APP_SECRET_LIVE and SAXOBANK_APP_SECRET_LIVE_FILE"):
        load_credentials("live", environ)


def test_unreadable_secret_file_names_the_variable(tmp_path: Path) -> None:
    environ = {"SAXOBANK_APP_KEY_LIVE": "k" * 8, "SAXOBANK_APP_SECRET_LIVE_FILE": str(tmp_path / "missing")}
    with pytest.raises(ConfigError, match="SAXOBANK_APP_SECRET_LIVE_FILE: cannot read"):
        load_credentials("live", environ)


def test_credentials_repr_hides_the_secret() -> None:
    creds = load_credentials("live", LIVE)
    assert "secret-5678" not in repr(creds)
    assert "secret-5678" not in str(creds)
    assert "<SECRET>" in repr(creds)
