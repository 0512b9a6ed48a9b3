"""Rules applied after a criterion's value is known.

* The plan's coverage rules for latency SLOs (REFERENCE.md §1): the steady window cut into
  buckets; `coverage` = share of buckets that have data (below `min`: ERROR, the value rests
  on too little of the window); the worst bucket's value above `max_multiple_of_target` ×
  the threshold: FAIL, even when the window's value holds.
* A script threshold judged again: k6's own verdict on the same expression is recorded
  beside ours; a disagreement is an ERROR naming both (one of the two computations is
  wrong, so neither may gate).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .models import CriterionResult
from .scenarios import Criterion


def apply(result: CriterionResult, criterion: Criterion, *, buckets: Mapping[str, Sequence[Mapping[str, float] | None]]
          | None, summary: Mapping[str, Any] | None) -> CriterionResult:
    """`result` with the coverage rules and k6's verdict applied (unchanged without data for them)."""
    if result.observed is None or result.verdict in ("error", "n/a"):
        return result
    if criterion.coverage is not None and buckets is not None and criterion.metric.k6_name in buckets:
        result = _coverage(result, criterion, buckets[criterion.metric.k6_name])
    if criterion.k6_threshold is not None:
        result = _against_k6(result, criterion, summary)
    return result


def _coverage(result: CriterionResult, criterion: Criterion, rows: Sequence[Mapping[str, float] | None]) -> CriterionResult:
    from .criteria import format_value

    rule = criterion.coverage
    assert rule is not None
    filled = [row for row in rows if row]
    coverage = len(filled) / len(rows) if rows else 0.0
    agg = criterion.expression.aggregation
    worst = max((row[agg] for row in filled if agg in row), default=None)
    update: dict[str, Any] = {"coverage": coverage, "coverage_min": rule.min, "worst_bucket": worst,
                              "max_multiple_of_target": rule.max_multiple_of_target, "bucket_s": rule.bucket_s}
    notes = [f"coverage {coverage:.0%} of {len(rows)} {rule.bucket}-buckets"]
    if coverage < rule.min:
        update["verdict"] = "error"
        notes.append(f"below coverageMin {rule.min:.0%}: too little of the steady window has data to judge it")
    limit = None if rule.max_multiple_of_target is None else rule.max_multiple_of_target * criterion.expression.threshold
    if worst is not None and limit is not None:
        shown = f"worst bucket {agg} {format_value(worst, criterion.unit)}"
        if worst > limit:
            if update.get("verdict") != "error":
                update["verdict"] = "warn" if criterion.level == "warn" else "fail"
            notes.append(f"{shown} > {rule.max_multiple_of_target:g} x {format_value(criterion.expression.threshold, criterion.unit)}"
                         " (maxMultipleOfTarget)")
        else:
            notes.append(shown)
    update["message"] = f"{result.message}; {'; '.join(notes)}"
    return result.model_copy(update=update)


def _against_k6(result: CriterionResult, criterion: Criterion, summary: Mapping[str, Any] | None) -> CriterionResult:
    from .scripts import k6_verdict

    assert criterion.k6_threshold is not None
    held = k6_verdict(dict(summary) if summary else None, criterion.k6_threshold, criterion.expression_text)
    if held is None:
        return result.model_copy(update={"k6_verdict": None,
                                         "message": f"{result.message}; k6's own verdict: not in its summary"})
    k6_says = "pass" if held else "fail"
    ours = "pass" if result.verdict == "pass" else "fail"
    update: dict[str, Any] = {"k6_verdict": k6_says}
    if k6_says != ours:
        update["verdict"] = "error"
        update["message"] = (f"{result.message}; k6's own verdict on {criterion.k6_threshold}: {criterion.expression_text} "
                             f"is {k6_says}, ours is {ours}: the two computations disagree, so neither may gate")
    else:
        update["message"] = f"{result.message}; k6 agrees ({k6_says})"
    return result.model_copy(update=update)
