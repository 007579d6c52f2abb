"""Hostile input and disguised secrets (docs/DESIGN.md, "Threat model", "No secret reaches an output").

A cache nested 100 000 deep, a YAML alias bomb under a memory limit, mount points whose names are
not text, a metrics file under umask 077, a server echoing the secrets cut, split and encoded.
Duplicate YAML keys and a URL port over 65535 are in test_bad_input (CONFIGS).
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
from pathlib import Path
from typing import Callable

import pytest
import requests
from harness import TALLY, Runner, temp_files
from support import COMMAND, base_env
from tools import namespaces_missing, wait_until

# -- 8. hostile input ----------------------------------------------------------------------------


def test_a_cache_nested_100000_levels_deep_is_65(e2e: Runner) -> None:
    e2e.cache.write_bytes(b'{"a": ' * 100_000 + b"1" + b"}" * 100_000)
    TALLY.faults += 1
    for args in (["run"], ["status"]):
        done = e2e.run(*args)
        assert done.returncode == 65, done.stderr
        assert "nested too deeply to be a token" in done.stderr
        assert "Traceback" not in done.stderr
    assert e2e.refresh_requests() == []


BILLION_LAUGHS = """\
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
margin_secs: *i
"""  # margin_secs: a wrong value is quoted in the error, which would spell out 9**9 strings
MEMORY_LIMIT = 512 << 20  # address space: the program needs about a third of it; the bomb, gigabytes


def test_a_yaml_alias_bomb_is_78_at_once_in_bounded_memory(e2e: Runner) -> None:
    e2e.seed_due()
    e2e.config.write_text(e2e.config.read_text() + BILLION_LAUGHS)
    TALLY.faults += 1
    started = time.monotonic()
    done = e2e.run("run", prefix=["prlimit", f"--as={MEMORY_LIMIT}", "--"])
    took = time.monotonic() - started
    assert done.returncode == 78, done.stderr
    assert "anchors and aliases (&, *) are not allowed" in done.stderr
    assert "Traceback" not in done.stderr
    assert took < 1.5, f"{took:.2f} s"
    assert e2e.refresh_requests() == []


# Mount points named in Japanese (not Latin-1), with a byte that is not UTF-8, with a space and a
# backslash (escaped in mountinfo): each must be read without failing the run.
ODD_NAMES = ["日本".encode(), b"not-utf8-\xff\xfe", b"a b\\c"]
NAMESPACE = """
set -e
mount --make-rprivate /
for d in "$ODD"/*; do mount -t tmpfs -o size=64k tmpfs "$d"; done
set +e
exec "$@"
"""


def _odd_mounts(tmp_path: Path) -> list[str]:
    odd = tmp_path / "odd"
    odd.mkdir()
    for name in ODD_NAMES:
        os.mkdir(os.fsencode(odd) + b"/" + name)
    return ["unshare", "-m", "sh", "-c", NAMESPACE, "sh"]


def test_mount_points_with_names_that_are_not_text_do_not_stop_a_run(e2e: Runner, tmp_path: Path) -> None:
    reason = namespaces_missing()
    if reason:
        pytest.skip(reason)
    prefix = _odd_mounts(tmp_path)
    e2e.seed_due()
    env = base_env(ODD=str(tmp_path / "odd"))
    TALLY.faults += 1
    done = e2e.run("run", env=env, prefix=prefix)
    assert done.returncode == 0, done.stderr
    assert "token refreshed" in done.stderr
    e2e.assert_holds_newest()


def test_mount_points_with_names_that_are_not_text_do_not_stop_authorize(
    e2e: Runner, tmp_path: Path, config_file: Callable[..., Path]
) -> None:
    reason = namespaces_missing()
    if reason:
        pytest.skip(reason)
    prefix = _odd_mounts(tmp_path)
    config = config_file(
        authorize_url=e2e.saxo.authorize_url, redirect_uri="https://app.example.test/callback"
    )
    env = base_env(ODD=str(tmp_path / "odd"))
    argv = [*prefix, *COMMAND, "authorize", "--paste", "--no-browser", "--config", str(config)]
    live = e2e.processes.spawn_live(argv, env=env)
    found: list[str] = []

    def printed() -> bool:
        found[:] = re.findall(r"http://127\.0\.0\.1:\d+/authorize\?\S+", live.stderr())
        return bool(found) or live.proc.poll() is not None

    assert wait_until(printed, 30), live.stderr()
    assert found, live.stderr()
    browser = requests.Session()
    browser.trust_env = False  # no proxy between the test and 127.0.0.1
    redirect = browser.get(found[0], allow_redirects=False, timeout=30).headers["Location"]
    TALLY.faults += 1
    done = e2e.processes.finish_live(live, input=redirect + "\n")
    assert done.returncode == 0, done.stderr
    e2e.assert_holds_newest()


def test_the_metrics_file_is_world_readable_whatever_the_umask(e2e: Runner, tmp_path: Path) -> None:
    """node_exporter reads it as another user; it holds no secret."""
    e2e.seed()
    metrics = tmp_path / "token_refresh.prom"
    done = e2e.processes.run(
        ["sh", "-c", 'umask 077 && exec "$@"', "sh", *e2e.argv("run", "--metrics-file", str(metrics))]
    )
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(metrics.stat().st_mode) == 0o644
    assert "token_refresh_last_exit_status" in metrics.read_text()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(metrics.name)) == [metrics.name]


# -- 9. secrets stay out, even cut or disguised -------------------------------------------------


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_secrets_a_server_echoes_cut_split_or_encoded_stay_out(
    e2e: Runner, tmp_path: Path, config_file: Callable[..., Path], log_format: str
) -> None:
    """The server quotes the refresh token across the 200-character cut, split by a control character,
    and in base64 with the app secret; the log lines and the hook's TOKEN_REFRESH_MESSAGE hide them."""
    message = tmp_path / "message"
    e2e.config = config_file(hooks={"on_failure": [f'printf "%s\\n" "$TOKEN_REFRESH_MESSAGE" > {message}']})
    e2e.seed_due()
    token = e2e.saxo.current_refresh
    assert token is not None
    e2e.fault("echo-disguised", 200)  # the token again, straddling the cut of the error_description
    done = e2e.run("run", "--log-format", log_format)
    assert done.returncode == 77, done.stderr
    hook = message.read_text()
    e2e.record(hook)
    assert "in base64" in hook  # the description reached the hook...
    assert "xxxx" in hook  # ...cut
    for output in (done.stderr, hook):
        assert "<redacted>" in output
        assert token[:10] not in output, "a part of the refresh token survived the cut or the split"
    # the leak scan (processes) looks for every form of every secret, base64 included
    assert e2e.leaks() == []
    assert temp_files(e2e.cache) == []
    if log_format == "json":
        lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
        assert any("<redacted>" in str(line) for line in lines)
