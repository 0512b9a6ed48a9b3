"""Plan §6 "update after each run": the capacity history and the gating status in the docs.

Each document holds one generated block between `<!-- prodval:begin NAME -->` and
`<!-- prodval:end NAME -->`; everything outside is hand-written and never touched. The
block's own rows are read back on every update, so the history accumulates in the file.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from .criteria import format_value
from .models import SloReport
from .artifacts import write_atomic

CAPACITY_DOC = Path("testing/BASELINE_CAPACITY.md")
CHECKLIST_DOC = Path("production/PRODUCTION_READINESS_CHECKLIST.md")
CAPACITY_BLOCK = "baseline-capacity"
GATING_BLOCK = "gating-status"

COLUMNS = ["date", "scenario", "env", "profile", "run", "games peak / target", "players peak / target",
           "API p95", "move e2e p95", "AI p95", "verdict"]
_KEY = (COLUMNS.index("scenario"), COLUMNS.index("run"))
# criterion name prefix → column
_LATENCIES = {"API p95": "api_latency_p95", "move e2e p95": "move_e2e_latency_p95", "AI p95": "ai_move_latency_p95"}
_CELL_SPLIT = re.compile(r"(?<!\\)\|")
_SEPARATOR = re.compile(r"^\|?[\s:|-]+\|?$")
_GATING_LINE = re.compile(
    r"^- \[[ x]\] `(?P<scenario_id>[^`]+)`: \*\*(?P<verdict>[A-Z-]+)\*\* — (?P<date>[^(]+?) "
    r"\(env (?P<env>[^,]+), profile (?P<profile>[^,]+), run (?P<timestamp>[^)]+)\) — report `(?P<report_file>[^`]*)`$")


@dataclass
class GatingEntry:
    """One scenario's line in the readiness checklist."""

    scenario_id: str
    verdict: str
    date: str
    env: str
    profile: str
    timestamp: str
    report_file: str


def update_capacity_docs(reports: list[SloReport], docs_root: Path) -> list[Path]:
    """Add these runs to BASELINE_CAPACITY.md and the gating status; returns the files that changed."""
    ordered = sorted(reports, key=lambda r: (r.timestamp, r.scenario_id))
    templates = _environment()
    changed = []
    capacity: Any = templates.get_template("baseline_capacity.md.j2").module  # macros: heading(), block()
    path = docs_root / CAPACITY_DOC
    if _update(path, CAPACITY_BLOCK, str(capacity.heading()),
               lambda old: str(capacity.block(columns=COLUMNS, rows=_merge_rows(old, ordered)))):
        changed.append(path)
    checklist: Any = templates.get_template("readiness_checklist.md.j2").module
    path = docs_root / CHECKLIST_DOC
    if _update(path, GATING_BLOCK, str(checklist.heading()), lambda old: str(checklist.block(entries=_merge_gating(old, ordered)))):
        changed.append(path)
    return changed


def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("pytest_prodval", "templates"), autoescape=False,
                              trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined)


# -- the generated block inside a hand-written file ---------------------------------------------


def markers(name: str) -> tuple[str, str]:
    """The begin and end marker lines of block `name`."""
    return f"<!-- prodval:begin {name} -->", f"<!-- prodval:end {name} -->"


def read_block(text: str, name: str) -> str | None:
    """The text between the markers of block `name`, or None when the file has no such block."""
    begin, end = markers(name)
    start = text.find(begin)
    stop = text.find(end, start + len(begin)) if start >= 0 else -1
    return text[start + len(begin):stop] if stop >= 0 else None


def replace_block(text: str, name: str, body: str) -> str:
    """`text` with block `name` set to `body`; the block is appended when missing."""
    begin, end = markers(name)
    block = f"{begin}\n{body.strip(chr(10))}\n{end}"
    if read_block(text, name) is None:
        return f"{text.rstrip(chr(10))}\n\n{block}\n" if text.strip() else f"{block}\n"
    start = text.find(begin)
    stop = text.find(end, start + len(begin)) + len(end)
    return text[:start] + block + text[stop:]


def _update(path: Path, name: str, heading: str, render: Callable[[str], str]) -> bool:
    """Render block `name` of `path` from its current content; write only when something changed."""
    old_text = path.read_text(encoding="utf-8") if path.exists() else heading.strip() + "\n"
    new_text = replace_block(old_text, name, render(read_block(old_text, name) or ""))
    if path.exists() and new_text == old_text:
        return False
    write_atomic(path, new_text)
    return True


# -- BASELINE_CAPACITY.md: one row per scenario run ----------------------------------------------


def parse_rows(block: str) -> list[list[str]]:
    """The rows of the block's markdown table (cells still escaped), without header and separator."""
    rows = []
    for line in block.splitlines():
        line = line.strip()
        if not line.startswith("|") or _SEPARATOR.match(line):
            continue
        cells = [c.strip() for c in _CELL_SPLIT.split(line.strip("|"))]
        if cells[: len(COLUMNS)] != COLUMNS:
            rows.append(cells)
    return rows


def _merge_rows(block: str, reports: list[SloReport]) -> list[list[str]]:
    rows = parse_rows(block)
    index = {_row_key(row): i for i, row in enumerate(rows)}
    for report in reports:
        row = capacity_row(report)
        key = _row_key(row)
        if key in index:  # the same run again: refreshed in place, never duplicated
            rows[index[key]] = row
        else:
            index[key] = len(rows)
            rows.append(row)
    return rows


def _row_key(row: list[str]) -> tuple[str, ...]:
    return tuple(row[i] if i < len(row) else "" for i in _KEY)


def capacity_row(report: SloReport) -> list[str]:
    """The table cells (escaped) for one run."""
    cells = {
        "date": display_date(report.timestamp), "scenario": report.scenario_id, "env": report.env,
        "profile": report.profile, "run": report.timestamp,
        "games peak / target": _peak(report, "games"), "players peak / target": _peak(report, "players"),
        "verdict": report.verdict + ("" if report.complete else " (incomplete)"),
    }
    for column, prefix in _LATENCIES.items():
        cells[column] = _latency(report, prefix)
    return [_escape(cells[c]) for c in COLUMNS]


def display_date(stamp: str) -> str:
    """`20261127T024723Z` → `2026-11-27 02:47Z` (other strings unchanged)."""
    match = re.fullmatch(r"(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})\d{2}Z", stamp)
    return f"{match[1]}-{match[2]}-{match[3]} {match[4]}:{match[5]}Z" if match else stamp


def _peak(report: SloReport, kind: str) -> str:
    measured = report.concurrency.get(kind)
    if measured is None:
        return "–"
    target = measured.target if measured.target is not None else report.targets.get(kind)
    return f"{measured.peak:,}" + (f" / {target:,}" if isinstance(target, int) else "")


def _latency(report: SloReport, prefix: str) -> str:
    matches = sorted((c for c in report.criteria if c.name.startswith(prefix)), key=lambda c: c.name != prefix)
    if not matches or matches[0].observed is None:
        return "–"
    return format_value(matches[0].observed, matches[0].unit or "ms")


def _escape(cell: str) -> str:
    return " ".join(cell.split()).replace("|", r"\|") or "–"


# -- PRODUCTION_READINESS_CHECKLIST.md: one gating line per scenario ------------------------------


def parse_gating(block: str) -> dict[str, GatingEntry]:
    """The block's gating lines by scenario id."""
    entries = {}
    for line in block.splitlines():
        match = _GATING_LINE.match(line.strip())
        if match:
            entries[match["scenario_id"]] = GatingEntry(**match.groupdict())
    return entries


def _merge_gating(block: str, reports: list[SloReport]) -> list[GatingEntry]:
    entries = parse_gating(block)
    for report in reports:
        current = entries.get(report.scenario_id)
        if current is not None and current.timestamp > report.timestamp:
            continue  # an older run never overwrites a newer status
        entries[report.scenario_id] = GatingEntry(
            scenario_id=report.scenario_id, verdict=report.verdict, date=display_date(report.timestamp),
            env=_plain(report.env), profile=_plain(report.profile), timestamp=_plain(report.timestamp),
            report_file=_plain(report.artifacts.get("slo_report")
                               or f"{report.scenario_id}_{report.env}_{report.timestamp}_slo_report.json"),
        )
    return [entries[k] for k in sorted(entries)]


def _plain(text: str) -> str:
    """Text safe inside the line format (no backticks, commas or parentheses to confuse the parser)."""
    return re.sub(r"[`,()\s]+", "_", text)
