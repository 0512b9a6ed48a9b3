"""Judging: one function turns whatever a run left into criterion results and a verdict.

Used by a live run, a run whose preflight failed (no data: every criterion an ERROR) and
an offline re-judge (`--prodval-from-results`), so the three can never disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from . import criteria as criteria_mod
from .models import ConcurrencyMeasurement, SloReport
from .scenarios import Criterion

if TYPE_CHECKING:
    from .results import RunData


def judge(
    report: SloReport,
    criteria: list[Criterion],
    *,
    metrics: Mapping[str, Any] | None,
    concurrency: Mapping[str, ConcurrencyMeasurement] | None,
    server: Any = None,
    baseline: SloReport | None = None,
    run: RunData | None = None,
    baseline_source: str = "baseline",
) -> SloReport:
    """Fill `report.criteria` and `report.verdict` from the run's data (None: no data).

    `run` (results.RunData) adds what the raw pass saw besides values: per-bucket values for
    the coverage rules, k6's summary for its own threshold verdicts, the metrics emitted.
    In a run k6 stopped (`report.aborted`), the criteria that stopped it are judged on their
    values; every other one carries the incomplete reason (an ERROR, never a silent pass).
    """
    from .aborts import stopper_result

    aborted = report.aborted
    report.criteria = []
    for c in criteria:
        stopped_it = aborted is not None and c.name in aborted.criteria
        result = criteria_mod.evaluate(c, scenario_id=report.scenario_id, metrics=metrics, concurrency=concurrency,
                                       server=server, incomplete_reason=None if stopped_it else report.incomplete_reason,
                                       buckets=run.buckets if run else None, summary=run.summary if run else None,
                                       seen=run.seen if run and metrics is not None else None)
        report.criteria.append(stopper_result(result, aborted) if stopped_it and aborted is not None else result)
    for pair in baseline_pairs(baseline, report.scenario_id):
        current = next((c for c in report.criteria if c.name == pair.name), None)
        if current is not None:
            report.criteria.append(criteria_mod.compare_to_baseline(current, pair, source=baseline_source))
    report.verdict = report.decide()
    from .triage import annotate

    annotate(report, metrics, server, concurrency)
    return report


def baseline_pairs(baseline: SloReport | None, scenario_id: str) -> list[Any]:
    """Baseline criteria of this scenario that get a `_vs_baseline` item."""
    if baseline is None or baseline.scenario_id != scenario_id:
        return []
    return [c for c in baseline.criteria if criteria_mod.comparable(c) and c.level == "gate"
            and not c.name.endswith(criteria_mod.BASELINE_SUFFIX)]
