"""``status --probe``: one OpenAPI call with the cached access token says whether consumers are served."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path
from typing import Any, Callable

import pytest
from fake_saxo import PROBE_PATH, FakeSaxo
from support import write_json

RunCli = Callable[..., "subprocess.CompletedProcess[str]"]
ConfigFile = Callable[..., Path]


def probed(run_cli: RunCli, config: Path, *extra: str) -> tuple[int, list[dict[str, Any]], str]:
    result = run_cli("status", "--probe", "--json", "--config", str(config), *extra)
    return result.returncode, json.loads(result.stdout), result.stdout + result.stderr


def assert_no_token(saxo: FakeSaxo, *outputs: str) -> None:
    for secret in saxo.secrets_seen():
        for output in outputs:
            assert secret not in output


def test_a_working_token(run_cli: RunCli, saxo: FakeSaxo, config_file: ConfigFile, cache_path: Path) -> None:
    write_json(cache_path, saxo.seed_cache(age=100))
    config = config_file(openapi_url=saxo.openapi_url)
    assert run_cli("status", "--config", str(config)).returncode == 0
    assert saxo.probe_requests == []  # the network only with --probe
    code, (row,), output = probed(run_cli, config)
    assert code == 0, output
    assert row["probe"]["result"] == "ok"
    assert row["probe"]["http_status"] == 200
    assert row["probe"]["url"] == saxo.openapi_url + "/port/v1/users/me"
    (seen,) = saxo.probe_requests
    assert seen["path"] == PROBE_PATH
    assert seen["bearer_ok"] is True
    text = run_cli("status", "--probe", "--config", str(config))
    assert text.returncode == 0
    assert "probe:          ok (HTTP 200 from" in text.stdout
    assert_no_token(saxo, output, text.stdout, text.stderr)


@pytest.mark.parametrize(("fault", "status"), [(None, 401), ("403", 403)])
def test_a_refused_token_is_77(
    run_cli: RunCli,
    saxo: FakeSaxo,
    config_file: ConfigFile,
    cache_path: Path,
    fault: str | None,
    status: int,
) -> None:
    write_json(cache_path, saxo.seed_cache(age=100))
    if fault is None:
        saxo.seed_cache()  # the fake then accepts only the newer access token: the cached one is refused
    saxo.probe_fault = fault
    code, (row,), output = probed(run_cli, config_file(openapi_url=saxo.openapi_url))
    assert code == 77, output
    assert row["exit_status"] == 77
    assert row["state"] == "valid"  # the clock says valid; the probe says consumers are refused
    assert row["probe"]["result"] == "refused"
    assert row["probe"]["http_status"] == status
    assert "consumers are refused now" in row["probe"]["detail"]
    assert_no_token(saxo, output)


@pytest.mark.parametrize("how", ["503", "closed-port", "hang"])
def test_no_usable_answer_is_75(
    run_cli: RunCli, saxo: FakeSaxo, config_file: ConfigFile, cache_path: Path, how: str
) -> None:
    write_json(cache_path, saxo.seed_cache(age=100))
    url = saxo.openapi_url
    if how == "closed-port":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            url = f"http://127.0.0.1:{s.getsockname()[1]}/openapi"
    else:
        saxo.probe_fault, saxo.probe_fault_arg = how, 5.0 if how == "hang" else 0.0
    config = config_file(openapi_url=url, retry_budget_secs=1, http_timeout_secs=1)
    code, (row,), output = probed(run_cli, config)
    assert code == 75, output
    assert row["probe"]["result"] == "unavailable"
    assert "Traceback" not in output
    assert_no_token(saxo, output)


def test_a_retried_429_then_success_is_fine(
    run_cli: RunCli, saxo: FakeSaxo, config_file: ConfigFile, cache_path: Path
) -> None:
    write_json(cache_path, saxo.seed_cache(age=100))
    saxo.probe_fault, saxo.probe_fault_limit = "429", 1
    code, (row,), output = probed(run_cli, config_file(openapi_url=saxo.openapi_url))
    assert code == 0, output
    assert row["probe"]["result"] == "ok"
    assert len(saxo.probe_requests) == 2


def test_a_wrong_openapi_url_is_78_and_the_worst_cache_wins(
    run_cli: RunCli, saxo: FakeSaxo, config_file: ConfigFile, cache_path: Path, tmp_path: Path
) -> None:
    write_json(cache_path, saxo.seed_cache(age=100))
    code, (row,), output = probed(run_cli, config_file(openapi_url=saxo.base_url + "/not-the-api"))
    assert code == 78, output
    assert row["probe"]["result"] == "unexpected"
    # two caches: the older one's access token is refused (77), the newer one works (0)
    newer = tmp_path / "newer.json"
    write_json(newer, saxo.seed_cache(age=100))
    caches = ("--cache", str(cache_path), "--cache", str(newer))
    code, rows, output = probed(run_cli, config_file(openapi_url=saxo.openapi_url), *caches)
    assert code == 77, output
    assert [r["probe"]["result"] for r in rows] == ["refused", "ok"]
