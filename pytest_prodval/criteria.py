"""Judge criteria on the exact measurements of a run (`exact`, summary-shaped).

Values are exact: counters summed, rates from passes and fails, percentiles with k6's
formula over every sample of the (sub)metric in the window; concurrency comes from the
raw output sweep. A criterion without data is an error, never a pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .models import ConcurrencyMeasurement, CriterionResult, Verdict
from .scenarios import CONCURRENCY_METRICS, Criterion

_NEGATION = {"<": ">=", "<=": ">", ">": "<=", ">=": "<", "==": "!=", "!=": "=="}

_NOUNS = {
    "req_errors": "requests", "true_errors": "requests", "status_401": "requests", "status_429": "requests",
    "server_available": "requests", "http_req_duration": "requests", "http_reqs": "requests",
    "ws_connecting": "connects", "ws_connection_success": "connects", "ws_message_latency": "pings",
    "move_e2e_latency": "moves", "move_server_processing": "moves", "move_stalled": "moves",
    "ai_move_latency": "AI moves", "ai_fallback": "AI moves",
}


class NoData(Exception):
    """The metric a criterion reads had no samples."""


def format_value(value: float | None, unit: str) -> str:
    """A value in its unit for people: `2.31%`, `412 ms`, `98 games`, `3`."""
    if value is None:
        return "n/a"
    if unit == "%":
        return f"{value * 100:.2f}%"
    if unit == "ms":
        return f"{value:,.1f} ms" if value < 100 else f"{value:,.0f} ms"
    if unit in ("", "count"):
        return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.3g}"
    return f"{value:,.0f} {unit}" if float(value).is_integer() else f"{value:,.1f} {unit}"


def sample_noun(metric_name: str) -> str:
    """What one sample of a metric is, for messages ("41,230 requests")."""
    return _NOUNS.get(metric_name, "samples")


def _samples(entry: Mapping[str, Any]) -> int:
    values = entry.get("values", {})
    kind = entry.get("type")
    if kind == "rate":
        return int(values.get("passes", 0)) + int(values.get("fails", 0))
    if kind == "trend":
        if "count" not in values:
            raise NoData("k6 did not report the sample count of this trend (summaryTrendStats lacks 'count')")
        return int(values["count"])
    if kind == "counter":
        return int(values.get("count", 0))
    return 1 if values else 0


def _observe_k6(criterion: Criterion, metrics: Mapping[str, Any]) -> tuple[float, int, str]:
    """Observed value, sample count and sample noun of a k6 (sub)metric."""
    name = criterion.metric.k6_name
    entry = metrics.get(name)
    aggregation = criterion.expression.aggregation
    if criterion.per is not None:  # a share: count of the metric over count of `per`, e.g. 429s of all requests
        base = metrics.get(criterion.per.k6_name)
        total = float((base or {}).get("values", {}).get("count", 0))
        if total == 0:
            raise NoData(f"metric {criterion.per.k6_name} had 0 samples")
        part = float((entry or {}).get("values", {}).get("count", 0))
        return part / total, int(total), sample_noun(criterion.per.name)
    if entry is None and criterion.absent_is_zero:
        return 0.0, 0, sample_noun(criterion.metric.name)
    if criterion.samples_from is not None:  # a counter judged against a denominator metric
        base = metrics.get(criterion.samples_from.k6_name)
        samples = _samples(base) if base else 0
        if samples == 0:
            raise NoData(f"metric {criterion.samples_from.k6_name} had 0 samples")
        value = float(entry["values"].get(aggregation, 0)) if entry else 0.0  # an unseen counter counted 0
        return value, samples, sample_noun(criterion.samples_from.name)
    if entry is None:
        raise NoData(f"metric {name} had 0 samples (k6 reported nothing for it)")
    samples = _samples(entry)
    if samples == 0:
        raise NoData(f"metric {name} had 0 samples")
    values = entry.get("values", {})
    if aggregation in ("p(50)", "med") and aggregation not in values:  # k6 names p(50) "med"
        aggregation = "med" if "med" in values else "p(50)"
    if aggregation not in values:
        raise NoData(f"k6 did not compute {aggregation} for {name} (it has: {', '.join(values)})")
    return float(values[aggregation]), samples, sample_noun(criterion.metric.name)


def _observe_concurrency(
    criterion: Criterion, concurrency: Mapping[str, ConcurrencyMeasurement] | None
) -> tuple[float, int, str]:
    kind = CONCURRENCY_METRICS[criterion.metric.name]
    measurement = (concurrency or {}).get(kind)
    source = "games_active_delta" if kind == "games" else "players_active_delta"
    if measurement is None:
        raise NoData(f"metric {source} had 0 samples in the raw output, so {kind} concurrency is unknown")
    # The script's zero sample (setup) is in the raw output, so "no game ever started" is a
    # measurement (peak 0), not missing data: a run that formed no game fails, never errors.
    aggregation = criterion.expression.aggregation
    if aggregation in ("peak", "max", "value"):
        value = float(measurement.peak)
    elif aggregation in ("mean", "avg"):
        value = measurement.time_weighted_mean
    elif aggregation == "share" and measurement.share_at_or_above_target is not None:
        value = measurement.share_at_or_above_target
    else:
        raise NoData(f"{aggregation} is not measured for concurrency (use peak, mean or share)")
    return value, measurement.events, "lifecycle events"


def evaluate(
    criterion: Criterion,
    *,
    scenario_id: str,
    metrics: Mapping[str, Any] | None,
    concurrency: Mapping[str, ConcurrencyMeasurement] | None,
    server: Any = None,
    incomplete_reason: str | None = None,
    buckets: Mapping[str, Any] | None = None,
    summary: Mapping[str, Any] | None = None,
    seen: set[str] | None = None,
) -> CriterionResult:
    """Judge one criterion; missing data and incomplete runs give verdict "error"."""
    expression = criterion.expression
    base = CriterionResult(
        name=criterion.name, scenario_id=scenario_id, metric=criterion.metric.k6_name,
        expression=criterion.expression_text, aggregation=expression.aggregation, operator=expression.operator,
        threshold=expression.threshold, unit=criterion.unit, profile=criterion.profile, level=criterion.level,
        hint=criterion.hint, verdict="error", source=criterion.source, baseline_rule=criterion.baseline,
    )
    if criterion.not_applicable:
        return base.model_copy(update={"verdict": "n/a", "message": f"{criterion.name}: not applicable here: {criterion.not_applicable}"})
    if criterion.when == "metric_seen" and seen is not None and criterion.metric.name not in seen:
        return base.model_copy(update={"verdict": "n/a", "message": (
            f"{criterion.name}: not applicable: the run emitted no {criterion.metric.name} (the script does not use it)")})
    detail = None
    try:
        if criterion.source == "server":
            observed, samples, noun, detail = _observe_server(criterion, server)
        elif criterion.metric.name in CONCURRENCY_METRICS:
            observed, samples, noun = _observe_concurrency(criterion, concurrency)
        else:
            if metrics is None:
                raise NoData("k6 wrote no summary")
            observed, samples, noun = _observe_k6(criterion, metrics)
    except NoData as exc:
        reason = f"{exc}"
        if incomplete_reason:
            reason += f"; run incomplete: {incomplete_reason}"
        return base.model_copy(update={"message": f"{criterion.name}: no data: {reason} ({criterion.profile} profile)"})
    shown = format_value(observed, criterion.unit)
    limit = format_value(expression.threshold, criterion.unit)
    context = f"({criterion.profile} profile, {samples:,} {noun})"
    verdict: Verdict
    if expression.holds(observed):
        verdict = "pass"
        message = f"{criterion.name} {expression.aggregation} {shown} {expression.operator} {limit} {context}"
    else:
        verdict = "warn" if criterion.level == "warn" else "fail"
        message = (
            f"{criterion.name} {expression.aggregation} {shown} {_NEGATION[expression.operator]} {limit} "
            f"{context}; expected {criterion.expression_text}"
        )
    if incomplete_reason:
        verdict = "error"
        message = f"{message}; run incomplete: {incomplete_reason}, so the value cannot be trusted"
    if detail:
        message = f"{message} [{detail}]"
    from .rules import apply

    result = base.model_copy(update={"observed": observed, "samples": samples, "verdict": verdict, "message": message,
                                     "detail": detail})
    return apply(result, criterion, buckets=buckets, summary=summary)


def _observe_server(criterion: Criterion, server: Any) -> tuple[float, int, str, str | None]:
    """A value from the target's own metrics (servermetrics), scaled to the criterion's unit."""
    if server is None:
        raise NoData("the target's metrics were not scraped (no metrics_url or prometheus_url for this environment)")
    from .server_criteria import observe

    value, samples, noun, detail = observe(server, criterion)
    return value * criterion.scale, samples, noun, detail


BASELINE_SUFFIX = "_vs_baseline"


def comparable(result: CriterionResult) -> bool:
    """Criteria that get a run-over-run item: latencies, and rates where lower is better."""
    return result.unit == "ms" or (result.unit == "%" and result.operator in ("<", "<="))


def compare_to_baseline(current: CriterionResult, base: CriterionResult, *, source: str = "baseline") -> CriterionResult:
    """`<name>_vs_baseline`: worse than the baseline by at most the criterion's rule (baseline.py)."""
    from .baseline import DEFAULT_RULE, limit, regressed, rule_text

    rule = current.baseline_rule or DEFAULT_RULE
    bound = None if base.observed is None else limit(base.observed, rule)
    rule_shown = rule_text(rule, current.unit)
    name = current.name + BASELINE_SUFFIX
    result = current.model_copy(update={
        "name": name, "expression": f"{current.aggregation}{rule_shown.replace(' ', '')}", "operator": "<=",
        "threshold": bound if bound is not None else 0.0, "baseline_observed": base.observed,
        "hint": f"Worse than the baseline: compare the runs with `prodval compare`. {current.hint or ''}".strip(),
    })
    if current.observed is None or base.observed is None:
        which = "this run" if current.observed is None else f"the baseline ({source})"
        return result.model_copy(update={"verdict": "error", "message": f"{name}: no data in {which}"})
    now, then = format_value(current.observed, current.unit), format_value(base.observed, base.unit)
    if not regressed(current.observed, base.observed, rule):
        return result.model_copy(update={"verdict": "pass",
                                         "message": f"{name}: {now} vs baseline {then} ({rule_shown}; {source})"})
    verdict: Verdict = "warn" if current.level == "warn" else "fail"
    message = (f"{name}: {now} vs baseline {then}, more than allowed ({rule_shown}; {current.profile} profile; "
               f"baseline: {source})")
    return result.model_copy(update={"verdict": verdict, "message": message})
