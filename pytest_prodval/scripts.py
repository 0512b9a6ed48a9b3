"""Any user's k6 script: what the plugin reads from it and how it runs it unchanged.

* `inspect` runs `k6 inspect --execution-requirements` once per script (cached by path and
  mtime): the script's own options (thresholds, peak VUs, total duration) without running it.
* `threshold_criteria` turns every `options.thresholds` expression into a criterion named
  `threshold__<metric>__<expression>` (see `threshold_name`), judged by the plugin over the
  whole run, as k6 judges it, with k6's own verdict recorded beside ours.
* `write_wrapper` generates the module k6 actually runs: it imports the user's script,
  re-exports everything (options, default, named scenario functions, setup, teardown,
  handleSummary) and adds one counter point, `prodval_run_start`, when setup() returns: the
  moment k6 starts the scenarios, from which the steady window's offsets count. Nothing
  else changes; the raw output and the summary export come from k6's command-line flags.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .exact import RUN_START_METRIC
from .expressions import ExpressionError, parse_expression, parse_metric

if TYPE_CHECKING:
    from .scenarios import Criterion, Scenario

__all__ = ["ScriptError", "inspect", "threshold_criteria", "threshold_name", "write_wrapper"]

_TIME_METRICS = ("http_req_", "iteration_duration", "ws_connecting", "ws_session_duration", "group_duration",
                 "browser_", "grpc_req_duration")


class ScriptError(ValueError):
    """A script k6 cannot inspect (syntax error, missing file): the message is k6's."""


def threshold_name(metric: str, expression: str) -> str:
    """A stable criterion name: `http_req_duration{name:home}`, `p(95)<500` →
    `threshold__http_req_duration_name_home__p95_lt_500`."""
    ops = {"<=": "_le_", ">=": "_ge_", "==": "_eq_", "!=": "_ne_", "<": "_lt_", ">": "_gt_"}
    text = re.sub(r"\s+", "", expression)
    for op, word in ops.items():
        text = text.replace(op, word)
    expr = re.sub(r"[^a-z0-9_.]+", "", text.lower().replace("(", "").replace(")", ""))
    name = re.sub(r"[^a-z0-9]+", "_", metric.lower()).strip("_")
    return f"threshold__{name}__{expr}"


def inspect(script: Path, k6: str | None = None) -> dict[str, Any]:
    """k6's view of the script's options (`k6 inspect --execution-requirements`); ScriptError if it cannot."""
    stat = script.stat() if script.exists() else None
    if stat is None:
        raise ScriptError(f"{script}: no such k6 script")
    return _inspect(str(script), stat.st_mtime_ns, k6 or shutil.which("k6") or "k6")


@lru_cache(maxsize=64)
def _inspect(script: str, _mtime: int, k6: str) -> dict[str, Any]:
    try:
        done = subprocess.run([k6, "inspect", "--execution-requirements", script], capture_output=True, text=True,
                              timeout=60, cwd=str(Path(script).parent))
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ScriptError(f"{script}: k6 inspect failed: {exc}") from None
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise ScriptError(f"{script}: k6 cannot load the script: {' | '.join(tail)}")
    try:
        options = json.loads(done.stdout)
    except ValueError:
        raise ScriptError(f"{script}: k6 inspect printed no JSON") from None
    return options if isinstance(options, dict) else {}


def script_thresholds(options: dict[str, Any]) -> list[tuple[str, str]]:
    """(metric key, expression) of every threshold in k6 options, as written."""
    pairs: list[tuple[str, str]] = []
    for metric, entries in (options.get("thresholds") or {}).items():
        for entry in entries if isinstance(entries, list) else [entries]:
            text = entry.get("threshold") if isinstance(entry, dict) else entry
            if isinstance(text, str):
                pairs.append((metric, text.strip()))
    return pairs


def stage_window(scenario: Scenario, index: int) -> tuple[float, float]:
    """Offsets (s) of stage `index` of the script's own stages: `options.stages`, or the stages
    of its one scenario that has them (plus that scenario's `startTime`)."""
    from .scenarios import ScenarioFileError, parse_duration

    options = inspect(scenario.script_path())
    stages, start = options.get("stages"), 0.0
    if not stages:
        staged = [s for s in (options.get("scenarios") or {}).values() if isinstance(s, dict) and s.get("stages")]
        if len(staged) != 1:
            raise ScenarioFileError(f"{scenario.source}: steady_stage needs the script to have one set of stages "
                                    f"(it has {len(staged)} scenarios with stages): use window = {{start, end}}")
        stages, start = staged[0]["stages"], parse_duration(staged[0].get("startTime") or "0s")
    if not 0 <= index < len(stages):
        raise ScenarioFileError(f"{scenario.source}: steady_stage={index} is not an index of the script's "
                                f"{len(stages)} stages")
    offset = start + sum(parse_duration(str(s.get("duration") or "0s")) for s in stages[:index])
    return offset, offset + parse_duration(str(stages[index].get("duration") or "0s"))


def _unit(metric: str, aggregation: str) -> str:
    if aggregation == "rate" and not metric.startswith(("http_reqs", "iterations", "data_")):
        return "%"
    if aggregation.startswith("p(") or aggregation in ("avg", "min", "max", "med"):
        return "ms" if metric.startswith(_TIME_METRICS) else ""
    return ""


def threshold_criteria(scenario: Scenario, profile: str) -> list[Criterion]:
    """The script's own thresholds as criteria (none when k6 is absent: the run then says so)."""
    from .scenarios import Criterion, ScenarioFileError

    try:
        options = inspect(scenario.script_path())
    except ScriptError as exc:
        raise ScenarioFileError(f"{scenario.source}: script: {exc}") from None
    result = []
    for metric, text in script_thresholds(options):
        try:
            expression, ref = parse_expression(text), parse_metric(metric)
        except ExpressionError as exc:
            raise ScenarioFileError(f"{scenario.script_path()}: options.thresholds[{metric!r}]: {exc}") from None
        result.append(Criterion(
            name=threshold_name(metric, text), metric=ref, expression=expression, expression_text=text,
            profile=profile, unit=_unit(ref.name, expression.aggregation),
            description=f"the script's own threshold {metric}: {text}", hint=None, level="gate", samples_from=None,
            k6_threshold=metric,
        ))
    return result


def k6_verdict(summary: dict[str, Any] | None, metric: str, expression: str) -> bool | None:
    """k6's own verdict on a threshold (True: it held), from a handleSummary JSON or a
    `--summary-export` file; None when the summary has none."""
    entry = ((summary or {}).get("metrics") or {}).get(metric) or {}
    verdict = (entry.get("thresholds") or {}).get(expression)
    if isinstance(verdict, dict) and "ok" in verdict:  # handleSummary data: {"ok": true}
        return bool(verdict["ok"])
    if isinstance(verdict, bool):  # --summary-export: true means the threshold was crossed
        return not verdict
    return None


def write_wrapper(script: Path, path: Path) -> Path:
    """The module k6 runs in place of `script` (see the module docstring); returns its path."""
    target = json.dumps(script.resolve().as_uri())
    text = f"""// Generated by pytest-prodval: runs {script.name} unchanged (see pytest_prodval/scripts.py).
import {{ Counter }} from 'k6/metrics';
import * as user from {target};
export * from {target};
export default user.default;
export const options = user.options;
const runStart = new Counter('{RUN_START_METRIC}');
export function setup() {{
  const data = typeof user.setup === 'function' ? user.setup() : undefined;
  runStart.add(1);
  return data;
}}
"""
    path.write_text(text)
    return path
