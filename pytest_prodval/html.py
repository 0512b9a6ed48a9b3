"""The HTML report of one scenario run: one offline page, charts as inline SVG, no JavaScript.

Charts are computed here as plain geometry (`Chart`) and drawn by the template, so every
label and value goes through jinja2's autoescaping like the rest of the page.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from .criteria import format_value
from .models import CriterionResult, SeriesPoint, SloReport
from .artifacts import write_atomic

# Error classes in stacking order (bottom first) and their colours; unknown classes follow in grey shades.
ERROR_CLASSES: dict[str, str] = {
    "401": "#9467bd", "429": "#f2a93b", "capacity": "#d62728", "5xx": "#d62728",
    "contract": "#1f77b4", "lifecycle": "#2ca02c",
}
_OTHER_COLOURS = ["#7f7f7f", "#8c564b", "#bcbd22", "#17becf"]
_LATENCY = [("p50_ms", "p50", "#5b8def"), ("p95_ms", "p95", "#f28e2b"), ("p99_ms", "p99", "#d62728")]
_SEVERITY = {"error": 0, "fail": 1, "warn": 2, "pass": 3, "n/a": 4}
_GAMES_COLOUR, _PLAYERS_COLOUR = "#3465a4", "#2a9d8f"


@dataclass
class Line:
    """A polyline, split into segments where values are missing."""

    label: str
    colour: str
    segments: list[str]
    dashed: bool = False
    fill: str | None = None  # polygon points of an area under the line


@dataclass
class Bar:
    """One rectangle of a stacked bar."""

    x: float
    y: float
    w: float
    h: float
    colour: str
    title: str


@dataclass
class HLine:
    """A horizontal reference line (a target or a threshold)."""

    y: float
    label: str
    colour: str


@dataclass
class Chart:
    """Geometry of one SVG chart, in viewBox units."""

    title: str
    y_label: str
    width: int = 620
    height: int = 250
    left: int = 58
    right: int = 16
    top: int = 14
    bottom: int = 34
    x_ticks: list[tuple[float, str]] = field(default_factory=list)
    y_ticks: list[tuple[float, str]] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)
    bars: list[Bar] = field(default_factory=list)
    hlines: list[HLine] = field(default_factory=list)
    band: tuple[float, float] | None = None  # steady window: x, width
    legend: list[tuple[str, str, bool]] = field(default_factory=list)  # label, colour, dashed
    empty: str | None = None

    @property
    def plot_w(self) -> float:
        """Width of the plot area."""
        return self.width - self.left - self.right

    @property
    def plot_h(self) -> float:
        """Height of the plot area."""
        return self.height - self.top - self.bottom

    @property
    def bottom_y(self) -> float:
        """y of the x axis."""
        return self.top + self.plot_h


@dataclass
class Row:
    """One criterion as the table shows it."""

    c: CriterionResult
    observed: str
    threshold: str
    margin: str
    margin_good: bool | None
    baseline: str | None
    baseline_delta: str | None
    coverage: str | None = None  # the plan's coverage rules, beside the value


def render_html(report: SloReport, baseline: SloReport | None = None) -> str:
    """The report page as a string: header, criteria table, time-series charts."""
    template = _environment().get_template("report.html.j2")
    baseline_values = {c.name: c.observed for c in baseline.criteria} if baseline else {}
    # Failures first: that is what the reader came for; otherwise the catalogue's order.
    ordered = sorted(report.criteria, key=lambda c: _SEVERITY[c.verdict])
    rows = [_row(c, baseline_values.get(c.name)) for c in ordered]
    counts = {v: sum(1 for c in report.criteria if c.verdict == v) for v in ("pass", "fail", "error", "warn", "n/a")}
    return template.render(
        r=report, baseline=baseline, rows=rows, counts=counts,
        has_baseline=any(row.baseline is not None for row in rows),
        charts=charts(report), concurrency=_concurrency_cards(report),
        instance_rate_max=max((i.request_rate or 0.0 for i in report.instances), default=0.0),
    )


def write_html(report: SloReport, path: Path, baseline: SloReport | None = None) -> None:
    """Write the report page atomically (temporary file + os.replace)."""
    write_atomic(path, render_html(report, baseline))


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("pytest_prodval", "templates"),
        autoescape=True, trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined,
    )


# -- criteria table ---------------------------------------------------------------------------


def margin(c: CriterionResult) -> tuple[str, bool | None]:
    """How far the observed value is from the threshold, in the unit and in % of it; and on which side."""
    if c.observed is None:
        return "n/a", None
    delta = c.observed - c.threshold
    if c.operator in ("<", "<="):
        headroom = -delta
    elif c.operator in (">", ">="):
        headroom = delta
    else:  # == / !=: distance only
        headroom = -abs(delta) if c.operator == "==" else abs(delta)
    if delta == 0:
        return "at threshold", c.verdict == "pass"
    amount = _format_delta(abs(delta), c.unit)
    ratio = abs(delta) / abs(c.threshold) if c.threshold else None
    # Far past a small threshold (rates), "12.3× the threshold" reads better than "1130%".
    pct = "" if ratio is None else f" · {ratio * 100:.1f}%" if ratio <= 2 else f" · {c.observed / c.threshold:.1f}× the threshold"
    word = "headroom" if headroom > 0 else "beyond"
    return f"{amount} {word}{pct}", headroom > 0


def _format_delta(value: float, unit: str) -> str:
    if unit == "%":
        return f"{value * 100:.2f} pp"
    return format_value(value, unit)


def _row(c: CriterionResult, baseline_from_report: float | None) -> Row:
    text, good = margin(c)
    base = c.baseline_observed if c.baseline_observed is not None else baseline_from_report
    delta = None
    if base is not None and c.observed is not None:
        diff = c.observed - base
        sign = "+" if diff > 0 else "−" if diff < 0 else "±"
        delta = f"{sign}{_format_delta(abs(diff), c.unit)}"
    coverage = None
    if c.coverage is not None:
        coverage = f"coverage {c.coverage:.0%} (min {c.coverage_min or 0:.0%})"
        if c.worst_bucket is not None:
            coverage += f" · worst {c.bucket_s or 0:g} s bucket {format_value(c.worst_bucket, c.unit)}"
            if c.max_multiple_of_target is not None:
                coverage += f" (max {c.max_multiple_of_target:g}×)"
    return Row(c=c, observed=format_value(c.observed, c.unit), threshold=_threshold_text(c), margin=text,
               margin_good=good, baseline=format_value(base, c.unit) if base is not None else None, baseline_delta=delta,
               coverage=coverage)


def _threshold_text(c: CriterionResult) -> str:
    return f"{c.operator} {format_value(c.threshold, c.unit)}"


def _concurrency_cards(report: SloReport) -> list[dict[str, str | bool | None]]:
    cards: list[dict[str, str | bool | None]] = []
    for kind, m in sorted(report.concurrency.items()):
        target = m.target if m.target is not None else _int_target(report, kind)
        cards.append({
            "kind": kind, "peak": f"{m.peak:,}", "target": f"{target:,}" if target is not None else None,
            "met": None if target is None else m.peak >= target, "mean": f"{m.time_weighted_mean:,.1f}",
            "share": f"{m.share_at_or_above_target * 100:.0f}%" if m.share_at_or_above_target is not None else None,
        })
    return cards


def _int_target(report: SloReport, kind: str) -> int | None:
    value = report.targets.get(kind)
    return value if isinstance(value, int) else None


# -- charts -----------------------------------------------------------------------------------


def charts(report: SloReport) -> list[Chart]:
    """The four time-series charts (empty list when the run recorded no series)."""
    points = sorted(report.series, key=lambda p: p.t)
    if not points:
        return []
    bucket = _bucket_seconds(points)
    t_min = min(0.0, points[0].t)
    t_max = max(points[-1].t + bucket, report.steady_window_s[1] if report.steady_window_s else 0.0)
    result = [_latency_chart(report, points, t_min, t_max), _rate_chart(points, bucket, t_min, t_max),
              _error_chart(points, bucket, t_min, t_max), _concurrency_chart(report, points, t_min, t_max)]
    for chart in result:
        if report.steady_window_s and chart.empty is None:
            start, end = report.steady_window_s
            x0, x1 = _x(chart, max(start, t_min), t_min, t_max), _x(chart, min(end, t_max), t_min, t_max)
            chart.band = (x0, max(x1 - x0, 0.0))
            chart.legend.append(("steady window", "#e8eef9", False))
    return result


def _bucket_seconds(points: list[SeriesPoint]) -> float:
    gaps = sorted(b.t - a.t for a, b in zip(points, points[1:], strict=False) if b.t > a.t)
    return gaps[len(gaps) // 2] if gaps else 1.0


def _x(chart: Chart, t: float, t_min: float, t_max: float) -> float:
    span = (t_max - t_min) or 1.0
    return round(chart.left + (t - t_min) / span * chart.plot_w, 1)


def _y(chart: Chart, v: float, y_max: float) -> float:
    return round(chart.bottom_y - v / y_max * chart.plot_h, 1)


def nice_step(span: float, ticks: int = 5) -> float:
    """A 1-2-5 step giving at most `ticks` intervals over `span`."""
    raw = max(span, 1e-9) / ticks
    power = 10 ** math.floor(math.log10(raw))
    return float(next(m * power for m in (1, 2, 5, 10) if m * power >= raw))


def _axes(chart: Chart, t_min: float, t_max: float, y_top: float) -> float:
    """Ticks for both axes; returns the y maximum actually used."""
    step = nice_step(y_top or 1.0)
    y_max = step * math.ceil((y_top or 1.0) / step)
    decimals = 0 if step >= 1 else -math.floor(math.log10(step))
    chart.y_ticks = [(_y(chart, i * step, y_max), f"{i * step:,.{decimals}f}") for i in range(int(round(y_max / step)) + 1)]
    t_step = next((s for s in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200) if (t_max - t_min) / s <= 8), 14400)
    first = math.ceil(t_min / t_step) * t_step
    chart.x_ticks = [(_x(chart, t, t_min, t_max), _clock(t)) for t in _frange(first, t_max, t_step)]
    return y_max


def _frange(start: float, stop: float, step: float) -> list[float]:
    count = int((stop - start) / step + 1e-9) + 1
    return [start + i * step for i in range(max(count, 0))]


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else f"{seconds // 60}:{seconds % 60:02d}"


def _segments(chart: Chart, pairs: list[tuple[float, float | None]], t_min: float, t_max: float, y_max: float) -> list[str]:
    segments: list[str] = []
    current: list[str] = []
    for t, v in pairs:
        if v is None:
            if current:
                segments.append(" ".join(current))
            current = []
            continue
        current.append(f"{_x(chart, t, t_min, t_max)},{_y(chart, v, y_max)}")
    if current:
        segments.append(" ".join(current))
    return segments


def _latency_chart(report: SloReport, points: list[SeriesPoint], t_min: float, t_max: float) -> Chart:
    chart = Chart(title="HTTP latency over time", y_label="ms")
    values = [v for p in points for attr, _, _ in _LATENCY if (v := getattr(p, attr)) is not None]
    if not values:
        chart.empty = "no latency recorded"
        return chart
    slo = next((c for c in report.criteria if c.name.startswith("api_latency_p95") and c.unit == "ms"), None)
    y_max = _axes(chart, t_min, t_max, max([*values, slo.threshold if slo else 0.0]) * 1.08)
    for attr, label, colour in _LATENCY:
        segs = _segments(chart, [(p.t, getattr(p, attr)) for p in points], t_min, t_max, y_max)
        if segs:
            chart.lines.append(Line(label, colour, segs))
            chart.legend.append((label, colour, False))
    if slo is not None:
        chart.hlines.append(HLine(_y(chart, slo.threshold, y_max), f"API p95 SLO {_threshold_text(slo)}", "#d62728"))
        chart.legend.append((f"API p95 SLO ({slo.profile})", "#d62728", True))
    return chart


def _rate_chart(points: list[SeriesPoint], bucket: float, t_min: float, t_max: float) -> Chart:
    chart = Chart(title="Request rate", y_label="req/s")
    rates = [(p.t, p.requests / bucket) for p in points]
    if not any(r for _, r in rates):
        chart.empty = "no requests recorded"
        return chart
    y_max = _axes(chart, t_min, t_max, max(r for _, r in rates) * 1.08)
    seg = _segments(chart, [(t, r) for t, r in rates], t_min, t_max, y_max)[0]
    first_x, last_x = _x(chart, rates[0][0], t_min, t_max), _x(chart, rates[-1][0], t_min, t_max)
    area = f"{first_x},{chart.bottom_y} {seg} {last_x},{chart.bottom_y}"
    chart.lines.append(Line("requests/s", "#3465a4", [seg], fill=area))
    chart.legend.append((f"requests/s ({bucket:g}s buckets)", "#3465a4", False))
    return chart


def _error_chart(points: list[SeriesPoint], bucket: float, t_min: float, t_max: float) -> Chart:
    chart = Chart(title="Errors by class (stacked, per bucket)", y_label="errors")
    seen = {k for p in points for k, v in p.errors.items() if v}
    if not seen:
        chart.empty = "no errors recorded"
        return chart
    classes = [k for k in ERROR_CLASSES if k in seen] + sorted(seen - ERROR_CLASSES.keys())
    colours = {k: ERROR_CLASSES.get(k) or _OTHER_COLOURS[i % len(_OTHER_COLOURS)] for i, k in enumerate(classes)}
    y_max = _axes(chart, t_min, t_max, max(sum(p.errors.get(k, 0) for k in classes) for p in points) * 1.08)
    width = max(_x(chart, t_min + bucket, t_min, t_max) - chart.left - 1.0, 1.0)
    for p in points:
        base = 0
        for k in classes:
            n = p.errors.get(k, 0)
            if n <= 0:
                continue
            y_top = _y(chart, base + n, y_max)
            chart.bars.append(Bar(_x(chart, p.t, t_min, t_max), y_top, round(width, 1), round(_y(chart, base, y_max) - y_top, 1),
                                  colours[k], f"{_clock(p.t)} {k}: {n:,}"))
            base += n
    chart.legend.extend((k, colours[k], False) for k in classes)
    return chart


def _concurrency_chart(report: SloReport, points: list[SeriesPoint], t_min: float, t_max: float) -> Chart:
    chart = Chart(title="Concurrent games and players", y_label="active")
    targets = {kind: t for kind in ("games", "players") if (t := _target(report, kind)) is not None}
    values = [v for p in points for v in (p.games, p.players) if v is not None]
    if not values:
        chart.empty = "no concurrency recorded"
        return chart
    y_max = _axes(chart, t_min, t_max, max([*values, *targets.values()]) * 1.08)
    for kind, colour in (("games", _GAMES_COLOUR), ("players", _PLAYERS_COLOUR)):
        segs = _segments(chart, [(p.t, getattr(p, kind)) for p in points], t_min, t_max, y_max)
        if segs:
            chart.lines.append(Line(kind, colour, segs))
            chart.legend.append((kind, colour, False))
        if kind in targets:
            chart.hlines.append(HLine(_y(chart, targets[kind], y_max), f"target {targets[kind]:,} {kind}", colour))
            chart.legend.append((f"target {kind}", colour, True))
    return chart


def _target(report: SloReport, kind: str) -> int | None:
    measured = report.concurrency.get(kind)
    if measured is not None and measured.target is not None:
        return measured.target
    return _int_target(report, kind)
