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
    from .results import RunData, coverage_buckets, fill_from_summary, measure_raw, metric_keys, percentiles_of
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
    setup_data = (summary or {}).get("setup_data")
    t0 = float(setup_data.get("t0") or 0) or None if isinstance(setup_data, dict) else None
    if found.raws:
        data, t0 = measure_raw(found.raws, metric_keys(criteria), t0_ms=t0, steady_s=report.steady_window_s,
                               buckets=coverage_buckets(scenario, criteria), pcts=percentiles_of(criteria))
        if data.problems:
            report.complete, report.incomplete_reason = False, "; ".join(data.problems)
        if stored is None and t0 is not None and not data.problems:
            from .rawreader import read_raw

            digest = read_raw(found.raws, t0_ms=t0, steady=report.steady_window_s,
                              targets={"games": scenario.targets.games, "players": scenario.targets.players})
            report.concurrency = digest.concurrency
            report.series = digest.series
    else:
        data = RunData(metrics=summary_metrics(summary) if summary else None)
        data.seen = {key.split("{", 1)[0] for key in (data.metrics or {})}
    data.summary = summary
    data.t0_ms = t0
    if found.raws:
        fill_from_summary(data, summary)
    report.source_files = [str(p) for p in (*found.raws, *(p for p in (found.summary,) if p))]
    server = bind(session.load_server_metrics(found.server_metrics) if found.server_metrics else None, t0,
                  report.steady_window_s)
    report.profile = session.settings.profile or scenario.profile
    session.judge(report, scenario, metrics=data.metrics, concurrency=report.concurrency, server=server, run=data)
    report_path = found.report or folder / f"{stem}_slo_report.json"
    return report, report_path
