"""Prometheus node_exporter textfile metrics, written atomically at the end of every ``run``.

``prometheus_client`` is an optional extra (``pip install 'token-refresh[metrics]'``), imported only
when a metrics file is configured, so a run without metrics stays lean.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, NamedTuple

from token_refresh.errors import ConfigError

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger(__name__)

PREFIX = "token_refresh_"
LAST_RUN = PREFIX + "last_run_timestamp_seconds"
LAST_SUCCESS = PREFIX + "last_success_timestamp_seconds"
LAST_EXIT = PREFIX + "last_exit_status"
ACCESS_EXPIRY = PREFIX + "access_token_expiry_timestamp_seconds"
REFRESH_EXPIRY = PREFIX + "refresh_token_expiry_timestamp_seconds"
REFRESHED = PREFIX + "last_run_refreshed"
DURATION = PREFIX + "last_run_duration_seconds"
CONSECUTIVE_FAILURES = PREFIX + "consecutive_failures"
# every metric name this module can write; tests check configs/alerts.yml against it
METRIC_NAMES = (
    LAST_RUN,
    LAST_SUCCESS,
    LAST_EXIT,
    ACCESS_EXPIRY,
    REFRESH_EXPIRY,
    REFRESHED,
    DURATION,
    CONSECUTIVE_FAILURES,
)
UNKNOWN_CACHE = "unknown"  # the cache label when the config could not be loaded
INSTALL_HINT = "pip install 'token-refresh[metrics]'"
METRICS_MODE = 0o644  # a file for node_exporter, which runs as another user; it holds no secret


class RunMetrics(NamedTuple):
    """The figures of one run; times are UTC epoch seconds, None where unknown."""

    cache_path: str
    started_at: float
    duration_secs: float
    exit_code: int
    refreshed: bool
    access_expires_at: float | None
    refresh_expires_at: float | None


def require(source: str) -> None:
    """Fail with a configuration error (78) when metrics are on but prometheus_client is missing."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError as e:
        raise ConfigError(
            source, [f"metrics are configured but prometheus_client cannot be imported ({e}); {INSTALL_HINT}"]
        ) from None


def previous_values(path: str) -> dict[str, dict[str, float]]:
    """Each sample of an earlier metrics file: value by cache label, by metric name; empty if none."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError):
        return {}
    found: dict[str, dict[str, float]] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                found.setdefault(sample.name, {})[sample.labels.get("cache", "")] = float(sample.value)
    except ValueError as e:  # a damaged file: start afresh rather than fail the run
        log.warning("ignoring unparsable metrics file %s: %s", path, e)
    return found


def build_registry(
    run: RunMetrics, last_success: float | None, consecutive_failures: int = 0
) -> CollectorRegistry:
    """The registry holding this run's gauges, each labelled with the cache path."""
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry()

    def gauge(name: str, doc: str, value: float | None) -> None:
        if value is not None:  # unknown is left out, not written as 0: 0 would look like 1970
            Gauge(name, doc, ["cache"], registry=registry).labels(cache=run.cache_path).set(value)

    gauge(LAST_RUN, "Start time of the last token-refresh run.", run.started_at)
    gauge(LAST_SUCCESS, "Start time of the last run that exited 0.", last_success)
    gauge(LAST_EXIT, "Exit status of the last run (sysexits; 77 = re-authorization required).", run.exit_code)
    gauge(ACCESS_EXPIRY, "When the cached access token expires.", run.access_expires_at)
    gauge(REFRESH_EXPIRY, "When the cached refresh token expires.", run.refresh_expires_at)
    gauge(REFRESHED, "1 if the last run refreshed the token, else 0.", 1 if run.refreshed else 0)
    gauge(DURATION, "Wall-clock duration of the last run's cycle.", run.duration_secs)
    gauge(
        CONSECUTIVE_FAILURES,
        "Runs in a row that exited non-zero; 0 after a success.",
        float(consecutive_failures),
    )
    return registry


def write(path: str, run: RunMetrics) -> None:
    """Write the textfile atomically (temp file + rename), mode 0644 whatever the umask."""
    from prometheus_client import generate_latest

    last_success: float | None = run.started_at
    failures = 0
    if run.exit_code != 0:
        before = previous_values(path)
        earlier = before.get(LAST_SUCCESS, {})
        if run.cache_path == UNKNOWN_CACHE and len(earlier) == 1:
            # the config did not load, so the cache is unknown: keep the earlier file's series
            run = run._replace(cache_path=next(iter(earlier)))
        last_success = earlier.get(run.cache_path)
        # counted from the previous file, so it needs no other state (configs/alerts.yml uses it)
        failures = int(before.get(CONSECUTIVE_FAILURES, {}).get(run.cache_path, 0)) + 1
    # node_exporter reads the file as another user: under umask 077 (a cron job's, a container's)
    # prometheus_client's write_to_textfile would leave it 0600, unreadable to the collector
    from token_refresh import store

    store.replace_atomically(
        path, generate_latest(build_registry(run, last_success, failures)), mode=METRICS_MODE
    )
