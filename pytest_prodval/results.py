"""Step 6 of a run: what k6 left — its summary (exact aggregates) and its raw points.

Concurrency and the time series come from one streaming pass over the raw output
(`rawreader`); everything else from k6's own summary. Problems (no summary, a truncated
raw file, a crashed k6) are collected so the run is marked incomplete, never passed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .artifacts import RunPaths, load_summary
from .models import SloReport
from .scenarios import Scenario


@dataclass
class RunData:
    """The data a run's criteria are judged on."""

    metrics: dict[str, Any] | None = None
    t0_ms: float | None = None
    run_s: float | None = None  # k6's test run duration (summary state), e.g. when it stopped early
    problems: list[str] = field(default_factory=list)


def read_run(paths: RunPaths, report: SloReport, scenario: Scenario, *, k6_problem: str | None = None) -> RunData:
    """Read the summary and sweep the raw file into `report` (concurrency, series)."""
    from . import rawreader

    data = RunData(problems=[k6_problem] if k6_problem else [])
    try:
        summary = load_summary(paths.summary)
        data.metrics = summary["metrics"]
        data.t0_ms = float((summary.get("setup_data") or {}).get("t0") or 0) or None
        duration_ms = (summary.get("state") or {}).get("testRunDurationMs")
        data.run_s = float(duration_ms) / 1000 if isinstance(duration_ms, (int, float)) else None
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
