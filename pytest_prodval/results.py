"""Step 6 of a run: what k6 left — its summary (exact aggregates) and its raw points.

Concurrency and the time series come from one streaming pass over the raw output
(`rawreader`); everything else from k6's own summary. Problems (no summary, a truncated
raw file, a crashed k6) are collected so the run is marked incomplete, never passed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from .artifacts import RunPaths, load_summary
from .models import InstanceRecord, SloReport
from .scenarios import Scenario

if TYPE_CHECKING:
    from .executors import InstanceResult


@dataclass
class RunData:
    """The data a run's criteria are judged on."""

    metrics: dict[str, Any] | None = None
    t0_ms: float | None = None
    problems: list[str] = field(default_factory=list)


def read_run(paths: RunPaths, report: SloReport, scenario: Scenario, *, k6_problem: str | None = None) -> RunData:
    """Read the summary and sweep the raw file into `report` (concurrency, series)."""
    from . import rawreader

    data = RunData(problems=[k6_problem] if k6_problem else [])
    try:
        summary = load_summary(paths.summary)
        data.metrics = summary["metrics"]
        data.t0_ms = float((summary.get("setup_data") or {}).get("t0") or 0) or None
    except ValueError as exc:
        data.problems.append(str(exc))
    if paths.raw.exists() and data.t0_ms is not None:
        digest = rawreader.read_raw(
            paths.raw, t0_ms=data.t0_ms, steady=report.steady_window_s,
            targets={"games": scenario.targets.games, "players": scenario.targets.players},
            split_to=paths.ws_raw if scenario.websocket_companion.enabled else None,
        )
        report.concurrency = digest.concurrency
        report.series = digest.series
        if digest.truncated:
            data.problems.append(f"raw output {paths.raw.name} is truncated")
    elif not paths.raw.exists():
        data.problems.append(f"k6 wrote no raw output {paths.raw.name}")
    return data


def read_instances(instances: list[InstanceResult], paths: RunPaths, report: SloReport, scenario: Scenario) -> RunData:
    """The one judging input of a run, however many k6 instances it had.

    Every instance is recorded in `report.instances`. An instance that was lost, crashed or
    exited with an unexpected code (99 is normal: its own thresholds on its own share) makes
    the run incomplete, naming the instance, so every criterion is an ERROR: a share missing
    from the data can never pass.
    """
    report.instances = [_record(instance) for instance in instances]
    problems = [p for p in (instance.problem() for instance in instances) if p]
    if len(instances) == 1:
        data = read_run(paths, report, scenario, k6_problem="; ".join(problems) or None)
        return data
    data = RunData(problems=problems)
    data.problems.append(f"judging {len(instances)} instances as one run needs the exact merge (pytest_prodval.exact), "
                         "which this version does not have")
    return data


def _iso(epoch_s: float | None) -> str | None:
    return datetime.fromtimestamp(epoch_s, timezone.utc).isoformat(timespec="milliseconds") if epoch_s else None


def _record(instance: InstanceResult) -> InstanceRecord:
    """The report's view of one instance: segment, exit code, its own request count and rate."""
    requests = rate = None
    try:
        values = load_summary(instance.paths.summary)["metrics"].get("http_reqs", {}).get("values", {})
        requests = int(values["count"]) if "count" in values else None
        rate = float(values["rate"]) if "rate" in values else None
    except (ValueError, TypeError, AttributeError):
        pass
    return InstanceRecord(
        index=instance.index, segment=instance.segment, exit_code=instance.k6.exit_code,
        started_at=_iso(instance.started_at), ended_at=_iso(instance.ended_at), requests=requests, request_rate=rate,
        problem=instance.problem(),
        raw=instance.paths.raw.name if instance.paths.raw.exists() else None,
        summary=instance.paths.summary.name if instance.paths.summary.exists() else None,
    )
