"""The direct source: the target's `/metrics` scraped by the plugin itself.

Every `interval_s` in a background thread and on demand (`mark`) at the steady window's
edges, so the edges are exact scrapes. Only the wanted families are kept, and memory is
bounded per family, so a target with thousands of series cannot grow the run's memory.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping

import httpx
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from .record import (
    HISTOGRAM_SUFFIXES, Mark, ScrapeRecord, Scrubber, SeriesRecord, ServerMetricsError, ServerMetricsRecord,
    TargetRecord, aliases,
)

_ACCEPT = "text/plain;version=0.0.4;q=1.0, */*;q=0.1"  # the classic text format, not OpenMetrics


class _HTTPStatus(Exception):
    """A scrape answered with something other than 200."""


def _seen_names(family: Metric) -> list[str]:
    if family.type == "counter":
        return [family.name + "_total", family.name]
    if family.type in ("histogram", "summary"):
        return [family.name, *(family.name + s for s in HISTOGRAM_SUFFIXES)]
    return [family.name]


class Scraper:
    """Scrapes a `/metrics` URL in a background thread and on `mark`, keeping only wanted families.

    A failing scrape (refused, timeout, non-200, unparsable) is recorded with its error and
    the next one happens on schedule. Memory is bounded by the wanted names and by
    `max_series_per_family` (new label sets beyond it are dropped and noted; known series
    are always kept, so a dropped one never looks like a reset).
    """

    def __init__(
        self,
        url: str,
        *,
        names: Iterable[str],
        interval_s: float = 5.0,
        timeout_s: float = 5.0,
        headers: Mapping[str, str] | None = None,
        max_series_per_family: int = 1000,
        clock: Callable[[], float] = time.time,
        client: httpx.Client | None = None,
    ) -> None:
        wanted = sorted(set(names))
        if not wanted:
            raise ServerMetricsError("Scraper needs the metric names to keep (criteria's metrics or an allow-list)")
        if interval_s <= 0:
            raise ServerMetricsError(f"interval_s must be > 0, got {interval_s}")
        self._url = url
        self._scrub = Scrubber(url, headers)
        self._families = {alias for name in wanted for alias in aliases(name)}
        self._interval_s = interval_s
        self._max_series = max_series_per_family
        self._clock = clock
        self._owns_client = client is None
        self._client = client or httpx.Client(timeout=timeout_s, headers=dict(headers or {}), follow_redirects=False)
        self._record = ServerMetricsRecord(
            source="scrape", endpoint=self._scrub.url, interval_s=interval_s, wanted=wanted,
            targets=[TargetRecord(name=self._scrub.url)],
        )
        self._index: dict[tuple[str, tuple[tuple[str, str], ...]], SeriesRecord] = {}
        self._per_family: dict[str, int] = {}
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the background thread; its first scrape is immediate."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="prodval-servermetrics", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the background thread, wait for it, and close the HTTP client."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> Scraper:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def mark(self, label: str) -> float:
        """Scrape now and label it (e.g. "steady_start"); returns the scrape's time, even if it failed."""
        with self._lock:
            scrape = self._scrape_locked()
            self._record.marks.append(Mark(label=label, t=scrape.t))
            return scrape.t

    def scrape(self) -> ScrapeRecord:
        """Scrape once now, unlabelled."""
        with self._lock:
            return self._scrape_locked()

    def record(self) -> ServerMetricsRecord:
        """A snapshot of everything scraped so far."""
        with self._lock:
            snapshot = self._record.model_copy(deep=True)
            snapshot.names_seen = sorted(self._seen)
        return snapshot

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stopping.is_set():
            self.scrape()
            next_at += self._interval_s
            now = time.monotonic()
            if next_at < now:  # a slow scrape: skip the missed slots rather than burst
                next_at = now + self._interval_s
            self._stopping.wait(next_at - now)

    def _scrape_locked(self) -> ScrapeRecord:
        target = self._record.targets[0]
        t = self._clock()
        began = time.monotonic()
        try:
            response = self._client.get(self._url, headers={"Accept": _ACCEPT})
            if response.status_code != 200:
                raise _HTTPStatus(f"HTTP {response.status_code} {response.reason_phrase}".strip())
            parse = openmetrics_families if "openmetrics" in response.headers.get("content-type", "") else (
                text_string_to_metric_families)
            families = list(parse(response.text))  # parse it all first: a broken page adds nothing
        except Exception as exc:  # any failure is one failed scrape; the run goes on
            what = str(exc) if isinstance(exc, _HTTPStatus) else f"{type(exc).__name__}: {exc}"
            scrape = ScrapeRecord(t=t, ok=False, duration_s=time.monotonic() - began,
                                  error=self._scrub(f"{what} ({self._url})"))
            target.scrapes.append(scrape)
            return scrape
        index = len(target.scrapes)
        scrape = ScrapeRecord(t=t, ok=True, duration_s=time.monotonic() - began)
        target.scrapes.append(scrape)
        for family in families:
            self._seen.update(_seen_names(family))
            if family.name not in self._families:
                continue
            for sample in family.samples:
                if sample.name.endswith("_created") or not math.isfinite(sample.value):
                    continue  # _created is a timestamp, not a measurement; NaN/Inf are not JSON
                series = self._series(family, sample.name, sample.labels)
                if series is not None:
                    series.points.append((index, float(sample.value)))
        return scrape

    def _series(self, family: Metric, name: str, labels: Mapping[str, str]) -> SeriesRecord | None:
        key = (name, tuple(sorted(labels.items())))
        series = self._index.get(key)
        if series is None:
            count = self._per_family.get(family.name, 0)
            if count >= self._max_series:
                if count == self._max_series:
                    self._record.notes.append(
                        f"{family.name}: more than {self._max_series} series; later label sets were dropped")
                    self._per_family[family.name] = count + 1
                return None
            self._per_family[family.name] = count + 1
            series = SeriesRecord(name=name, family=family.name, type=family.type, labels=dict(labels))
            self._index[key] = series
            self._record.series.append(series)
        return series
