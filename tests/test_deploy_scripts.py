"""The DSM task scripts: the right docker command, no TTY, and the exit status passed through."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from deploy_support import REPO, cli_bin_dir, invocation_problems
from fake_saxo import APP_KEY, APP_SECRET, FakeSaxo
from support import Processes, write_json

DOCKER_TASK = REPO / "cron" / "synology-task.sh"
VENV_TASK = REPO / "cron" / "synology-task-venv.sh"
COMPOSE = REPO / "docker-compose.cron.yml"


def _stub_docker(tmp_path: Path) -> tuple[Path, Path]:
    """A ``docker`` that records its arguments, one a line, and exits with $STUB_STATUS."""
    args_file = tmp_path / "docker-args"
    stub = tmp_path / "docker"
    stub.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {args_file}\nexit "${{STUB_STATUS:-0}}"\n')
    stub.chmod(0o755)
    return stub, args_file


def _docker_task(
    processes: Processes, tmp_path: Path, status: int = 0, **env: str
) -> tuple[subprocess.CompletedProcess[str], Path]:
    stub, args_file = _stub_docker(tmp_path)
    env_file = tmp_path / ".env"
    env_file.write_text("SAXOBANK_APP_KEY_LIVE=k\n")
    variables = {
        "DOCKER": str(stub),
        "ENV_FILE": str(env_file),
        "PROJECT_DIR": str(REPO),
        "STUB_STATUS": str(status),
        **env,
    }
    # DSM gives the task almost no environment: pass only what the test overrides.
    result = processes.run(["/bin/bash", str(DOCKER_TASK)], env={"PATH": "/usr/bin:/bin", **variables})
    return result, args_file


def test_docker_task_defaults_are_the_nas_paths() -> None:
    text = DOCKER_TASK.read_text()
    assert 'DOCKER="${DOCKER:-/usr/local/bin/docker}"' in text
    assert 'ENV_FILE="${ENV_FILE:-/volume1/aegis/.env}"' in text


def test_docker_task_runs_one_cycle_in_a_one_shot_container_without_tty(
    processes: Processes, tmp_path: Path
) -> None:
    result, args_file = _docker_task(processes, tmp_path)
    assert result.returncode == 0, result.stderr
    args = args_file.read_text().splitlines()
    env_file = str(tmp_path / ".env")
    assert args[:8] == [
        "compose",
        "--project-directory",
        str(REPO),
        "-f",
        str(COMPOSE),
        "--env-file",
        env_file,
        "run",
    ]
    run_opts = args[8 : args.index("token-refresh-cron")]
    assert set(run_opts) == {"--rm", "-T", "--no-deps"}
    assert not {"-t", "-it", "--tty", "-i", "--interactive"} & set(args)
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    assert "token-refresh-cron" in services
    program = args[args.index("token-refresh-cron") + 1 :]
    assert program[0] == "token-refresh"
    assert invocation_problems(program[1:]) == []


@pytest.mark.parametrize(
    ("status", "hint"),
    [
        (0, ""),
        (75, "temporary"),
        (77, "RE-AUTHORIZATION"),
        (78, "configuration"),
        (66, "cache"),
        (1, "docker compose"),
    ],
)
def test_docker_task_passes_the_exit_status_through(
    processes: Processes, tmp_path: Path, status: int, hint: str
) -> None:
    result, _ = _docker_task(processes, tmp_path, status)
    assert result.returncode == status
    assert hint in result.stderr
    if status == 0:
        assert result.stderr == ""  # DSM mails only on failure; a good run says nothing


def test_docker_task_without_env_file_exits_78_naming_it(processes: Processes, tmp_path: Path) -> None:
    result, args_file = _docker_task(processes, tmp_path, ENV_FILE=str(tmp_path / "missing.env"))
    assert result.returncode == 78
    assert "missing.env does not exist" in result.stderr
    assert not args_file.exists()


def _venv_task(
    processes: Processes, tmp_path: Path, cache: Path, config: Path, env_text: str
) -> subprocess.CompletedProcess[str]:
    env_file = tmp_path / "aegis.env"
    env_file.write_text(env_text)
    env = {
        "PATH": "/usr/bin:/bin",
        "TOKEN_REFRESH": str(cli_bin_dir(tmp_path) / "token-refresh"),
        "ENV_FILE": str(env_file),
        "CONFIG": str(config),
        "CACHE": str(cache),
    }
    return processes.run(["/bin/bash", str(VENV_TASK)], env=env)


def test_venv_task_refreshes_with_credentials_from_the_env_file(
    processes: Processes, tmp_path: Path, saxo: FakeSaxo, cache_path: Path, config_file: Callable[..., Path]
) -> None:
    seed: dict[str, Any] = saxo.seed_cache(age=1000)
    write_json(cache_path, seed)
    # compose env-file style: quotes, CRLF, other variables that must not leak in
    env_text = (
        f'SAXOBANK_APP_KEY_LIVE="{APP_KEY}"\r\n'
        f"SAXOBANK_APP_SECRET_LIVE='{APP_SECRET}'\n"
        "SAXOBANK_ACCESS_TOKEN_LIVE=not-for-us\n# comment\n"
    )
    result = _venv_task(processes, tmp_path, cache_path, config_file(cache_path=None), env_text)
    assert result.returncode == 0, result.stderr
    assert saxo.refreshes == 1
    assert json.loads(cache_path.read_text())["refresh_token"] == saxo.current_refresh
    # -q: one line for a refresh (nothing for a valid run); DSM mails only on a non-zero exit
    assert result.stderr == ""  # -q: a success is no news (DSM mails only on a non-zero exit anyway)


def test_venv_task_passes_a_failure_status_through(
    processes: Processes, tmp_path: Path, saxo: FakeSaxo, cache_path: Path, config_file: Callable[..., Path]
) -> None:
    write_json(cache_path, saxo.seed_cache(age=1000))
    before = cache_path.read_bytes()
    env_text = f"SAXOBANK_APP_KEY_LIVE={APP_KEY}\nSAXOBANK_APP_SECRET_LIVE=wrong-secret\n"
    result = _venv_task(processes, tmp_path, cache_path, config_file(), env_text)
    assert result.returncode == 78, result.stderr
    assert "token-refresh exited 78" in result.stderr
    assert cache_path.read_bytes() == before


def test_venv_task_missing_cache_exits_66(
    processes: Processes, tmp_path: Path, cache_path: Path, config_file: Callable[..., Path]
) -> None:
    env_text = f"SAXOBANK_APP_KEY_LIVE={APP_KEY}\nSAXOBANK_APP_SECRET_LIVE={APP_SECRET}\n"
    result = _venv_task(processes, tmp_path, cache_path, config_file(), env_text)
    assert result.returncode == 66
    assert "token-refresh exited 66" in result.stderr
