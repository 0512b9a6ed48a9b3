"""Step 6 of a run: what k6 left, read exactly.

Every k6 value a criterion reads is computed by the exact engine (`exact`) from the raw
points, in the plugin's steady window by each sample's timestamp: the same path for the
game script, any user's script, a file from anywhere and the N files of a segmented run.
k6's summary is read for what only it knows (its own threshold verdicts, the game
script's `setup_data.t0`), never for the values judged. Concurrency and the time series
come from the streaming sweep (`rawreader`). Problems (a crashed k6, a truncated or
corrupt raw file) are collected so the run is marked incomplete, never passed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .artifacts import RunPaths, load_summary
from .models import InstanceRecord, SloReport
from .scenarios import Criterion, Scenario

if TYPE_CHECKING:
    from .executors import InstanceResult


@dataclass
class RunData:
    """The data a run's criteria are judged on."""

    metrics: dict[str, Any] | None = None
    summary: dict[str, Any] | None = None  # k6's (its threshold verdicts), when it wrote one
    t0_ms: float | None = None
    buckets: dict[str, list[dict[str, float] | None]] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)  # every metric the run emitted
    from_summary: list[str] = field(default_factory=list)  # keys taken from k6's summary (no raw points)
    run_s: float | None = None  # k6's test run duration (summary state), e.g. when it stopped early
    problems: list[str] = field(default_factory=list)


def metric_keys(criteria: Sequence[Criterion]) -> list[str]:
    """Every (sub)metric the criteria and their triage hints read, as summary keys."""
    from .k6run import k6_thresholds

    keys = list(k6_thresholds(list(criteria)))
    keys += [c.per.k6_name for c in criteria if c.per is not None and c.source == "k6"]
    keys += [c.metric.k6_name for c in criteria if c.k6_threshold is not None]
    return keys


def measure_raw(raws: Sequence[Path], keys: Sequence[str], *, t0_ms: float | None,
                steady_s: tuple[float, float] | None, buckets: dict[str, float] | None = None,
                pcts: Sequence[float] = (50, 90, 95, 99)) -> tuple[RunData, float | None]:
    """The exact values of `keys` over raw files (one run; several = its instances).

    The window counts from the wrapper's `prodval_run_start` point, else from `t0_ms` (the
    game script's setup time in an older run's summary), else from the earliest sample.
    """
    from . import exact

    data = RunData()
    marker, earliest = exact.run_start(raws)
    start = marker if marker is not None else t0_ms if t0_ms is not None else earliest
    window = None if steady_s is None or start is None else (start + steady_s[0] * 1000, start + steady_s[1] * 1000)
    try:
        measured = exact.measure(raws, exact.queries_for(keys, buckets), window=window, pcts=pcts)
    except exact.RawFileError as exc:
        data.problems.append(str(exc))
        return data, start
    data.metrics, data.buckets = measured.metrics, measured.buckets
    data.seen = measured.defined
    return data, start


def fill_from_summary(data: RunData, summary: dict[str, Any] | None) -> None:
    """Keys whose metric has no raw points at all, from k6's summary, which is exact for them.

    A run may write raw points only for what needs them (concurrency deltas, the time
    series, the windowed metrics) and leave whole-run aggregates to the summary; a summary
    also holds the `{phase:steady}` submetrics of the game script's tagged samples. A
    metric the raw file has is never taken from the summary.
    """
    from .sources import summary_metrics

    if not summary or data.metrics is None:
        return
    for key, entry in summary_metrics(summary).items():
        name = key.split("{", 1)[0]
        if key not in data.metrics and name not in data.seen:
            data.metrics[key] = entry
            data.from_summary.append(key)
    if data.seen:
        data.seen |= {k.split("{", 1)[0] for k in data.from_summary}


def percentiles_of(criteria: Sequence[Criterion]) -> list[float]:
    """k6's default percentiles plus every p(N) a criterion names."""
    pcts = {50.0, 90.0, 95.0, 99.0}
    pcts.update(c.expression.percentile for c in criteria if c.expression.percentile is not None)
    return sorted(pcts)


def setup_t0(summary: dict[str, Any] | None) -> float | None:
    """The game script's setup time in its summary (older runs have no run-start point)."""
    setup_data = (summary or {}).get("setup_data")
    return float(setup_data.get("t0") or 0) or None if isinstance(setup_data, dict) else None


def from_raw(raws: Sequence[Path], summary: dict[str, Any] | None, report: SloReport, scenario: Scenario,
             criteria: Sequence[Criterion], *, sweep: bool, split_to: Path | None = None) -> RunData:
    """Exact metrics of raw file(s) plus what only k6's summary knows; with `sweep`, also the
    concurrency and time series into `report` (one sweep over every file, on one time axis)."""
    from . import rawreader

    data, t0 = measure_raw(raws, metric_keys(criteria), t0_ms=setup_t0(summary), steady_s=report.steady_window_s,
                           buckets=coverage_buckets(scenario, criteria), pcts=percentiles_of(criteria))
    data.summary, data.t0_ms = summary, t0
    duration_ms = ((summary or {}).get("state") or {}).get("testRunDurationMs")
    data.run_s = float(duration_ms) / 1000 if isinstance(duration_ms, (int, float)) else None
    fill_from_summary(data, summary)
    if sweep and t0 is not None and not data.problems:
        digest = rawreader.read_raw(
            raws, t0_ms=t0, steady=report.steady_window_s,
            targets={"games": scenario.targets.games, "players": scenario.targets.players}, split_to=split_to,
        )
        report.concurrency = digest.concurrency
        report.series = digest.series
        if digest.truncated:
            names = raws[0].name if len(raws) == 1 else f"of {len(raws)} instances"
            data.problems.append(f"raw output {names} is truncated: {digest.truncated_reason}")
    return data


def read_run(paths: RunPaths, report: SloReport, scenario: Scenario, criteria: Sequence[Criterion], *,
             k6_problem: str | None = None, raws: Sequence[Path] | None = None) -> RunData:
    """Judge-ready data of a live run: exact metrics from its raw file(s), concurrency and series into `report`."""
    raws = list(raws) if raws is not None else [paths.raw]
    try:
        summary: dict[str, Any] | None = load_summary(paths.summary)
    except ValueError:
        summary = None  # the values come from the raw points; only k6's own verdicts are missing
    missing = [p for p in raws if not p.exists()]
    if missing:
        data = RunData(summary=summary, problems=[f"k6 wrote no raw output {p.name}" for p in missing])
    else:
        data = from_raw(raws, summary, report, scenario, criteria, sweep=k6_problem is None,
                        split_to=paths.ws_raw if scenario.websocket_companion.enabled else None)
    if k6_problem:
        data.problems.insert(0, k6_problem)
    return data


def coverage_buckets(scenario: Scenario, criteria: Sequence[Criterion]) -> dict[str, float]:
    """Keys measured per time bucket for the coverage rules (REFERENCE.md §1), bucket in ms."""
    return {c.metric.k6_name: c.coverage.bucket_s * 1000 for c in criteria
            if c.coverage is not None and c.source == "k6"}


def read_instances(instances: list[InstanceResult], paths: RunPaths, report: SloReport, scenario: Scenario,
                   criteria: Sequence[Criterion]) -> RunData:
    """The one judging input of a run, however many k6 instances it had.

    Every instance is recorded in `report.instances`. An instance that was lost, crashed or
    exited with an unexpected code (99 is normal: its own thresholds on its own share) makes
    the run incomplete, naming the instance, so every criterion is an ERROR: a share missing
    from the data can never pass.
    """
    report.instances = [_record(instance) for instance in instances]
    _start_offsets(instances, report.instances)
    problems = [p for p in (instance.problem() or _disagreement(instance) for instance in instances) if p]
    return read_run(paths, report, scenario, criteria, k6_problem="; ".join(problems) or None,
                    raws=[instance.paths.raw for instance in instances])


AGREEMENT_KEYS = ("http_reqs", "iterations")  # counts an instance's raw output and its summary must share


def _disagreement(instance: InstanceResult) -> str | None:
    """Why an instance's raw output and its own summary disagree (a file cut or mixed up), or None.

    k6 writes both from the same samples, so their counts are equal; one pass over the
    instance's raw file for two counters (a few ms per MB). A raw file the engine cannot read
    is reported by the merged pass; an instance without a summary by its exit (or not at all:
    a lost summary alone does not change the raw points the run is judged on).
    """
    from . import exact

    paths = instance.paths
    try:
        summary = load_summary(paths.summary)["metrics"]
        raw = exact.measure([paths.raw], exact.queries_for(AGREEMENT_KEYS), window=None, pcts=(50,)).metrics
    except (ValueError, OSError):
        return None
    for key in AGREEMENT_KEYS:
        entry = summary.get(key) or {}
        in_summary = (entry.get("values", entry) or {}).get("count")
        in_raw = ((raw.get(key) or {}).get("values") or {}).get("count")
        if (in_summary or 0) != (in_raw or 0):
            return (f"{instance.name}: its raw output and its summary disagree: {key} {in_raw or 0:g} in "
                    f"{paths.raw.name}, {in_summary or 0:g} in {paths.summary.name}")
    return None


def _start_offsets(instances: list[InstanceResult], records: list[InstanceRecord]) -> None:
    """Each instance's run-start point after the earliest one's (ms), from the head of its raw file.

    Segments here share one clock, so the spread is the resume latency; runner pods on several
    nodes add their clock skew to it, which the merged time axis (window, concurrency) inherits.
    """
    from . import exact

    if len(instances) < 2:
        return
    starts: list[float | None] = []
    for instance in instances:
        try:
            starts.append(exact.run_start([instance.paths.raw])[0] if instance.paths.raw.exists() else None)
        except (OSError, ValueError):
            starts.append(None)
    known = [t for t in starts if t is not None]
    for record, start in zip(records, starts):
        record.start_offset_ms = round(start - min(known), 3) if start is not None else None


def _iso(epoch_s: float | None) -> str | None:
    return datetime.fromtimestamp(epoch_s, timezone.utc).isoformat(timespec="milliseconds") if epoch_s else None


def _record(instance: InstanceResult) -> InstanceRecord:
    """The report's view of one instance: segment, exit code, its own request count and rate."""
    requests = rate = None
    try:
        entry = load_summary(instance.paths.summary)["metrics"].get("http_reqs", {})
        values = entry.get("values", entry)  # handleSummary data nests them; a --summary-export does not
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
        log=instance.paths.log.name if instance.paths.log.exists() else None,
    )
