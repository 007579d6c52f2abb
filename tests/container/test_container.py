"""The sidecar for real: the image built from the Dockerfile, docker-compose.cron.yml started by
podman-compose (unchanged, plus tests/container/compose.test.yml for network and config), the
fake token endpoint on the host's 127.0.0.1. tests/container/run.sh builds the image first.
"""

from __future__ import annotations

import fcntl
import http.client
import json
import os
import pty
import re
import select
import shlex
import struct
import subprocess
import termios
import time
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

import pytest
import yaml
from fake_saxo import APP_KEY, APP_SECRET, REFRESH_TTL, FakeSaxo

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
COMPOSE_FILE = REPO / "docker-compose.cron.yml"
OVERRIDE = HERE / "compose.test.yml"
RUNBOOK = REPO / "docs" / "RUNBOOK.md"
SERVICE = "token-refresh-cron"
UID, GID = 1026, 100  # the compose file's defaults for TOKEN_REFRESH_UID/GID, set in the env file
EVERY_2_SECONDS = "*/2 * * * * * * token-refresh run\n"  # supercronic's 7-field form
REDIRECT_URI = "https://app.example.test/saxo/callback"
URL_RE = re.compile(r"(http://127\.0\.0\.1:\d+/authorize\?\S+)")
# podman 4.3 schedules healthchecks with systemd timers; CI machines have no systemd
NO_SYSTEMD = re.compile(
    r'^time="[^"]*" level=(error|warning) msg="(unable to get systemd connection|Removing timer).*$'
)


def _compose_service() -> dict[str, Any]:
    service = yaml.safe_load(COMPOSE_FILE.read_text())["services"][SERVICE]
    assert isinstance(service, dict)
    return service


CONTAINER = str(_compose_service()["container_name"])
# the cache the sidecar keeps: the observation-phase override the compose file ships with
CACHE_IN_CONTAINER = str(_compose_service()["environment"]["AEGIS_SAXO_TOKEN_CACHE_PATH"])
CANONICAL_IN_CONTAINER = "/data/tokens/saxobank_tokens_live.json"


def without_podman_noise(text: str) -> str:
    return "".join(ln for ln in text.splitlines(keepends=True) if not NO_SYSTEMD.match(ln.rstrip("\n")))


def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    kwargs.setdefault("timeout", 120)
    return subprocess.run(argv, capture_output=True, text=True, check=False, cwd=REPO, **kwargs)


def podman(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return run(["podman", *args], timeout=timeout)


class Sidecar:
    """One test's world: a token directory owned by UID:GID, a config and crontab, an env file."""

    def __init__(self, root: Path, saxo: FakeSaxo) -> None:
        self.saxo = saxo
        self.root = root
        self.tokens = root / "tokens"
        self.tokens.mkdir()
        os.chown(self.tokens, UID, GID)
        self.tokens.chmod(0o2770)  # docs/RUNBOOK.md, Prerequisites
        (root / "config").mkdir()
        (root / "config").chmod(0o755)  # read by the container's UID, whatever the umask
        # the shipped production config, pointed at the fake endpoint
        config = yaml.safe_load((REPO / "configs" / "token_refresh.yaml").read_text())
        config.update(token_url=saxo.token_url, authorize_url=saxo.authorize_url, redirect_uri=REDIRECT_URI)
        (root / "config" / "token_refresh.yaml").write_text(yaml.safe_dump(config))
        (root / "config" / "token_refresh.yaml").chmod(0o644)
        saxo.registered_redirect_uri = REDIRECT_URI
        self.set_crontab((REPO / "cron" / "crontab").read_text())
        self.env_file = root / "aegis.env"
        self.env_file.write_text(
            f"SAXOBANK_APP_KEY_LIVE={APP_KEY}\nSAXOBANK_APP_SECRET_LIVE={APP_SECRET}\n"
            f"SAXOBANK_ACCESS_TOKEN_LIVE=not-for-the-keeper\n"
            f"TOKEN_REFRESH_UID={UID}\nTOKEN_REFRESH_GID={GID}\n"
            f"AEGIS_TOKENS_DIR={self.tokens}\nTR_TEST_DIR={root}\n"
        )
        self.env_file.chmod(0o600)

    def set_crontab(self, text: str) -> None:
        (self.root / "crontab").write_text(text)
        (self.root / "crontab").chmod(0o644)

    def host_path(self, container_path: str) -> Path:
        assert container_path.startswith("/data/tokens/")
        return self.tokens / container_path.removeprefix("/data/tokens/")

    @property
    def cache(self) -> Path:
        return self.host_path(CACHE_IN_CONTAINER)

    def write_cache(self, data: dict[str, Any], path: Path | None = None) -> None:
        """As the keeper's UID would: a whole file, atomically, 0600."""
        path = path or self.cache
        tmp = path.with_name(path.name + ".test-tmp")
        tmp.write_text(json.dumps(data))
        os.chown(tmp, UID, GID)
        tmp.chmod(0o600)
        os.replace(tmp, path)

    def read_cache(self, path: Path | None = None) -> dict[str, Any]:
        data = json.loads((path or self.cache).read_text())
        assert isinstance(data, dict)
        return data

    # -- compose and podman ---------------------------------------------------------------
    def compose_argv(self, *args: str) -> list[str]:
        return [
            os.environ["PODMAN_COMPOSE"],
            "-f",
            str(COMPOSE_FILE),
            "-f",
            str(OVERRIDE),
            "--env-file",
            str(self.env_file),
            *args,
        ]

    def compose(
        self, *args: str, timeout: float = 120, stdin: int | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run(self.compose_argv(*args), timeout=timeout, stdin=stdin)

    def up(self) -> None:
        result = self.compose("up", "-d")
        assert result.returncode == 0, result.stderr

    def logs(self) -> str:
        """The container's output, stdout and stderr in the order written."""
        result = subprocess.run(
            ["podman", "logs", CONTAINER],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=60,
            check=False,
        )
        return result.stdout

    def wait_for(self, what: str, check: Callable[[], bool], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {timeout} s; container log:\n{self.logs()}")
            time.sleep(0.1)

    def wait_for_log(self, text: str, timeout: float = 30) -> None:
        self.wait_for(repr(text), lambda: text in self.logs(), timeout)

    def inspect(self) -> dict[str, Any]:
        result = podman("inspect", CONTAINER)
        assert result.returncode == 0, result.stderr
        data = json.loads(result.stdout)[0]
        assert isinstance(data, dict)
        return data

    def stop(self, grace: int) -> tuple[float, int]:
        """`podman stop -t GRACE`: how long it took, and the container's exit code."""
        started = time.monotonic()
        result = podman("stop", "-t", str(grace), CONTAINER, timeout=grace + 60)
        elapsed = time.monotonic() - started
        assert result.returncode == 0, result.stderr
        return elapsed, int(self.inspect()["State"]["ExitCode"])

    def exec(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return podman("exec", CONTAINER, *argv)

    def down(self) -> None:
        self.compose("down", "-t", "1", timeout=120)


@pytest.fixture
def sidecar(tmp_path: Path) -> Iterator[Sidecar]:
    root = tmp_path / "world"
    root.mkdir()
    root.chmod(0o755)
    with FakeSaxo() as saxo:
        world = Sidecar(root, saxo)
        try:
            yield world
        finally:
            world.down()


# --- the first cycle, as the compose file's user ------------------------------------------


def test_first_cycle_refreshes_and_writes_the_cache_as_the_compose_user(sidecar: Sidecar) -> None:
    saxo = sidecar.saxo
    seed = saxo.seed_cache(age=1000, consumer_note="kept by every rewrite")
    sidecar.write_cache(seed)
    inode = sidecar.cache.stat().st_ino
    sidecar.up()
    sidecar.wait_for("saved refresh", lambda: sidecar.read_cache()["refresh_token"] != seed["refresh_token"])
    assert saxo.refreshes == 1
    assert sidecar.read_cache()["refresh_token"] == saxo.current_refresh
    cache = sidecar.cache.stat()
    assert cache.st_ino != inode, "the container wrote a new file"
    assert (cache.st_uid, cache.st_gid, cache.st_mode & 0o7777) == (UID, GID, 0o600)
    lock = sidecar.host_path(CACHE_IN_CONTAINER + ".lock").stat()
    assert (lock.st_uid, lock.st_gid, lock.st_mode & 0o7777) == (UID, GID, 0o664)
    data = sidecar.read_cache()
    assert data["consumer_note"] == "kept by every rewrite"
    assert data["issued_at"] > seed["issued_at"]
    sidecar.wait_for_log("token refreshed")
    assert not sidecar.host_path(CANONICAL_IN_CONTAINER).exists(), "the override's cache, not the canonical"


# --- hardening ----------------------------------------------------------------------------


def test_read_only_root_tmpfs_no_capabilities_no_new_privileges_and_it_still_works(
    sidecar: Sidecar,
) -> None:
    sidecar.write_cache(sidecar.saxo.seed_cache(age=0))
    sidecar.up()
    sidecar.wait_for_log("token valid")
    info = sidecar.inspect()
    assert info["HostConfig"]["ReadonlyRootfs"] is True
    assert any(o.startswith("no-new-privileges") for o in info["HostConfig"]["SecurityOpt"])
    assert info["Config"]["User"] == f"{UID}:{GID}"
    # what the running process really has
    status = sidecar.exec("cat", "/proc/1/status").stdout
    fields = dict(ln.split(":", 1) for ln in status.splitlines() if ":" in ln)
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(fields[cap], 16) == 0, f"{cap} {fields[cap].strip()}"
    assert fields["NoNewPrivs"].strip() == "1"
    assert fields["Uid"].split()[:2] == [str(UID), str(UID)]
    for path in ("/probe", "/opt/token-refresh/probe", "/etc/token-refresh/probe"):
        denied = sidecar.exec("touch", path)
        assert denied.returncode != 0
        assert "Read-only file system" in denied.stderr, denied.stderr
    assert sidecar.exec("touch", "/tmp/probe").returncode == 0
    mounts = sidecar.exec("cat", "/proc/mounts").stdout
    tmp = [ln.split() for ln in mounts.splitlines() if ln.split()[1] == "/tmp"]
    assert tmp, mounts
    assert tmp[0][2] == "tmpfs"
    assert "size=16384k" in tmp[0][3]
    # and the program works in it: a forced refresh through `docker exec`, as the runbook says
    forced = sidecar.exec("token-refresh", "run", "--force")
    assert forced.returncode == 0, forced.stderr
    assert sidecar.saxo.refreshes == 1
    assert sidecar.read_cache()["refresh_token"] == sidecar.saxo.current_refresh


def test_the_build_ca_bundle_stays_out_of_the_image() -> None:
    image = str(_compose_service()["image"])
    env = json.loads(podman("image", "inspect", image).stdout)[0]["Config"]["Env"]
    assert not [e for e in env if e.startswith(("PIP_CERT=", "REQUESTS_CA_BUNDLE="))]
    probe = podman("run", "--rm", "--network", "none", "--entrypoint", "/bin/sh", image, "-c", "ls -A /run")
    assert probe.returncode == 0, probe.stderr
    assert "build-ca.crt" not in probe.stdout


# --- healthcheck ----------------------------------------------------------------------------


def test_healthcheck_is_healthy_on_a_good_cache_and_unhealthy_on_an_expired_one(sidecar: Sidecar) -> None:
    sidecar.write_cache(sidecar.saxo.seed_cache(age=0))
    sidecar.up()
    sidecar.wait_for_log("token valid")
    healthy = podman("healthcheck", "run", CONTAINER)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert sidecar.inspect()["State"]["Health"]["Log"][-1]["ExitCode"] == 0
    # the refresh token has expired too: no run can fix it, a person must log in
    sidecar.write_cache(sidecar.saxo.seed_cache(age=REFRESH_TTL + 60))
    unhealthy = podman("healthcheck", "run", CONTAINER)
    assert unhealthy.returncode == 1
    assert "unhealthy" in unhealthy.stdout
    info = sidecar.inspect()
    assert "state:          expired" in info["State"]["Health"]["Log"][-1]["Output"]
    # podman logs any failure as 1: the healthcheck's own command gives the program's status
    kind, *command = info["Config"]["Healthcheck"]["Test"]
    assert kind == "CMD"
    assert sidecar.exec(*command).returncode == 77


# --- the schedule ---------------------------------------------------------------------------


def test_a_scheduled_cycle_runs_and_refreshes(sidecar: Sidecar) -> None:
    saxo = sidecar.saxo
    sidecar.set_crontab(EVERY_2_SECONDS)
    sidecar.write_cache(saxo.seed_cache(age=0))
    sidecar.up()
    sidecar.wait_for_log("token valid")  # the entrypoint's first cycle: nothing to do
    assert saxo.refreshes == 0
    sidecar.write_cache(saxo.seed_cache(age=1000))  # due now
    sidecar.wait_for("scheduled refresh", lambda: saxo.refreshes == 1, timeout=15)
    sidecar.wait_for_log("token refreshed")
    assert sidecar.read_cache()["refresh_token"] == saxo.current_refresh
    log = sidecar.logs()
    assert log.index('msg="starting"') < log.index("token refreshed")


# --- stopping -------------------------------------------------------------------------------


def test_stop_while_idle_returns_within_2_seconds(sidecar: Sidecar) -> None:
    sidecar.write_cache(sidecar.saxo.seed_cache(age=0))
    sidecar.up()
    sidecar.wait_for_log("read crontab")  # the scheduler runs and waits
    elapsed, code = sidecar.stop(grace=30)
    assert elapsed < 2, f"stop took {elapsed:.1f} s"
    assert code == 0


def test_stop_during_a_scheduled_refresh_saves_the_new_token_and_exits_0(sidecar: Sidecar) -> None:
    saxo = sidecar.saxo
    sidecar.set_crontab(EVERY_2_SECONDS)
    sidecar.write_cache(saxo.seed_cache(age=0))
    sidecar.up()
    sidecar.wait_for_log("token valid")
    saxo.delay = 3.0
    sidecar.write_cache(saxo.seed_cache(age=1000))
    sidecar.wait_for("refresh request", lambda: len(saxo.requests) == 1, timeout=15)
    elapsed, code = sidecar.stop(grace=30)
    assert code == 0, sidecar.logs()
    assert elapsed < 20, f"stop took {elapsed:.1f} s: the grace period ran out"
    assert saxo.refreshes == 1
    assert sidecar.read_cache()["refresh_token"] == saxo.current_refresh, "the spent token was not replaced"
    log = sidecar.logs()
    assert log.index("shutting down") < log.index("token refreshed")


def test_stop_during_the_entrypoints_first_cycle_is_honoured(sidecar: Sidecar) -> None:
    saxo = sidecar.saxo
    saxo.delay = 3.0
    sidecar.write_cache(saxo.seed_cache(age=1000))
    sidecar.up()
    sidecar.wait_for("refresh request", lambda: len(saxo.requests) == 1, timeout=15)
    elapsed, code = sidecar.stop(grace=20)
    # an entrypoint shell that ignores SIGTERM as PID 1 makes the stop wait out the grace period
    assert elapsed < 10, f"stop took {elapsed:.1f} s: SIGTERM was lost during the first cycle"
    assert code == 0, sidecar.logs()
    assert sidecar.read_cache()["refresh_token"] == saxo.current_refresh, "the spent token was not replaced"
    log = sidecar.logs()
    assert "SIGTERM arrived during the refresh and waited until the new token was saved" in log, log
    assert "read crontab" not in log, "the schedule started although the container was stopping"


# --- one-shot containers: the runbook's commands through podman-compose -----------------------


def runbook_compose_commands() -> list[list[str]]:
    """`docker compose ... run ...` lines of the runbook's code blocks, after the env file."""
    prefix = "sudo docker compose -f docker-compose.cron.yml --env-file /volume1/aegis/.env "
    lines = re.findall(r"^" + re.escape(prefix) + r"(run .*)$", RUNBOOK.read_text(), re.M)
    header = re.findall(
        r"^#   status:\s+docker compose -f \S+ --env-file \S+ (run .*)$", COMPOSE_FILE.read_text(), re.M
    )
    return [shlex.split(line) for line in [*lines, *header]]


def one_command(match: Callable[[list[str]], bool]) -> list[str]:
    found = [c for c in runbook_compose_commands() if match(c)]
    assert found, "the documented command is gone"
    return found[0]


def in_terminal(
    argv: list[str], answer: Callable[[str], str | None], timeout: float = 120
) -> tuple[int, str]:
    """Run argv on a pseudo-terminal, as an operator in an SSH session; ``answer`` may type once."""
    master, slave = pty.openpty()
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 250, 0, 0))
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, cwd=REPO, start_new_session=True)
    os.close(slave)
    out = b""
    typed = False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if not ready:
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the terminal's last writer has gone
                break
            if not chunk:
                break
            out += chunk
            reply = None if typed else answer(out.decode(errors="replace"))
            if reply is not None:
                os.write(master, reply.encode())
                typed = True
        return proc.wait(timeout=30), out.decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def login(url: str) -> str:
    """Play the browser: the fake login page redirects at once; return where to."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    conn.request("GET", f"{parts.path}?{parts.query}")
    answer = conn.getresponse()
    assert answer.status == 302, answer.read()
    return answer.getheader("Location") or ""


def test_compose_run_status_and_authorize_paste_as_the_runbook_gives_them(sidecar: Sidecar) -> None:
    saxo = sidecar.saxo
    sidecar.write_cache(saxo.seed_cache(age=0))
    # status in a one-shot container, no TTY, the sidecar not running
    status_cmd = one_command(lambda c: c[-2:] == ["token-refresh", "status"] and "-T" in c)
    status = sidecar.compose(*status_cmd, stdin=subprocess.DEVNULL)
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"path:           {CACHE_IN_CONTAINER}" in status.stdout
    assert "state:          valid" in status.stdout
    who = sidecar.compose("run", "--rm", "-T", SERVICE, "id", stdin=subprocess.DEVNULL)
    assert who.stdout.startswith(f"uid={UID}("), who.stdout
    assert f" gid={GID}(" in who.stdout, who.stdout
    # authorize --paste for the canonical cache, with a terminal (the runbook's command has no -T)
    authorize_cmd = one_command(lambda c: "--paste" in c and CANONICAL_IN_CONTAINER in c)
    assert "-T" not in authorize_cmd

    pasted: list[str] = []

    def paste_the_redirect(screen: str) -> str | None:
        found = URL_RE.search(screen)
        if not found:
            return None
        pasted.append(login(found.group(1)))
        return pasted[0] + "\r"

    code, screen = in_terminal(sidecar.compose_argv(*authorize_cmd), paste_the_redirect)
    assert code == 0, screen
    assert "authorized: new token saved" in screen
    assert saxo.code_exchanges == 1
    canonical = sidecar.host_path(CANONICAL_IN_CONTAINER)
    assert sidecar.read_cache(canonical)["refresh_token"] == saxo.current_refresh
    made = canonical.stat()
    assert (made.st_uid, made.st_gid, made.st_mode & 0o7777) == (UID, GID, 0o600)
    lock = canonical.with_name(canonical.name + ".lock").stat()
    assert (lock.st_uid, lock.st_mode & 0o7777) == (UID, 0o664)
    printed = screen.replace(pasted[0], "")  # the terminal echoes what the operator pasted
    assert not [s for s in saxo.secrets_seen() if s in printed], "a secret reached the terminal"
    again = sidecar.compose(
        "run",
        "--rm",
        "-T",
        SERVICE,
        "token-refresh",
        "status",
        "--cache",
        CANONICAL_IN_CONTAINER,
        stdin=subprocess.DEVNULL,
    )
    assert again.returncode == 0, again.stdout + again.stderr


# --- the DSM task -------------------------------------------------------------------------------


def synology_task(sidecar: Sidecar) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/bin:/bin",  # DSM gives the task almost nothing
        "DOCKER": str(HERE / "docker"),
        "PROJECT_DIR": str(REPO),
        "ENV_FILE": str(sidecar.env_file),
        # for the stand-in docker only
        "PODMAN_COMPOSE": os.environ["PODMAN_COMPOSE"],
        "TR_COMPOSE_OVERRIDE": str(OVERRIDE),
        **{k: v for k, v in os.environ.items() if k.startswith("CONTAINERS_")},
    }
    return run(["/bin/bash", str(REPO / "cron" / "synology-task.sh")], env=env, stdin=subprocess.DEVNULL)


def test_synology_task_runs_a_cycle_through_podman_and_passes_the_exit_status(sidecar: Sidecar) -> None:
    saxo = sidecar.saxo
    sidecar.write_cache(saxo.seed_cache(age=1000))
    due = synology_task(sidecar)
    assert due.returncode == 0, due.stderr
    assert saxo.refreshes == 1
    assert sidecar.read_cache()["refresh_token"] == saxo.current_refresh
    assert without_podman_noise(due.stderr) == "", "-q: a success is no news"
    valid = synology_task(sidecar)
    assert valid.returncode == 0, valid.stderr
    assert without_podman_noise(valid.stdout + valid.stderr) == "", "DSM mails any output of a failure only"
    sidecar.write_cache(saxo.seed_cache(age=REFRESH_TTL + 60))
    saxo.current_refresh = "the-session-ended"  # the server decides: it refuses this chain
    expired = synology_task(sidecar)
    assert expired.returncode == 77, expired.stderr
    assert "MANUAL RE-AUTHORIZATION REQUIRED" in expired.stderr
    assert not podman(
        "ps", "-aq", "--filter", "label=io.podman.compose.project=token-refresh"
    ).stdout.strip(), "run --rm left a container behind"
