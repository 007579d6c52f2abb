"""What an operator reads: ``run -q`` is silent on every success, one line otherwise; no library noise;
monitoring that cannot work (metrics without their extra) is said once and never blocks the refresh."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Callable

import pytest
from fake_saxo import FakeSaxo
from support import base_env, write_json

RunCli = Callable[..., "subprocess.CompletedProcess[str]"]
ConfigFile = Callable[..., Path]


def _temp_beside(cache_path: Path, tag: str) -> Path:
    """A temp file named as a run names them (store.PendingWrite)."""
    return cache_path.parent / f".{cache_path.name}.tr-{tag}.tmp"


@pytest.mark.parametrize("case", ["valid", "due", "force", "retried"])
def test_quiet_prints_nothing_on_any_success(
    run_cli: RunCli, saxo: FakeSaxo, config_file: ConfigFile, cache_path: Path, case: str
) -> None:
    write_json(cache_path, saxo.seed_cache(age=100 if case in ("valid", "force") else 1000))
    if case == "retried":  # two 503s, then the grant: a success after retries is still no news
        saxo.fault, saxo.fault_limit, saxo.fault_arg = "503", 2, 0.01  # Retry-After: 0.01 s
    args = ["run", "-q", "--config", str(config_file())] + (["--force"] if case == "force" else [])
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert (result.stdout, result.stderr) == ("", "")
    assert saxo.refreshes == (case != "valid")


def test_quiet_folds_the_warnings_of_a_success_into_one_line(
    run_cli: RunCli, saxo: FakeSaxo, config_file: ConfigFile, cache_path: Path
) -> None:
    # a stopped run's temp holding a newer token (rolled forward) and a torn one (removed): two warnings
    write_json(cache_path, saxo.seed_cache(age=1000))
    write_json(_temp_beside(cache_path, "aaaaaaaa"), saxo.seed_cache(age=10))
    _temp_beside(cache_path, "bbbbbbbb").write_bytes(b'{"access_token": "torn')
    result = run_cli("run", "-q", "--config", str(config_file()))
    assert result.returncode == 0, result.stderr
    (line,) = result.stderr.splitlines()
    assert " WARNING " in line
    assert "; also: " in line
    assert "adopted .saxobank_tokens_live.json.tr-aaaaaaaa.tmp" in line
    assert "removed .saxobank_tokens_live.json.tr-bbbbbbbb.tmp" in line
    assert saxo.refreshes == 0


def test_quiet_failure_is_one_line_with_the_journal_warning_folded(
    run_cli: RunCli, saxo: FakeSaxo, config_file: ConfigFile, cache_path: Path
) -> None:
    write_json(cache_path, saxo.seed_cache(age=1000))
    Path(f"{cache_path}.runs.json").mkdir()  # the journal cannot be written
    saxo.fault = "500-html"
    result = run_cli("run", "-q", "--config", str(config_file()))
    assert result.returncode == 75
    (line,) = result.stderr.splitlines()
    assert "token endpoint unavailable" in line
    assert "; also: " in line
    assert "cannot write the run journal" in line


def test_retries_make_no_library_noise_and_the_summary_counts_them(
    run_cli: RunCli, saxo: FakeSaxo, config_file: ConfigFile, cache_path: Path
) -> None:
    write_json(cache_path, saxo.seed_cache(age=1000))
    saxo.fault, saxo.fault_limit, saxo.fault_arg = "503", 2, 0.01  # Retry-After: 0.01 s
    result = run_cli("run", "--config", str(config_file()))
    assert result.returncode == 0, result.stderr
    assert len(saxo.requests) == 3
    for noise in ("Retrying", "urllib3", "Connection pool", "Traceback"):
        assert noise not in result.stderr
    (line,) = result.stderr.splitlines()  # at the default verbosity: the summary alone
    assert "token refreshed after 3 attempts over " in line


def test_metrics_without_prometheus_client_never_block_the_refresh(
    run_cli: RunCli, saxo: FakeSaxo, config_file: ConfigFile, cache_path: Path, tmp_path: Path
) -> None:
    # as if the extra were not installed: a sitecustomize on PYTHONPATH makes the import fail
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'prometheus_client' or name.startswith('prometheus_client.'):\n"
        "            raise ImportError('No module named ' + repr(name))\n"
        "sys.meta_path.insert(0, Block())\n"
    )
    raw = write_json(cache_path, saxo.seed_cache(age=1000))
    prom = tmp_path / "m.prom"
    result = run_cli(
        "run", "--config", str(config_file(metrics_path=str(prom))), env=base_env(PYTHONPATH=str(site))
    )
    assert result.returncode == 0, result.stderr
    assert saxo.refreshes == 1  # the refresh happened
    assert cache_path.read_bytes() != raw
    assert json.loads(cache_path.read_text())["refresh_token"] == saxo.current_refresh
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, result.stderr
    assert "prometheus_client" in errors[0]
    assert "pip install 'token-refresh[metrics]'" in errors[0]  # names the missing extra
    assert not prom.exists()


@pytest.mark.parametrize(
    ("age", "code", "state", "reason"),
    [
        (
            1000,
            0,
            "needs_refresh",
            "valid; the next run refreshes it (access token within the 1020 s horizon)",
        ),
        (1300, 75, "needs_refresh", "access token expired; the next run refreshes it"),
    ],
)
def test_status_calls_a_due_token_healthy_and_an_expired_one_expired(
    run_cli: RunCli,
    saxo: FakeSaxo,
    config_file: ConfigFile,
    cache_path: Path,
    age: int,
    code: int,
    state: str,
    reason: str,
) -> None:
    write_json(cache_path, saxo.seed_cache(age=age))
    result = run_cli("status", "--json", "--config", str(config_file()))
    assert result.returncode == code
    (row,) = json.loads(result.stdout)
    assert (row["state"], row["reason"]) == (state, reason)  # the state values stay as they were
    assert "would expire before the next run" not in result.stdout
