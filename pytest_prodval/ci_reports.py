"""Where CI users look: the GitHub Actions job summary and GitLab's merge-request reports.

JUnit tells CI pass/fail; people read the job page. Three surfaces, each in the format its
consumer documents, every text passed through the session's redactor before it is written:

* GitHub Actions: when `GITHUB_STEP_SUMMARY` names a file, a Markdown summary is appended at
  session end (verdict, per scenario a criteria table, triage hints, where the artifacts are).
* GitLab `artifacts:reports:load_performance`: k6's `--summary-export` shape,
  `{"metrics": {name: {stat: value}}}`; GitLab's widget reads `http_reqs.rate`,
  `http_req_waiting["p(90)"]`/`["p(95)"]` and `checks.passes`/`fails`.
* GitLab `artifacts:reports:metrics`: OpenMetrics text, one `prodval_<criterion>` gauge per
  criterion (GitLab keeps `name value` per line, so labels stay free of `#` and spaces).

Per run: `<stem>_load_performance.json` and `<stem>_metrics.txt` beside the SLO report; per
session, in the results folder: `load-performance.json` and `metrics.txt` (GitLab's default
names; every run of the session in `metrics.txt`, the first scenario by id in the JSON, as
GitLab compares one load-performance report per job).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .artifacts import load_summary, run_stem, write_atomic
from .criteria import format_value
from .models import CriterionResult, SloReport, overall_verdict

if TYPE_CHECKING:
    from .secrets import Redactor
    from .session import ProdvalSession
    from .sharing import RunOutcome

SESSION_LOAD_PERFORMANCE = "load-performance.json"
SESSION_METRICS = "metrics.txt"
LOAD_PERFORMANCE_SUFFIX = "_load_performance.json"
METRICS_SUFFIX = "_metrics.txt"

_RUN_MARK = {"GO": "✅ GO", "NO-GO": "❌ NO-GO", "ERROR": "⚠️ ERROR"}
_MARK = {"pass": "✅ pass", "fail": "❌ fail", "error": "⚠️ error", "warn": "🟡 warn", "n/a": "➖ n/a"}
_SEVERITY = {"fail": 0, "error": 1, "warn": 2, "pass": 3, "n/a": 4}
_MD_SPECIAL = set("\\`*_[]<>|~#!&")
_UNIT_LABEL = {"%": "ratio", "": "count"}  # Prometheus spells a fraction "ratio"


# -- GitLab ------------------------------------------------------------------------------------


def load_performance(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """k6's `--summary-export` shape from a handleSummary `metrics` object (GitLab's load_performance)."""
    exported: dict[str, Any] = {}
    for name, entry in sorted(metrics.items()):
        if not isinstance(entry, Mapping):
            continue
        values = dict(entry.get("values", {}))
        if entry.get("type") == "rate" and "rate" in values:
            values.setdefault("value", values["rate"])  # --summary-export names a rate's ratio "value"
        exported[name] = values
    return {"metrics": exported}


def metrics_text(reports: list[SloReport]) -> str:
    """OpenMetrics text: one gauge per criterion (observed value; NaN when there was no data)."""
    families: dict[str, list[str]] = {}
    helps: dict[str, str] = {}
    for report in sorted(reports, key=lambda r: r.scenario_id):
        for c in report.criteria:
            if c.name.endswith("_vs_baseline"):
                continue  # the same observed value as the criterion itself
            family = f"prodval_{c.name}"
            helps.setdefault(family, f"pytest-prodval criterion {c.name}: observed {c.aggregation} ({c.expression})")
            labels = {"scenario": report.scenario_id, "env": report.env, "profile": c.profile,
                      "unit": _UNIT_LABEL.get(c.unit, c.unit)}
            text = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            families.setdefault(family, []).append(f"{family}{{{text}}} {_number(c.observed)}")
    lines: list[str] = []
    for family, samples in families.items():
        lines += [f"# TYPE {family} gauge", f"# HELP {family} {_help(helps[family])}", *samples]
    return "\n".join([*lines, "# EOF"]) + "\n"


def _number(value: float | None) -> str:
    """A sample value as both text formats spell it; no data is NaN (a gap), never 0."""
    if value is None or math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _label(value: str) -> str:
    """A label value GitLab's line parser keeps whole: no `#` (a comment there), no quotes, no spaces."""
    return "".join(ch if ch.isalnum() or ch in "_-.:/%" else "_" for ch in value)


def _help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", " ")


def write_run_reports(report: SloReport, folder: Path, stem: str, redactor: Redactor) -> dict[str, str]:
    """A run's GitLab files beside its SLO report; returns {artifact kind: file name}."""
    written = {"metrics": f"{stem}{METRICS_SUFFIX}"}
    report = SloReport.model_validate_json(redactor.redact(report.model_dump_json()))
    write_atomic(folder / written["metrics"], redactor.redact(metrics_text([report])))
    try:
        summary = load_summary(folder / f"{stem}_summary.json")
    except ValueError:
        return written  # no k6 summary (preflight failed, k6 crashed): nothing for the widget
    written["load_performance"] = f"{stem}{LOAD_PERFORMANCE_SUFFIX}"
    text = json.dumps(load_performance(summary["metrics"]), indent=2)
    write_atomic(folder / written["load_performance"], redactor.redact(text))
    return written


def write_session_reports(outcomes: list[RunOutcome], results_dir: Path, redactor: Redactor) -> None:
    """`metrics.txt` (every run) and `load-performance.json` (first scenario by id) in the results folder."""
    runs = sorted((o for o in outcomes if o.report is not None), key=lambda o: o.scenario_id)
    if not runs:
        return
    write_atomic(results_dir / SESSION_METRICS, redactor.redact(metrics_text([o.report for o in runs if o.report])))
    for outcome in runs:
        if not outcome.report_path:
            continue
        path = Path(outcome.report_path)
        try:
            summary = load_summary(path.parent / f"{run_stem(path.name)}_summary.json")
        except ValueError:
            continue
        text = json.dumps(load_performance(summary["metrics"]), indent=2)
        write_atomic(results_dir / SESSION_LOAD_PERFORMANCE, redactor.redact(text))
        return


# -- GitHub Actions ----------------------------------------------------------------------------


def md(text: object) -> str:
    """Text as a Markdown reader sees it literally (also inside a table cell)."""
    return "".join(f"\\{ch}" if ch in _MD_SPECIAL else ch for ch in str(text).replace("\n", " "))


def step_summary(outcomes: list[RunOutcome], *, base: Path, env: Mapping[str, str]) -> str:
    """The Markdown job summary: overall verdict, then per scenario criteria, triage and artifacts."""
    verdicts = [o.report.verdict if o.report else "ERROR" for o in outcomes]
    decision = overall_verdict(verdicts)
    lines = [f"## pytest-prodval: {_RUN_MARK[decision]}", ""]
    run_url = _run_url(env)
    if run_url:
        lines += [f"Artifacts of this workflow run: [{md(run_url)}]({run_url})", ""]
    for outcome in sorted(outcomes, key=lambda o: o.scenario_id):
        lines += _scenario_section(outcome, base)
    return "\n".join(lines).rstrip() + "\n"


def _run_url(env: Mapping[str, str]) -> str | None:
    parts = [env.get("GITHUB_SERVER_URL"), env.get("GITHUB_REPOSITORY"), env.get("GITHUB_RUN_ID")]
    if not all(parts):
        return None
    server, repository, run_id = parts
    return f"{server}/{repository}/actions/runs/{run_id}#artifacts"


def _scenario_section(outcome: RunOutcome, base: Path) -> list[str]:
    report = outcome.report
    verdict = report.verdict if report else "ERROR"
    lines = [f"### {md(outcome.scenario_id)}: {_RUN_MARK[verdict]}", ""]
    if report is not None:
        counts = {v: sum(1 for c in report.criteria if c.verdict == v) for v in _SEVERITY}
        tally = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
        lines += [f"env {md(report.env)} · profile {md(report.profile)} · k6 {md(report.k6_version or '?')} · "
                  f"run {md(report.timestamp)} · {len(report.criteria)} criteria: {tally}", ""]
        if not report.complete:
            lines += [f"**Run incomplete, it cannot gate a release:** {md(report.incomplete_reason or 'see its report')}", ""]
    if outcome.error:
        lines += [f"**{md(outcome.error)}**" + (f" — hint: {md(outcome.hint)}" if outcome.hint else ""), ""]
    if report is None:
        return lines
    lines += ["| criterion | verdict | observed | threshold | margin | unit | profile |",
              "|---|---|---|---|---|---|---|"]
    for c in sorted(report.criteria, key=lambda c: _SEVERITY[c.verdict]):
        lines.append("| " + " | ".join(md(cell) for cell in _cells(c)) + " |")
    lines.append("")
    hints = [c for c in report.criteria if c.verdict in ("fail", "error", "warn")]
    if hints:
        lines += ["**Triage**", ""]
        for c in hints:
            lines.append(f"- **{md(c.name)}** ({c.verdict}): {md(c.message)}" + (f" — hint: {md(c.hint)}" if c.hint else ""))
        lines.append("")
    lines += _artifact_lines(report, outcome, base)
    return lines


def _cells(c: CriterionResult) -> list[str]:
    from .html import margin

    threshold = f"{c.operator} {format_value(c.threshold, c.unit)}"
    return [c.name, _MARK[c.verdict], format_value(c.observed, c.unit), threshold, margin(c)[0], c.unit or "-", c.profile]


def _artifact_lines(report: SloReport, outcome: RunOutcome, base: Path) -> list[str]:
    if not outcome.report_path:
        return []
    folder = Path(outcome.report_path).parent
    names = {"SLO report": report.artifacts.get("slo_report") or Path(outcome.report_path).name,
             "HTML report": report.artifacts.get("html")}
    shown = []
    for title, name in names.items():
        if name and (folder / name).exists():
            path = _relative(folder / name, base)
            shown.append(f"{title}: [`{path}`](<{path}>)")
    return [f"Artifacts: {' · '.join(shown)}", ""] if shown else []


def _relative(path: Path, base: Path) -> str:
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return path.resolve().as_posix()


# -- the plugin --------------------------------------------------------------------------------


class CiReports:
    """Registered while pytest-prodval is active: writes the session's CI reports on the controller."""

    def __init__(self, session: ProdvalSession) -> None:
        self.session = session

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        """GitLab's session files always; the GitHub job summary when GITHUB_STEP_SUMMARY is set."""
        prodval = self.session
        if prodval.is_worker:
            return
        outcomes = prodval.runs.all()
        if not outcomes:
            return
        # Secrets out before any escaping: `pw\!` in Markdown is no longer the secret `pw!` a redactor knows.
        outcomes = [type(o).model_validate_json(prodval.redactor.redact(o.model_dump_json())) for o in outcomes]
        write_session_reports(outcomes, prodval.settings.results_dir, prodval.redactor)
        target = os.environ.get("GITHUB_STEP_SUMMARY")
        if target:
            base = Path(os.environ.get("GITHUB_WORKSPACE") or session.config.invocation_params.dir)
            text = prodval.redactor.redact(step_summary(outcomes, base=base, env=os.environ))
            with Path(target).open("a", encoding="utf-8") as handle:  # the job's other steps append too
                handle.write(text + "\n")
