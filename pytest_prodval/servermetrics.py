"""Server-side criteria: the target's own Prometheus metrics, judged next to k6's view.

k6 sees the service from outside; `/metrics` is the server's own account (AI fallbacks,
which limiter answered 429, games it thinks are active). Two sources feed one record:

* `Scraper` reads `/metrics` itself, every `interval_s` and on demand (`mark`) at the
  steady window's edges, so the edges are exact scrapes.
* `PrometheusQuery` reads the same series from a Prometheus server (PROMETHEUS_URL). It
  fetches the *raw samples* (an instant query of a range selector, `name[range]` at the
  window's end) instead of `increase()` or `query_range`: `increase()` extrapolates to the
  window edges (fractional counts of integer counters, and a series born in the window
  loses its first increment), and `query_range` resamples at a step, which can skip or
  repeat a scrape and so hide a counter reset. Raw samples let both sources share one
  evaluator, with the same reset and edge rules. Alignment: an edge resolves to the last
  Prometheus scrape at or before it, so the two sources agree exactly when nothing changed
  within one Prometheus scrape interval before each edge; otherwise they differ by the
  increments of that interval.

`ServerMetrics` judges a record over [start, end] (wall-clock seconds): counter deltas
(a drop is a reset: the new value counts whole; a series absent from a good scrape is 0),
ratios of two deltas, gauges as a step function (peak, time-weighted mean), histogram
bucket deltas → quantiles interpolated within buckets the way Prometheus'
`histogram_quantile` does. Values are in the metric's own unit (seconds for `*_seconds`).
No scrape in the window is "no_data" (never 0, never a pass); a name the target never
exposed is "not_available", with the names it did expose. The record is plain JSON
(`save_record` / `load_record`), so an offline re-judge gets the same values.
"""

from __future__ import annotations

import bisect
import difflib
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, urlsplit

import httpx
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, Field

from .expressions import parse_metric

SCHEMA_VERSION = 1
ARTIFACT_SUFFIX = "_server_metrics.json"
_MASK = "***"
_MIN_SECRET = 4  # as in secrets.py: shorter strings would mask ordinary digits everywhere
_ACCEPT = "text/plain;version=0.0.4;q=1.0, */*;q=0.1"  # the classic text format, not OpenMetrics
_STATUS_CLASS = re.compile(r"^[1-5]xx$", re.IGNORECASE)
_HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")

Status = Literal["ok", "no_data", "not_available"]


class ServerMetricsError(ValueError):
    """A query the server metrics cannot answer as asked, or a Prometheus API failure."""


class _HTTPStatus(Exception):
    """A scrape answered with something other than 200."""


# --- the record (the `…_server_metrics.json` artifact) --------------------------------------


class ScrapeRecord(BaseModel):
    """One scrape of one target; `t` is when it was sent (Prometheus stamps samples the same way)."""

    t: float
    ok: bool
    error: str | None = None
    duration_s: float | None = None


class TargetRecord(BaseModel):
    """A scraped endpoint: the redacted URL, or `job/instance` from Prometheus."""

    name: str
    scrapes: list[ScrapeRecord] = Field(default_factory=list)


class SeriesRecord(BaseModel):
    """One series: its sample name, family, type, labels and (scrape index, value) points."""

    name: str  # as exposed: x_total, x_bucket, x
    family: str  # the parser's family name: counters without _total, histograms without _bucket
    type: str  # counter | gauge | histogram | summary | unknown
    labels: dict[str, str]
    target: int = 0
    points: list[tuple[int, float]] = Field(default_factory=list)


class Mark(BaseModel):
    """A labelled on-demand scrape, e.g. the steady window's start."""

    label: str
    t: float


class ServerMetricsRecord(BaseModel):
    """Everything scraped for one run; JSON-serialisable, free of credentials."""

    schema_version: int = SCHEMA_VERSION
    source: Literal["scrape", "prometheus"]
    endpoint: str
    interval_s: float | None = None
    wanted: list[str]
    names_seen: list[str] = Field(default_factory=list)
    targets: list[TargetRecord] = Field(default_factory=list)
    series: list[SeriesRecord] = Field(default_factory=list)
    marks: list[Mark] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)

    def mark(self, label: str) -> float:
        """The time of the last mark with this label; KeyError names the marks there are."""
        for mark in reversed(self.marks):
            if mark.label == label:
                return mark.t
        raise KeyError(f"no mark {label!r} (marks: {', '.join(m.label for m in self.marks) or 'none'})")

    def window(self, start_label: str, end_label: str) -> tuple[float, float]:
        """The (start, end) times of two marks."""
        return self.mark(start_label), self.mark(end_label)


def save_record(record: ServerMetricsRecord, path: str | Path) -> Path:
    """Write the record as JSON, atomically (a reader never sees half a file), honouring the umask."""
    from .artifacts import write_atomic

    target = Path(path)
    write_atomic(target, record.model_dump_json())
    return target


def load_record(path: str | Path) -> ServerMetricsRecord:
    """Read a record written by `save_record`; ServerMetricsError names the file and the problem."""
    try:
        record = ServerMetricsRecord.model_validate_json(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ServerMetricsError(f"{path}: not a server metrics record: {exc}") from None
    if record.schema_version != SCHEMA_VERSION:
        raise ServerMetricsError(f"{path}: schema_version {record.schema_version}, expected {SCHEMA_VERSION}")
    return record


# --- selectors ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Selector:
    """`name{label:value,...}`: equality per label; `5xx`-style values also match that status class."""

    name: str
    labels: tuple[tuple[str, str], ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether a series' labels satisfy every matcher."""
        for key, wanted in self.labels:
            actual = labels.get(key)
            if actual is None:
                return False
            if actual != wanted and not (
                _STATUS_CLASS.match(wanted) and len(actual) == 3 and actual.isdigit() and actual[0] == wanted[0]
            ):
                return False
        return True

    def __str__(self) -> str:
        return self.name + ("{" + ",".join(f"{k}:{v}" for k, v in self.labels) + "}" if self.labels else "")


def parse_selector(text: str | Selector) -> Selector:
    """Parse `name{label:value}` (the plugin's submetric syntax); ValueError says what is expected."""
    if isinstance(text, Selector):
        return text
    ref = parse_metric(text)
    return Selector(ref.name, ref.tags)


def wanted_names(metrics: Iterable[str | Selector]) -> list[str]:
    """The metric names to keep from scrapes, from criteria's selectors."""
    return sorted({parse_selector(m).name for m in metrics})


def _aliases(name: str) -> set[str]:
    """The family names a user-written name can mean: `x_total` is counter family `x`."""
    return {name, name[:-6]} if name.endswith("_total") else {name}


# --- credentials ----------------------------------------------------------------------------


def redact_url(url: str) -> str:
    """The URL without user info and with every query value masked."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = (f"{_MASK}@" if parts.username or parts.password else "") + host
    if parts.port is not None:
        netloc += f":{parts.port}"
    query = "&".join(f"{k}={_MASK}" for k, _ in parse_qsl(parts.query, keep_blank_values=True))
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")


class _Scrubber:
    """Masks the URL's credentials and header values in error text."""

    def __init__(self, url: str, headers: Mapping[str, str] | None) -> None:
        parts = urlsplit(url)
        raw = [parts.username, parts.password, *(v for _, v in parse_qsl(parts.query)), *(headers or {}).values()]
        raw += [v.split(" ", 1)[1] for v in (headers or {}).values() if " " in v]  # "Bearer TOKEN"
        secrets = {variant for s in raw if s for variant in (s, quote(s, safe=""))}
        self._raw_url = url
        self.url = redact_url(url)
        self._secrets = sorted((s for s in secrets if len(s) >= _MIN_SECRET), key=len, reverse=True)

    def __call__(self, text: str) -> str:
        text = text.replace(self._raw_url, self.url)
        for secret in self._secrets:
            text = text.replace(secret, _MASK)
        return text


# --- the direct scraper ---------------------------------------------------------------------


def _seen_names(family: Metric) -> list[str]:
    if family.type == "counter":
        return [family.name + "_total", family.name]
    if family.type in ("histogram", "summary"):
        return [family.name, *(family.name + s for s in _HISTOGRAM_SUFFIXES)]
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
        self._scrub = _Scrubber(url, headers)
        self._families = {alias for name in wanted for alias in _aliases(name)}
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


# --- Prometheus as the source ---------------------------------------------------------------


def _promql_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class PrometheusQuery:
    """Fetches the raw samples of the wanted names for a window from a Prometheus server's HTTP API."""

    def __init__(
        self,
        url: str,
        *,
        match: Mapping[str, str] | None = None,
        timeout_s: float = 10.0,
        headers: Mapping[str, str] | None = None,
        client: httpx.Client | None = None,
    ) -> None:
        self._base = url.rstrip("/")
        self._scrub = _Scrubber(url, headers)
        self._match = ",".join(f"{k}={_promql_string(v)}" for k, v in sorted((match or {}).items()))
        self._owns_client = client is None
        self._client = client or httpx.Client(timeout=timeout_s, headers=dict(headers or {}))
        self._types: dict[str, str] = {}

    def close(self) -> None:
        """Close the HTTP client (if this object made it)."""
        if self._owns_client:
            self._client.close()

    def _get(self, path: str, params: Mapping[str, str] | tuple[tuple[str, str], ...]) -> Any:
        where = f"Prometheus {self._scrub.url}{path}"
        try:
            response = self._client.get(self._base + path, params=params)
        except httpx.HTTPError as exc:
            raise ServerMetricsError(self._scrub(f"{where}: {type(exc).__name__}: {exc}")) from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise ServerMetricsError(self._scrub(f"{where}: HTTP {response.status_code}, not a Prometheus API answer"))
        if response.status_code != 200 or body.get("status") != "success":
            raise ServerMetricsError(self._scrub(f"{where}: HTTP {response.status_code}: {body.get('error')}"))
        return body["data"]

    def _matrix(self, selector: str, range_s: float, at: float) -> list[dict[str, Any]]:
        query = f"{selector}[{math.ceil(range_s * 1000)}ms]"
        data = self._get("/api/v1/query", {"query": query, "time": f"{at:.3f}"})
        if data.get("resultType") != "matrix":
            raise ServerMetricsError(f"Prometheus answered {data.get('resultType')} to {query}")
        return list(data["result"])

    def _declared_type(self, metric: str) -> str:
        """The TYPE the target declared (classic text names counters x_total, OpenMetrics x), else by suffix."""
        if metric not in self._types:
            declared = {entry.get("type") for key in _aliases(metric)
                        for entry in self._get("/api/v1/metadata", {"metric": key}).get(key, [])}
            guess = "counter" if metric.endswith("_total") else "gauge"
            self._types[metric] = "counter" if "counter" in declared else ("gauge" if declared else guess)
        return self._types[metric]

    def fetch(
        self, names: Iterable[str], start: float, end: float, *, lookback_s: float = 300.0,
        marks: Mapping[str, float] | None = None,
    ) -> ServerMetricsRecord:
        """Raw samples in (start - lookback_s, end] of each name, plus `up` for the targets' scrapes."""
        wanted = sorted(set(names))
        range_s = end - start + lookback_s
        match = "{" + self._match + "}" if self._match else ""
        record = ServerMetricsRecord(source="prometheus", endpoint=self._scrub.url + match, wanted=wanted,
                                     marks=[Mark(label=k, t=v) for k, v in (marks or {}).items()])
        times: dict[tuple[str, str], dict[float, bool]] = {}
        for row in self._matrix(f"up{match}", range_s, end):
            key = (row["metric"].get("job", ""), row["metric"].get("instance", ""))
            times.setdefault(key, {}).update({float(t): float(v) == 1.0 for t, v in row["values"]})
        fetched: list[tuple[SeriesRecord, tuple[str, str], list[tuple[float, float]]]] = []
        for name in wanted:
            alternatives = [name, name + "_total", *(name + s for s in _HISTOGRAM_SUFFIXES)]
            inner = f'__name__=~"{"|".join(re.escape(a) for a in alternatives)}"' + (f",{self._match}" if match else "")
            rows = self._matrix("{" + inner + "}", range_s, end)
            histogram = any(r["metric"]["__name__"] == name + "_bucket" and "le" in r["metric"] for r in rows)
            for row in rows:
                labels = dict(row["metric"])
                metric = labels.pop("__name__")
                if histogram:
                    if metric not in [name + s for s in _HISTOGRAM_SUFFIXES]:
                        continue
                    family, kind = name, "histogram"
                elif metric not in (name, name + "_total"):
                    continue
                elif self._declared_type(metric) == "counter":
                    family, kind = metric[:-6] if metric.endswith("_total") else metric, "counter"
                else:
                    family, kind = metric, "gauge"
                key = (labels.get("job", ""), labels.get("instance", ""))
                values = [(float(t), float(v)) for t, v in row["values"]]
                for t, _ in values:
                    times.setdefault(key, {}).setdefault(t, True)
                fetched.append((SeriesRecord(name=metric, family=family, type=kind, labels=labels), key, values))
        keys = sorted(times)
        positions: list[dict[float, int]] = []
        for key in keys:
            ordered = sorted(times[key].items())
            positions.append({t: i for i, (t, _) in enumerate(ordered)})
            record.targets.append(TargetRecord(name="/".join(key), scrapes=[
                ScrapeRecord(t=t, ok=ok, error=None if ok else "target down (up=0)") for t, ok in ordered]))
        for series, key, values in fetched:
            series.target = keys.index(key)
            series.points = [(positions[series.target][t], v) for t, v in values]
            record.series.append(series)
        gaps = sorted({round(b.t - a.t, 3) for tr in record.targets for a, b in zip(tr.scrapes, tr.scrapes[1:])})
        record.interval_s = gaps[len(gaps) // 2] if gaps else None
        params = (("match[]", match or '{__name__=~".+"}'), ("start", f"{start - lookback_s:.3f}"), ("end", f"{end:.3f}"))
        record.names_seen = sorted(set(self._get("/api/v1/label/__name__/values", params)) | self._declared_names())
        return record

    def _declared_names(self) -> set[str]:
        """Names the scraped targets declare (HELP/TYPE). A labelled counter before its first increment
        (ringrift_ai_fallback_total in a run without fallbacks) has no series, so only its metadata shows
        that the target exposes it; the direct scrape sees it the same way. Empty when Prometheus cannot say."""
        try:
            if self._match:
                rows = self._get("/api/v1/targets/metadata", {"match_target": "{" + self._match + "}"})
                return {str(row["metric"]) for row in rows if isinstance(row, dict) and "metric" in row}
            return {str(name) for name in self._get("/api/v1/metadata", {})}
        except (ServerMetricsError, TypeError):
            return set()


# --- evaluation -----------------------------------------------------------------------------


class ServerMetricResult(BaseModel):
    """One value from server metrics over a window, with the scrapes it rests on."""

    query: str  # e.g. "p(95) of ringrift_ai_request_duration_seconds{ai_type:mcts}"
    status: Status
    value: float | None = None
    method: str = ""  # "counter delta", "ratio of counter deltas", "bucket-interpolated", "peak", ...
    points: int = 0  # good scrapes used
    series: int = 0
    resets: int = 0
    window: tuple[float, float]
    covered: tuple[float, float] | None = None  # first and last scrape used
    numerator: float | None = None
    denominator: float | None = None
    observations: float | None = None  # histogram observations in the window
    names_seen: list[str] = Field(default_factory=list)
    message: str = ""


class BreakdownRow(BaseModel):
    """One label combination and its delta."""

    labels: dict[str, str]
    value: float


class Breakdown(BaseModel):
    """A counter's delta by labels, largest first: triage hints such as which limiter answered 429."""

    query: str
    by: list[str]
    status: Status
    rows: list[BreakdownRow] = Field(default_factory=list)
    other: float = 0.0  # the sum of the rows beyond `top`
    total: float | None = None
    points: int = 0
    message: str = ""

    def summary(self) -> str:
        """One line: `name by a, b: x/y 412, z/w 3 (+5 other)`."""
        if self.status != "ok":
            return self.message
        if not self.rows:
            return f"{self.query} by {', '.join(self.by)}: none in the window ({self.points} scrapes)"
        parts = [f"{'/'.join(r.labels.values())} {r.value:,.0f}" for r in self.rows]
        tail = f" (+{self.other:,.0f} other)" if self.other else ""
        return f"{self.query} by {', '.join(self.by)}: {', '.join(parts)}{tail}"


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """Prometheus' bucketQuantile on (upper bound, cumulative count) pairs; None where it gives NaN."""
    merged: dict[float, float] = {}
    for bound, count in buckets:
        merged[bound] = merged.get(bound, 0.0) + count
    ordered = sorted(merged.items())
    if len(ordered) < 2 or not math.isinf(ordered[-1][0]):
        return None
    highest, monotonic = 0.0, []
    for bound, count in ordered:  # ensureMonotonic: counts scraped mid-update may dip
        highest = max(highest, count)
        monotonic.append((bound, highest))
    observations = monotonic[-1][1]
    if observations == 0:
        return None
    rank = q * observations
    b = next((i for i, (_, c) in enumerate(monotonic[:-1]) if c >= rank), len(monotonic) - 1)
    if b == len(monotonic) - 1:
        return monotonic[-2][0]
    if b == 0 and monotonic[0][0] <= 0:
        return monotonic[0][0]
    start, count = (0.0, monotonic[0][1]) if b == 0 else (monotonic[b - 1][0], monotonic[b][1] - monotonic[b - 1][1])
    if b > 0:
        rank -= monotonic[b - 1][1]
    return start if count == 0 else start + (monotonic[b][0] - start) * (rank / count)


@dataclass
class _Span:
    """The good scrapes of one target that cover a window: the baseline, then every one up to end."""

    scrapes: list[tuple[float, int]]

    @property
    def covered(self) -> tuple[float, float]:
        return self.scrapes[0][0], self.scrapes[-1][0]


class ServerMetrics:
    """Judges a `ServerMetricsRecord` over windows; the same answers live and offline."""

    def __init__(self, record: ServerMetricsRecord) -> None:
        self.record = record
        self._ok = [sorted((s.t, i) for i, s in enumerate(t.scrapes) if s.ok) for t in record.targets]
        self._wanted = {alias for name in record.wanted for alias in _aliases(name)}
        self._seen = set(record.names_seen)

    # The public questions ------------------------------------------------------------------

    def evaluate(self, metric: str | Selector, aggregation: str, start: float, end: float, *,
                 denominator: str | Selector | None = None) -> ServerMetricResult:
        """A k6-style aggregation: count, rate (with a denominator), p(N), med, avg, peak/max, min, mean, value."""
        agg = aggregation.strip()
        selector = parse_selector(metric)
        kind = self._kind(selector)
        if agg == "rate":
            if denominator is None:
                raise ServerMetricsError(f"rate of {selector} needs a denominator counter (samples_from)")
            return self.ratio(selector, denominator, start, end)
        if agg.startswith("p(") and agg.endswith(")"):
            return self.quantile(selector, float(agg[2:-1]) / 100, start, end, label=agg)
        if agg == "med":
            return self.quantile(selector, 0.5, start, end, label=agg)
        if agg == "count":
            return self._histogram(selector, None, start, end, "count") if kind == "histogram" else (
                self.counter_delta(selector, start, end))
        if agg == "avg" and kind == "histogram":
            return self._histogram(selector, None, start, end, "avg")
        if agg in ("peak", "max", "min", "mean", "avg", "value"):
            return self.gauge(selector, start, end, aggregation=agg)
        raise ServerMetricsError(f"{agg!r} is not computed from server metrics; use count, rate, p(N), med, avg, "
                                 "peak, max, min, mean or value")

    def counter_delta(self, metric: str | Selector, start: float, end: float) -> ServerMetricResult:
        """The increase of the matching counter series over [start, end], resets included."""
        selector = parse_selector(metric)
        base = self._base(selector, "count", start, end, "counter delta")
        problem = self._problem(selector, base, counter=True)
        if problem is not None:
            return problem
        matched = self._matching(selector, {"counter", "unknown"})
        delta, resets = 0.0, 0
        used = self._spans(start, end, counter=True, targets={s.target for s in matched} or None)
        if not used:
            return self._no_data(base, "no two good scrapes cover the window")
        for series in matched:
            span = used.get(series.target)
            if span is not None:
                d, r = _delta(series, span)
                delta, resets = delta + d, resets + r
        note = "" if matched else f"; no series matched {selector}, so it counted 0"
        return self._done(base, delta, used, len(matched), resets, extra=note)

    def ratio(self, numerator: str | Selector, denominator: str | Selector, start: float,
              end: float) -> ServerMetricResult:
        """Delta of one counter over the delta of another, e.g. fallbacks over all AI requests."""
        num, den = self.counter_delta(numerator, start, end), self.counter_delta(denominator, start, end)
        query = f"rate of {parse_selector(numerator)} / {parse_selector(denominator)}"
        if num.status != "ok" or den.status != "ok":
            bad = num if num.status != "ok" else den
            return bad.model_copy(update={"query": query, "method": "ratio of counter deltas"})
        base = den.model_copy(update={"query": query, "method": "ratio of counter deltas", "numerator": num.value,
                                      "denominator": den.value, "resets": num.resets + den.resets})
        if not den.value:
            return self._no_data(base, f"{parse_selector(denominator)} counted 0 in the window")
        value = (num.value or 0.0) / den.value
        return base.model_copy(update={"value": value, "message": (
            f"{query}: {num.value:,.6g} / {den.value:,.6g} = {value:.4g} over {den.points} scrapes")})

    def gauge(self, metric: str | Selector, start: float, end: float, *,
              aggregation: str = "peak") -> ServerMetricResult:
        """The sum of the matching gauge series as a step function: peak/max, min, mean/avg (time-weighted), value."""
        selector = parse_selector(metric)
        method = {"peak": "peak", "max": "peak", "min": "min", "value": "last value"}.get(aggregation,
                                                                                        "time-weighted mean")
        base = self._base(selector, aggregation, start, end, method)
        problem = self._problem(selector, base, counter=False)
        if problem is not None:
            return problem
        matched = self._matching(selector, {"gauge", "unknown", "counter"})
        used = self._spans(start, end, counter=False, targets={s.target for s in matched})
        if not matched:
            return self._no_data(base, f"no series matched {selector}")
        if not used:
            return self._no_data(base, "no good scrape in the window")
        steps = _gauge_steps(matched, used, start)
        values = [v for _, v in steps]
        if method == "peak":
            value = max(values)
        elif method == "min":
            value = min(values)
        elif method == "last value":
            value = values[-1]
        else:
            value = _time_weighted_mean(steps, end)
        return self._done(base, value, used, len(matched), 0)

    def quantile(self, metric: str | Selector, q: float, start: float, end: float, *,
                 label: str | None = None) -> ServerMetricResult:
        """The q-quantile (0..1) of a histogram's observations in the window, bucket-interpolated."""
        return self._histogram(parse_selector(metric), q, start, end, label or f"q{q:g}")

    def breakdown(self, metric: str | Selector, by: Sequence[str], start: float, end: float, *,
                  top: int = 10) -> Breakdown:
        """Counter deltas (or histogram observation counts) grouped by `by` labels, largest first."""
        selector = parse_selector(metric)
        result = self.counter_delta(selector, start, end) if self._kind(selector) != "histogram" else (
            self._histogram(selector, None, start, end, "count"))
        out = Breakdown(query=str(selector), by=list(by), status=result.status, total=result.value,
                        points=result.points, message=result.message)
        if result.status != "ok":
            return out
        used = self._spans(start, end, counter=True, targets=None)
        wanted = {"counter", "unknown"} if self._kind(selector) != "histogram" else {"histogram"}
        groups: dict[tuple[str, ...], float] = {}
        for series in self._matching(selector, wanted):
            span = used.get(series.target)
            if span is None or (series.type == "histogram" and not series.name.endswith("_count")):
                continue
            key = tuple(series.labels.get(k, "") for k in by)
            groups[key] = groups.get(key, 0.0) + _delta(series, span)[0]
        ranked = sorted(((v, k) for k, v in groups.items() if v > 0), reverse=True)
        out.rows = [BreakdownRow(labels=dict(zip(by, k)), value=v) for v, k in ranked[:top]]
        out.other = sum(v for v, _ in ranked[top:])
        return out

    # Shared steps ----------------------------------------------------------------------------

    def _kind(self, selector: Selector) -> str | None:
        names = _aliases(selector.name)
        kinds = {s.type for s in self.record.series if s.family in names or s.name in names}
        return "histogram" if "histogram" in kinds else (kinds.pop() if len(kinds) == 1 else None)

    def _matching(self, selector: Selector, kinds: set[str]) -> list[SeriesRecord]:
        names = _aliases(selector.name)
        return [s for s in self.record.series
                if (s.name in names or s.family in names) and s.type in kinds and selector.matches(s.labels)]

    def _base(self, selector: Selector, agg: str, start: float, end: float, method: str) -> ServerMetricResult:
        if not _aliases(selector.name) & self._wanted:
            raise ServerMetricsError(f"{selector.name} was not among the names kept ({', '.join(self.record.wanted)}): "
                                     "add it to the scraper's names")
        return ServerMetricResult(query=f"{agg} of {selector}", status="ok", method=method, window=(start, end))

    def _problem(self, selector: Selector, base: ServerMetricResult, *, counter: bool) -> ServerMetricResult | None:
        """not_available when no good scrape ever showed the name; a type that cannot answer, likewise."""
        if not any(self._ok):
            return self._no_data(base, "no scrape succeeded")
        names = _aliases(selector.name) | {selector.name + "_bucket"}
        if not names & self._seen and not self._matching(selector, {"counter", "gauge", "histogram", "unknown"}):
            close = difflib.get_close_matches(selector.name, sorted(self._seen), n=5, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            return base.model_copy(update={"status": "not_available", "names_seen": sorted(self._seen), "message": (
                f"{base.query}: not available: the target exposes no {selector.name} "
                f"({len(self._seen)} names seen){hint}")})
        kind = self._kind(selector)
        wanted = base.method in ("bucket-interpolated", "histogram")
        if kind is not None and (kind == "histogram") != wanted and not (counter and kind == "unknown"):
            need = "a histogram" if wanted else ("a counter" if counter else "a gauge")
            return base.model_copy(update={"status": "not_available",
                                           "message": f"{base.query}: {selector.name} is a {kind}; this needs {need}"})
        return None

    def _spans(self, start: float, end: float, *, counter: bool, targets: set[int] | None) -> dict[int, _Span]:
        spans: dict[int, _Span] = {}
        for target, ok in enumerate(self._ok):
            if targets is not None and target not in targets:
                continue
            times = [t for t, _ in ok]
            first = bisect.bisect_right(times, start) - 1  # the last good scrape at or before start
            last = bisect.bisect_right(times, end) - 1
            if first < 0:
                first = bisect.bisect_left(times, start)  # the scraper started late: from its first scrape
            chosen = ok[first:last + 1]
            inside = [t for t, _ in chosen if t >= start]
            if (len(chosen) >= 2 and chosen[-1][0] > start) if counter else bool(inside):
                spans[target] = _Span(chosen)
        return spans

    def _done(self, base: ServerMetricResult, value: float, used: dict[int, _Span], series: int, resets: int, *,
              extra: str = "") -> ServerMetricResult:
        points = sum(len(s.scrapes) for s in used.values())
        covered = (min(s.covered[0] for s in used.values()), max(s.covered[1] for s in used.values()))
        reset_note = f", {resets} counter reset(s)" if resets else ""
        return base.model_copy(update={
            "value": value, "points": points, "series": series, "resets": resets, "covered": covered,
            "message": f"{base.query} = {value:.6g} ({base.method}, {points} scrapes, {series} series{reset_note}){extra}",
        })

    def _no_data(self, base: ServerMetricResult, why: str) -> ServerMetricResult:
        return base.model_copy(update={"status": "no_data", "value": None, "message": f"{base.query}: no data: {why}"})

    def _histogram(self, selector: Selector, q: float | None, start: float, end: float,
                   what: str) -> ServerMetricResult:
        method = "bucket-interpolated" if q is not None else "histogram"
        base = self._base(selector, what, start, end, method)
        problem = self._problem(selector, base, counter=False)
        if problem is not None:
            return problem
        matched = self._matching(selector, {"histogram"})
        used = self._spans(start, end, counter=True, targets={s.target for s in matched} or None)
        if not used:
            return self._no_data(base, "no two good scrapes cover the window")
        buckets: dict[float, float] = {}
        total_sum = total_count = 0.0
        resets = 0
        for series in matched:
            span = used.get(series.target)
            if span is None:
                continue
            delta, r = _delta(series, span)
            if series.name.endswith("_bucket") and "le" in series.labels:
                bound = float(series.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + delta
                resets = max(resets, r)
            elif series.name.endswith("_sum"):
                total_sum += delta
            elif series.name.endswith("_count"):
                total_count += delta
        observations = buckets.get(math.inf, total_count)
        base = base.model_copy(update={"observations": observations})
        if observations == 0:
            return self._no_data(base, f"no observations of {selector} in the window")
        if q is None:
            value = observations if what == "count" else total_sum / (total_count or observations)
        else:
            quantile = histogram_quantile(q, buckets.items())
            if quantile is None:
                return self._no_data(base, f"{selector} has no usable buckets (needs le=\"+Inf\" and one more)")
            value = quantile
        label_sets = {(s.target, *sorted((k, v) for k, v in s.labels.items() if k != "le")) for s in matched}
        return self._done(base, value, used, len(label_sets), resets,
                          extra=f", {observations:,.0f} observations")


def _delta(series: SeriesRecord, span: _Span) -> tuple[float, int]:
    """A counter's increase over a span: a drop is a reset (the new value counts whole); absent counts as 0."""
    values = dict(series.points)
    previous = values.get(span.scrapes[0][1], 0.0)
    delta, resets = 0.0, 0
    for _, index in span.scrapes[1:]:
        value = values.get(index)
        if value is None:  # absent from a good scrape: the process restarted or the child was removed
            resets += previous > 0
            previous = 0.0
            continue
        if value >= previous:
            delta += value - previous
        else:
            delta += value
            resets += 1
        previous = value
    return delta, resets


def _gauge_steps(matched: list[SeriesRecord], used: dict[int, _Span], start: float) -> list[tuple[float, float]]:
    """(time, summed value) at each good scrape; the baseline before start counts as at start."""
    values = [dict(s.points) for s in matched]
    events: list[tuple[float, float, int, float]] = []  # (clipped time, scrape time, target, sum)
    for target, span in used.items():
        mine = [v for s, v in zip(matched, values) if s.target == target]
        events += [(max(t, start), t, target, sum(v.get(i, 0.0) for v in mine)) for t, i in span.scrapes]
    events.sort(key=lambda e: (e[0], e[1]))
    current: dict[int, float] = {}
    steps: list[tuple[float, float]] = []
    for t, _, target, value in events:
        current[target] = value
        if steps and steps[-1][0] == t:
            steps[-1] = (t, sum(current.values()))
        else:
            steps.append((t, sum(current.values())))
    return steps


def _time_weighted_mean(steps: list[tuple[float, float]], end: float) -> float:
    """Mean of a step function from its first point to end (each value holds until the next point)."""
    first = steps[0][0]
    if end <= first:
        return steps[-1][1]
    area = sum(v * (t_next - t) for (t, v), (t_next, _) in zip(steps, [*steps[1:], (end, 0.0)]))
    return area / (end - first)
