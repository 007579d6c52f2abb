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
# every metric name this module can write; tests check configs/alerts.yml against it
METRIC_NAMES = (LAST_RUN, LAST_SUCCESS, LAST_EXIT, ACCESS_EXPIRY, REFRESH_EXPIRY, REFRESHED, DURATION)
UNKNOWN_CACHE = "unknown"  # the cache label when the config could not be loaded
INSTALL_HINT = "pip install 'token-refresh[metrics]'"


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


def previous_successes(path: str) -> dict[str, float]:
    """Last success time per cache label recorded in an earlier metrics file; empty if none."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError):
        return {}
    found: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == LAST_SUCCESS:
                    found[sample.labels.get("cache", "")] = float(sample.value)
    except ValueError as e:  # a damaged file: start afresh rather than fail the run
        log.warning("ignoring unparsable metrics file %s: %s", path, e)
    return found


def build_registry(run: RunMetrics, last_success: float | None) -> CollectorRegistry:
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
    return registry


def write(path: str, run: RunMetrics) -> None:
    """Write the textfile atomically (temp file + rename, by prometheus_client)."""
    from prometheus_client import write_to_textfile

    last_success: float | None = run.started_at
    if run.exit_code != 0:
        earlier = previous_successes(path)
        if run.cache_path == UNKNOWN_CACHE and len(earlier) == 1:
            # the config did not load, so the cache is unknown: keep the earlier file's series
            run = run._replace(cache_path=next(iter(earlier)))
        last_success = earlier.get(run.cache_path)
    write_to_textfile(path, build_registry(run, last_success))
