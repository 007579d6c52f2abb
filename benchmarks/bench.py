"""``make bench``: what one invocation costs, next to starting Python and to the unavoidable work.

docs/DESIGN.md, "The valid path", says why this matters.

Each run goes through a small launcher process (``LAUNCHER``) that spawns the command, takes its
wall time with ``time.perf_counter`` and its CPU time and peak RSS from ``os.wait4``, i.e. the
``rusage`` of that one child. The launcher exists because Linux carries a process's RSS at the
moment of fork into its child's ``ru_maxrss`` across ``exec``: spawned straight from this process
(fake server and all), every row would report this process's RSS. ``getrusage(RUSAGE_CHILDREN)``
would not help either: its ``ru_maxrss`` is the maximum over every child ever waited for.
Rows run round-robin, one run of each per round, so that a burst of load hits them all alike;
the first rounds are a warm-up. Ratios are to the baseline measured in the same invocation.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fake_saxo import APP_KEY, APP_SECRET, FakeSaxo  # type: ignore[import-not-found]

ROOT = Path(__file__).resolve().parent.parent

PYTHON = sys.executable
SCRIPT = str(Path(PYTHON).parent / "token-refresh")  # pip's console-script wrapper in this venv
RACERS = 20
MIB = 1024 * 1024
# ru_maxrss is KiB on Linux, bytes on macOS
RSS_UNIT = 1 if sys.platform == "darwin" else 1024


class Sample(NamedTuple):
    """One run: seconds of wall and CPU (user + system), peak RSS in bytes."""

    wall: float
    cpu: float
    rss: int


class Row(NamedTuple):
    """A command measured by the table and the exit status it must end with."""

    key: str
    label: str
    argv: list[str]
    expect: int = 0


# Run by ``python -I -S``: smaller than any measured command, so its RSS cannot mask theirs.
LAUNCHER = """
import os, sys, time
start = time.perf_counter()
pid = os.posix_spawn(sys.argv[1], sys.argv[1:], os.environ, file_actions=[(os.POSIX_SPAWN_DUP2, 2, 1)])
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - start
print(os.waitstatus_to_exitcode(status), wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss)
"""


def run_once(row: Row, env: dict[str, str], log_path: Path) -> Sample:
    """One run of ``row`` through the launcher; its output goes to ``log_path``."""
    with open(log_path, "wb") as log:
        out = subprocess.run(  # noqa: S603
            [PYTHON, "-I", "-S", "-c", LAUNCHER, *row.argv],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            check=True,
        ).stdout.split()
    code, wall, cpu, rss = int(out[0]), float(out[1]), float(out[2]), int(out[3])
    if code != row.expect:
        output = log_path.read_text(errors="replace")
        raise SystemExit(f"{row.label}: exit status {code}, expected {row.expect}\n{output}")
    return Sample(wall, cpu, rss * RSS_UNIT)


def reap(proc: subprocess.Popen[bytes]) -> tuple[int, float]:
    """Wait for exactly this child; its exit status and CPU seconds."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)  # keep Popen from waiting again
    return proc.returncode, usage.ru_utime + usage.ru_stime


def stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarize(samples: list[Sample]) -> dict[str, Any]:
    return {
        "runs": len(samples),
        "wall_ms": stats([s.wall * 1000 for s in samples]),
        "cpu_ms": stats([s.cpu * 1000 for s in samples]),
        "rss_mib": stats([s.rss / MIB for s in samples]),
    }


def write_config(path: Path, token_url: str, cache: Path) -> Path:
    path.write_text(
        f"environment: live\ntoken_url: {token_url}\ncache_path: {cache}\n"
        "http_timeout_secs: 10\nretry_budget_secs: 5\nlock_timeout_secs: 30\n"
    )
    return path


def write_cache(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")
    path.chmod(0o600)


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAXOBANK_", "TOKEN_REFRESH_", "AEGIS_"))}
    env.update(SAXOBANK_APP_KEY_LIVE=APP_KEY, SAXOBANK_APP_SECRET_LIVE=APP_SECRET)
    return env


def race(saxo: FakeSaxo, config: Path, cache: Path, env: dict[str, str], log_dir: Path) -> dict[str, Any]:
    """RACERS runs started together on a due cache: total wall, summed CPU, token requests.

    Spawned directly (a launcher each would add its own start-up to the race), so no RSS here:
    the racers are ``run`` processes, measured one by one in the rows above.
    """
    write_cache(cache, saxo.seed_cache(age=1000))  # 200 s left of 1200: due
    before = len(saxo.requests)
    logs = [open(log_dir / f"racer-{i}.log", "wb") for i in range(RACERS)]  # noqa: SIM115
    try:
        start = time.perf_counter()
        procs = [
            subprocess.Popen([SCRIPT, "run", "--config", str(config)], env=env, stdout=log, stderr=log)  # noqa: S603
            for log in logs
        ]
        results = [reap(proc) for proc in procs]
        wall = time.perf_counter() - start
    finally:
        for log in logs:
            log.close()
    codes = [code for code, _ in results]
    if any(codes):
        raise SystemExit(f"race: exit statuses {codes}\n{(log_dir / 'racer-0.log').read_text()}")
    return {"wall": wall, "cpu": sum(cpu for _, cpu in results), "requests": len(saxo.requests) - before}


IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)\s*$", re.MULTILINE)


def import_self_times(argv: list[str], env: dict[str, str], runs: int = 5) -> dict[str, float]:
    """Each imported module's own import time in ms (``-X importtime``), the least of ``runs``."""
    best: dict[str, float] = {}
    for _ in range(runs):
        stderr = subprocess.run(  # noqa: S603
            argv, env={**env, "PYTHONPROFILEIMPORTTIME": "1"}, capture_output=True, text=True, check=True
        ).stderr
        for micros, name in IMPORT_LINE.findall(stderr):
            best[name] = min(best.get(name, math.inf), int(micros) / 1000)
    return best


def fmt(summary: dict[str, Any], key: str, spec: str) -> str:
    s = summary[key]
    if s is None:
        return "-"
    return f"{s['median']:{spec}} [{s['min']:{spec}}-{s['max']:{spec}}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="measured runs per row (default 15)")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured rounds first (default 2)")
    parser.add_argument("--races", type=int, default=15, help="measured 20-process races (default 15)")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results.json"))
    args = parser.parse_args()
    if not Path(SCRIPT).exists():
        raise SystemExit(f"{SCRIPT} not found: run from the project's venv (make bench)")
    import yaml

    import token_refresh

    # pip compiles a wheel's modules at install time; an editable checkout may have no .pyc yet
    # (or PYTHONDONTWRITEBYTECODE set), which would time the compiler instead of the program.
    package_dir = Path(token_refresh.__file__).parent
    subprocess.run([PYTHON, "-m", "compileall", "-q", str(package_dir)], check=True)  # noqa: S603
    site_packages = Path(yaml.__file__).parent.parent
    editable_hook = any(p.name.startswith("__editable___") for p in site_packages.iterdir())
    env = child_env()
    load_before = os.getloadavg()

    with FakeSaxo() as saxo, tempfile.TemporaryDirectory(prefix="token-refresh-bench-") as tmp:
        work = Path(tmp)
        # children start here: ``python -m`` from the checkout would import its sources, not the install
        os.chdir(work)
        valid_cache, force_cache, race_cache = (work / f"{n}.json" for n in ("valid", "force", "race"))
        # the production config's shape (configs/token_refresh.yaml): a valid run needs no server
        valid_cfg = write_config(work / "valid.yaml", "https://live.logonvalidation.net/token", valid_cache)
        force_cfg = write_config(work / "force.yaml", saxo.token_url, force_cache)
        race_cfg = write_config(work / "race.yaml", saxo.token_url, race_cache)
        # valid for the whole benchmark: Saxo's 1200 s minus the 1020 s horizon would expire mid-way
        saxo.access_ttl, saxo.refresh_ttl = 86400, 172800
        write_cache(valid_cache, saxo.seed_cache())
        write_cache(force_cache, saxo.seed_cache())
        saxo.access_ttl, saxo.refresh_ttl = 1200, 3600
        floor = (
            f"import yaml, json; yaml.safe_load(open({str(valid_cfg)!r})); "
            f"json.load(open({str(valid_cache)!r}))"
        )
        floor_c = floor.replace("yaml.safe_load(", "yaml.load(Loader=yaml.CSafeLoader, stream=")
        post = (
            "import requests, filelock, yaml; "
            f"requests.post({saxo.token_url!r}, auth=({APP_KEY!r}, 'wrong'), timeout=10, "
            "data={'grant_type': 'refresh_token', 'refresh_token': 'x'})"
        )
        run_args = ["run", "--config", str(valid_cfg)]
        status_args = ["status", "--config", str(valid_cfg)]
        force_args = ["run", "--force", "--config", str(force_cfg)]
        module = [PYTHON, "-m", "token_refresh"]
        rows = [
            Row("baseline", "python -I -c pass", [PYTHON, "-I", "-c", "pass"]),
            Row("floor", "floor: yaml.safe_load + json.load", [PYTHON, "-c", floor]),
            Row("floor_c", "floor with CSafeLoader", [PYTHON, "-c", floor_c]),
            Row("run_valid", "token-refresh run (valid)", [SCRIPT, *run_args]),
            Row("run_valid_m", "python -m token_refresh run (valid)", [*module, *run_args]),
            Row("status", "token-refresh status", [SCRIPT, *status_args]),
            Row("status_m", "python -m token_refresh status", [*module, *status_args]),
            Row("deps", "import requests, filelock, yaml", [PYTHON, "-c", "import requests, filelock, yaml"]),
            Row("deps_request", "deps + one loopback POST", [PYTHON, "-c", post]),
            Row("run_force", "token-refresh run --force", [SCRIPT, *force_args]),
            Row("run_force_m", "python -m token_refresh run --force", [*module, *force_args]),
        ]
        by_key = {row.key: row for row in rows}
        samples: dict[str, list[Sample]] = {row.key: [] for row in rows}
        log_path = work / "child.log"
        for round_no in range(args.warmup + args.runs):
            for row in rows:
                sample = run_once(row, env, log_path)
                if round_no >= args.warmup:
                    samples[row.key].append(sample)
        races = [race(saxo, race_cfg, race_cache, env, work) for _ in range(1 + args.races)][1:]
        # what a valid run imports beyond the floor, and what each module's own import costs
        run_imports = import_self_times(by_key["run_valid"].argv, env)
        floor_imports = import_self_times(by_key["floor"].argv, env)
        os.chdir(ROOT)
    load_after = os.getloadavg()

    results: dict[str, Any] = {}
    base = statistics.median(s.wall for s in samples["baseline"])
    for row in rows:
        summary = summarize(samples[row.key])
        summary["label"] = row.label
        summary["command"] = shlex.join(row.argv)
        summary["ratio_to_baseline"] = summary["wall_ms"]["median"] / (base * 1000)
        results[row.key] = summary
    race_summary = summarize([Sample(r["wall"], r["cpu"], 0) for r in races])
    race_summary["rss_mib"] = None
    race_summary.update(
        label=f"{RACERS} concurrent runs, due cache (total)",
        command=f"{RACERS} x " + shlex.join([SCRIPT, "run", "--config", str(race_cfg)]),
        ratio_to_baseline=race_summary["wall_ms"]["median"] / (base * 1000),
        requests=[r["requests"] for r in races],
    )
    results["race"] = race_summary

    def median(key: str, what: str = "wall_ms") -> float:
        return float(results[key][what]["median"])

    targets = {
        "run_valid_vs_floor": {"value": median("run_valid") / median("floor"), "limit": 1.5},
        "run_valid_m_vs_floor": {"value": median("run_valid_m") / median("floor"), "limit": 1.5},
        "run_valid_peak_rss_mib": {"value": results["run_valid"]["rss_mib"]["max"], "limit": 20},
        "run_force_vs_deps_request": {"value": median("run_force") / median("deps_request"), "limit": 1.5},
        "run_force_m_vs_deps_request": {
            "value": median("run_force_m") / median("deps_request"),
            "limit": 1.5,
        },
        "race_wall_median_s": {"value": results["race"]["wall_ms"]["median"] / 1000, "limit": 3.0},
        "race_requests": {"value": max(race_summary["requests"]), "limit": 1, "exact": True},
    }
    for target in targets.values():
        exact = target.pop("exact", False)
        target["met"] = target["value"] == target["limit"] if exact else target["value"] <= target["limit"]
    meta = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in load_after],
        "pyyaml": yaml.__version__,
        "libyaml_c_loader": bool(getattr(yaml, "__with_libyaml__", False)),
        "floor_loader": "yaml.safe_load (pure-Python SafeLoader); floor_c: CSafeLoader, as the program",
        "editable_import_hook": editable_hook,
        "runs_per_row": args.runs,
        "warmup_rounds": args.warmup,
        "races": args.races,
    }
    extra = sorted(((t, m) for m, t in run_imports.items() if m not in floor_imports), reverse=True)
    extra_imports = {"total_ms": sum(t for t, _ in extra), "self_ms": {m: t for t, m in extra}}
    document = {"meta": meta, "rows": results, "targets": targets, "valid_run_extra_imports": extra_imports}
    Path(args.output).write_text(json.dumps(document, indent=2) + "\n")

    before, after = (" ".join(map(str, meta[k])) for k in ("loadavg_before", "loadavg_after"))
    print(f"python {meta['python']} on {meta['platform']}, {meta['cpus']} CPUs")
    print(f"load average {before} before, {after} after")
    if load_before[0] > 0.5 * (os.cpu_count() or 1):
        print("WARNING: the machine was busy before the start; expect noisy figures (check uptime)")
    libyaml = "available" if meta["libyaml_c_loader"] else "NOT available"
    print(f"libyaml: {libyaml}; floor: {meta['floor_loader']}")
    if editable_hook:
        print("WARNING: an editable install's import hook loads modules into every row (use make bench)")
    print(f"median [min-max] of {args.runs} runs after {args.warmup} warm-up rounds; {args.races} races\n")
    header = f"{'row':40} {'wall ms':>22} {'x base':>7} {'cpu ms':>22} {'peak RSS MiB':>20}"
    print(header)
    print("-" * len(header))
    for summary in results.values():
        print(
            f"{summary['label']:40} {fmt(summary, 'wall_ms', '.1f'):>22} {summary['ratio_to_baseline']:7.2f} "
            f"{fmt(summary, 'cpu_ms', '.1f'):>22} {fmt(summary, 'rss_mib', '.1f'):>20}"
        )
    print(f"\nrace: token requests per race {race_summary['requests']}")
    top = ", ".join(f"{m} {t:.1f}" for t, m in extra[:12])
    print(
        f"\na valid run imports {len(extra)} modules the floor does not, {extra_imports['total_ms']:.1f} ms"
    )
    print(f"of their own import time (-X importtime, least of 5); the largest, ms: {top}")
    print("\ntargets:")
    for name, target in targets.items():
        verdict = "met" if target["met"] else "MISSED"
        print(f"  {name:30} {target['value']:8.2f}  limit {target['limit']:<5}  {verdict}")
    print(f"\nwritten {args.output}")
    return 0 if max(race_summary["requests"]) == 1 == min(race_summary["requests"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
