"""Criteria on the target's own metrics: scrape during a run, bind to the steady window, judge.

`servermetrics` does the measuring (scrape or Prometheus, deltas, bucket quantiles); this
module is the plugin's side of it: which names to keep, when to mark the window's edges,
the artifact, and the (value, samples, noun, detail) a criterion needs.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .scenarios import Criterion
from .servermetrics import (
    PrometheusQuery, Scraper, ServerMetrics, ServerMetricsError, ServerMetricsRecord, load_record, save_record,
)
from .target import Prepared

# Names kept for triage hints even when no criterion reads them.
TRIAGE_NAMES = ("ringrift_rate_limit_hits_total", "http_requests_total", "ringrift_ai_fallback_total")


class _NoServerData(Exception):
    """Raised to criteria as NoData."""


@dataclass
class RunScrape:
    """The server-metrics side of one k6 run, live."""

    names: list[str]
    started: float
    scraper: Scraper | None = None
    prometheus_url: str | None = None
    prometheus_match: dict[str, str] = field(default_factory=dict)
    timers: list[threading.Timer] = field(default_factory=list)

    def mark_window(self, start_s: float, end_s: float) -> None:
        """Scrape at the steady window's edges (seconds from now), besides the fixed interval."""
        if self.scraper is None:
            return
        for label, delay in (("steady_start", start_s), ("steady_end", end_s)):
            timer = threading.Timer(max(0.0, delay), self._mark, args=(label,))
            timer.daemon = True
            timer.start()
            self.timers.append(timer)

    def _mark(self, label: str) -> None:
        if self.scraper is not None:
            try:
                self.scraper.mark(label)
            except Exception:  # a missed mark only means the interval scrapes decide the edge
                pass


@dataclass
class ServerData:
    """A run's server metrics bound to its steady window (wall-clock seconds)."""

    metrics: ServerMetrics
    window: tuple[float, float]
    source: str


def start(prepared: Prepared, names: set[str], *, interval_s: float) -> RunScrape | None:
    """Begin scraping the target for a run (None: the environment has no metrics source or no criterion needs one)."""
    if not names or not (prepared.metrics_url or prepared.prometheus_url):
        return None
    wanted = sorted(names | set(TRIAGE_NAMES))
    run = RunScrape(names=wanted, started=time.time(), prometheus_url=prepared.prometheus_url,
                    prometheus_match=dict(prepared.prometheus_match))
    if prepared.metrics_url and not prepared.prometheus_url:
        run.scraper = Scraper(prepared.metrics_url, names=wanted, interval_s=interval_s)
        run.scraper.start()
    return run


def stop(run: RunScrape | None, path: Path) -> ServerMetricsRecord | None:
    """End scraping, write `…_server_metrics.json`; the record (None when nothing was scraped)."""
    if run is None:
        return None
    for timer in run.timers:
        timer.cancel()
    record: ServerMetricsRecord | None
    if run.scraper is not None:
        try:
            run.scraper.mark("run_end")
        finally:
            run.scraper.stop()
        record = run.scraper.record()
    else:
        query = PrometheusQuery(run.prometheus_url or "", match=run.prometheus_match or None)
        try:
            record = query.fetch(run.names, run.started, time.time())
        except ServerMetricsError as exc:
            record = ServerMetricsRecord(source="prometheus", endpoint="(unreachable)", wanted=run.names,
                                         notes=[str(exc)])
        finally:
            query.close()
    save_record(record, path)
    return record


def load(path: Path) -> ServerMetricsRecord | None:
    """The record of an earlier run (offline re-judge)."""
    return load_record(path) if path.exists() else None


def bind(record: ServerMetricsRecord | None, t0_ms: float | None, steady: tuple[float, float] | None) -> ServerData | None:
    """Server metrics over the run's steady window (from the run's start to the last scrape without one)."""
    if record is None or t0_ms is None:
        return None
    if steady is not None:
        window = (t0_ms / 1000 + steady[0], t0_ms / 1000 + steady[1])
    else:
        times = [s.t for target in record.targets for s in target.scrapes]
        if not times:
            return None
        # Not min(times): a Prometheus record reaches `lookback_s` before the run (for the baseline), and
        # its increments there are not the run's. The scraper's record starts before t0, so nothing changes.
        window = (max(min(times), t0_ms / 1000), max(times))
    return ServerData(ServerMetrics(record), window, record.source)


def observe(server: ServerData, criterion: Criterion) -> tuple[float, int, str, str | None]:
    """(value, scrapes used, noun, method) of a server-side criterion; NoData-like ValueError when missing."""
    from .criteria import NoData

    metric = criterion.metric.k6_name
    per = criterion.per.k6_name if criterion.per is not None else None
    start, end = server.window
    result = server.metrics.evaluate(metric, criterion.expression.aggregation, start, end, denominator=per)
    if result.status != "ok" or result.value is None:
        raise NoData(f"the target's metrics gave no value ({result.status}): {result.message}")
    return result.value, result.points, f"scrapes ({server.source})", result.method or None


def breakdown(server: ServerData, metric: str, by: tuple[str, ...]) -> list[tuple[tuple[str, ...], float]]:
    """A counter's delta over the window by labels, largest first (empty when unknown)."""
    start, end = server.window
    try:
        result = server.metrics.breakdown(metric, list(by), start, end)
    except ServerMetricsError:
        return []
    if result.status != "ok":
        return []
    return [(tuple(row.labels.get(name, "") for name in by), row.value) for row in result.rows if row.value]
