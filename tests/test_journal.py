"""The run journal beside the cache, and what it changes: ``status`` and ``run`` know a refused chain."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from fake_saxo import FakeSaxo
from support import COMMAND, base_env, write_json

from token_refresh import journal, redact

RunCli = Callable[..., "subprocess.CompletedProcess[str]"]
ConfigFile = Callable[..., Path]
NEVER_ISSUED = "a-refresh-token-saxo-never-issued"


def journal_of(cache_path: Path) -> Path:
    return Path(f"{cache_path}.runs.json")


def records(cache_path: Path) -> list[dict[str, Any]]:
    data = json.loads(journal_of(cache_path).read_text())
    assert data["version"] == 1
    runs = data["runs"]
    assert isinstance(runs, list)
    return runs


def assert_no_secret(path: Path, saxo: FakeSaxo, *extra: str) -> None:
    text = path.read_text()
    for secret in [*saxo.secrets_seen(), *extra]:
        assert secret not in text


def test_a_refresh_is_journaled_with_fingerprints_only(
    run_cli: RunCli, saxo: FakeSaxo, config_file: ConfigFile, cache_path: Path
) -> None:
    old = saxo.seed_cache(age=1000)
    write_json(cache_path, old)
    started = time.time()
    result = run_cli("run", "--config", str(config_file()))
    assert result.returncode == 0, result.stderr
    (record,) = records(cache_path)
    new = json.loads(cache_path.read_text())
    assert record["command"] == "run"
    assert record["action"] == "refreshed"
    assert record["exit_status"] == 0
    assert started - 1 <= record["epoch"] <= time.time()
    assert record["time"].endswith("Z")
    assert record["issued_at_epoch"] == new["issued_at"]
    assert 1190 <= record["access_left_secs"] <= 1200
    assert 3590 <= record["refresh_left_secs"] <= 3600
    assert record["refresh_fingerprint"] == redact.fingerprint(new["refresh_token"])
    assert record["spent_fingerprint"] == redact.fingerprint(old["refresh_token"])
    assert record["refused_fingerprint"] is None
    assert record["access_expired_at_start"] is False
    assert_no_secret(journal_of(cache_path), saxo)
    # owned and moded like the lock file: group-writable, so keepers of one group share it
    assert stat.S_IMODE(journal_of(cache_path).stat().st_mode) == 0o664
    assert not [p.name for p in cache_path.parent.iterdir() if p.name.endswith((".tmp", ".part"))]


def test_a_valid_run_writes_no_journal(
    run_cli: RunCli, saxo: FakeSaxo, config_file: ConfigFile, cache_path: Path
) -> None:
    write_json(cache_path, saxo.seed_cache(age=100))
    assert run_cli("run", "--config", str(config_file())).returncode == 0
    # docs/DESIGN.md, "Journal": a valid run takes no lock, so it does not journal either
    assert sorted(p.name for p in cache_path.parent.iterdir()) == [cache_path.name]


def test_concurrent_runs_lose_no_record(saxo: FakeSaxo, config_file: ConfigFile, cache_path: Path) -> None:
    """Each record is added under the cache's lock: six racing runs leave six records, one refresh."""
    write_json(cache_path, saxo.seed_cache(age=1000))
    config = str(config_file())
    procs = [
        subprocess.Popen(
            [*COMMAND, "run", "--config", config],
            env=base_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    actions = sorted(r["action"] for r in records(cache_path))
    assert actions == ["refreshed"] + ["refreshed_by_other"] * 5
    assert saxo.refreshes == 1


def test_a_refused_chain_is_known_to_status_and_not_sent_again(
    run_cli: RunCli, saxo: FakeSaxo, config_file: ConfigFile, cache_path: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "hook-ran"
    prom = tmp_path / "m.prom"
    config = str(
        config_file(
            metrics_path=str(prom), hooks={"on_failure": [f"echo $TOKEN_REFRESH_EXIT_CODE >> {marker}"]}
        )
    )
    # valid by the clock for another 1100 s, but Saxo no longer knows the refresh token
    write_json(cache_path, saxo.seed_cache(age=100, refresh_token=NEVER_ISSUED))
    assert run_cli("status", "--config", config).returncode == 0

    forced = run_cli("run", "--force", "--config", config)
    assert forced.returncode == 77, forced.stderr
    assert len(saxo.requests) == 1
    (record,) = records(cache_path)
    assert record["action"] == "refused"
    assert record["refused_fingerprint"] == redact.fingerprint(NEVER_ISSUED)
    assert_no_secret(journal_of(cache_path), saxo, NEVER_ISSUED)

    # status: 77 even though the clock says valid, with a state and reason that say so and when
    status = run_cli("status", "--json", "--config", config)
    assert status.returncode == 77, status.stderr
    (row,) = json.loads(status.stdout)
    assert row["exit_status"] == 77
    assert row["state"] == "refused"
    assert row["refused_at"] == record["time"]
    assert record["time"] in row["reason"]
    assert "refused" in row["reason"]
    text = run_cli("status", "--config", config)
    assert text.returncode == 77
    assert f"refused refresh token {redact.fingerprint(NEVER_ISSUED)} at {record['time']}" in text.stdout

    # while the access token still works a plain run serves it (exit 0, nothing sent); status says 77
    valid = run_cli("run", "--config", config)
    assert valid.returncode == 0, valid.stderr
    assert "token valid" in valid.stderr
    assert len(saxo.requests) == 1

    # a plain run (due: --force is what a due token does) does not send it again
    write_json(cache_path, saxo.seed_cache(age=1000, refresh_token=NEVER_ISSUED))
    again = run_cli("run", "--config", config)
    assert again.returncode == 77, again.stderr
    assert len(saxo.requests) == 1  # no request
    assert f"refused at {record['time']}" in again.stderr
    assert "Manual re-authorization required" in again.stderr
    assert marker.read_text().split() == ["77", "77"]  # hooks still run
    assert "token_refresh_last_exit_status" in prom.read_text()
    assert records(cache_path)[-1]["action"] == "failed"  # not a second refusal: nothing was sent

    # --force sends it anyway (and Saxo refuses it again)
    forced = run_cli("run", "--force", "--config", config)
    assert forced.returncode == 77
    assert len(saxo.requests) == 2
    assert "sending refresh token" in forced.stderr
    assert "again although" in forced.stderr
    for output in (again, forced, status, text):
        assert NEVER_ISSUED not in output.stdout + output.stderr

    # a new chain in the cache (after authorize): the refusal no longer applies
    write_json(cache_path, saxo.seed_cache(age=100))
    after = run_cli("status", "--json", "--config", config)
    assert after.returncode == 0, after.stdout
    assert json.loads(after.stdout)[0]["refused_at"] is None


@pytest.mark.parametrize("damage", ["corrupt", "not-a-file"])
def test_a_broken_journal_never_stops_a_refresh(
    run_cli: RunCli, saxo: FakeSaxo, config_file: ConfigFile, cache_path: Path, damage: str
) -> None:
    write_json(cache_path, saxo.seed_cache(age=1000))
    if damage == "corrupt":
        journal_of(cache_path).write_text('{"version": 1, "runs": [{"epoch": ')
    else:
        journal_of(cache_path).mkdir()
    result = run_cli("run", "--config", str(config_file()))
    assert result.returncode == 0, result.stderr
    assert saxo.refreshes == 1
    assert json.loads(cache_path.read_text())["refresh_token"] == saxo.current_refresh
    assert "WARNING" in result.stderr
    assert "journal" in result.stderr
    if damage == "corrupt":  # replaced by a new journal holding this run
        assert [r["action"] for r in records(cache_path)] == ["refreshed"]
    status = run_cli("status", "--config", str(config_file()))
    assert status.returncode == 0, status.stderr


def test_the_journal_is_bounded(
    run_cli: RunCli, saxo: FakeSaxo, config_file: ConfigFile, cache_path: Path
) -> None:
    now = time.time()
    old = [{"epoch": now - 8 * 86400, "time": "old", "action": "refreshed", "exit_status": 0}]
    recent = [
        {"epoch": now - 6 * 86400 + i, "time": "recent", "action": "refreshed", "exit_status": 0}
        for i in range(journal.KEEP_RECORDS + 200)
    ]
    journal_of(cache_path).write_text(json.dumps({"version": 1, "runs": old + recent}))
    write_json(cache_path, saxo.seed_cache(age=1000))
    assert run_cli("run", "--config", str(config_file())).returncode == 0
    kept = records(cache_path)
    assert len(kept) == journal.KEEP_RECORDS
    assert min(r["epoch"] for r in kept) >= now - journal.KEEP_SECS
    assert kept[-1]["action"] == "refreshed"
    assert kept[-1]["time"] != "recent"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the journal another group")
def test_a_rewrite_keeps_the_journals_group(
    run_cli: RunCli, saxo: FakeSaxo, config_file: ConfigFile, cache_path: Path
) -> None:
    journal_of(cache_path).write_text('{"version": 1, "runs": []}')
    os.chown(journal_of(cache_path), -1, 4242)
    write_json(cache_path, saxo.seed_cache(age=1000))
    assert run_cli("run", "--config", str(config_file())).returncode == 0
    assert journal_of(cache_path).stat().st_gid == 4242
    assert stat.S_IMODE(journal_of(cache_path).stat().st_mode) == 0o664


def test_authorize_is_journaled_and_ends_a_refusal(
    run_cli: RunCli, saxo: FakeSaxo, config_file: ConfigFile, cache_path: Path
) -> None:
    redirect = "https://app.example.test/saxo/callback"
    config = str(config_file(authorize_url=saxo.authorize_url, redirect_uri=redirect))
    write_json(cache_path, saxo.seed_cache(age=1000, refresh_token=NEVER_ISSUED))
    assert run_cli("run", "--config", config).returncode == 77
    assert run_cli("status", "--config", config).returncode == 77
    # the login page's redirect, as a browser would follow it; a bare code may be pasted
    code, _ = saxo.authorize_redirect(
        {"client_id": saxo.app_key, "redirect_uri": redirect, "response_type": "code"}
    )
    assert code == 302
    pasted = saxo.issued_codes[-1]
    login = run_cli("authorize", "--paste", "--no-browser", "--config", config, input=pasted + "\n")
    assert login.returncode == 0, login.stderr
    refused, authorized = records(cache_path)
    assert (refused["action"], authorized["action"]) == ("refused", "authorized")
    assert authorized["command"] == "authorize"
    assert authorized["refresh_fingerprint"] == redact.fingerprint(saxo.current_refresh)
    assert run_cli("status", "--config", config).returncode == 0
    assert_no_secret(journal_of(cache_path), saxo, NEVER_ISSUED)


def test_a_failed_run_records_its_attempts(
    run_cli: RunCli, saxo: FakeSaxo, config_file: ConfigFile, cache_path: Path
) -> None:
    """Retries that end in a failure are counted in the journal and in the failure line."""
    write_json(cache_path, saxo.seed_cache(age=1000))
    saxo.fault, saxo.fault_arg = "503", 0.01  # Retry-After 10 ms: every attempt answered 503
    done = run_cli("run", "--config", str(config_file(retry_budget_secs=1)))
    assert done.returncode == 75, done.stderr
    attempts = len(saxo.requests)
    assert attempts > 1
    assert f"after {attempts} attempts over" in done.stderr
    assert records(cache_path)[-1]["attempts"] == attempts
