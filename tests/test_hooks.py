"""Hooks run after the cycle: their environment, their time limit, their failures."""

from __future__ import annotations

import os
import re
import shlex
import time
from pathlib import Path
from typing import Callable

import pytest
from fake_saxo import APP_SECRET, FakeSaxo
from support import RunCli, base_env, find_leaks, write_json

from token_refresh import hooks


def dump_env(target: Path) -> str:
    """A hook command that saves its environment, NUL-separated, to ``target``."""
    return f"env -0 > {shlex.quote(str(target))}"


def read_env(path: Path) -> dict[str, str]:
    entries = [e for e in path.read_bytes().decode().split("\0") if e]
    return dict(e.split("=", 1) for e in entries)


def test_on_refresh_environment_has_the_facts_and_no_secret(
    run_cli: RunCli,
    saxo: FakeSaxo,
    config_file: Callable[..., Path],
    cache_path: Path,
    tmp_path: Path,
) -> None:
    write_json(cache_path, saxo.seed_cache(age=1000))
    out_refresh, out_failure = tmp_path / "refresh.env", tmp_path / "failure.env"
    config = config_file(hooks={"on_refresh": [dump_env(out_refresh)], "on_failure": [dump_env(out_failure)]})
    leaked_token = "eyJ-an-access-token-the-operators-env-file-also-holds"
    env = base_env(
        SAXOBANK_ACCESS_TOKEN_LIVE=leaked_token,
        SAXOBANK_APP_SECRET_LIVE_FILE_UNUSED="x",
        SOME_OTHER_VAR=f"prefix-{APP_SECRET}",
        HOOK_TEST_MARKER="kept",
    )
    result = run_cli("run", "--config", str(config), env=env)
    assert result.returncode == 0, result.stderr
    assert saxo.refreshes == 1
    assert not out_failure.exists()

    seen = read_env(out_refresh)
    assert seen["TOKEN_REFRESH_EVENT"] == "on_refresh"
    assert seen["TOKEN_REFRESH_EXIT_CODE"] == "0"
    assert seen["TOKEN_REFRESH_STATE"] == "valid"
    assert seen["TOKEN_REFRESH_CACHE_PATH"] == os.path.realpath(cache_path)
    assert re.match(r"token refreshed: access token 1[12]\d\d s left", seen["TOKEN_REFRESH_MESSAGE"])
    sent = saxo.requests[-1]["time"]
    assert abs(int(seen["TOKEN_REFRESH_ACCESS_EXPIRES_AT_EPOCH"]) - (sent + 1200)) <= 2
    assert abs(int(seen["TOKEN_REFRESH_REFRESH_EXPIRES_AT_EPOCH"]) - (sent + 3600)) <= 2
    expected_iso = time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(seen["TOKEN_REFRESH_ACCESS_EXPIRES_AT_EPOCH"]))
    )
    assert seen["TOKEN_REFRESH_ACCESS_EXPIRES_AT"] == expected_iso
    assert seen["HOOK_TEST_MARKER"] == "kept"  # the rest of the environment is inherited
    assert not [name for name in seen if name.startswith("SAXOBANK_")]
    assert "SOME_OTHER_VAR" not in seen  # its value holds the secret
    assert find_leaks([out_refresh.read_bytes().decode()], [*saxo.secrets_seen(), leaked_token]) == []


def test_on_failure_gets_the_exit_status_and_reason(
    run_cli: RunCli,
    saxo: FakeSaxo,
    config_file: Callable[..., Path],
    cache_path: Path,
    tmp_path: Path,
) -> None:
    raw = write_json(cache_path, saxo.seed_cache(age=1000, refresh_token="never-issued-by-saxo"))
    out_refresh, out_failure = tmp_path / "refresh.env", tmp_path / "failure.env"
    config = config_file(hooks={"on_refresh": [dump_env(out_refresh)], "on_failure": [dump_env(out_failure)]})
    result = run_cli("run", "--config", str(config))
    assert result.returncode == 77
    assert not out_refresh.exists()
    seen = read_env(out_failure)
    assert seen["TOKEN_REFRESH_EVENT"] == "on_failure"
    assert seen["TOKEN_REFRESH_EXIT_CODE"] == "77"
    assert "Manual re-authorization required" in seen["TOKEN_REFRESH_MESSAGE"]
    assert "invalid_grant" in seen["TOKEN_REFRESH_MESSAGE"]
    assert seen["TOKEN_REFRESH_STATE"] == "needs_refresh"  # the cache as it is: unchanged
    assert seen["TOKEN_REFRESH_ACCESS_EXPIRES_AT_EPOCH"]
    assert "never-issued-by-saxo" not in out_failure.read_text()
    assert cache_path.read_bytes() == raw


def test_no_hook_on_a_valid_run(
    run_cli: RunCli, saxo: FakeSaxo, config_file: Callable[..., Path], cache_path: Path, tmp_path: Path
) -> None:
    write_json(cache_path, saxo.seed_cache(age=100))
    marker = tmp_path / "ran"
    touch = f"touch {shlex.quote(str(marker))}"
    config = config_file(hooks={"on_refresh": [touch], "on_failure": [touch]})
    assert run_cli("run", "--config", str(config)).returncode == 0
    assert not marker.exists()


def test_a_failing_hook_is_logged_and_does_not_change_the_exit_status(
    run_cli: RunCli, saxo: FakeSaxo, config_file: Callable[..., Path], cache_path: Path, tmp_path: Path
) -> None:
    write_json(cache_path, saxo.seed_cache(age=1000))
    after = tmp_path / "second-ran"
    config = config_file(
        hooks={"on_refresh": ["echo webhook down >&2; exit 3", f"touch {shlex.quote(str(after))}"]}
    )
    result = run_cli("run", "--config", str(config))
    assert result.returncode == 0
    assert "hook on_refresh[0] exited 3" in result.stderr
    assert "webhook down" in result.stderr
    assert after.exists()  # a failing hook does not stop the next


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie nobody reaped yet
    except FileNotFoundError:
        return True


@pytest.mark.parametrize("ignore_term", [False, True])
def test_a_hanging_hook_is_killed_with_its_process_group(
    run_cli: RunCli,
    saxo: FakeSaxo,
    config_file: Callable[..., Path],
    cache_path: Path,
    tmp_path: Path,
    ignore_term: bool,
) -> None:
    write_json(cache_path, saxo.seed_cache(age=1000, refresh_token="never-issued-by-saxo"))
    pid_file, after = tmp_path / "child.pid", tmp_path / "second-ran"
    trap = "trap '' TERM; " if ignore_term else ""  # SIGTERM ignored: only SIGKILL ends it
    hang = f"{trap}sleep 120 & echo $! > {shlex.quote(str(pid_file))}; wait"
    config = config_file(
        hook_timeout_secs=1,
        hooks={"on_failure": [hang, f"touch {shlex.quote(str(after))}"]},
    )
    started = time.monotonic()
    result = run_cli("run", "--config", str(config), timeout=60)
    elapsed = time.monotonic() - started
    assert result.returncode == 77  # the run's own status, whatever the hook did
    assert elapsed < 30  # not the child's 120 s
    assert "hook on_failure[0] still running after 1 s; killed its process group" in result.stderr
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while not _gone(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(child), "the hook's background child survived"
    assert after.exists()


def test_hook_environment_unit() -> None:
    env = hooks.hook_environment(
        {"PATH": "/bin", "SAXOBANK_APP_SECRET_LIVE": "s3cret-value", "saxobank_app_key_sim": "k"},
        {"TOKEN_REFRESH_EXIT_CODE": "0"},
    )
    assert env == {"PATH": "/bin", "TOKEN_REFRESH_EXIT_CODE": "0"}


@pytest.mark.parametrize(
    ("hooks_value", "message"),
    [
        ({"on_success": ["true"]}, "unknown event 'on_success'"),
        ({"on_failure": "echo one string"}, "hooks.on_failure: must be a list"),
        ({"on_failure": [""]}, "hooks.on_failure: must be a list"),
        (["echo"], "hooks: must be a mapping"),
    ],
)
def test_bad_hook_config(
    run_cli: RunCli, config_file: Callable[..., Path], hooks_value: object, message: str
) -> None:
    result = run_cli("run", "--config", str(config_file(hooks=hooks_value)))
    assert result.returncode == 78
    assert message in result.stderr


def test_hook_timeout_is_validated(run_cli: RunCli, config_file: Callable[..., Path]) -> None:
    result = run_cli("run", "--config", str(config_file(hook_timeout_secs=0)))
    assert result.returncode == 78
    assert "hook_timeout_secs" in result.stderr


def test_readme_ntfy_hook_posts_the_failure(
    run_cli: RunCli, saxo: FakeSaxo, config_file: Callable[..., Path], cache_path: Path
) -> None:
    """The README's one-line on_failure hook, pointed at a receiver on 127.0.0.1."""
    import json
    import shutil
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    import yaml

    if shutil.which("curl") is None:
        pytest.skip("curl not installed")
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    block = re.search(r"```yaml\n(hooks:\n  on_failure:\n.*?)```", readme, re.S)
    assert block, "README has no on_failure hook example"
    (command,) = yaml.safe_load(block.group(1))["hooks"]["on_failure"]
    url = re.search(r"https://\S+", command)
    assert url

    received: list[tuple[str, str]] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
            received.append((self.headers.get("Title", ""), body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        local = command.replace(url.group(0), f"http://127.0.0.1:{server.server_address[1]}/topic")
        write_json(cache_path, saxo.seed_cache(age=1000, refresh_token="never-issued-by-saxo"))
        result = run_cli("run", "--config", str(config_file(hooks={"on_failure": [local]})))
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 77
    assert "hook" not in result.stderr  # it succeeded
    ((title, body),) = received
    assert title == "token-refresh exit 77"
    assert "Manual re-authorization required" in body
    assert "never-issued-by-saxo" not in json.dumps(received)
