"""``run_cycle`` in-process: an injected fake endpoint and a fake clock; no sockets, no sleeps.

Every branch of ``run_cycle`` and ``_refresh`` is driven by what a user would see: the action,
the bytes on disk, what the endpoint was sent, and the error with its exit status. The fake
endpoint rotates refresh tokens and refuses a reused one, so a token presented twice fails.

``run_cycle`` reads the clock once to classify the first load (``FIRST_LOOK``) and once after
the reload under the lock (``UNDER_LOCK``), then for ``sent_at`` and the new token's assessment:
a hook on the first call is the moment "another run saves while this one waits for the lock".
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import stat
from pathlib import Path
from typing import Any, Callable

import pytest
from fakes import APP_KEY, APP_SECRET, NOW, FakeClock, FakeEndpoint, Hook, answer
from support import load_json, temp_files, write_json

from token_refresh import store
from token_refresh.config import Config
from token_refresh.endpoint import Credentials
from token_refresh.errors import (
    CacheWriteError,
    ClientRejected,
    EndpointMisconfigured,
    EndpointUnavailable,
    ExitCode,
    Interrupted,
    ReauthorizationRequired,
    TokenRefreshError,
    UnusableResponse,
)
from token_refresh.freshness import State
from token_refresh.refresh import Action, Outcome, TransportFactory, run_cycle
from token_refresh.stops import StopGuard
from token_refresh.transport import Flight, Request, Response, Retrying, Transport

HORIZON = 1020.0  # interval_secs 900 + margin_secs 120
SEED_RT = "seed-refresh-token-0000"
SEED_AT = "seed-access-token-0000"
FIRST_LOOK, UNDER_LOCK, SENT_AT, AFTER_SAVE = 1, 2, 3, 4  # run_cycle's clock calls on a refresh
CREDENTIALS = Credentials(APP_KEY, APP_SECRET)


def _writes_into_read_only_dirs() -> bool:
    """Whether this process ignores directory permissions (root with CAP_DAC_OVERRIDE)."""
    import tempfile

    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        folder.chmod(0o555)
        try:
            (folder / "probe").touch()
        except PermissionError:
            return False
        finally:
            folder.chmod(0o755)
    return True


ROOT_POWERS = _writes_into_read_only_dirs()


def _iso(epoch: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(int(epoch), timezone.utc).replace(tzinfo=None).isoformat()


ISSUED_AT_STYLES: dict[str, Callable[[float], Any]] = {
    "int": int,
    "float": float,
    "iso-z": lambda t: _iso(t) + "Z",
    "iso-offset": lambda t: _iso(t) + "+00:00",
    "iso-naive": _iso,
}


def token_data(
    *,
    age: float,
    expires_in: float = 1200,
    refresh_token: str | None = SEED_RT,
    access_token: str = SEED_AT,
    refresh_ttl: float | None = 3600,
    style: str = "int",
    **extra: Any,
) -> dict[str, Any]:
    """A cache object issued ``age`` seconds before NOW."""
    data: dict[str, Any] = {
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": expires_in,
        "issued_at": ISSUED_AT_STYLES[style](NOW - age),
    }
    if refresh_token is not None:
        data["refresh_token"] = refresh_token
    if refresh_ttl is not None:
        data["refresh_token_expires_in"] = refresh_ttl
    data.update(extra)
    return data


VALID = 60.0  # age of a token with 1140 s left > horizon
DUE = 600.0  # 600 s left <= horizon
EXPIRED = 1300.0  # access expired, refresh token still good


@pytest.fixture
def cache(cache_path: Path) -> Path:
    """The cache these in-process runs use: conftest's ``cache_path``."""
    return cache_path


def config_for(cache: Path) -> Config:
    return Config(
        cache_path=str(cache),
        token_url="http://127.0.0.1:1/token",
        interval_secs=900,
        margin_secs=120,
        lock_timeout_secs=0,  # nothing else holds the lock: fail at once rather than wait
        http_timeout_secs=10,
    )


def run(
    cache: Path,
    endpoint: FakeEndpoint,
    clock: FakeClock | None = None,
    *,
    force: bool = False,
    dry_run: bool = False,
    guard_signals: bool = False,
    transport_factory: TransportFactory | None = None,
) -> Outcome:
    return run_cycle(
        config=config_for(cache),
        credentials=CREDENTIALS,
        clock=clock or FakeClock(),
        transport_factory=transport_factory or endpoint.factory,
        force=force,
        dry_run=dry_run,
        guard_signals=guard_signals,
    )


def lock_file(cache: Path) -> Path:
    return Path(store.lock_path(str(cache)))


def temp_name(cache: Path, suffix: str = "abcd1234") -> str:
    """A temp name as ``store.PendingWrite`` makes them (mkstemp: 8 of [a-z0-9_])."""
    return f".{cache.name}.tr-{suffix}.tmp"


def assert_refused(
    error: pytest.ExceptionInfo[TokenRefreshError], cls: type[TokenRefreshError], code: int
) -> None:
    assert type(error.value) is cls, f"{type(error.value).__name__}: {error.value}"
    assert error.value.exit_code == code


# -- before the lock ----------------------------------------------------------------------------


def test_valid_token_sends_nothing_and_takes_no_lock(cache: Path) -> None:
    before = write_json(cache, token_data(age=VALID))
    endpoint = FakeEndpoint(refresh_token=SEED_RT)

    outcome = run(cache, endpoint)

    assert outcome.action is Action.VALID
    assert outcome.assessment.state is State.VALID
    assert outcome.token.refresh_token == SEED_RT
    assert outcome.path == os.path.realpath(cache)
    assert endpoint.requests == []
    assert endpoint.flights == []
    assert cache.read_bytes() == before
    assert not lock_file(cache).exists()
    assert temp_files(cache) == []


@pytest.mark.parametrize(
    ("age", "force"),
    [(DUE, False), (EXPIRED, False), (VALID, True)],
    ids=["due", "expired", "forced"],
)
def test_dry_run_would_refresh_and_changes_nothing(cache: Path, age: float, force: bool) -> None:
    before = write_json(cache, token_data(age=age))
    endpoint = FakeEndpoint(refresh_token=SEED_RT)

    outcome = run(cache, endpoint, dry_run=True, force=force)

    assert outcome.action is Action.WOULD_REFRESH
    assert outcome.token.raw == before
    assert endpoint.requests == []
    assert cache.read_bytes() == before
    assert not lock_file(cache).exists()
    assert temp_files(cache) == []


@pytest.mark.parametrize(
    ("style", "written"),
    [
        ("int", 1_700_000_000),
        ("float", 1_700_000_000.5),
        ("iso-z", "2023-11-14T22:13:20Z"),
        ("iso-offset", "2023-11-14T22:13:20+00:00"),
        ("iso-naive", "2023-11-14T22:13:20"),
    ],
)
def test_due_token_is_refreshed_and_saved(cache: Path, style: str, written: object) -> None:
    extra: dict[str, Any] = {"account": {"id": "acct-1", "tags": ["ops"]}, "note": "kept by every save"}
    write_json(cache, token_data(age=DUE, style=style, **extra), mode=0o640)
    endpoint = FakeEndpoint(refresh_token=SEED_RT)

    outcome = run(cache, endpoint)

    assert outcome.action is Action.REFRESHED
    assert endpoint.presented == [SEED_RT]
    assert endpoint.spent == [SEED_RT]
    saved = load_json(cache)
    assert saved["refresh_token"] == "fake-refresh-token-001" == endpoint.current_refresh
    assert saved["access_token"] == "fake-access-token-001"
    assert saved["expires_in"] == 1200
    assert saved["refresh_token_expires_in"] == 3600
    assert saved["issued_at"] == written  # sent_at, in the cache's own style
    assert saved["account"] == extra["account"]
    assert saved["note"] == extra["note"]
    assert saved["base_uri"] is None  # an unknown field of the answer is kept too
    assert stat.S_IMODE(cache.stat().st_mode) == 0o640
    assert store.load(str(cache)).raw == cache.read_bytes() == outcome.token.raw
    assert outcome.assessment.state is State.VALID
    assert outcome.assessment.access_expires_at == outcome.token.issued_at + 1200 > NOW + HORIZON
    assert outcome.notes == ()
    assert outcome.attempts == 1
    assert outcome.stopped_by is None
    assert temp_files(cache) == []
    # the request itself: a refresh grant with HTTP Basic, sent once to token_url
    request = endpoint.requests[0]
    assert request.method == "POST"
    assert request.url == "http://127.0.0.1:1/token"
    assert request.headers["Authorization"].startswith("Basic ")
    assert endpoint.form() == {"grant_type": "refresh_token", "refresh_token": SEED_RT}
    assert request.timeout == 10


def test_refreshed_cache_then_reads_as_valid_without_a_request(cache: Path) -> None:
    write_json(cache, token_data(age=DUE))
    endpoint = FakeEndpoint(refresh_token=SEED_RT)
    run(cache, endpoint)

    again = run(cache, endpoint)

    assert again.action is Action.VALID
    assert len(endpoint.requests) == 1


def test_force_refreshes_a_valid_token(cache: Path) -> None:
    write_json(cache, token_data(age=VALID))
    endpoint = FakeEndpoint(refresh_token=SEED_RT)

    outcome = run(cache, endpoint, force=True)

    assert outcome.action is Action.REFRESHED
    assert endpoint.presented == [SEED_RT]
    assert load_json(cache)["refresh_token"] == endpoint.current_refresh == "fake-refresh-token-001"


@pytest.mark.parametrize(
    ("age", "force", "dry_run"),
    [(VALID, True, False), (EXPIRED, False, False), (EXPIRED, False, True)],
    ids=["forced", "expired", "expired-dry-run"],
)
def test_no_refresh_token_needs_a_login_without_a_request(
    cache: Path, age: float, force: bool, dry_run: bool
) -> None:
    before = write_json(cache, token_data(age=age, refresh_token=None, refresh_ttl=None))
    endpoint = FakeEndpoint()

    with pytest.raises(ReauthorizationRequired) as error:
        run(cache, endpoint, force=force, dry_run=dry_run)

    assert error.value.exit_code == ExitCode.NOPERM
    assert "token-refresh authorize" in str(error.value)
    assert endpoint.requests == []
    assert cache.read_bytes() == before
    assert not lock_file(cache).exists()


def test_no_refresh_token_but_valid_access_is_valid(cache: Path) -> None:
    # due by the horizon, but it cannot be refreshed: nothing to do until it expires
    before = write_json(cache, token_data(age=DUE, refresh_token=None, refresh_ttl=None))
    endpoint = FakeEndpoint()

    outcome = run(cache, endpoint)

    assert outcome.action is Action.VALID
    assert not outcome.assessment.has_refresh_token
    assert endpoint.requests == []
    assert cache.read_bytes() == before


def test_issued_at_in_the_future_warns_and_refreshes(cache: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_json(cache, token_data(age=-3600))  # a full lifetime left, but issued an hour ahead
    endpoint = FakeEndpoint(refresh_token=SEED_RT)

    with caplog.at_level(logging.WARNING, logger="token_refresh"):
        outcome = run(cache, endpoint)

    assert "in the future" in caplog.text
    assert outcome.action is Action.REFRESHED
    assert endpoint.presented == [SEED_RT]
    assert load_json(cache)["issued_at"] == 1_700_000_000


# -- under the lock: the reload and the server's word ------------------------------------------------


def test_refresh_token_expired_by_the_local_clock_is_still_presented(
    cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_json(cache, token_data(age=4000))  # the refresh token's 3600 s are over by our clock
    endpoint = FakeEndpoint(refresh_token=SEED_RT)  # ... but the server still takes it

    with caplog.at_level(logging.WARNING, logger="token_refresh"):
        outcome = run(cache, endpoint)

    assert "refresh token expired by the local clock; trying it anyway" in caplog.text
    assert outcome.action is Action.REFRESHED
    assert endpoint.presented == [SEED_RT]
    assert load_json(cache)["refresh_token"] == "fake-refresh-token-001"


@pytest.mark.parametrize("age", [DUE, 4000], ids=["due", "refresh-expired"])
def test_invalid_grant_requires_a_login_and_keeps_the_cache_byte_identical(cache: Path, age: float) -> None:
    before = write_json(cache, token_data(age=age), mode=0o640)
    endpoint = FakeEndpoint(refresh_token="someone-elses-token")  # the seed was spent elsewhere

    with pytest.raises(ReauthorizationRequired) as error:
        run(cache, endpoint)

    assert error.value.exit_code == 77
    assert error.value.oauth_error == "invalid_grant"
    assert endpoint.presented == [SEED_RT]
    assert cache.read_bytes() == before
    assert stat.S_IMODE(cache.stat().st_mode) == 0o640
    assert temp_files(cache) == []


def _other_run_saves(cache: Path, data: dict[str, Any]) -> Callable[[], None]:
    def save() -> None:
        write_json(cache, data)

    return save


@pytest.mark.parametrize(
    ("expires_in", "force"), [(1200, False), (90, False), (1200, True)], ids=["fresh", "90s-token", "forced"]
)
def test_another_run_refreshed_while_this_one_waited(cache: Path, expires_in: float, force: bool) -> None:
    write_json(cache, token_data(age=DUE))
    newer = token_data(age=0, expires_in=expires_in, refresh_token="other-run-token", access_token="other-a")
    clock = FakeClock()
    clock.on_call(FIRST_LOOK, _other_run_saves(cache, newer))
    endpoint = FakeEndpoint(refresh_token="other-run-token")  # the other run spent the seed

    outcome = run(cache, endpoint, clock, force=force)

    assert outcome.action is Action.REFRESHED_BY_OTHER
    assert endpoint.requests == []
    assert outcome.token.refresh_token == "other-run-token"
    assert load_json(cache) == newer
    if expires_in == 90:  # due by the horizon, not expired: kept, or short tokens would chain-refresh
        assert outcome.assessment.state is State.NEEDS_REFRESH


def test_another_run_saved_an_expired_token_so_its_refresh_token_is_presented(cache: Path) -> None:
    write_json(cache, token_data(age=DUE))
    restored = token_data(age=EXPIRED, refresh_token="restored-token", access_token="restored-a")
    clock = FakeClock()
    clock.on_call(FIRST_LOOK, _other_run_saves(cache, restored))
    endpoint = FakeEndpoint(refresh_token="restored-token")

    outcome = run(cache, endpoint, clock)

    assert outcome.action is Action.REFRESHED
    assert endpoint.presented == ["restored-token"]  # the reloaded token, not the first load's
    assert load_json(cache)["refresh_token"] == "fake-refresh-token-001"


@pytest.mark.parametrize(
    ("age", "force", "expected"),
    [
        (EXPIRED, False, None),
        (VALID, True, None),
        (VALID, False, Action.REFRESHED_BY_OTHER),
    ],
    ids=["expired", "forced", "valid"],
)
def test_another_run_saved_a_token_without_a_refresh_token(
    cache: Path, age: float, force: bool, expected: Action | None
) -> None:
    write_json(cache, token_data(age=DUE))
    developer = token_data(age=age, refresh_token=None, refresh_ttl=None, access_token="developer-token")
    clock = FakeClock()
    clock.on_call(FIRST_LOOK, _other_run_saves(cache, developer))
    endpoint = FakeEndpoint(refresh_token=SEED_RT)

    if expected is None:
        with pytest.raises(ReauthorizationRequired) as error:
            run(cache, endpoint, clock, force=force)
        assert error.value.exit_code == 77
    else:
        assert run(cache, endpoint, clock, force=force).action is expected
    assert endpoint.requests == []
    assert load_json(cache) == developer


def test_clock_stepped_back_while_waiting_for_the_lock(cache: Path) -> None:
    before = write_json(cache, token_data(age=DUE))
    clock = FakeClock()

    def step_back() -> None:
        clock.now -= 500  # 1100 s left by the time the lock is held: valid after all

    clock.on_call(UNDER_LOCK, step_back)
    endpoint = FakeEndpoint(refresh_token=SEED_RT)

    outcome = run(cache, endpoint, clock)

    assert outcome.action is Action.VALID
    assert endpoint.requests == []
    assert cache.read_bytes() == before
    assert lock_file(cache).exists()  # this branch is under the lock


# -- roll-forward of temps left by a stopped run ---------------------------------------------------


def write_temp(cache: Path, data: dict[str, Any] | bytes, *, suffix: str = "abcd1234", pad: int = 0) -> Path:
    raw = data if isinstance(data, bytes) else store.serialize(data)
    temp = cache.parent / temp_name(cache, suffix)
    temp.write_bytes(raw + b"\0" * pad)
    return temp


@pytest.mark.parametrize("pad", [0, 4096], ids=["exact", "nul-reservation"])
def test_complete_newer_temp_is_adopted_without_a_request(
    cache: Path, pad: int, caplog: pytest.LogCaptureFixture
) -> None:
    write_json(cache, token_data(age=DUE, note="cache"))
    newer = token_data(age=5, refresh_token="spent-for-token", access_token="spent-for-a", note="temp")
    temp = write_temp(cache, newer, pad=pad)
    endpoint = FakeEndpoint(refresh_token="spent-for-token")  # the stopped run spent the seed

    with caplog.at_level(logging.WARNING, logger="token_refresh"):
        outcome = run(cache, endpoint)

    assert outcome.action is Action.ADOPTED
    assert endpoint.requests == []
    assert not temp.exists()
    assert temp_files(cache) == []
    assert cache.read_bytes() == store.serialize(newer)  # the reservation's NULs cut off
    assert outcome.token.refresh_token == "spent-for-token"
    assert "adopted" in caplog.text


def test_adopted_temp_that_is_expired_is_refreshed_with_its_own_token(cache: Path) -> None:
    write_json(cache, token_data(age=2000))
    stale = token_data(age=1500, refresh_token="spent-for-token", access_token="spent-for-a")
    temp = write_temp(cache, stale, pad=100)
    endpoint = FakeEndpoint(refresh_token="spent-for-token")

    outcome = run(cache, endpoint)

    assert outcome.action is Action.REFRESHED
    assert endpoint.presented == ["spent-for-token"]  # never the seed, which is spent
    assert not temp.exists()
    assert load_json(cache)["refresh_token"] == "fake-refresh-token-001"


def test_the_newest_of_several_temps_wins_and_the_rest_are_removed(cache: Path) -> None:
    write_json(cache, token_data(age=DUE))
    older = write_temp(cache, token_data(age=400, refresh_token="first-spent"), suffix="zzzzzzzz")
    newest = token_data(age=10, refresh_token="second-spent")
    write_temp(cache, newest, suffix="aaaaaaaa", pad=16)
    endpoint = FakeEndpoint(refresh_token="second-spent")

    outcome = run(cache, endpoint)

    assert outcome.action is Action.ADOPTED
    assert endpoint.requests == []
    assert load_json(cache) == newest
    assert not older.exists()
    assert temp_files(cache) == []


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(
            store.serialize(token_data(age=5, refresh_token="spent-for-token"))[:40], id="truncated"
        ),
        pytest.param(
            store.serialize(token_data(age=5, refresh_token="spent-for-token"))[:40] + b"\0" * 64,
            id="truncated-nul",
        ),
        pytest.param(b"\0" * 4096, id="reservation-only"),
        pytest.param(b"", id="empty"),
        pytest.param(store.serialize(token_data(age=900, refresh_token="older-token")), id="older"),
        pytest.param(store.serialize(token_data(age=5)), id="same-refresh-token"),
    ],
)
def test_incomplete_or_older_temps_are_removed(
    cache: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    write_json(cache, token_data(age=DUE))
    temp = write_temp(cache, content)
    endpoint = FakeEndpoint(refresh_token=SEED_RT)

    with caplog.at_level(logging.WARNING, logger="token_refresh"):
        outcome = run(cache, endpoint)

    assert outcome.action is Action.REFRESHED
    assert endpoint.presented == [SEED_RT]
    assert not temp.exists()
    assert temp_files(cache) == []
    assert "removed" in caplog.text
    assert load_json(cache)["refresh_token"] == "fake-refresh-token-001"


def test_another_caches_temp_is_never_touched(cache: Path) -> None:
    write_json(cache, token_data(age=DUE))
    sim = cache.with_name(cache.name + ".sim")
    write_json(sim, token_data(age=DUE, refresh_token="sim-seed"))
    sim_temp = write_temp(sim, token_data(age=5, refresh_token="sim-spent-for"), pad=32)
    sim_bytes = sim_temp.read_bytes()
    endpoint = FakeEndpoint(refresh_token=SEED_RT)

    outcome = run(cache, endpoint)

    assert outcome.action is Action.REFRESHED
    assert endpoint.presented == [SEED_RT]
    assert sim_temp.read_bytes() == sim_bytes
    assert temp_files(cache) == [sim_temp.name]
    assert load_json(sim)["refresh_token"] == "sim-seed"


def test_a_directory_named_like_a_temp_is_left_alone(cache: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_json(cache, token_data(age=DUE))
    folder = cache.parent / temp_name(cache, "dir_0001")
    folder.mkdir()
    (folder / "inside").write_text("x")
    endpoint = FakeEndpoint(refresh_token=SEED_RT)

    with caplog.at_level(logging.WARNING, logger="token_refresh"):
        outcome = run(cache, endpoint)

    assert outcome.action is Action.REFRESHED
    assert folder.is_dir()
    assert (folder / "inside").read_text() == "x"
    assert f"left {folder} alone" in caplog.text


# -- the save fails after the refresh token was spent -------------------------------------------------


def _refuse_the_save(
    cache: Path, how: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[Hook, Callable[[], None]]:
    """(a hook that breaks the save while the request is in flight, a function that repairs it).

    The real cause is a directory turned read-only (``read-only-dir``), but root writes into
    one anyway; so also ``os.replace`` (as ``store`` calls it) refuses the rename of a temp over
    this cache once (EACCES, what a read-only directory gives), and, with no patch at all, the
    cache's name is taken by a directory (EISDIR).
    """
    target = os.path.realpath(cache)
    aside = cache.parent.parent / "aside.json"
    armed: list[bool] = []
    real_replace = os.replace

    def replace(src: Any, dst: Any, **kwargs: Any) -> None:
        if armed and dst == target and os.path.basename(src).startswith(f".{cache.name}.tr-"):
            armed.clear()
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), src)
        real_replace(src, dst, **kwargs)

    def break_it(flight: Flight) -> None:
        if how == "replace-refused":
            armed.append(True)
        elif how == "read-only-dir":
            cache.parent.chmod(0o555)
        else:
            cache.rename(aside)
            cache.mkdir()

    def repair() -> None:
        if how == "replace-refused":
            monkeypatch.undo()
        elif how == "read-only-dir":
            cache.parent.chmod(0o755)
        else:
            cache.rmdir()
            aside.rename(cache)

    if how == "replace-refused":
        monkeypatch.setattr(os, "replace", replace)  # the os module store uses
    return break_it, repair


@pytest.mark.parametrize(
    "how",
    [
        "replace-refused",
        "name-taken",
        pytest.param("read-only-dir", marks=pytest.mark.skipif(ROOT_POWERS, reason="root writes anyway")),
    ],
)
def test_a_failed_save_keeps_the_spent_for_token_and_the_next_run_adopts_it(
    cache: Path, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = write_json(cache, token_data(age=DUE), mode=0o640)
    endpoint = FakeEndpoint(refresh_token=SEED_RT)
    break_it, repair = _refuse_the_save(cache, how, monkeypatch)
    endpoint.then(before_answer=break_it)

    with pytest.raises(CacheWriteError) as error:
        run(cache, endpoint)

    assert error.value.exit_code == 74
    kept = error.value.kept_at
    assert kept is not None
    assert os.path.basename(kept).startswith(f".{cache.name}.tr-")
    assert "the refresh token WAS spent" in str(error.value)
    assert kept in str(error.value)
    assert endpoint.spent == [SEED_RT]
    held = store.load(kept)  # a complete token, not a reservation
    assert held.refresh_token == endpoint.current_refresh == "fake-refresh-token-001"
    repair()
    assert cache.read_bytes() == before

    outcome = run(cache, endpoint)

    assert outcome.action is Action.ADOPTED
    assert len(endpoint.requests) == 1  # the spent seed was never presented again
    assert not os.path.exists(kept)
    assert temp_files(cache) == []
    assert cache.read_bytes() == held.raw
    assert stat.S_IMODE(cache.stat().st_mode) == 0o640


@pytest.mark.skipif(not ROOT_POWERS, reason="only root gives the temp the cache owner's uid")
def test_root_adopts_the_temp_it_gave_to_the_cache_owner(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_json(cache, token_data(age=DUE))
    os.chown(cache, 4242, 4242)  # a bind-mounted cache of a host user, the keeper runs as root
    endpoint = FakeEndpoint(refresh_token=SEED_RT)
    break_it, repair = _refuse_the_save(cache, "replace-refused", monkeypatch)
    endpoint.then(before_answer=break_it)
    with pytest.raises(CacheWriteError):
        run(cache, endpoint)
    repair()

    outcome = run(cache, endpoint)

    assert outcome.action is Action.ADOPTED
    assert len(endpoint.requests) == 1


# -- what the endpoint answers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"token_type": "Bearer", "expires_in": 1200}, id="no-tokens"),
        pytest.param({"access_token": "", "refresh_token": None}, id="empty-tokens"),
        pytest.param(b"<html>maintenance</html>", id="not-json"),
        pytest.param(b'["access_token"]', id="json-array"),
    ],
)
def test_an_unusable_2xx_changes_nothing(cache: Path, body: dict[str, Any] | bytes) -> None:
    before = write_json(cache, token_data(age=DUE))
    endpoint = FakeEndpoint(refresh_token=SEED_RT).then(answer(200, body))

    with pytest.raises(UnusableResponse) as error:
        run(cache, endpoint)

    assert error.value.exit_code == 75
    assert "the refresh token may" in str(error.value)  # ... (already) be spent
    assert endpoint.presented == [SEED_RT]
    assert cache.read_bytes() == before
    assert temp_files(cache) == []


def test_odd_2xx_fields_are_saved_in_the_one_schema(cache: Path) -> None:
    write_json(cache, token_data(age=DUE))
    body = (
        b'{"access_token": "odd-access", "refresh_token": "odd-refresh", "expires_in": "0", '
        b'"refresh_token_expires_in": "3600", "token_type": "Bearer", "extra": NaN, "huge": 1e400, '
        b'"issued_at": "yesterday"}'
    )
    endpoint = FakeEndpoint(refresh_token=SEED_RT).then(answer(200, body))

    outcome = run(cache, endpoint)

    assert outcome.action is Action.REFRESHED
    loaded = store.load(str(cache))  # whatever a run saves, the next run can load
    assert loaded.raw == outcome.token.raw
    saved = load_json(cache)
    assert saved["expires_in"] == 0
    assert saved["refresh_token_expires_in"] == 3600
    assert "extra" not in saved
    assert "huge" not in saved
    assert saved["issued_at"] == 1_700_000_000  # sent_at, never the answer's
    assert outcome.notes
    joined = " ".join(outcome.notes)
    assert "'expires_in'" in joined
    assert "'extra'" in joined
    assert "'huge'" in joined
    assert "was a string" in joined  # refresh_token_expires_in
    assert outcome.assessment.state is State.NEEDS_REFRESH

    endpoint.current_refresh = "odd-refresh"  # the canned answer's token is the live one now
    again = run(cache, endpoint)  # the clock has not moved

    assert again.action is Action.REFRESHED
    assert endpoint.presented == [SEED_RT, "odd-refresh"]


def test_string_lifetimes_are_saved_as_numbers(cache: Path) -> None:
    write_json(cache, token_data(age=DUE))
    endpoint = FakeEndpoint(refresh_token=SEED_RT, access_ttl="1200", refresh_ttl="3600.5")

    outcome = run(cache, endpoint)

    saved = load_json(cache)
    assert saved["expires_in"] == 1200
    assert isinstance(saved["expires_in"], int)
    assert saved["refresh_token_expires_in"] == 3600.5
    assert outcome.assessment.state is State.VALID
    assert run(cache, endpoint).action is Action.VALID


def test_an_answer_without_a_refresh_token_keeps_the_old_one(cache: Path) -> None:
    write_json(cache, token_data(age=DUE))
    endpoint = FakeEndpoint(refresh_token=SEED_RT).then(
        answer(200, {"access_token": "only-access", "token_type": "Bearer", "expires_in": 1200})
    )

    outcome = run(cache, endpoint)

    saved = load_json(cache)
    assert saved["access_token"] == "only-access"
    assert saved["refresh_token"] == SEED_RT  # RFC 6749 §6: it stays valid
    assert "refresh_token_expires_in" not in saved  # never paired with the old lifetime
    assert any("no new refresh token" in note for note in outcome.notes)


@pytest.mark.parametrize(
    ("status", "body", "cls", "code"),
    [
        (503, b"", EndpointUnavailable, 75),
        (429, {"error": "slow_down"}, EndpointUnavailable, 75),
        (500, {"error": "server_error"}, EndpointUnavailable, 75),
        (401, {"error": "invalid_client"}, ClientRejected, 78),
        (403, b"forbidden", ClientRejected, 78),
        (404, b"not found", EndpointMisconfigured, 78),
        (302, b"", EndpointMisconfigured, 78),
        (400, {"error": "invalid_request"}, ReauthorizationRequired, 77),
    ],
)
def test_an_error_answer_surfaces_its_class_and_changes_nothing(
    cache: Path, status: int, body: dict[str, Any] | bytes, cls: type[TokenRefreshError], code: int
) -> None:
    before = write_json(cache, token_data(age=DUE))
    endpoint = FakeEndpoint(refresh_token=SEED_RT).then(answer(status, body, {"location": "https://x.test/"}))

    with pytest.raises(TokenRefreshError) as error:
        run(cache, endpoint)

    assert_refused(error, cls, code)
    assert endpoint.presented == [SEED_RT]
    assert cache.read_bytes() == before
    assert temp_files(cache) == []


@pytest.mark.parametrize(("lifetime", "warned"), [(600, True), (1020, True), (1021, False)])
def test_short_lived_tokens_get_a_note(cache: Path, lifetime: float, warned: bool) -> None:
    write_json(cache, token_data(age=DUE))
    endpoint = FakeEndpoint(refresh_token=SEED_RT, access_ttl=lifetime)

    outcome = run(cache, endpoint)

    assert outcome.action is Action.REFRESHED
    assert any("every run will refresh" in note for note in outcome.notes) is warned
    assert (outcome.assessment.state is State.NEEDS_REFRESH) is warned


def _retrying(endpoint: FakeEndpoint, sleeps: list[float]) -> TransportFactory:
    """The production retry policy over the fake endpoint, with a fake monotonic clock and sleep."""
    monotonic = FakeClock(0.0)

    def sleep(secs: float) -> None:
        sleeps.append(secs)
        monotonic.now += secs

    def factory(flight: Flight) -> Transport:
        def send(request: Request) -> Response:
            return endpoint.send(request, flight)

        return Retrying(send, budget=60, clock=monotonic, wall_clock=monotonic, sleep=sleep, flight=flight)

    return factory


def test_the_outcome_reports_the_transports_attempts(cache: Path) -> None:
    write_json(cache, token_data(age=DUE))
    endpoint = FakeEndpoint(refresh_token=SEED_RT).then(answer(503, b"", {"retry-after": "2"}))
    sleeps: list[float] = []

    outcome = run(cache, endpoint, transport_factory=_retrying(endpoint, sleeps))

    assert outcome.action is Action.REFRESHED
    assert outcome.attempts == 2
    assert outcome.elapsed == 2.0
    assert sleeps == [2.0]
    assert endpoint.presented == [SEED_RT, SEED_RT]  # a 503 spends nothing
    assert load_json(cache)["refresh_token"] == "fake-refresh-token-001"


# -- stop signals (the guard's handler is called directly, no real signal is sent) -------------------


def stop_with(signum: int) -> Hook:
    def stop(flight: Flight) -> None:
        assert isinstance(flight, StopGuard)
        flight._handle(signum, None)

    return stop


@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGHUP, 129)]
)
def test_a_stop_before_the_request_is_sent_ends_the_run_and_changes_nothing(
    cache: Path, signum: int, code: int
) -> None:
    before = write_json(cache, token_data(age=DUE))
    endpoint = FakeEndpoint(refresh_token=SEED_RT).then(before_sent=stop_with(signum))
    handler = signal.getsignal(signum)

    with pytest.raises(Interrupted) as error:
        run(cache, endpoint, guard_signals=True)

    assert error.value.exit_code == code
    assert endpoint.requests == []
    assert endpoint.spent == []
    assert cache.read_bytes() == before
    assert temp_files(cache) == []
    assert signal.getsignal(signum) is handler


def test_a_stop_after_the_request_is_sent_waits_until_the_token_is_saved(cache: Path) -> None:
    write_json(cache, token_data(age=DUE))
    endpoint = FakeEndpoint(refresh_token=SEED_RT).then(before_answer=stop_with(signal.SIGTERM))
    handler = signal.getsignal(signal.SIGTERM)

    outcome = run(cache, endpoint, guard_signals=True)

    assert outcome.action is Action.REFRESHED
    assert outcome.stopped_by == signal.SIGTERM
    assert isinstance(endpoint.flights[0], StopGuard)
    assert load_json(cache)["refresh_token"] == endpoint.current_refresh == "fake-refresh-token-001"
    assert temp_files(cache) == []
    assert signal.getsignal(signal.SIGTERM) is handler


def test_a_stop_held_during_a_retryable_answer_ends_the_run_before_the_retry(cache: Path) -> None:
    before = write_json(cache, token_data(age=DUE))
    endpoint = FakeEndpoint(refresh_token=SEED_RT).then(
        answer(503, b""), before_answer=stop_with(signal.SIGTERM)
    )
    sleeps: list[float] = []

    with pytest.raises(Interrupted) as error:
        run(cache, endpoint, guard_signals=True, transport_factory=_retrying(endpoint, sleeps))

    assert error.value.exit_code == 143
    assert len(endpoint.requests) == 1
    assert sleeps == []
    assert endpoint.spent == []
    assert cache.read_bytes() == before
    assert temp_files(cache) == []


def _installed_handler(signum: int) -> Callable[[], None]:
    """Call whatever handler is installed for ``signum`` now, as the interpreter would."""

    def deliver() -> None:
        handler = signal.getsignal(signum)
        assert callable(handler)
        assert handler is not signal.default_int_handler
        handler(signum, None)

    return deliver


def test_a_stop_while_holding_the_lock_before_any_request_ends_the_run(cache: Path) -> None:
    before = write_json(cache, token_data(age=DUE))
    clock = FakeClock()
    clock.on_call(UNDER_LOCK, _installed_handler(signal.SIGTERM))
    endpoint = FakeEndpoint(refresh_token=SEED_RT)
    handler = signal.getsignal(signal.SIGTERM)

    with pytest.raises(Interrupted) as error:
        run(cache, endpoint, clock, guard_signals=True)

    assert error.value.exit_code == 143
    assert endpoint.requests == []
    assert endpoint.flights == []
    assert cache.read_bytes() == before
    assert signal.getsignal(signal.SIGTERM) is handler


def test_a_stop_just_after_the_save_does_not_claim_nothing_was_spent(cache: Path) -> None:
    write_json(cache, token_data(age=DUE))
    clock = FakeClock()
    clock.on_call(AFTER_SAVE, _installed_handler(signal.SIGTERM))
    endpoint = FakeEndpoint(refresh_token=SEED_RT)

    try:
        outcome = run(cache, endpoint, clock, guard_signals=True)
    finally:
        assert load_json(cache)["refresh_token"] == "fake-refresh-token-001"  # saved either way

    assert outcome.action is Action.REFRESHED
    assert outcome.stopped_by == signal.SIGTERM
