"""Re-judging a previous run (`--prodval-from-results`): no k6, no network."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .artifacts import find_runs, load_report, load_summary, parse_stem, run_stem
from .models import SloReport
from .scenarios import Scenario

if TYPE_CHECKING:
    from .session import ProdvalSession


def reevaluate(session: ProdvalSession, scenario: Scenario, path: Path) -> tuple[SloReport, Path]:
    """The scenario's latest run under `path`, judged again by today's criteria; ValueError if unusable.

    `path` is an SLO report, a summary, a raw file or a folder. Values come from the run's
    k6 summary; concurrency from its SLO report, else from its raw file; server-side
    values from its `_server_metrics.json` when the run scraped the target.
    """
    found = find_runs(path).get(scenario.id)
    if found is None:
        raise ValueError(f"no results for {scenario.id} in {path}")
    stem = run_stem(found.name)
    folder = found.parent
    report_path = folder / f"{stem}_slo_report.json"
    stored = load_report(report_path) if report_path.exists() else None
    summary = load_summary(folder / f"{stem}_summary.json")
    parsed = parse_stem(stem)
    report = stored.model_copy() if stored else SloReport(
        scenario_id=scenario.id, marker=scenario.marker, env=parsed[1] if parsed else "offline",
        profile=scenario.profile, timestamp=parsed[2] if parsed else "", steady_window_s=scenario.steady_window_s(),
    )
    raw = folder / f"{stem}.json.gz"
    if stored is None and raw.exists():
        from .rawreader import read_raw

        t0 = float((summary.get("setup_data") or {}).get("t0") or 0)
        digest = read_raw(raw, t0_ms=t0, steady=report.steady_window_s,
                          targets={"games": scenario.targets.games, "players": scenario.targets.players})
        report.concurrency = digest.concurrency
    from .server_criteria import bind

    t0_ms = float((summary.get("setup_data") or {}).get("t0") or 0) or None
    server = bind(session.load_server_metrics(folder / f"{stem}_server_metrics.json"), t0_ms, report.steady_window_s)
    report.profile = session.settings.profile or scenario.profile
    session.judge(report, scenario, metrics=summary["metrics"], concurrency=report.concurrency, server=server)
    return report, report_path
