"""Scenario 6: broken caches and configs; each has its documented exit status and a message naming it."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest
from harness import TALLY, Runner
from support import base_env

GOOD: dict[str, Any] = {
    "access_token": "a" * 40,
    "refresh_token": "r" * 36,
    "issued_at": 1_700_000_000,
    "expires_in": 1200,
}


def _json(data: object) -> bytes:
    return json.dumps(data).encode()


def _with(**fields: Any) -> bytes:
    return _json({**GOOD, **fields})


# name, bytes on disk, exit status, words the message must contain
CACHES: list[tuple[str, bytes, int, str]] = [
    ("empty", b"", 65, "is empty"),
    ("whitespace", b"  \n", 65, "is empty"),
    ("truncated", _json(GOOD)[:30], 65, "is not valid JSON"),
    ("null", b"null", 65, "not a JSON object (got NoneType)"),
    ("list", _json([GOOD]), 65, "not a JSON object (got list)"),
    ("string", b'"token"', 65, "not a JSON object (got str)"),
    (
        "no-access-token",
        _json({k: v for k, v in GOOD.items() if k != "access_token"}),
        65,
        "'access_token' is missing",
    ),
    ("access-token-int", _with(access_token=12), 65, "'access_token' must be a non-empty string"),
    (
        "access-token-empty-no-refresh",
        _with(access_token="", refresh_token=None),
        65,
        "'access_token' must be",
    ),
    ("refresh-token-list", _with(refresh_token=["x"]), 65, "'refresh_token' must be a string"),
    ("issued-at-bool", _with(issued_at=True), 65, "'issued_at' is not a time"),
    ("issued-at-garbage", _with(issued_at="yesterday"), 65, "'issued_at' is not a time"),
    (
        "issued-at-overflow",
        b'{"access_token": "aaaa", "issued_at": 1e400, "expires_in": 1}',
        65,
        "'issued_at'",
    ),
    ("expires-in-string", _with(expires_in="1200"), 65, "'expires_in' must be a number"),
    ("expires-in-inf", b'{"access_token": "aaaa", "issued_at": 1, "expires_in": 1e400}', 65, "'expires_in'"),
    ("nan", b'{"access_token": "aaaa", "issued_at": 1, "expires_in": NaN}', 65, "NaN is not a valid JSON"),
    ("rt-expires-string", _with(refresh_token_expires_in="1h"), 65, "'refresh_token_expires_in' must be"),
    ("huge", b'{"pad": "' + b"x" * (1 << 21) + b'"}', 65, "larger than"),
    ("not-utf8", b'{"access_token": "\xff\xfe"}', 65, "is not UTF-8"),
]


def _listing(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() if p.is_file() else b"<dir>" for p in sorted(folder.iterdir())}


def _check_nothing_written(e2e: Runner, before: dict[str, bytes]) -> None:
    assert _listing(e2e.cache.parent) == before  # no new cache, no lock file, no temp file
    assert e2e.refresh_requests() == []


@pytest.mark.parametrize(("name", "raw", "code", "words"), CACHES, ids=[c[0] for c in CACHES])
def test_broken_cache(e2e: Runner, name: str, raw: bytes, code: int, words: str) -> None:
    e2e.cache.write_bytes(raw)
    TALLY.faults += 1
    before = _listing(e2e.cache.parent)
    for args in (["run"], ["status"]):
        done = e2e.run(*args)
        assert done.returncode == code, done.stderr
        assert words in done.stderr
        assert str(e2e.cache) in done.stderr  # which file
        assert "Traceback" not in done.stderr
    _check_nothing_written(e2e, before)


def _make_directory(cache: Path) -> None:
    cache.mkdir()


def _make_dangling_symlink(cache: Path) -> None:
    cache.symlink_to(cache.parent / "gone.json")


def _make_missing(cache: Path) -> None:
    pass


def _make_unreadable(cache: Path) -> None:
    cache.write_bytes(_with(issued_at=1))
    cache.chmod(0)


UNREADABLE: list[tuple[str, Callable[[Path], None], int, str]] = [
    ("missing", _make_missing, 66, "does not exist"),
    ("directory", _make_directory, 66, "is a directory"),
    ("dangling-symlink", _make_dangling_symlink, 66, "does not exist"),
    ("no-read-permission", _make_unreadable, 66, "Permission denied"),
]


@pytest.mark.parametrize(("name", "make", "code", "words"), UNREADABLE, ids=[u[0] for u in UNREADABLE])
def test_unreadable_cache(
    e2e: Runner, name: str, make: Callable[[Path], None], code: int, words: str
) -> None:
    make(e2e.cache)
    TALLY.faults += 1
    before = _listing(e2e.cache.parent) if not e2e.cache.is_symlink() else None
    prefix: list[str] = []
    if name == "no-read-permission" and os.geteuid() == 0:
        # root reads anything: drop the capabilities that bypass file permissions
        assert shutil.which("setpriv"), "setpriv (util-linux) is needed to drop root's DAC override"
        caps = "-dac_override,-dac_read_search"
        prefix = ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}"]
    for args in (["run"], ["status"]):
        done = e2e.run(*args, prefix=prefix)
        assert done.returncode == code, done.stderr
        assert words in done.stderr
        assert "Traceback" not in done.stderr
    if before is not None:
        _check_nothing_written(e2e, before)
    else:
        assert sorted(p.name for p in e2e.cache.parent.iterdir()) == [e2e.cache.name]
        assert e2e.refresh_requests() == []


def test_issued_at_in_the_future_is_refreshed_with_a_warning(e2e: Runner) -> None:
    """Documented: clock trouble makes the token due (a fresh one carries a sane issued_at)."""
    e2e.seed(age=-86400)
    TALLY.faults += 1
    done = e2e.run("run")
    assert done.returncode == 0, done.stderr
    assert "issued_at is in the future" in done.stderr
    assert "WARNING issued_at is more than 300 s in the future" in done.stderr
    assert e2e.saxo.refreshes == 1
    e2e.assert_holds_newest()


UNSET = "<unset>"  # an environment value that removes the variable
# name, extra YAML lines (replacing the same keys of a good config), extra environment, words the message
# must contain
CONFIGS: list[tuple[str, str, dict[str, str], str]] = [
    ("bad-yaml", "margin_secs: [60\n", {}, "not valid YAML"),
    ("unknown-key", "colour: blue\n", {}, "unknown key 'colour'"),
    (
        "negative-interval",
        "interval_secs: -900\n",
        {},
        "interval_secs: must be between 60 and 86400, got -900",
    ),
    (
        "string-timeout",
        "http_timeout_secs: ten\n",
        {},
        "http_timeout_secs: must be a number of seconds, got str",
    ),
    ("bool-margin", "margin_secs: true\n", {}, "margin_secs: must be a number of seconds, got bool"),
    ("bad-environment", "environment: prod\n", {}, "environment: must be one of live, sim"),
    ("plain-http", 'token_url: "http://example.com/token"\n', {}, "token_url: must be an https:// URL"),
    ("not-a-mapping", None, {}, "must be a YAML mapping, got list"),  # type: ignore[list-item]
    (
        "both-secret-forms",
        "",
        {"SAXOBANK_APP_SECRET_LIVE_FILE": "{secret_file}"},
        "both SAXOBANK_APP_SECRET_LIVE and SAXOBANK_APP_SECRET_LIVE_FILE are set",
    ),
    ("empty-secret", "", {"SAXOBANK_APP_SECRET_LIVE": ""}, "SAXOBANK_APP_SECRET_LIVE is empty"),
    ("no-key", "", {"SAXOBANK_APP_KEY_LIVE": UNSET}, "SAXOBANK_APP_KEY_LIVE is not set"),
    (
        "empty-secret-file",
        "",
        {"SAXOBANK_APP_SECRET_LIVE": UNSET, "SAXOBANK_APP_SECRET_LIVE_FILE": "{empty_file}"},
        "SAXOBANK_APP_SECRET_LIVE_FILE: {empty_file} is empty",
    ),
    ("duplicate-key", "margin_secs: 60\nmargin_secs: 90\n", {}, "duplicate key 'margin_secs'"),
    ("alias", "hooks: &h {on_refresh: [a]}\nx: *h\n", {}, "anchors and aliases"),
    ("port-too-big", 'token_url: "https://example.com:70000/token"\n', {}, "port 70000 is not between"),
]


@pytest.mark.parametrize(("name", "extra", "environ", "words"), CONFIGS, ids=[c[0] for c in CONFIGS])
def test_broken_config(
    e2e: Runner, tmp_path: Path, name: str, extra: str | None, environ: dict[str, str], words: str
) -> None:
    before_cache = e2e.seed_due()  # a run that got past its config would refresh this
    files = {"secret_file": tmp_path / "secret", "empty_file": tmp_path / "empty"}
    files["secret_file"].write_text("another-secret-value\n")
    files["empty_file"].write_text("")
    fill = {k: str(v) for k, v in files.items()}
    set_keys = {line.split(":")[0] for line in (extra or "").splitlines()}
    good = "".join(
        line for line in e2e.config.read_text().splitlines(True) if line.split(":")[0] not in set_keys
    )
    e2e.config.write_text("- environment: live\n" if extra is None else good + extra)
    TALLY.faults += 1
    before = _listing(e2e.cache.parent)
    env = base_env(**{k: v.format(**fill) for k, v in environ.items()})
    env = {k: v for k, v in env.items() if v != UNSET}
    done = e2e.run("run", env=env)
    assert done.returncode == 78, done.stderr
    assert words.format(**fill) in done.stderr
    assert "Traceback" not in done.stderr
    assert "another-secret-value" not in done.stderr
    _check_nothing_written(e2e, before)
    assert e2e.cache.read_bytes() == before_cache
