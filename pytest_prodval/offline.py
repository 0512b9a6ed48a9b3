"""Re-judging any k6 run (`--prodval-from-results`): no k6, no network.

The input is found by `sources`: our artifacts, a raw file from anywhere, a summary export
or a handleSummary JSON. Values come from the raw points through the exact engine (the
same path as a live run); with no raw file, from the summary, which has no per-sample
times: criteria over the steady window then have no data (an ERROR), unless the summary
holds their `{phase:steady}` submetrics (the game script's summaries do).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .artifacts import load_report, load_summary
from .models import SloReport
from .scenarios import Scenario
from .sources import find_run, summary_metrics

if TYPE_CHECKING:
    from .session import ProdvalSession


def reevaluate(session: ProdvalSession, scenario: Scenario, path: Path) -> tuple[SloReport, Path]:
    """The scenario's latest run under `path`, judged again by today's criteria; ValueError if unusable."""
    from .results import RunData, from_raw, setup_t0
    from .server_criteria import bind

    named = session.settings.from_scenario
    found = find_run(path, scenario.id, named=named if named in (scenario.id, scenario.marker) else None)
    if found is None:
        raise ValueError(f"no results for {scenario.id} in {path} (name files <SCENARIO_ID>_<env>_<timestamp>..., "
                         "or give --prodval-scenario NAME)")
    stored = load_report(found.report) if found.report else None
    summary = load_summary(found.summary) if found.summary else None
    folder = (found.raws or [found.summary or found.report or path])[0].parent
    stem = f"{scenario.id}_{found.env}_{found.timestamp}" if found.timestamp else f"{scenario.id}_offline"
    report = stored.model_copy() if stored else SloReport(
        scenario_id=scenario.id, marker=scenario.marker, env=found.env, profile=scenario.profile,
        timestamp=found.timestamp, steady_window_s=scenario.steady_window_s(),
    )
    criteria = session.criteria(scenario)
    if found.raws:  # the stored report's concurrency and series stand; a foreign file gets its own
        data = from_raw(found.raws, summary, report, scenario, criteria, sweep=stored is None)
        if data.problems:
            report.complete, report.incomplete_reason = False, "; ".join(data.problems)
    else:
        data = RunData(metrics=summary_metrics(summary) if summary else None, summary=summary,
                       t0_ms=setup_t0(summary))
        data.seen = {key.split("{", 1)[0] for key in (data.metrics or {})}
    report.source_files = [str(p) for p in (*found.raws, *(p for p in (found.summary,) if p))]
    server = bind(session.load_server_metrics(found.server_metrics) if found.server_metrics else None, data.t0_ms,
                  report.steady_window_s)
    report.profile = session.settings.profile or scenario.profile
    session.judge(report, scenario, metrics=data.metrics, concurrency=report.concurrency, server=server, run=data)
    report_path = found.report or folder / f"{stem}_slo_report.json"
    return report, report_path
