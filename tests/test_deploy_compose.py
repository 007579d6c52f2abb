"""docker-compose.cron.yml and the Dockerfile, checked statically (no Docker engine here).

The compose file is validated against the Compose Specification's JSON schema
(tests/data/compose-spec.json), then the deployment rules of docs/RUNBOOK.md are asserted.
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex
from typing import Any, Iterator

import jsonschema
import pytest
import yaml
from deploy_support import REPO, console_script_name, invocation_problems

from token_refresh import config as cfg

COMPOSE_PATH = REPO / "docker-compose.cron.yml"
SCHEMA_PATH = REPO / "tests" / "data" / "compose-spec.json"
DOCKERFILE = REPO / "Dockerfile"
SERVICE = "token-refresh-cron"
INTERPOLATION = re.compile(r"^\$\{(?P<name>[A-Z0-9_]+)(?::?[-?][^}]*)?\}$")


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_PATH.read_text())
    assert isinstance(data, dict)
    return data


def service() -> dict[str, Any]:
    svc = compose()["services"][SERVICE]
    assert isinstance(svc, dict)
    return svc


def environment() -> dict[str, str]:
    env = service()["environment"]
    assert isinstance(env, dict), "environment as a mapping, so each variable is visible"
    return {k: str(v) for k, v in env.items()}


def default_of(value: str) -> str:
    """``${NAME:-default}`` -> ``default``; a plain value unchanged."""
    match = re.fullmatch(r"\$\{[A-Z0-9_]+:-([^}]*)\}", value)
    return match.group(1) if match else value


def bind_mounts() -> list[dict[str, Any]]:
    mounts = service()["volumes"]
    assert all(isinstance(m, dict) for m in mounts), "long syntax, so type and read_only are explicit"
    return [m for m in mounts if m["type"] == "bind"]


def mount_for(container_path: str) -> dict[str, Any]:
    """The bind mount whose target holds ``container_path``."""
    for mount in bind_mounts():
        if posixpath.dirname(container_path) == mount["target"]:
            return mount
    raise AssertionError(f"no directory mount holds {container_path}")


def shipped_config() -> cfg.Config:
    """The config the container reads: TOKEN_REFRESH_CONFIG mapped back to ./configs."""
    container_path = environment()[cfg.CONFIG_ENV]
    source = mount_for(container_path)["source"]
    host_path = (REPO / source / posixpath.basename(container_path)).resolve()
    assert host_path.is_file(), host_path
    return cfg.load_config(str(host_path), environ={})


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema).validate(compose())


def test_the_schema_check_is_not_vacuous() -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    broken = compose()
    broken["services"][SERVICE]["volumes"][0]["type"] = "bnd"
    broken["services"][SERVICE]["stop_grace_period"] = 180
    errors = list(jsonschema.Draft7Validator(schema).iter_errors(broken))
    assert len(errors) == 2


def test_sidecar_basics() -> None:
    svc = service()
    assert svc["restart"] == "unless-stopped"
    assert svc["read_only"] is True
    assert any(t.split(":")[0] == "/tmp" for t in svc["tmpfs"])
    assert svc["logging"]["driver"] == "json-file"
    assert set(svc["logging"]["options"]) >= {"max-size", "max-file"}
    assert svc["cap_drop"] == ["ALL"]


def test_runs_as_a_non_root_uid_gid_set_from_the_env_file() -> None:
    uid, gid = re.fullmatch(r"(\$\{[^}]*\}):(\$\{[^}]*\})", service()["user"]).groups()  # type: ignore[union-attr]
    for part in (uid, gid):
        assert INTERPOLATION.match(part)
        assert int(default_of(part)) > 0, "the default must not be root"


def _seconds(duration: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1}
    parts = re.findall(r"(\d+)([hms])", duration)
    assert "".join(n + u for n, u in parts) == duration, duration
    return sum(int(n) * units[u] for n, u in parts)


def test_stop_grace_period_outlasts_the_longest_cycle() -> None:
    config = shipped_config()
    # docs/RUNBOOK.md, "Worst-case stop time": supercronic lets the running cycle end; the lock wait,
    # the retry budget, the last attempt's deadline, the run journal's lock wait, one event's hooks
    hooks = max(len(config.hooks_on_refresh), len(config.hooks_on_failure))
    longest = 2 * config.lock_timeout_secs + config.retry_budget_secs + config.http_timeout_secs
    longest += hooks * config.hook_timeout_secs + 5
    assert _seconds(service()["stop_grace_period"]) > longest


def test_token_directory_is_mounted_never_the_file() -> None:
    config = shipped_config()
    env = environment()
    cache_paths = {config.cache_path, env.get(cfg.CACHE_PATH_ENV, config.cache_path)}
    for cache_path in cache_paths:
        mount = mount_for(cache_path)
        assert not mount.get("read_only", False), "the keeper writes the cache"
        assert mount["bind"]["create_host_path"] is False, (
            "a missing folder must fail, not be created by root"
        )
        assert default_of(mount["source"]) == "/volume1/aegis/tokens"
    for mount in bind_mounts():
        assert not mount["target"].endswith(".json")
        assert not default_of(mount["source"]).endswith(".json")
        assert mount["target"] not in cache_paths


def test_config_directory_is_mounted_read_only() -> None:
    mount = mount_for(environment()[cfg.CONFIG_ENV])
    assert mount["read_only"] is True
    assert shipped_config().environment == "live"


def test_observation_override_writes_a_second_cache_in_the_token_directory() -> None:
    override = environment()[cfg.CACHE_PATH_ENV]
    config = shipped_config()
    assert override != config.cache_path == cfg.DEFAULT_CACHE_PATHS["live"]
    assert posixpath.dirname(override) == posixpath.dirname(config.cache_path)


def test_every_variable_the_program_reads_is_provided_or_documented() -> None:
    env = environment()
    text = COMPOSE_PATH.read_text()
    key, secret = cfg.credential_names(shipped_config().environment)
    for name in (key, secret):
        match = INTERPOLATION.match(env[name])
        assert match, f"{name} must come from --env-file, not a literal"
        assert match.group("name") == name
        assert f"{name}_FILE" in text or "*_FILE" in text
    assert cfg.CONFIG_ENV in env
    assert cfg.CACHE_PATH_ENV in text


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for v in node.values():
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)
    elif node is not None:
        yield str(node)


def test_no_secret_value_is_written_in_the_file() -> None:
    for name, value in environment().items():
        if re.search(r"SECRET|KEY|TOKEN(?!_REFRESH)|PASSWORD", name) and name != cfg.CACHE_PATH_ENV:
            assert INTERPOLATION.match(value), f"{name} holds a literal value"
    opaque = re.compile(r"^[A-Za-z0-9+/=_-]{24,}$")
    for value in _strings(compose()):
        assert not (opaque.match(value) and not value.startswith("/")), f"looks like a secret: {value!r}"


def test_healthcheck_and_command_invoke_real_subcommands() -> None:
    svc = service()
    kind, program, *args = svc["healthcheck"]["test"]
    assert kind == "CMD"
    assert program == console_script_name()
    assert args == ["status"]
    assert invocation_problems(args) == []
    # the command is supercronic with the crontab the Dockerfile installs
    command = svc["command"]
    assert command[0] == "supercronic"
    crontab = command[-1]
    assert f"COPY cron/crontab {crontab}" in DOCKERFILE.read_text()


def test_documented_manual_refresh_goes_through_the_same_file() -> None:
    header = [ln for ln in COMPOSE_PATH.read_text().splitlines() if ln.startswith("#   refresh:")]
    assert len(header) == 1
    words = shlex.split(header[0].split(":", 1)[1])
    assert words[:6] == [
        "docker",
        "compose",
        "-f",
        "docker-compose.cron.yml",
        "--env-file",
        "/volume1/aegis/.env",
    ]
    assert words[6:10] == ["run", "--rm", "-T", SERVICE]
    assert words[10] == "token-refresh"
    assert invocation_problems(words[11:]) == []


# --- the Dockerfile (hadolint runs from `make test`; these check what it cannot know) ---


def test_dockerfile_verifies_the_pinned_supercronic_release() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG SUPERCRONIC_VERSION=v\d+\.\d+\.\d+$", text, re.M)
    sums = dict(re.findall(r"^ARG SUPERCRONIC_SHA256_(\w+)=([0-9a-f]{64})$", text, re.M))
    assert set(sums) == {"AMD64", "ARM64"}
    assert "${SUPERCRONIC_VERSION}/supercronic-linux-${SUPERCRONIC_ARCH}" in text
    # every architecture is checked and an unknown one stops the build
    assert 'echo "${sum}  /supercronic" | sha256sum -c -' in text
    assert "exit 1 ;;" in text


def test_dockerfile_runs_non_root_and_bakes_in_no_secret() -> None:
    text = DOCKERFILE.read_text()
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users
    assert all(u.split(":")[0] not in ("0", "root") for u in users)
    for line in re.findall(r"^(?:ARG|ENV)\s.*$", text, re.M):
        assert "SAXOBANK" not in line
        assert "SECRET" not in line
    assert "COPY . " not in text, "copy named files only, so no stray .env reaches the image"


@pytest.mark.parametrize(
    ("name", "environment"), [("token_refresh.yaml", "live"), ("token_refresh.sim.yaml", "sim")]
)
def test_shipped_configs_load_and_match_their_environment(name: str, environment: str) -> None:
    path = REPO / "configs" / name
    config = cfg.load_config(str(path), environ={})
    assert config.environment == environment
    assert config.token_url == cfg.TOKEN_URLS[environment]
    assert config.cache_path == cfg.DEFAULT_CACHE_PATHS[environment]
    text = path.read_text()
    # optional keys without a default (redirect_uri, metrics_path, hooks) are shown commented out
    commented = set(re.findall(r"^# ?([a-z_]+):", text, re.M)) & set(cfg.KNOWN_KEYS)
    assert set(yaml.safe_load(text)) | commented == set(cfg.KNOWN_KEYS), "every key shown"


def test_build_context_excludes_env_files_and_the_venv() -> None:
    ignored = {ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()}
    assert {".env", "*.env", "**/.env", ".venv", ".git"} <= ignored
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE.read_text(), re.M)
    for sources in copied:
        for source in sources.split():
            assert (REPO / source).exists(), source
            assert source.rstrip("/") not in ignored, f"{source} is copied but excluded from the context"
