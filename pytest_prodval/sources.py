"""What `--prodval-from-results` was given: find a scenario's run in any k6 output.

Accepted, as a file or in a folder: a raw `--out json` file (plain or `.gz`, any name), a
`--summary-export` file, a `handleSummary` JSON (`JSON.stringify(data)`), and our own
artifacts (SLO report, summary, raw, server metrics). Files are told apart by content, not
by name. A file belongs to a scenario by name when it follows the plan's pattern
`<SCENARIO_ID>_<env>_<timestamp>` (ours `20261201T101500Z` or the plan's `20261201_101500`),
else to the scenario named by `--prodval-scenario`.

Several raw files of one run (`<stem>.json.gz`, or per instance `<stem>_i<N>.json.gz`, or all
unnamed files given for one `--prodval-scenario`) are one run's instances: judged as one
stream, exactly (see `exact`).
"""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["FoundRun", "classify", "find_run", "summary_metrics"]

_NAME = re.compile(r"^(?:websocket_)?(?P<id>[A-Z][A-Z0-9_]*?)_(?P<env>[a-z0-9-]+)_"
                   r"(?P<ts>\d{8}T\d{6}Z|\d{8}_\d{6})(?P<rest>.*)$")
_INSTANCE = re.compile(r"^_i(?P<n>\d+)$")
_INSTANCE_FILE = re.compile(r"^_i\d+_")  # an instance's own summary or log: the run is judged from all raws


@dataclass
class FoundRun:
    """The files of one run of one scenario."""

    scenario_id: str
    env: str = "offline"
    timestamp: str = ""
    raws: list[Path] = field(default_factory=list)
    summary: Path | None = None
    report: Path | None = None
    server_metrics: Path | None = None


def classify(path: Path) -> str | None:
    """"raw", "summary" (handleSummary data), "summary-export", "report", "broken" (JSON that
does not parse) or None, by content."""
    try:
        with path.open("rb") as handle:
            head = handle.read(2)
        opener = gzip.open if head == b"\x1f\x8b" else open
        with opener(path, "rb") as handle:
            start = handle.read(4096)
    except (OSError, EOFError):
        return None
    text = start.lstrip()
    if text.startswith((b'{"type":"Metric"', b'{"metric":"')):
        return "raw"
    if not text.startswith(b"{"):
        return None
    if _is_k6_log(text):  # before reading the whole file: k6 logs can be large
        return None
    try:
        data = json.loads(path.read_bytes()) if head != b"\x1f\x8b" else None
    except ValueError:
        return "broken"
    if not isinstance(data, dict):
        return None
    if "schema_version" in data and "scenario_id" in data:
        return "report"
    metrics = data.get("metrics")
    if isinstance(metrics, dict):
        first: Any = next(iter(metrics.values()), {})
        return "summary" if isinstance(first, dict) and "values" in first else "summary-export"
    return None


def _is_k6_log(text: bytes) -> bool:
    """k6's `--log-format json` lines (`{"level":…,"msg":…,"time":…}`): a log, not a broken summary."""
    try:
        first = json.loads(text.split(b"\n", 1)[0])
    except ValueError:
        return False
    return isinstance(first, dict) and "level" in first and "msg" in first


def summary_metrics(data: dict[str, Any]) -> dict[str, Any]:
    """k6 summary metrics in handleSummary's shape (`{"type", "values"}`), from either kind.

    A `--summary-export` file has flat values and no types: the type is read off the keys
    (passes/fails: rate; p(N)/avg: trend; count: counter; value: gauge).
    """
    metrics = data.get("metrics") or {}
    out: dict[str, Any] = {}
    for key, entry in metrics.items():
        if not isinstance(entry, dict):
            continue
        if "values" in entry:
            out[key] = entry
            continue
        values = {k: v for k, v in entry.items() if k != "thresholds" and isinstance(v, (int, float))}
        if "passes" in values:
            kind = "rate"
            values["rate"] = values.pop("value", values.get("passes", 0) / max(1, values["passes"] + values["fails"]))
        elif "avg" in values or any(k.startswith("p(") for k in values):
            kind = "trend"
        elif "count" in values:
            kind = "counter"
        else:
            kind = "gauge"
        out[key] = {"type": kind, "values": values, "thresholds": entry.get("thresholds")}
    return out


def _parsed(name: str) -> tuple[str, str, str, str] | None:
    base = name
    for suffix in (".gz", ".json", ".ndjson", ".jsonl"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    match = _NAME.match(base)
    return (match["id"], match["env"], match["ts"], match["rest"]) if match else None


def _stamp_key(ts: str) -> str:
    return ts.replace("_", "T") + ("Z" if not ts.endswith("Z") else "")


def find_run(path: Path, scenario_id: str, *, named: str | None) -> FoundRun | None:
    """The latest run of `scenario_id` under `path`; `named`: the scenario --prodval-scenario
    names, which also claims files whose names follow no pattern. ValueError on unusable input."""
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
    runs: dict[tuple[str, str, str], FoundRun] = {}
    loose = FoundRun(scenario_id=scenario_id)
    for file in files:
        kind = "server-metrics" if file.name.endswith("_server_metrics.json") else classify(file)
        if kind is None:
            if path.is_file():
                raise ValueError(f"{file}: not k6 output (raw JSON lines, summary export, handleSummary JSON) "
                                 "nor a pytest-prodval artifact")
            continue
        parsed = _parsed(file.name)
        if kind == "broken":
            if path.is_file() or (parsed is not None and parsed[0] == scenario_id):
                raise ValueError(f"{file}: summary is not valid JSON (truncated?)")
            continue
        if file.name.startswith("websocket_") or (parsed and (parsed[3].endswith("_wrapper") or _INSTANCE_FILE.match(parsed[3]))):
            continue  # the companion's split-out points and report: already in the run's own files
        if parsed is not None and parsed[0] == scenario_id and (
                kind != "raw" or not parsed[3] or _INSTANCE.match(parsed[3])):
            run = runs.setdefault(parsed[:3], FoundRun(scenario_id, parsed[1], parsed[2]))
        elif parsed is None and named is not None:
            run = loose
        else:
            continue
        if kind == "raw":
            run.raws.append(file)
        elif kind in ("summary", "summary-export"):
            run.summary = file
        elif kind == "report":
            run.report = file
        elif kind == "server-metrics":
            run.server_metrics = file
    if runs:
        return runs[max(runs, key=lambda k: _stamp_key(k[2]))]
    if loose.raws or loose.summary or loose.report:
        return loose
    return None
