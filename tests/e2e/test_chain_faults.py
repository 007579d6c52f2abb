"""The refresh-token chain survives every fault (docs/DESIGN.md, "Roll-forward", "The lock", "One schema").

The installed program against the fake Saxo: killed at each syscall of the durable write, a
rename refused after the spend, a 2xx answer that is odd in every known way, two caches in one
directory, twenty queued runs, a gateway timeout after the rotation, a lock that cannot lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Callable

import pytest
from fake_saxo import SPOILS, FakeSaxo
from harness import TALLY, Runner, temp_files
from support import base_env, write_json
from tools import strace_calls, strace_missing, wait_until

from token_refresh import redact

# -- 1. roll forward, never throw away ------------------------------------------------------

# The calls between the new token's bytes reaching the temp and the rename; a SIGKILL on entering
# each one leaves the temp complete: before the truncate (NUL tail), before the fsync, before
# the close, before the rename.
WINDOW = ("ftruncate", "fsync", "close", "rename")


def _is_temp(args: str) -> bool:
    return ".tr-" in args and ".tmp" in args


@pytest.fixture
def traced_env() -> dict[str, str]:
    """Traced runs write no bytecode, which would add closes and renames of their own."""
    return base_env(PYTHONDONTWRITEBYTECODE="1")


_STABLE: dict[str, int] = {}  # ftruncate, fsync and rename: reading bytecode makes none of these


def _record(runner: Runner, env: dict[str, str]) -> dict[str, int]:
    """Which occurrence of each WINDOW call touches the temp after its content was written.

    From a run traced without a fault, in a fresh folder like the one of the run to be killed (a
    lock file or a run journal left there would be calls more).
    """
    folder = runner.cache.parent.parent / f"record-{len(list(runner.cache.parent.parent.glob('record-*')))}"
    folder.mkdir()
    cache = folder / runner.cache.name
    write_json(cache, runner.saxo.seed_cache(age=1000))
    trace = folder / "strace"
    strace = ["strace", "-f", "-y", "-o", str(trace), "-e", f"trace=write,{','.join(WINDOW)}"]
    done = runner.run("run", "--cache", str(cache), env=env, prefix=strace)
    assert done.returncode == 0, done.stderr
    counts: dict[str, int] = {}
    seen: dict[str, int] = {}
    written = False
    for name, args in strace_calls(trace):
        seen[name] = seen.get(name, 0) + 1
        if name == "write" and _is_temp(args) and '"{' in args:
            written = True
        elif written and name in WINDOW and name not in counts and _is_temp(args):
            counts[name] = seen[name]
    assert sorted(counts) == sorted(WINDOW), f"not every call was seen on the temp: {counts}"
    return counts


def _occurrence(call: str, runner: Runner, env: dict[str, str]) -> int:
    """The occurrence of ``call`` to inject the kill into. close() is also how bytecode is read,
    and how many modules are read twice (a stale .pyc, then the source) changes whenever a file of
    the tree is edited: so its count is taken right before the kill."""
    if call == "close" or not _STABLE:
        counts = _record(runner, env)
        _STABLE.update({name: n for name, n in counts.items() if name != "close"})
        if call == "close":
            return counts[call]
    return _STABLE[call]


@pytest.mark.parametrize("call", WINDOW)
def test_a_run_killed_after_writing_its_temp_is_rolled_forward(
    e2e: Runner, tmp_path: Path, traced_env: dict[str, str], call: str
) -> None:
    reason = strace_missing()
    if reason:
        pytest.skip(reason)
    when = _occurrence(call, e2e, traced_env)
    before = e2e.seed_due()
    spent = e2e.saxo.current_refresh
    requests = len(e2e.refresh_requests())
    trace = tmp_path / "kill.strace"
    strace = ["strace", "-f", "-y", "-o", str(trace), "-e", f"trace={call}"]
    strace += ["-e", f"inject={call}:signal=SIGKILL:when={when}"]
    TALLY.kills += 1
    killed = e2e.run("run", env=traced_env, prefix=strace)
    assert killed.returncode == -9, killed.stderr
    last = strace_calls(trace)[-1]
    assert last[0] == call, f"the kill landed elsewhere: {last}"
    assert _is_temp(last[1]), f"the kill landed elsewhere: {last}"
    new = e2e.saxo.current_refresh
    assert new is not None
    assert new != spent  # the token was spent
    assert e2e.cache.read_bytes() == before
    left = temp_files(e2e.cache)
    assert len(left) == 1
    assert new.encode() in (e2e.cache.parent / left[0]).read_bytes()
    TALLY.kill_outcomes[f"at {call}, temp rolled forward"] += 1

    done = e2e.run("run")
    assert done.returncode == 0, done.stderr
    adopted = [line for line in done.stderr.splitlines() if "adopted" in line]
    assert adopted, done.stderr
    assert redact.fingerprint(new) in adopted[0]  # named by fingerprints only
    assert len(e2e.refresh_requests()) == requests + 1  # the killed run's only; nothing resent
    assert e2e.saxo.reuses == 0
    e2e.assert_holds_newest()
    assert temp_files(e2e.cache) == []


def test_incomplete_and_older_temps_are_removed_not_adopted(e2e: Runner) -> None:
    older = e2e.saxo.seed_cache(age=2000)  # issued before the cache's token: a stale record
    e2e.seed_due()
    current = json.loads(e2e.cache.read_bytes())
    same = dict(current, issued_at=current["issued_at"] + 500)  # later, but the same refresh token
    folder = e2e.cache.parent
    (folder / f".{e2e.cache.name}.tr-0older00.tmp").write_text(json.dumps(older))
    (folder / f".{e2e.cache.name}.tr-0same000.tmp").write_text(json.dumps(same))
    (folder / f".{e2e.cache.name}.tr-0torn000.tmp").write_bytes(b'{"access_token": "ey' + b"\0" * 64)
    TALLY.faults += 1
    done = e2e.run("run")
    assert done.returncode == 0, done.stderr
    assert "adopted" not in done.stderr
    assert done.stderr.count("removed .") == 3
    assert [r["refresh_token"] for r in e2e.refresh_requests()] == [current["refresh_token"]]
    assert e2e.saxo.reuses == 0
    e2e.assert_holds_newest()
    assert temp_files(e2e.cache) == []


# -- 2. a 2xx carrying a new refresh token is saved, whatever else it holds -----------------

# spoil, words of the warning, whether the saved access token is due at once
SPOILED: dict[str, tuple[str, bool]] = {
    "expires_in-negative": ("'expires_in' is not believable (-60): saved as 0", True),
    "expires_in-zero": ("'expires_in' is not believable (0): saved as 0", True),
    "expires_in-missing": ("'expires_in' is missing: saved as 0", True),
    "expires_in-1e10": ("'expires_in' is not believable (10000000000.0): saved as 0", True),
    "rt-expires-string": ("'refresh_token_expires_in' was a string: saved as a number", False),
    "extra-nan": ("dropped field 'x_nan'", False),
    "extra-huge": ("dropped field 'x_huge'", False),
    "big-body": ("dropped field 'x_padding'", False),
    "access-missing": ("no access token in the answer: saved without one", True),
}


def test_every_spoil_is_covered() -> None:
    assert sorted(SPOILED) == sorted(SPOILS)


def _spoiled_world(e2e: Runner, stack: contextlib.ExitStack, spoil: str) -> Runner:
    """A fake Saxo of its own (``spoil`` is server-wide), a due cache and a config, in a folder of its own."""
    server = stack.enter_context(FakeSaxo())
    folder = e2e.cache.parent.parent / spoil
    folder.mkdir()
    config = folder / "token_refresh.yaml"
    text = e2e.config.read_text().replace(e2e.saxo.token_url, server.token_url)
    config.write_text(text.replace(str(e2e.cache), str(folder / e2e.cache.name)))
    world = Runner(server, folder / e2e.cache.name, config, e2e.processes)
    world.seed_due()
    world.fault("spoiled-after-rotation")
    server.spoil = spoil
    return world


def test_a_spoiled_answer_with_a_new_refresh_token_is_saved(e2e: Runner) -> None:
    """Each spoil (run side by side, to save time): the run saves the new refresh token and exits 0
    with a warning saying what was odd; the next run loads the cache and spends that token."""
    problems: list[str] = []
    with contextlib.ExitStack() as stack:
        worlds = {spoil: _spoiled_world(e2e, stack, spoil) for spoil in sorted(SPOILED)}
        firsts = {spoil: w.spawn("run") for spoil, w in worlds.items()}
        saved: dict[str, str] = {}
        for spoil, world in worlds.items():
            words = SPOILED[spoil][0]
            code, err = world.finish(firsts[spoil])
            data = json.loads(world.cache.read_bytes())
            saved[spoil] = data["refresh_token"]
            if code != 0 or f"WARNING {words}" not in err:
                problems.append(f"{spoil}: exit {code}, expected 0 with the warning {words!r}:\n{err}")
            if data["refresh_token"] != world.saxo.current_refresh or temp_files(world.cache):
                problems.append(f"{spoil}: the new refresh token is not in the cache")
            world.fault(None)
        # due: the saved access token is due at once (expires_in saved as 0); else --force
        seconds = {s: w.spawn("run", *([] if SPOILED[s][1] else ["--force"])) for s, w in worlds.items()}
        for spoil, world in worlds.items():
            code, err = world.finish(seconds[spoil])
            if code != 0 or "token refreshed" not in err:  # the saved cache loads (no 65), its token works
                problems.append(f"{spoil}: the next run exited {code}, expected 0 and a refresh:\n{err}")
            elif world.refresh_requests()[-1]["refresh_token"] != saved[spoil] or world.saxo.reuses:
                problems.append(f"{spoil}: the next run did not spend the saved refresh token once")
            else:
                world.assert_holds_newest()
            e2e.processes.secrets.update(world.saxo.secrets_seen())
    assert not problems, "\n".join(problems)


# -- 3. a save that fails after the spend keeps the token recoverable -----------------------


def _refuse_renames_mid_request(e2e: Runner) -> tuple[int, str]:
    """chattr +i on the directory while the request is out: even root can no longer create, rename
    or remove an entry there (so the temp would stay even if the program tried to remove it)."""
    folder = e2e.cache.parent
    probe = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"chattr +i is not available here: {probe.stderr.strip()}")
    subprocess.run(["chattr", "-i", str(folder)], check=True)
    e2e.fault("delay-after-rotation", 0.5)  # the window in which the directory becomes immutable
    proc = e2e.spawn("run")
    try:
        assert e2e.wait_for_requests(1)
        subprocess.run(["chattr", "+i", str(folder)], check=True)
        return e2e.finish(proc)
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def _fail_the_rename(e2e: Runner, env: dict[str, str]) -> tuple[int, str]:
    """rename(2) answers EIO: the temp could be removed, so only the program's choice keeps it."""
    reason = strace_missing()
    if reason:
        pytest.skip(reason)
    TALLY.faults += 1
    # the traced environment writes no bytecode, so the first rename is the cache's
    strace = ["strace", "-f", "-o", os.devnull, "-e", "trace=rename", "-e", "inject=rename:error=EIO:when=1"]
    done = e2e.run("run", env=env, prefix=strace)
    return done.returncode, done.stderr


@pytest.mark.parametrize("how", ["immutable-directory", "rename-EIO"])
def test_a_save_failing_after_the_spend_keeps_the_new_token_for_the_next_run(
    e2e: Runner, traced_env: dict[str, str], how: str
) -> None:
    before = e2e.seed_due()
    code, err = (
        _refuse_renames_mid_request(e2e)
        if how == "immutable-directory"
        else _fail_the_rename(e2e, traced_env)
    )
    assert code == 74, err
    kept = temp_files(e2e.cache)
    assert len(kept) == 1
    folder = e2e.cache.parent
    assert "the refresh token WAS spent" in err
    assert f"kept in {folder / kept[0]}" in err
    assert e2e.cache.read_bytes() == before
    assert e2e.saxo.current_refresh is not None
    assert e2e.saxo.current_refresh.encode() in (folder / kept[0]).read_bytes()

    e2e.fault(None)
    done = e2e.run("run")
    assert done.returncode == 0, done.stderr
    assert "token adopted from a stopped run" in done.stderr
    assert len(e2e.refresh_requests()) == 1
    assert e2e.saxo.reuses == 0
    e2e.assert_holds_newest()
    assert temp_files(e2e.cache) == []


# -- 4. a temp belongs to its own cache -----------------------------------------------------


def test_a_run_never_removes_another_caches_temp(e2e: Runner, tmp_path: Path) -> None:
    """tok.json.sim's run is held mid-request while tok.json's run recovers its own temps."""
    with FakeSaxo() as other:
        sim_cache = e2e.cache.with_name(e2e.cache.name + ".sim")
        sim_config = tmp_path / "sim.yaml"
        text = e2e.config.read_text().replace(e2e.saxo.token_url, other.token_url)
        sim_config.write_text(text.replace(str(e2e.cache), str(sim_cache)))
        sim = Runner(other, sim_cache, sim_config, e2e.processes)
        sim.seed_due()
        sim.fault("delay-after-rotation", 1.0)
        e2e.seed_due()
        held = sim.spawn("run")
        try:
            assert sim.wait_for_requests(1)
            assert wait_until(lambda: bool(temp_files(sim_cache)), 5)
            done = e2e.run("run")
        finally:
            code, err = sim.finish(held)
        e2e.processes.secrets.update(other.secrets_seen())
    assert done.returncode == 0, done.stderr
    assert "removed" not in done.stderr
    e2e.assert_holds_newest()
    assert code == 0, err
    sim.assert_holds_newest()
    assert other.reuses == 0
    assert temp_files(e2e.cache) == []


def test_a_stray_entry_named_like_a_temp_is_a_warning(e2e: Runner) -> None:
    stray = e2e.cache.parent / f".{e2e.cache.name}.tr-abcdefgh.tmp"
    stray.mkdir()
    e2e.seed_due()
    TALLY.faults += 1
    done = e2e.run("run")
    assert done.returncode == 0, done.stderr
    assert f"WARNING left {stray} alone" in done.stderr
    assert stray.is_dir()
    e2e.assert_holds_newest()


# -- 7. queued runs keep the token another run just saved -----------------------------------

QUEUED = 20


def test_queued_runs_keep_a_short_lived_token_another_run_saved(
    e2e: Runner, config_file: Callable[..., Path]
) -> None:
    """Access tokens living 90 s, runs every 900 s: every token is due by the horizon at once."""
    e2e.saxo.access_ttl = 90
    e2e.config = config_file(lock_timeout_secs=60, interval_secs=900)
    e2e.seed()
    with open(e2e.cache.with_name(e2e.cache.name + ".lock"), "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # every run loads the due cache, then queues on the lock
        procs = [e2e.processes.spawn_live(e2e.argv("run")) for _ in range(QUEUED)]
        assert wait_until(lambda: all("classified" in p.stderr() for p in procs), 60)
        start = time.monotonic()
    ended = [e2e.processes.finish_live(p) for p in procs]
    elapsed = time.monotonic() - start
    results = [(done.returncode, done.stderr) for done in ended]
    print(f"\n{QUEUED} queued runs: {len(e2e.refresh_requests())} request(s), {elapsed:.2f} s after release")
    assert [code for code, _ in results] == [0] * QUEUED, [err for _, err in results]
    assert len(e2e.refresh_requests()) == 1
    assert sum("token refreshed:" in err for _, err in results) == 1
    assert sum("refreshed by another run" in err for _, err in results) == QUEUED - 1
    assert sum(err.count("every run will refresh") for _, err in results) == 1
    assert e2e.saxo.reuses == 0
    e2e.assert_holds_newest()


# -- a gateway timeout after the rotation --------------------------------------------------


def test_a_504_after_the_rotation_is_75_then_77(e2e: Runner) -> None:
    """The gateway lost the new pair: nothing the client can do, a person must log in."""
    before = e2e.seed_due()
    e2e.fault("504-after-rotation")
    done = e2e.run("run")
    assert done.returncode == 75, done.stderr
    assert "may already be spent" in done.stderr
    assert len(e2e.refresh_requests()) == 1  # not retried: the token is gone already
    assert e2e.saxo.reuses == 0
    assert e2e.cache.read_bytes() == before
    assert temp_files(e2e.cache) == []
    e2e.fault(None)
    again = e2e.run("run")
    assert again.returncode == 77, again.stderr
    assert "invalid_grant" in again.stderr
    assert e2e.cache.read_bytes() == before


# -- 11. the lock cannot weaken silently -----------------------------------------------------


def test_a_filesystem_without_flock_is_refused(e2e: Runner) -> None:
    reason = strace_missing()
    if reason:
        pytest.skip(reason)
    before = e2e.seed_due()
    TALLY.faults += 1
    strace = ["strace", "-f", "-o", "/dev/null", "-e", "trace=flock", "-e", "inject=flock:error=ENOSYS"]
    done = e2e.run("run", prefix=strace)
    assert done.returncode == 74, done.stderr
    assert "does not support flock" in done.stderr
    assert e2e.refresh_requests() == []
    assert e2e.cache.read_bytes() == before
    after = e2e.run("run")  # no marker file was left to block the next run
    assert after.returncode == 0, after.stderr
    e2e.assert_holds_newest()


def test_a_hard_linked_cache_is_refused_before_any_request(e2e: Runner) -> None:
    before = e2e.seed_due()
    os.link(e2e.cache, e2e.cache.with_name("second-name.json"))
    TALLY.faults += 1
    done = e2e.run("run")
    assert done.returncode == 74, done.stderr
    assert "2 hard links" in done.stderr
    assert e2e.refresh_requests() == []
    assert e2e.cache.read_bytes() == before
