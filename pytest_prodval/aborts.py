"""Stop a doomed run: `abort_on_fail` criteria as k6 thresholds, and what an aborted run means.

k6 evaluates thresholds during the run; one with `abortOnFail` stops the test when it is
crossed (after `delayAbortEval`). k6 then exits with 99, as for thresholds that failed at
the end, and logs "thresholds on metrics '...' were crossed; at least one has abortOnFail
enabled, stopping test prematurely": that line tells the two apart. The summary is still
written, so the run is judged on its partial data: the criterion that stopped it FAILS with
when and why; every other criterion is flagged incomplete (an ERROR), never passed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .models import AbortRecord, CriterionResult
from .scenarios import Criterion, format_duration, parse_duration

K6_ABORT_SIGN = "abortOnFail enabled"  # in k6's log line when a threshold stopped the run


def threshold(criterion: Criterion, time_scale: float = 1.0) -> str | dict[str, Any]:
    """The k6 threshold of a criterion: its expression, with abortOnFail when it may stop the run."""
    if not criterion.abort_on_fail:
        return criterion.expression_text
    entry: dict[str, Any] = {"threshold": criterion.expression_text, "abortOnFail": True}
    if criterion.abort_delay is not None:
        entry["delayAbortEval"] = format_duration(parse_duration(criterion.abort_delay) * time_scale)
    return entry


def k6_abort_message(log_path: Path) -> str | None:
    """k6's own line saying a threshold stopped the run, from its JSON log; None if it did not."""
    try:
        with log_path.open("rb") as handle:
            for line in handle:
                if K6_ABORT_SIGN.encode() not in line:
                    continue
                try:
                    return str(json.loads(line).get("msg", "")).strip() or line.decode("utf-8", "replace").strip()
                except (ValueError, AttributeError):
                    return line.decode("utf-8", "replace").strip()
    except OSError:
        return None
    return None


def _crossed(criterion: Criterion, metrics: Mapping[str, Any]) -> bool:
    entry = metrics.get(criterion.metric.k6_name) or {}
    verdict = (entry.get("thresholds") or {}).get(criterion.expression_text) or {}
    return verdict.get("ok") is False


def abort_record(message: str, criteria: list[Criterion], metrics: Mapping[str, Any] | None,
                 run_s: float | None, time_scale: float = 1.0) -> AbortRecord:
    """Which abort_on_fail criteria stopped the run (crossed in k6's summary, delay passed), when, why."""
    stoppers = []
    for criterion in criteria:
        if not criterion.abort_on_fail or not _crossed(criterion, metrics or {}):
            continue
        delay = parse_duration(criterion.abort_delay) * time_scale if criterion.abort_delay else 0.0
        if run_s is None or delay <= run_s:
            stoppers.append(criterion)
    when = f"{run_s:.1f} s in" if run_s is not None else "early"
    if stoppers:
        what = ", ".join(f"{c.name} ({c.expression_text})" for c in stoppers)
        reason = f"k6 stopped the run {when}: abort_on_fail criterion {what} crossed its threshold"
    else:
        reason = f"k6 stopped the run {when} on an abortOnFail threshold ({message})"
    return AbortRecord(at_s=run_s, criteria=[c.name for c in stoppers], reason=reason, k6_message=message)


def stopper_result(result: CriterionResult, aborted: AbortRecord) -> CriterionResult:
    """The criterion that stopped the run: its failure, with when; judged as incomplete if it holds."""
    when = f"{aborted.at_s:.1f} s in" if aborted.at_s is not None else "early"
    if result.verdict == "fail":
        note = f"; it stopped the run {when} (abort_on_fail), judged on the data up to then"
        return result.model_copy(update={"message": result.message + note})
    if result.verdict == "error":
        return result
    note = f"; run incomplete: {aborted.reason}, but it holds on k6's final data, so the value cannot be trusted"
    return result.model_copy(update={"verdict": "error", "message": result.message + note})
