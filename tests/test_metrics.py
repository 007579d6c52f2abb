"""The Prometheus textfile written after every run, read back with prometheus_client's own parser."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Callable

import pytest
import yaml
from fake_saxo import FakeSaxo
from prometheus_client.parser import text_string_to_metric_families
from support import Processes, RunCli, base_env, write_json

from token_refresh import metrics

ALERTS = Path(__file__).parent.parent / "configs" / "alerts.yml"


def read_metrics(path: Path) -> tuple[dict[str, float], set[str]]:
    """Every sample's value by name, and the set of ``cache`` labels seen."""
    values: dict[str, float] = {}
    caches: set[str] = set()
    for family in text_string_to_metric_families(path.read_text()):
        assert family.type == "gauge", family.name
        for sample in family.samples:
            assert sample.name not in values, "one sample per metric"
            values[sample.name] = sample.value
            caches.add(sample.labels["cache"])
    return values, caches


@pytest.fixture
def prom(tmp_path: Path) -> Path:
    folder = tmp_path / "textfile"
    folder.mkdir()
    return folder / "token_refresh.prom"


def test_valid_run(
    run_cli: RunCli, saxo: FakeSaxo, config_file: Callable[..., Path], cache_path: Path, prom: Path
) -> None:
    seed = saxo.seed_cache(age=100)
    write_json(cache_path, seed)
    before = time.time()
    result = run_cli("run", "--config", str(config_file(metrics_path=str(prom))))
    assert result.returncode == 0, result.stderr
    values, caches = read_metrics(prom)
    assert caches == {str(cache_path)}
    assert set(values) == set(metrics.METRIC_NAMES)
    assert values[metrics.LAST_EXIT] == 0
    assert values[metrics.REFRESHED] == 0
    assert before - 1 <= values[metrics.LAST_RUN] <= time.time()
    assert values[metrics.LAST_SUCCESS] == values[metrics.LAST_RUN]
    assert values[metrics.ACCESS_EXPIRY] == seed["issued_at"] + 1200
    assert values[metrics.REFRESH_EXPIRY] == seed["issued_at"] + 3600
    assert 0 <= values[metrics.DURATION] < 30
    assert os.listdir(prom.parent) == [prom.name]  # written by rename: no temp file left


def test_refresh_then_failure_carries_the_last_success_over(
    run_cli: RunCli, saxo: FakeSaxo, config_file: Callable[..., Path], cache_path: Path, prom: Path
) -> None:
    write_json(cache_path, saxo.seed_cache(age=1000))
    config = config_file()
    result = run_cli("run", "--config", str(config), "--metrics-file", str(prom))
    assert result.returncode == 0, result.stderr
    assert saxo.refreshes == 1
    first, _ = read_metrics(prom)
    assert first[metrics.REFRESHED] == 1
    sent = saxo.requests[-1]["time"]
    assert abs(first[metrics.ACCESS_EXPIRY] - (sent + 1200)) < 5
    assert abs(first[metrics.REFRESH_EXPIRY] - (sent + 3600)) < 5

    saxo.fault = "500-html"
    result = run_cli("run", "--config", str(config), "--metrics-file", str(prom), "--force")
    assert result.returncode == 75
    second, _ = read_metrics(prom)
    assert second[metrics.LAST_EXIT] == 75
    assert second[metrics.REFRESHED] == 0
    assert second[metrics.LAST_RUN] > first[metrics.LAST_RUN]
    assert second[metrics.LAST_SUCCESS] == first[metrics.LAST_SUCCESS]  # carried over
    assert second[metrics.ACCESS_EXPIRY] == first[metrics.ACCESS_EXPIRY]  # the cache as it still is


def _setup_failure(kind: str, saxo: FakeSaxo, cache_path: Path) -> dict[str, str]:
    """Prepare one failure class; return extra environment for the run."""
    if kind == "65":
        cache_path.write_text("{not json")
    elif kind == "66":
        pass
    elif kind == "74":
        write_json(cache_path, saxo.seed_cache(age=1000))
        Path(f"{cache_path}.lock").mkdir()  # the lock file cannot be created
    elif kind == "75":
        write_json(cache_path, saxo.seed_cache(age=1000))
        saxo.fault = "500-html"
    elif kind == "77":
        write_json(cache_path, saxo.seed_cache(age=1000, refresh_token="a-token-saxo-never-issued"))
    elif kind == "78":
        write_json(cache_path, saxo.seed_cache(age=1000))
        saxo.fault = "invalid_client"
    elif kind == "78-credentials":
        write_json(cache_path, saxo.seed_cache(age=1000))
        return {"SAXOBANK_APP_SECRET_LIVE": ""}
    return {}


@pytest.mark.parametrize(
    ("kind", "code", "expiry_known"),
    [
        ("65", 65, False),
        ("66", 66, False),
        ("74", 74, True),
        ("75", 75, True),
        ("77", 77, True),
        ("78", 78, True),
        ("78-credentials", 78, True),
    ],
)
def test_each_failure_class(
    run_cli: RunCli,
    saxo: FakeSaxo,
    config_file: Callable[..., Path],
    cache_path: Path,
    prom: Path,
    kind: str,
    code: int,
    expiry_known: bool,
) -> None:
    env = base_env(**_setup_failure(kind, saxo, cache_path))
    result = run_cli("run", "--config", str(config_file(metrics_path=str(prom))), env=env)
    assert result.returncode == code, result.stderr
    values, caches = read_metrics(prom)
    assert caches == {str(cache_path)}
    assert values[metrics.LAST_EXIT] == code
    assert values[metrics.REFRESHED] == 0
    assert metrics.LAST_SUCCESS not in values  # never succeeded: absent, not 0 (1970)
    assert (metrics.ACCESS_EXPIRY in values) is expiry_known
    assert os.listdir(prom.parent) == [prom.name]


def test_config_error_still_writes_metrics_given_on_the_command_line(
    run_cli: RunCli, tmp_path: Path, prom: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("no_such_key: 1\n")
    result = run_cli("run", "--config", str(bad), "--metrics-file", str(prom))
    assert result.returncode == 78
    values, caches = read_metrics(prom)
    assert values[metrics.LAST_EXIT] == 78
    assert caches == {metrics.UNKNOWN_CACHE}


def test_dry_run_writes_no_metrics(
    run_cli: RunCli, saxo: FakeSaxo, config_file: Callable[..., Path], cache_path: Path, prom: Path
) -> None:
    write_json(cache_path, saxo.seed_cache(age=1000))
    result = run_cli("run", "--dry-run", "--config", str(config_file(metrics_path=str(prom))))
    assert result.returncode == 0
    assert not prom.exists()


def test_unwritable_metrics_file_does_not_change_the_exit_status(
    run_cli: RunCli, saxo: FakeSaxo, config_file: Callable[..., Path], cache_path: Path, tmp_path: Path
) -> None:
    write_json(cache_path, saxo.seed_cache(age=100))
    target = tmp_path / "no-such-dir" / "token_refresh.prom"
    result = run_cli("run", "--config", str(config_file()), "--metrics-file", str(target))
    assert result.returncode == 0
    assert "cannot write the metrics file" in result.stderr


def test_consecutive_failures_count_until_a_success(
    run_cli: RunCli, saxo: FakeSaxo, config_file: Callable[..., Path], cache_path: Path, prom: Path
) -> None:
    """The count SaxoTokenRunsFailing alerts on, carried from one run's file to the next."""
    write_json(cache_path, saxo.seed_cache(age=1000))
    config = str(config_file(metrics_path=str(prom)))
    saxo.fault = "500-html"
    counts = []
    for _ in range(2):
        assert run_cli("run", "--config", config).returncode == 75
        counts.append(read_metrics(prom)[0][metrics.CONSECUTIVE_FAILURES])
    saxo.fault = None
    assert run_cli("run", "--config", config).returncode == 0
    counts.append(read_metrics(prom)[0][metrics.CONSECUTIVE_FAILURES])
    assert counts == [1, 2, 0]


def test_alert_rules_use_metrics_the_program_writes(
    run_cli: RunCli, saxo: FakeSaxo, config_file: Callable[..., Path], cache_path: Path, prom: Path
) -> None:
    write_json(cache_path, saxo.seed_cache(age=1000))
    assert run_cli("run", "--config", str(config_file(metrics_path=str(prom)))).returncode == 0
    written, _ = read_metrics(prom)

    rules = yaml.safe_load(ALERTS.read_text())
    alerts = {rule["alert"]: rule for group in rules["groups"] for rule in group["rules"]}
    assert {
        "SaxoAccessTokenExpiresSoon",
        "SaxoTokenNoSuccessfulRun",
        "SaxoTokenRunsFailing",
        "SaxoReauthorizationRequired",
    } <= set(alerts)
    for name, rule in alerts.items():
        used = set(re.findall(r"\btoken_refresh_[a-z_]+\b", rule["expr"]))
        assert used, f"{name} uses no token_refresh metric"
        assert used <= set(written), f"{name} uses metrics never written: {used - set(written)}"
        assert rule["annotations"]["summary"]
        assert rule["labels"]["severity"] in ("warning", "critical")
    # thresholds tied to the shipped cadence (900 s runs, 120 s margin): see configs/alerts.yml
    assert "< 60" in alerts["SaxoAccessTokenExpiresSoon"]["expr"]
    assert alerts["SaxoAccessTokenExpiresSoon"]["for"] == "1m"
    assert "> 1800" in alerts["SaxoTokenNoSuccessfulRun"]["expr"]
    assert ">= 2" in alerts["SaxoTokenRunsFailing"]["expr"]
    assert "77" in alerts["SaxoReauthorizationRequired"]["expr"]


def test_alert_rules_pass_promtool(processes: Processes) -> None:
    """PromQL check and rule unit tests where promtool exists (Debian package ``prometheus``)."""
    import shutil

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed")
    result = processes.run([promtool, "check", "rules", str(ALERTS)])
    assert result.returncode == 0, result.stdout + result.stderr
    # each alert fires when it should and not before (tests/promtool/alerts_test.yml)
    unit = Path(__file__).parent / "promtool" / "alerts_test.yml"
    result = processes.run([promtool, "test", "rules", str(unit)])
    assert result.returncode == 0, result.stdout + result.stderr
