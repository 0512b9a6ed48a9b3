"""The window judge: a server metrics record judged over [start, end], the same answers live and offline.

Counter deltas (a drop is a reset: the new value counts whole; a series absent from a good
scrape is 0), ratios of two deltas, gauges as a step function (peak, time-weighted mean),
histogram bucket deltas → quantiles interpolated within buckets the way Prometheus'
`histogram_quantile` does. Values are in the metric's own unit (seconds for `*_seconds`).
No scrape in the window is "no_data" (never 0, never a pass); a name the target never
exposed is "not_available", with the names it did expose.
"""

from __future__ import annotations

import bisect
import difflib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field

from ..expressions import parse_metric
from .record import SeriesRecord, ServerMetricsError, ServerMetricsRecord, aliases

_STATUS_CLASS = re.compile(r"^[1-5]xx$", re.IGNORECASE)

Status = Literal["ok", "no_data", "not_available"]


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
        self._wanted = {alias for name in record.wanted for alias in aliases(name)}
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
        names = aliases(selector.name)
        kinds = {s.type for s in self.record.series if s.family in names or s.name in names}
        return "histogram" if "histogram" in kinds else (kinds.pop() if len(kinds) == 1 else None)

    def _matching(self, selector: Selector, kinds: set[str]) -> list[SeriesRecord]:
        names = aliases(selector.name)
        return [s for s in self.record.series
                if (s.name in names or s.family in names) and s.type in kinds and selector.matches(s.labels)]

    def _base(self, selector: Selector, agg: str, start: float, end: float, method: str) -> ServerMetricResult:
        if not aliases(selector.name) & self._wanted:
            raise ServerMetricsError(f"{selector.name} was not among the names kept ({', '.join(self.record.wanted)}): "
                                     "add it to the scraper's names")
        return ServerMetricResult(query=f"{agg} of {selector}", status="ok", method=method, window=(start, end))

    def _problem(self, selector: Selector, base: ServerMetricResult, *, counter: bool) -> ServerMetricResult | None:
        """not_available when no good scrape ever showed the name; a type that cannot answer, likewise."""
        if not any(self._ok):
            return self._no_data(base, "no scrape succeeded")
        names = aliases(selector.name) | {selector.name + "_bucket"}
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
