"""`prodval compare A B`: two runs side by side, per criterion, and whether B regressed.

A and B are SLO reports or folders (the latest run of each scenario in them); `--baseline B`
compares B with the median of the last N GO runs of its scenario and env before it
(baseline.py, the same rule the `_vs_baseline` gate items use: worse by more than
max(tolerance × baseline, floor), the criterion's `baseline` rule stored in B's report).
Prints a table, writes `<B>_compare.json` and `<B>_compare.md` beside B's report.
Exit code 0: no regression; 1: a gate criterion regressed; 2: bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pydantic import BaseModel, Field

from .artifacts import load_report, run_stem, write_atomic
from .baseline import DEFAULT_RULE, DEFAULT_RUNS, explicit, from_folder, regressed, rule_text
from .criteria import BASELINE_SUFFIX, comparable, format_value
from .models import CriterionResult, SloReport


class CompareInputError(Exception):
    """A path or option `prodval compare` cannot use (exit code 2)."""


class Row(BaseModel):
    """One criterion in both runs."""

    criterion: str
    unit: str
    a: float | None
    b: float | None
    delta: float | None  # b - a
    comparable: bool  # a latency or lower-is-better rate (the kinds the gate compares)
    regression: bool = False
    level: str = "gate"
    rule: str | None = None


class Comparison(BaseModel):
    """One scenario: A (a run or a median baseline) against B."""

    scenario_id: str
    env: str
    a: str  # what A is: a file, or "median of 5 GO runs …"
    b: str
    rows: list[Row] = Field(default_factory=list)

    @property
    def regressions(self) -> list[Row]:
        """Gate criteria that got worse by more than their rule allows."""
        return [r for r in self.rows if r.regression and r.level == "gate"]


def compare_reports(a: SloReport, b: SloReport, *, a_name: str, b_name: str) -> Comparison:
    """Every criterion of B (then those only A has), with the delta and the regression verdict."""
    by_a, by_b = {c.name: c for c in a.criteria}, {c.name: c for c in b.criteria}
    names = [*by_b, *(name for name in by_a if name not in by_b)]
    rows = [_row(name, by_a.get(name), by_b.get(name)) for name in names if not name.endswith(BASELINE_SUFFIX)]
    return Comparison(scenario_id=b.scenario_id, env=b.env, a=a_name, b=b_name, rows=rows)


def _row(name: str, a: CriterionResult | None, b: CriterionResult | None) -> Row:
    shown = b or a
    assert shown is not None
    a_value = a.observed if a else None
    b_value = b.observed if b else None
    delta = b_value - a_value if a_value is not None and b_value is not None else None
    row = Row(criterion=name, unit=shown.unit, a=a_value, b=b_value, delta=delta, level=shown.level,
              comparable=comparable(shown))
    if row.comparable and a_value is not None and b_value is not None:
        rule = shown.baseline_rule or (a.baseline_rule if a else None) or DEFAULT_RULE
        row.rule = rule_text(rule, shown.unit)
        row.regression = regressed(b_value, a_value, rule)
    return row


def delta_text(delta: float | None, unit: str) -> str:
    """A signed change in the criterion's unit (percentage points for rates)."""
    if delta is None:
        return "n/a"
    sign = "+" if delta > 0 else "−" if delta < 0 else "±"
    amount = f"{abs(delta) * 100:.2f} pp" if unit == "%" else format_value(abs(delta), unit)
    return f"{sign}{amount}"


def _verdict(row: Row) -> str:
    if not row.comparable:
        return "-"  # counts and concurrency: shown, judged by their absolute criterion only
    if row.a is None or row.b is None:
        return "no data"
    if row.regression:
        return "REGRESSION" if row.level == "gate" else "worse (warn)"
    return "no"


def table(comparison: Comparison) -> list[list[str]]:
    """Header and rows as text: criterion, A, B, delta, regression?"""
    rows = [["criterion", "A", "B", "delta", "regression?"]]
    for r in comparison.rows:
        rows.append([r.criterion, format_value(r.a, r.unit), format_value(r.b, r.unit), delta_text(r.delta, r.unit),
                     _verdict(r)])
    return rows


def text_lines(comparison: Comparison) -> list[str]:
    """The side-by-side table for the terminal."""
    rows = table(comparison)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [f"{comparison.scenario_id} ({comparison.env})", f"  A: {comparison.a}", f"  B: {comparison.b}"]
    for i, row in enumerate(rows):
        lines.append("  " + "  ".join(cell.ljust(w) if j == 0 else cell.rjust(w) for j, (cell, w) in
                                      enumerate(zip(row, widths, strict=True))).rstrip())
        if i == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    found = comparison.regressions
    lines.append(f"  {len(found)} regression(s)" + (f": {', '.join(r.criterion for r in found)}" if found else ""))
    return lines


def markdown(comparison: Comparison) -> str:
    """The same table as Markdown (for a merge request comment or a job summary)."""
    from .ci_reports import md

    rows = table(comparison)
    lines = [f"### {md(comparison.scenario_id)} ({md(comparison.env)}): A vs B", "",
             f"- A: {md(comparison.a)}", f"- B: {md(comparison.b)}", "",
             "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(md(cell) for cell in row) + " |" for row in rows[1:]]
    found = comparison.regressions
    lines += ["", f"**{len(found)} regression(s)**" + (f": {', '.join(md(r.criterion) for r in found)}" if found else "")]
    return "\n".join(lines) + "\n"


def latest_reports(path: Path) -> dict[str, tuple[Path, SloReport]]:
    """The SLO report given, or the latest main report of each scenario in a folder."""
    if path.is_file():
        try:
            return {(report := load_report(path)).scenario_id: (path, report)}
        except ValueError as exc:
            raise CompareInputError(str(exc)) from None
    if not path.is_dir():
        raise CompareInputError(f"{path}: no such SLO report or run folder")
    latest: dict[str, tuple[Path, SloReport]] = {}
    for file in sorted(path.glob("*_slo_report.json")):
        if file.name.startswith("websocket_"):
            continue  # the companion's subset of the same run
        try:
            report = load_report(file)
        except ValueError as exc:
            raise CompareInputError(str(exc)) from None
        if report.scenario_id not in latest or report.timestamp >= latest[report.scenario_id][1].timestamp:
            latest[report.scenario_id] = (file, report)
    if not latest:
        raise CompareInputError(f"{path}: no *_slo_report.json in this folder")
    return latest


def comparisons(a: Path | None, b: Path, *, runs: int = DEFAULT_RUNS) -> list[tuple[Path, Comparison]]:
    """(B's report file, comparison) per scenario in both; `a` None: B against its median baseline."""
    a_runs = latest_reports(a) if a is not None else {}  # A first: its problem is reported first
    b_runs = latest_reports(b)
    result = []
    if a is None:
        for scenario_id, (b_file, b_report) in sorted(b_runs.items()):
            baseline = from_folder(b_file.parent, scenario_id, b_report.env, before=b_report.timestamp, runs=runs)
            if baseline is None:
                raise CompareInputError(f"{b_file.parent}: no GO run of {scenario_id} (env {b_report.env}) before "
                                        f"{b_report.timestamp} to take a baseline from")
            result.append((b_file, compare_reports(baseline.report, b_report, a_name=baseline.source, b_name=b_file.name)))
        return result
    common = sorted(set(a_runs) & set(b_runs))
    if not common:
        raise CompareInputError(f"{a} and {b} have no scenario in common (A: {', '.join(sorted(a_runs))}; "
                                f"B: {', '.join(sorted(b_runs))})")
    for scenario_id in common:
        (a_file, _), (b_file, b_report) = a_runs[scenario_id], b_runs[scenario_id]
        base = explicit(a_file)
        result.append((b_file, compare_reports(base.report, b_report, a_name=a_file.name, b_name=b_file.name)))
    return result


def write_diff(b_file: Path, comparison: Comparison) -> tuple[Path, Path]:
    """`<B stem>_compare.json` and `.md` beside B's report."""
    stem = run_stem(b_file.name)
    json_path, md_path = b_file.parent / f"{stem}_compare.json", b_file.parent / f"{stem}_compare.md"
    data = comparison.model_dump(mode="json")
    data["regressions"] = [r.criterion for r in comparison.regressions]
    write_atomic(json_path, json.dumps(data, indent=2) + "\n")
    write_atomic(md_path, markdown(comparison))
    return json_path, md_path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `compare` subcommand's arguments."""
    parser.add_argument("paths", nargs="+", type=Path, metavar="RUN",
                        help="A B: two SLO reports or run folders; with --baseline only B")
    parser.add_argument("--baseline", action="store_true",
                        help="Compare B with the median of the last N GO runs of its scenario and env before it")
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS, metavar="N",
                        help=f"How many GO runs the baseline median takes (default {DEFAULT_RUNS})")


def run(args: argparse.Namespace) -> int:
    """`prodval compare`: print, write the diff beside B; exit 0 no regression, 1 regression, 2 bad input."""
    try:
        if args.runs < 1:
            raise CompareInputError(f"--runs {args.runs}: expected a whole number >= 1")
        expected = 1 if args.baseline else 2
        if len(args.paths) != expected:
            raise CompareInputError("expected A B (two SLO reports or run folders), or --baseline B"
                                    f"; got {len(args.paths)} path(s)")
        a, b = (None, args.paths[0]) if args.baseline else (args.paths[0], args.paths[1])
        found = comparisons(a, b, runs=args.runs)
    except CompareInputError as exc:
        print(f"prodval compare: {exc}", file=sys.stderr)
        return 2
    regression = False
    for b_file, comparison in found:
        for line in text_lines(comparison):
            print(line)
        json_path, md_path = write_diff(b_file, comparison)
        print(f"  written: {json_path}, {md_path}")
        regression = regression or bool(comparison.regressions)
    return 1 if regression else 0
