"""Typed configuration: the YAML file, the environment and the credentials, validated in one go."""

from __future__ import annotations

import os
import re
from typing import Any, Mapping, NamedTuple

from token_refresh.endpoint import Credentials
from token_refresh.errors import ConfigError

ENVIRONMENTS = ("live", "sim")
TOKEN_URLS = {
    "live": "https://live.logonvalidation.net/token",
    "sim": "https://sim.logonvalidation.net/token",
}
AUTHORIZE_URLS = {
    "live": "https://live.logonvalidation.net/authorize",
    "sim": "https://sim.logonvalidation.net/authorize",
}
DEFAULT_CACHE_PATHS = {
    "live": "/data/tokens/saxobank_tokens_live.json",
    "sim": "/data/tokens/saxobank_tokens_sim.json",
}
CONFIG_ENV = "TOKEN_REFRESH_CONFIG"
CACHE_PATH_ENV = "AEGIS_SAXO_TOKEN_CACHE_PATH"
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
_URL = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<host>\[[0-9A-Fa-f:.]+\]|[^\s/?#@:\[\]]+)"
    r"(?::(?P<port>[0-9]{1,5}))?(?:[/?#]\S*)?"
)

# key: (minimum, maximum) in seconds; bounds keep a typo from disabling a safety margin.
NUMERIC_KEYS: dict[str, tuple[float, float]] = {
    "interval_secs": (60, 86400),
    "margin_secs": (0, 3600),
    "lock_timeout_secs": (0, 3600),
    "http_timeout_secs": (1, 300),
    "retry_budget_secs": (0, 3600),
    "hook_timeout_secs": (1, 3600),
}
KNOWN_KEYS = (
    "environment",
    "token_url",
    "cache_path",
    "authorize_url",
    "redirect_uri",
    *NUMERIC_KEYS,
    "metrics_path",
    "hooks",
    "openapi_url",
)
HOOK_EVENTS = ("on_refresh", "on_failure")
OPENAPI_URLS = {
    "live": "https://gateway.saxobank.com/openapi",
    "sim": "https://gateway.saxobank.com/sim/openapi",
}


class Config(NamedTuple):
    """Validated settings for one run; holds no secret."""

    environment: str = "live"
    token_url: str = TOKEN_URLS["live"]
    cache_path: str = DEFAULT_CACHE_PATHS["live"]
    interval_secs: float = 900
    margin_secs: float = 120
    lock_timeout_secs: float = 30
    http_timeout_secs: float = 10
    retry_budget_secs: float = 60
    source: str = "built-in defaults"
    authorize_url: str = AUTHORIZE_URLS["live"]
    redirect_uri: str | None = None  # required only by ``authorize``
    metrics_path: str | None = None  # Prometheus textfile written after every run
    hooks_on_refresh: tuple[str, ...] = ()  # shell command lines
    hooks_on_failure: tuple[str, ...] = ()
    hook_timeout_secs: float = 30
    cache_source: str = "the built-in default for environment live"  # where cache_path came from
    openapi_url: str = OPENAPI_URLS["live"]  # used by status --probe only

    @property
    def horizon_secs(self) -> float:
        """A token with at most this much left would not survive until the next run."""
        return self.interval_secs + self.margin_secs


def _loader() -> Any:
    """A safe loader that refuses duplicate keys and anchors/aliases (an alias bomb is 78 at once)."""
    import yaml
    from yaml.constructor import ConstructorError

    base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class Loader(base):  # type: ignore[misc]
        def construct_object(self, node: Any, deep: bool = False) -> Any:
            if node in self.constructed_objects or node in self.recursive_objects:
                raise ConstructorError(
                    None, None, "anchors and aliases (&, *) are not allowed in the config", node.start_mark
                )
            return super().construct_object(node, deep=deep)

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: set[object] = set()
            for key_node, _ in node.value:
                key = getattr(key_node, "value", None)
                if isinstance(key, str) and key in seen:
                    raise ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return Loader


def _read_config_file(path: str, origin: str) -> Any:
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            return yaml.load(f, Loader=_loader())  # noqa: S506 - a SafeLoader
    except FileNotFoundError:
        raise ConfigError(path, [f"config file not found{origin}"]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(path, [f"cannot read config file{origin}: {e}"]) from None
    except RecursionError:
        raise ConfigError(path, ["nested too deeply to be a config"]) from None
    except yaml.YAMLError as e:
        raise ConfigError(path, [f"not valid YAML: {e}"]) from None


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_url(key: str, value: object, problems: list[str]) -> str | None:
    if not isinstance(value, str) or not value:
        problems.append(f"{key}: must be a non-empty string, got {type(value).__name__}")
        return None
    # a regex, not urllib.parse: every valid run checks these, and urllib.parse with ipaddress
    # costs 2 ms of a 50 ms run (docs/DESIGN.md, "The valid path"); only scheme and host matter here
    match = _URL.fullmatch(value)
    scheme, host = (match["scheme"].lower(), match["host"].lower().strip("[]")) if match else ("", "")
    if match and match["port"] is not None and not 0 < int(match["port"]) <= 65535:
        problems.append(f"{key}: port {match['port']} is not between 1 and 65535")
        return None
    if scheme == "https" or (scheme == "http" and host in LOOPBACK_HOSTS):
        return value
    problems.append(
        f"{key}: must be an https:// URL (http:// only for a loopback test server), got {value!r}"
    )
    return None


def _observability(data: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    """``metrics_path`` and ``hooks: {on_refresh: [...], on_failure: [...]}``."""
    values: dict[str, Any] = {}
    metrics_path = data.get("metrics_path")
    if metrics_path is not None and (not isinstance(metrics_path, str) or not metrics_path):
        problems.append(f"metrics_path: must be a non-empty string, got {type(metrics_path).__name__}")
    else:
        values["metrics_path"] = metrics_path
    hooks = data.get("hooks")
    hooks = {} if hooks is None else hooks
    if not isinstance(hooks, dict):
        problems.append(
            f"hooks: must be a mapping of {' and '.join(HOOK_EVENTS)}, got {type(hooks).__name__}"
        )
        return values
    for event, commands in hooks.items():
        if event not in HOOK_EVENTS:
            problems.append(f"hooks: unknown event {event!r} (known: {', '.join(HOOK_EVENTS)})")
        elif commands is None:
            continue  # `on_failure:` left empty in YAML
        elif not isinstance(commands, list) or not all(isinstance(c, str) and c.strip() for c in commands):
            problems.append(f"hooks.{event}: must be a list of non-empty command strings")
        else:
            values[f"hooks_{event}"] = tuple(commands)
    return values


def config_from_mapping(data: object, source: str) -> Config:
    """Validate a parsed config mapping; every problem is reported at once."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, [f"must be a YAML mapping, got {type(data).__name__}"])
    problems: list[str] = []
    for key in data:
        if key not in KNOWN_KEYS:
            problems.append(f"unknown key {key!r} (known: {', '.join(KNOWN_KEYS)})")

    environment = data.get("environment", "live")
    if environment not in ENVIRONMENTS:
        problems.append(f"environment: must be one of {', '.join(ENVIRONMENTS)}, got {environment!r}")
        environment = "live"

    values: dict[str, Any] = {}
    for key, (low, high) in NUMERIC_KEYS.items():
        value = data.get(key, Config._field_defaults[key])
        if isinstance(value, str) and "e" in value.lower() and _looks_numeric(value):
            problems.append(
                f"{key}: {value!r} is a string to YAML 1.1 (an exponent needs a dot and a sign): "
                "write the number out, e.g. 1000"
            )
        elif not _is_number(value) or value is None:
            problems.append(f"{key}: must be a number of seconds, got {type(value).__name__} {value!r}")
        elif not low <= value <= high:
            problems.append(f"{key}: must be between {low:g} and {high:g}, got {value!r}")
        else:
            values[key] = value

    values.update(_observability(data, problems))
    token_url = _check_url("token_url", data.get("token_url", TOKEN_URLS[environment]), problems)
    authorize_url = _check_url(
        "authorize_url", data.get("authorize_url", AUTHORIZE_URLS[environment]), problems
    )
    openapi_url = _check_url("openapi_url", data.get("openapi_url", OPENAPI_URLS[environment]), problems)
    redirect_uri = None
    if data.get("redirect_uri") is not None:
        redirect_uri = _check_url("redirect_uri", data["redirect_uri"], problems)
    cache_path = data.get("cache_path", DEFAULT_CACHE_PATHS[environment])
    if not isinstance(cache_path, str) or not cache_path:
        problems.append(f"cache_path: must be a non-empty string, got {type(cache_path).__name__}")
    if problems:
        raise ConfigError(source, problems)
    assert token_url is not None
    assert authorize_url is not None
    return Config(
        environment=environment,
        token_url=token_url,
        cache_path=cache_path,
        source=source,
        cache_source=(
            f"cache_path in {source}"
            if "cache_path" in data
            else f"the built-in default for environment {environment}"
        ),
        authorize_url=authorize_url,
        redirect_uri=redirect_uri,
        openapi_url=openapi_url or OPENAPI_URLS[environment],
        **values,
    )


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def load_config(
    path: str | None = None,
    *,
    environ: Mapping[str, str] = os.environ,
    cache_override: str | None = None,
) -> Config:
    """Load the config: ``path``, else ``$TOKEN_REFRESH_CONFIG``, else the defaults.

    Cache path precedence: ``cache_override`` (``--cache``) > ``$AEGIS_SAXO_TOKEN_CACHE_PATH``
    > ``cache_path`` in the file > the environment's default; ``cache_source`` says which.
    """
    origin = ""
    if not path and environ.get(CONFIG_ENV):
        path, origin = environ[CONFIG_ENV], f" (named by ${CONFIG_ENV})"
    config = config_from_mapping(_read_config_file(path, origin), path) if path else Config()
    if cache_override:
        return config._replace(cache_path=cache_override, cache_source="--cache")
    if environ.get(CACHE_PATH_ENV):
        return config._replace(cache_path=environ[CACHE_PATH_ENV], cache_source=f"${CACHE_PATH_ENV}")
    return config


def credential_names(environment: str) -> tuple[str, str]:
    """The environment variables that hold the app key and secret."""
    suffix = environment.upper()
    return f"SAXOBANK_APP_KEY_{suffix}", f"SAXOBANK_APP_SECRET_{suffix}"


def client_type(environment: str, environ: Mapping[str, str] = os.environ) -> tuple[str, str]:
    """("public" or "confidential", why), from whether a secret variable is set; no value is read."""
    _, secret_name = credential_names(environment)
    for name in (secret_name, f"{secret_name}_FILE"):
        if name in environ:
            return "confidential", f"{name} is set"
    return "public", f"neither {secret_name} nor {secret_name}_FILE is set"


def _read_credential(
    name: str, environ: Mapping[str, str], problems: list[str], *, required: bool = True
) -> str | None:
    """The variable's value, or its ``_FILE``'s content; None when neither is set."""
    file_name = f"{name}_FILE"
    direct, file_path = environ.get(name), environ.get(file_name)
    if direct is not None and file_path is not None:
        problems.append(f"both {name} and {file_name} are set; set only one")
        return None
    if file_path is not None:
        if not file_path:
            problems.append(f"{file_name} is empty")
            return None
        try:
            with open(file_path, encoding="utf-8") as f:
                value = f.read().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as e:
            problems.append(f"{file_name}: cannot read {file_path}: {getattr(e, 'strerror', None) or e}")
            return None
        if not value.strip():
            problems.append(f"{file_name}: {file_path} is empty")
        return value
    if direct is None:
        if required:
            problems.append(f"{name} is not set (nor {file_name})")
        return None
    if not direct.strip():
        problems.append(f"{name} is empty")
    return direct


def load_credentials(environment: str, environ: Mapping[str, str] = os.environ) -> Credentials:
    """The app key, and the secret if one is configured (none: a public client, RFC 6749 §2.1).

    Every problem is reported at once.
    """
    from token_refresh import redact

    key_name, secret_name = credential_names(environment)
    problems: list[str] = []
    app_key = _read_credential(key_name, environ, problems)
    app_secret = _read_credential(secret_name, environ, problems, required=False)
    if problems:
        raise ConfigError("environment", problems)
    assert app_key is not None
    redact.register(app_secret)
    return Credentials(app_key=app_key, app_secret=app_secret)
