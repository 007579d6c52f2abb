"""The README's production quick start, followed as written against the local fake Saxo endpoint.

The commands of the host-venv path (B, C and their verification) run for real with the NAS paths
mapped into a temporary folder, ``sudo`` dropped and the token owner played by the current user:
the redirect URL is set, the token directory made, the first login pasted back, ``status`` read,
the scheduled command run after the token aged, and ``status --since`` asked whether ``issued_at``
advanced. What needs Docker, DSM, pip or the network (A, the venv's creation, ``crontab``) is
checked statically: the program's flags exist, compose commands name the compose and env files,
the crontab fires every 900 s.
"""

from __future__ import annotations

import getpass
import grp
import json
import os
import re
import shlex
import shutil
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import requests
import yaml
from croniter import croniter
from deploy_support import REPO, cli_bin_dir, invocation_problems
from fake_saxo import APP_KEY, APP_SECRET, FakeSaxo

QUICK_START = "Quick start (production)"
URL_RE = re.compile(r"(http://127\.0\.0\.1:\d+/authorize\?\S+)")
PROGRAM = re.compile(r"(?:^|(?<=[\s;&|(`]))(?:\S*/bin/)?token-refresh(?=[\s`]|$)")
# Commands that need Docker, pip with the network, git or root's crontab; checked statically.
NOT_HERE = re.compile(
    r"^(?:sudo )?(?:git clone|python3 -m venv|\S*/pip install|docker|\(?sudo crontab|crontab)"
)


def quick_start() -> dict[str, list[str]]:
    """Subsection heading -> the lines of its ``sh`` blocks (continuations joined)."""
    text = (REPO / "README.md").read_text()
    body = re.search(rf"^## {re.escape(QUICK_START)}\n(.*?)(?=^## )", text, re.M | re.S)
    assert body, "README has no quick start"
    parts = re.split(r"^### (.+)\n", body.group(1), flags=re.M)
    blocks: dict[str, list[str]] = {}
    for heading, part in zip(parts[1::2], parts[2::2]):
        code = re.findall(r"^```sh\n(.*?)^```", part, re.M | re.S)
        blocks[heading] = [
            ln for block in code for ln in block.replace("\\\n", " ").splitlines() if ln.strip()
        ]
    return blocks


def block(blocks: dict[str, list[str]], prefix: str) -> list[str]:
    (lines,) = [lines for heading, lines in blocks.items() if heading.startswith(prefix)]
    return lines


class Nas:
    """The NAS's paths in a temporary folder, and the operator's commands run there."""

    def __init__(self, tmp: Path, saxo: FakeSaxo) -> None:
        self.tmp = tmp
        self.saxo = saxo
        self.checkout = tmp / "checkout"
        self.tokens = tmp / "tokens"
        self.cache = self.tokens / "saxobank_tokens_live.json"
        (tmp / "scratch").mkdir()
        self.checkout.mkdir()
        for folder in ("cron", "configs"):
            shutil.copytree(REPO / folder, self.checkout / folder)
        (tmp / "venv").mkdir()
        cli_bin_dir(tmp / "venv")  # the production venv's bin/token-refresh: the installed program
        (tmp / "aegis.env").write_text(
            f"SAXOBANK_APP_KEY_LIVE={APP_KEY}\nSAXOBANK_APP_SECRET_LIVE={APP_SECRET}\n"
            "SAXOBANK_ACCESS_TOKEN_LIVE=not-for-the-keeper\n"
        )
        user, group = getpass.getuser(), grp.getgrgid(os.getgid()).gr_name
        self.paths = {
            "/volume1/aegis/token-refresh-venv": str(tmp / "venv"),
            "/volume1/aegis/token-refresh": str(self.checkout),
            "/volume1/aegis/tokens": str(self.tokens),
            "/volume1/aegis/.env": str(tmp / "aegis.env"),
            "/tmp/": str(tmp / "scratch") + "/",
            "sudo -u tokenkeeper ": "",
            "sudo ": "",
            "tokenkeeper:users": f"{user}:{group}",
            "tokenkeeper": user,
        }
        self.pattern = re.compile("|".join(re.escape(k) for k in sorted(self.paths, key=len, reverse=True)))
        script = self.checkout / "cron" / "synology-task-venv.sh"  # its defaults are NAS paths too
        script.write_text(self.here(script.read_text()))
        self.cwd = tmp
        self.outputs: list[str] = []

    def here(self, text: str) -> str:
        return self.pattern.sub(lambda m: self.paths[m.group(0)], text)

    @property
    def env(self) -> dict[str, str]:
        # DSM and cron give a task almost no environment; the credentials come from the env file
        return {"PATH": "/usr/bin:/bin", "HOME": str(self.tmp), "LANG": "C.UTF-8"}

    def run(self, line: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        command = self.here(line)
        if command.startswith("cd "):
            self.cwd = Path(shlex.split(command)[1])
            return subprocess.CompletedProcess(command, 0, "", "")
        result = subprocess.run(
            ["bash", "-c", command],
            cwd=self.cwd,
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        self.outputs.append(result.stdout + result.stderr)
        assert result.returncode == 0, (line, result.stdout, result.stderr)
        return result

    def authorize(self, line: str) -> str:
        """Run `authorize --paste`, log in at the fake with the printed URL, paste the redirect back."""
        proc = subprocess.Popen(
            ["bash", "-c", self.here(line)],
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stderr is not None
        assert proc.stdin is not None
        seen: list[str] = []
        try:
            while not (found := URL_RE.search(line := proc.stderr.readline())):
                assert line, "".join(seen)
                seen.append(line)
            session = requests.Session()
            session.trust_env = False  # no proxy between the test and 127.0.0.1
            login = session.get(found.group(1), allow_redirects=False, timeout=10)
            assert login.status_code == 302, login.text
            out, err = proc.communicate(login.headers["Location"] + "\n", timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        output = "".join(seen) + out + err
        self.outputs.append(output)
        assert proc.returncode == 0, output
        return output

    def let_time_pass(self, seconds: int, *records: Path) -> None:
        """Move every time on record ``seconds`` into the past: the cache's and the snapshots'."""
        data = json.loads(self.cache.read_text())
        data["issued_at"] -= seconds
        self.cache.write_text(json.dumps(data, indent=2) + "\n")
        for record in records:
            rows = json.loads(record.read_text())
            for row in rows:
                then = datetime.strptime(row["issued_at"], "%Y-%m-%dT%H:%M:%SZ")
                row["issued_at"] = (then - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")
            record.write_text(json.dumps(rows))


def test_quick_start_has_every_path() -> None:
    headings = list(quick_start())
    for prefix in ("1.", "A.", "B.", "C.", "Verify"):
        assert sum(h.startswith(prefix) for h in headings) == 1, headings


def test_quick_start_host_venv_path_runs_as_written(tmp_path: Path, saxo: FakeSaxo) -> None:
    blocks = quick_start()
    nas = Nas(tmp_path, saxo)

    # 1. the code (already "cloned"), the redirect URL, the token directory
    for line in block(blocks, "1."):
        if not NOT_HERE.match(line):
            nas.run(line)
    config = nas.checkout / "configs" / "token_refresh.yaml"
    assert yaml.safe_load(config.read_text())["redirect_uri"].startswith("https://")
    assert nas.tokens.is_dir()
    assert nas.tokens.stat().st_mode & 0o7777 == 0o2770
    # the production config names Saxo: point its URLs at the fake instead
    config.write_text(config.read_text().replace("https://live.logonvalidation.net", saxo.base_url))

    # B: install (the venv exists already), log in by pasting, status
    scheduled = None
    for line in block(blocks, "B."):
        if NOT_HERE.match(line):
            continue
        if line.startswith("bash "):
            scheduled = line  # the DSM task's script
        elif "authorize --paste" in line:
            assert "authorized: new token saved" in nas.authorize(line)
        else:
            result = nas.run(line)
            if line.rstrip().endswith(" status"):
                assert "state:          valid" in result.stdout
    assert scheduled is not None
    assert saxo.code_exchanges == 1
    assert json.loads(nas.cache.read_text())["refresh_token"] == saxo.current_refresh

    # C: the crontab line runs the same command every 900 s
    (cron_line,) = [ln for ln in block(blocks, "C.") if "*/15" in ln]
    entry = re.search(r"'(\*/15 [^']+)'", cron_line)
    assert entry
    fields = entry.group(1).split(maxsplit=5)
    schedule, cron_command = " ".join(fields[:5]), fields[5]
    fires = croniter(schedule, 0)
    assert [fires.get_next(float) for _ in range(3)] == [900.0, 1800.0, 2700.0]
    assert cron_command == scheduled

    # Verify: a snapshot, 20 minutes in which the schedule runs (the token ages, the task fires),
    # then status --since says issued_at advanced
    verify = block(blocks, "Verify")
    b_and_c = verify[: next(i for i, ln in enumerate(verify) if "docker" in ln)]
    assert len(b_and_c) == 3
    nas.run(b_and_c[0])
    snapshot = Path(nas.here(b_and_c[0]).split(" > ")[1])
    wait = int(b_and_c[1].split()[1])
    assert wait >= 900 + 180  # the first scheduled run finds the token due
    nas.let_time_pass(wait, snapshot)
    quiet = nas.run(cron_command)
    assert quiet.stdout + quiet.stderr == ""  # cron mails any output: a good run has none
    assert saxo.refreshes == 1
    after = nas.run(b_and_c[2])
    assert "state:          valid" in after.stdout
    assert "advanced:       yes (was " in after.stdout

    for output in nas.outputs:
        for secret in [APP_SECRET, *saxo.secrets_seen()]:
            assert secret not in output


def test_quick_start_commands_that_need_docker_use_real_flags_and_files() -> None:
    blocks = quick_start()
    lines = [ln for heading, lines in blocks.items() for ln in lines]
    invocations = [
        shlex.split(line[m.end() :].split(" > ")[0].split(" < ")[0])
        for line in lines
        for m in PROGRAM.finditer(line)
        if not line[m.end() :].startswith("-venv")
    ]
    # the venv script passes its arguments on: `status ...` and `authorize ...`, else to `run`
    for line in lines:
        if (m := re.search(r"synology-task-venv\.sh((?: [^>|<']+)?)", line)) is not None:
            args = shlex.split(m.group(1))
            invocations.append(args if args[:1] in (["status"], ["authorize"]) else ["run", *args])
    assert len(invocations) >= 10
    assert {args[0] for args in invocations if args and not args[0].startswith("-")} >= {
        "authorize",
        "status",
    }
    assert [args for args in invocations if invocation_problems(args)] == []
    for line in lines:
        if re.search(r"docker compose (?!version)\S", line):
            assert "-f docker-compose.cron.yml --env-file /volume1/aegis/.env" in line, line


def test_quick_start_sidecar_drops_the_observation_override(tmp_path: Path) -> None:
    (edit,) = [ln for ln in block(quick_start(), "A.") if "sed -i" in ln and "docker-compose.cron.yml" in ln]
    shutil.copy(REPO / "docker-compose.cron.yml", tmp_path)
    subprocess.run(["bash", "-c", edit.removeprefix("sudo ")], cwd=tmp_path, check=True, timeout=10)
    compose = yaml.safe_load((tmp_path / "docker-compose.cron.yml").read_text())
    environment = compose["services"]["token-refresh-cron"]["environment"]
    assert "AEGIS_SAXO_TOKEN_CACHE_PATH" not in environment
    assert environment["TOKEN_REFRESH_CONFIG"] == "/etc/token-refresh/token_refresh.yaml"


@pytest.mark.parametrize("prefix", ["1.", "B."])
def test_quick_start_names_no_checkout_venv(prefix: str) -> None:
    for line in block(quick_start(), prefix):
        assert "/.venv" not in line
