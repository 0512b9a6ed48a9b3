"""Terminal summary: per scenario, every criterion's value, and the overall GO / NO-GO."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .criteria import format_value
from .models import overall_verdict

if TYPE_CHECKING:
    from .sharing import RunOutcome

_MARK = {"pass": "PASS", "fail": "FAIL", "error": "ERROR", "warn": "WARN", "n/a": "N/A"}


def write_summary(reporter: Any, outcomes: list[RunOutcome]) -> None:
    """Write the prodval section of the terminal summary."""
    if not outcomes:
        return
    reporter.section("prodval: production validation", sep="=", bold=True)
    for outcome in sorted(outcomes, key=lambda o: o.scenario_id):
        report = outcome.report
        verdict = report.verdict if report else "ERROR"
        head = f"{outcome.scenario_id}: {verdict}"
        if report is not None:
            head += f"  (env {report.env}, profile {report.profile}, k6 {report.k6_version or '?'}, run {report.timestamp})"
        reporter.write_line(head, bold=True, red=verdict != "GO", green=verdict == "GO")
        if outcome.error:
            reporter.write_line(f"    {outcome.error}", red=True)
        if report is None:
            continue
        if len(report.instances) > 1:
            reporter.write_line(f"    load generators: {report.instances_line()}")
        width = max((len(c.name) for c in report.criteria), default=10)
        for c in report.criteria:
            value = format_value(c.observed, c.unit)
            line = f"    {_MARK[c.verdict]:<5} {c.name:<{width}}  {value:>12}  {c.expression:<16} {c.samples:>9,} samples"
            reporter.write_line(line, red=c.verdict in ("fail", "error"), yellow=c.verdict == "warn")
        if report.artifacts.get("slo_report"):
            reporter.write_line(f"    report: {report.artifacts['slo_report']}" + (
                f", html: {report.artifacts['html']}" if report.artifacts.get("html") else ""))
    decision = overall_verdict([o.report.verdict if o.report else "ERROR" for o in outcomes])
    reporter.write_line(f"prodval overall: {decision}", bold=True, red=decision != "GO", green=decision == "GO")


def write_folder_decision(reporter: Any, results_dir: Path, env: str | None) -> None:
    """The single go/no-go over the latest run of every scenario in the results folder (plan §6)."""
    from .analyze import analyze_folder, format_table
    from .artifacts import write_atomic

    decision = analyze_folder(results_dir, env=env)
    write_atomic(results_dir / "go_no_go.json", decision.model_dump_json(indent=2))
    reporter.write_line(f"prodval go/no-go over {results_dir} (latest run of each scenario, env {env}):", bold=True)
    for line in format_table(decision):
        reporter.write_line(f"    {line}")
