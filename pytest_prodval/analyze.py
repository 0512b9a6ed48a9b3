"""`prodval analyze`: one go/no-go over the latest SLO report of every scenario in a results folder.

The plan's optional aggregation step (§6), without Node: reads only `*_slo_report.json`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pydantic import BaseModel, Field

from .criteria import format_value
from .models import RunVerdict, SloReport, overall_verdict
from .artifacts import load_report, write_atomic

EXIT_CODES: dict[str, int] = {"GO": 0, "NO-GO": 1, "ERROR": 2}


class FailedCriterion(BaseModel):
    """A gate criterion that failed or errored in a scenario's latest run."""

    name: str
    verdict: str
    observed: float | None
    threshold: float
    expression: str
    unit: str
    message: str = ""
    hint: str | None = None


class ScenarioVerdict(BaseModel):
    """The latest run of one scenario."""

    scenario_id: str
    env: str
    profile: str
    timestamp: str
    verdict: RunVerdict
    complete: bool = True
    incomplete_reason: str | None = None
    failed: list[FailedCriterion] = Field(default_factory=list)
    report_file: str
    instances: str = ""  # how many k6 instances ran, their segments and exit codes (SloReport.instances_line)
    instance_count: int = 1


class GoNoGo(BaseModel):
    """The overall decision: GO only when every latest report is GO and there is at least one."""

    overall: RunVerdict
    scenarios: list[ScenarioVerdict] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)  # unreadable files, nothing found

    @property
    def exit_code(self) -> int:
        """0 on GO, 1 on NO-GO, 2 on ERROR."""
        return EXIT_CODES[self.overall]


def analyze_folder(path: Path, profile: str | None = None, env: str | None = None) -> GoNoGo:
    """The go/no-go over the latest report per scenario id in `path` (optionally of one profile / env)."""
    if not path.is_dir():
        return GoNoGo(overall="ERROR", problems=[f"{path}: no such results folder"])
    problems: list[str] = []
    latest: dict[str, tuple[tuple[str, bool, float], SloReport, Path]] = {}
    for file in sorted(path.glob("*_slo_report.json")):
        try:
            report = load_report(file)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        if (profile is not None and report.profile != profile) or (env is not None and report.env != env):
            continue
        # The WebSocket companion's report is a subset of the same run: the main report wins a tie.
        key = (report.timestamp, not file.name.startswith("websocket_"), file.stat().st_mtime)
        if report.scenario_id not in latest or key > latest[report.scenario_id][0]:
            latest[report.scenario_id] = (key, report, file)
    scenarios = [_scenario(report, file) for _, report, file in (latest[k] for k in sorted(latest))]
    if not scenarios:
        where = f" with profile {profile!r}" if profile else ""
        problems.append(f"{path}: no *_slo_report.json{where} found")
    return GoNoGo(overall=_overall(scenarios, problems), scenarios=scenarios, problems=problems)


def _scenario(report: SloReport, file: Path) -> ScenarioVerdict:
    failed = [
        FailedCriterion(name=c.name, verdict=c.verdict, observed=c.observed, threshold=c.threshold,
                        expression=c.expression, unit=c.unit, message=c.message, hint=c.hint)
        for c in report.criteria if c.level == "gate" and c.verdict in ("fail", "error")
    ]
    # Decide again rather than trust the stored field: an edited or old file cannot claim GO.
    return ScenarioVerdict(scenario_id=report.scenario_id, env=report.env, profile=report.profile,
                           timestamp=report.timestamp, verdict=report.decide(), complete=report.complete,
                           incomplete_reason=report.incomplete_reason,
                           failed=failed, report_file=file.name, instances=report.instances_line(),
                           instance_count=max(1, len(report.instances)))


def _overall(scenarios: list[ScenarioVerdict], problems: list[str]) -> RunVerdict:
    return "ERROR" if problems else overall_verdict([s.verdict for s in scenarios])


def format_table(result: GoNoGo) -> list[str]:
    """The decision as terminal lines: one row per scenario, failed criteria under it, the overall last."""
    header = ("scenario", "env", "profile", "run", "verdict")
    rows = [(s.scenario_id, s.env, s.profile, s.timestamp, s.verdict) for s in result.scenarios]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip(),
             "  ".join("-" * w for w in widths)]
    for s, row in zip(result.scenarios, rows, strict=True):
        lines.append("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
        if s.instance_count > 1:
            lines.append(f"    load generators: {s.instances}")
        if not s.complete:
            # NO-GO although incomplete: k6 stopped a doomed run, the failure that stopped it is certain
            lead = "run stopped early" if s.verdict == "NO-GO" else "run incomplete, it cannot gate a release"
            lines.append(f"    {lead}: {s.incomplete_reason or 'see its report'}")
            errored = [c.name for c in s.failed if c.verdict == "error"]
            if errored:  # the reason above is theirs: name them, do not repeat it per criterion
                lines.append(f"    ERROR {len(errored)} criteria: {', '.join(errored)}")
        for c in s.failed:
            if not s.complete and c.verdict == "error":
                continue
            observed = format_value(c.observed, c.unit)
            lines.append(f"    {c.verdict.upper():<5} {c.name}: {observed} vs {c.expression}"
                         + (f" ({c.message})" if c.verdict == "error" and c.message else ""))
    lines.extend(f"problem: {p}" for p in result.problems)
    lines.append(f"overall: {result.overall}")
    return lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `analyze` subcommand's arguments."""
    parser.add_argument("results_dir", nargs="?", type=Path, default=Path("tests/load/results"),
                        help="Folder with *_slo_report.json files (default: tests/load/results)")
    parser.add_argument("--json", dest="json_out", type=Path, metavar="OUT", help="Also write the decision as JSON to OUT")
    parser.add_argument("--profile", metavar="P", help="Only reports judged with SLO profile P")


def run(args: argparse.Namespace) -> int:
    """`prodval analyze`: print the table, write JSON if asked; exit 0 GO, 1 NO-GO, 2 ERROR."""
    result = analyze_folder(args.results_dir, args.profile)
    for line in format_table(result):
        print(line)
    if args.json_out is not None:
        data = result.model_dump(mode="json", exclude={"problems"} if not result.problems else None)
        write_atomic(args.json_out, json.dumps(data, indent=2) + "\n")
    return result.exit_code
