"""The run-over-run baseline: what "worse than before" means, and what "before" is.

One previous run is a noisy reference: a gate against it fails on chance. The baseline is
the median, per criterion, of the last N GO runs of the same scenario and environment in a
results folder (or one explicit SLO report), and a criterion regresses only when it is worse
by more than max(tolerance × baseline, floor) — its `BaselineRule`, data in `_criteria.toml`.
The gate (`<criterion>_vs_baseline` items) and `prodval compare` use these same functions.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

from .artifacts import load_report, parse_stem
from .criteria import format_value
from .models import BaselineRule, CriterionResult, SloReport

DEFAULT_RULE = BaselineRule()
DEFAULT_RUNS = 5


@dataclass(frozen=True)
class Baseline:
    """A baseline report (observed = the reference value per criterion) and where it came from."""

    report: SloReport
    source: str  # for messages: "median of 5 GO runs (…)" or the report's file name
    runs: list[str] = field(default_factory=list)  # the SLO report files it was built from


def higher_is_worse(result: CriterionResult) -> bool:
    """Direction of a regression: up for `<`/`<=` criteria (latency, error rates), down for `>`/`>=`."""
    return result.operator not in (">", ">=")


def allowed_change(base: float, rule: BaselineRule) -> float:
    """How much worse than `base` is still no regression: max(tolerance × |base|, floor)."""
    return max(rule.tolerance * abs(base), rule.floor)


def limit(base: float, rule: BaselineRule, *, higher_worse: bool = True) -> float:
    """The worst value that is not a regression."""
    change = allowed_change(base, rule)
    return base + change if higher_worse else base - change


def regressed(current: float, base: float, rule: BaselineRule, *, higher_worse: bool = True) -> bool:
    """Worse than `base` by more than the rule allows."""
    bound = limit(base, rule, higher_worse=higher_worse)
    return current > bound if higher_worse else current < bound


def rule_text(rule: BaselineRule, unit: str) -> str:
    """The rule as people read it: `<= baseline x 1.1`, `<= baseline + max(10%, 0.10 pp)`."""
    if rule.floor == 0:
        return f"<= baseline x {1 + rule.tolerance:g}"
    floor = f"{rule.floor * 100:.2f} pp" if unit == "%" else format_value(rule.floor, unit)
    return f"<= baseline + max({rule.tolerance * 100:g}%, {floor})"


def explicit(path: Path) -> Baseline:
    """One SLO report as the baseline; ValueError naming the file if unreadable."""
    report = load_report(path)
    return Baseline(report=report, source=path.name, runs=[str(path)])


def go_runs(folder: Path, scenario_id: str, env: str, *, before: str | None = None,
            limit_runs: int = DEFAULT_RUNS) -> list[tuple[Path, SloReport]]:
    """The last `limit_runs` GO reports of a scenario and environment, newest first (older than `before`)."""
    candidates: list[tuple[str, Path]] = []
    for path in folder.glob(f"{scenario_id}_{env}_*_slo_report.json"):
        parsed = parse_stem(path.name)
        if parsed is not None and parsed[:2] == (scenario_id, env) and (before is None or parsed[2] < before):
            candidates.append((parsed[2], path))
    found: list[tuple[Path, SloReport]] = []
    for _, path in sorted(candidates, reverse=True):  # newest first; read only as many as needed
        try:
            report = load_report(path)
        except ValueError:
            continue  # an unreadable report is no GO run
        # Decide again rather than trust the stored verdict (as `prodval analyze` does).
        if report.scenario_id == scenario_id and report.env == env and report.decide() == "GO":
            found.append((path, report))
            if len(found) == limit_runs:
                break
    return found


def median_of(runs: list[tuple[Path, SloReport]]) -> Baseline | None:
    """Per criterion, the median observed value over `runs` (newest first); None without runs."""
    if not runs:
        return None
    newest = runs[0][1]
    names: dict[str, CriterionResult] = {}
    for _, report in runs:
        for c in report.criteria:
            names.setdefault(c.name, c)
    criteria = []
    for name, template in names.items():
        values = [c.observed for _, r in runs for c in r.criteria if c.name == name and c.observed is not None]
        observed = statistics.median(values) if values else None
        criteria.append(template.model_copy(update={"observed": observed, "samples": len(values)}))
    stamps = [report.timestamp for _, report in runs]
    span = stamps[0] if len(stamps) == 1 else f"{stamps[-1]} … {stamps[0]}"
    report = newest.model_copy(update={"criteria": criteria, "series": [], "verdict": "GO"})
    noun = "run" if len(runs) == 1 else "runs"
    return Baseline(report=report, source=f"median of {len(runs)} GO {noun} {span}", runs=[str(p) for p, _ in runs])


def from_folder(folder: Path, scenario_id: str, env: str, *, before: str | None = None,
                runs: int = DEFAULT_RUNS) -> Baseline | None:
    """The median baseline of the last `runs` GO runs in `folder`, or None when there is none."""
    return median_of(go_runs(folder, scenario_id, env, before=before, limit_runs=runs))
