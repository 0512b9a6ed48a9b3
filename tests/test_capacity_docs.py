"""Capacity docs: generated blocks between markers, hand-written text kept, history accumulates."""

from __future__ import annotations

from pathlib import Path

from test_html_report import make_report

from pytest_prodval.capacity_docs import (
    CAPACITY_DOC,
    CHECKLIST_DOC,
    markers,
    parse_gating,
    parse_rows,
    read_block,
    update_capacity_docs,
)

BASELINE = "BCAP_STAGING_BASELINE_20G_60P"
AI_HEAVY = "BCAP_STAGING_AI_HEAVY_75G_300P"

HAND_WRITTEN = """# Baseline capacity (owned by the SRE team)

Notes written by hand: the staging cluster has 3 API pods.

{begin}
old generated text that is replaced
{end}

## Follow-ups

- [ ] raise the DB pool | keep this pipe
"""


def rows_of(docs: Path) -> list[list[str]]:
    block = read_block((docs / CAPACITY_DOC).read_text(), "baseline-capacity")
    assert block is not None
    return parse_rows(block)


def test_new_files_get_a_heading_and_both_blocks(tmp_path: Path) -> None:
    changed = update_capacity_docs([make_report(AI_HEAVY, failing=False, ai=True)], tmp_path)
    assert changed == [tmp_path / CAPACITY_DOC, tmp_path / CHECKLIST_DOC]
    capacity = (tmp_path / CAPACITY_DOC).read_text()
    assert capacity.startswith("# Baseline capacity\n")
    assert all(m in capacity for m in markers("baseline-capacity"))
    [row] = rows_of(tmp_path)
    assert row == ["2026-11-27 02:47Z", AI_HEAVY, "staging", "staging", "20261127T024723Z", "21 / 20", "63 / 60",
                   "412 ms", "92.5 ms", "870 ms", "GO"]
    checklist = (tmp_path / CHECKLIST_DOC).read_text()
    assert checklist.startswith("# Production readiness checklist\n")
    assert f"- [x] `{AI_HEAVY}`: **GO** — 2026-11-27 02:47Z" in checklist
    assert f"report `{AI_HEAVY}_staging_20261127T024723Z_slo_report.json`" in checklist


def test_hand_written_text_around_the_block_is_preserved(tmp_path: Path) -> None:
    path = tmp_path / CAPACITY_DOC
    path.parent.mkdir(parents=True)
    begin, end = markers("baseline-capacity")
    original = HAND_WRITTEN.format(begin=begin, end=end)
    path.write_text(original)
    update_capacity_docs([make_report(BASELINE)], tmp_path)
    text = path.read_text()
    head, rest = original.split(begin)
    tail = rest.split(end)[1]
    assert text.startswith(head + begin) and text.endswith(end + tail)
    assert "old generated text" not in text
    [row] = rows_of(tmp_path)
    assert row[1] == BASELINE and row[7] == "951 ms" and row[9] == "–" and row[10] == "ERROR"


def test_block_added_to_an_existing_file_without_markers(tmp_path: Path) -> None:
    path = tmp_path / CHECKLIST_DOC
    path.parent.mkdir(parents=True)
    path.write_text("# Readiness\n\n- [x] backups tested\n")
    update_capacity_docs([make_report(BASELINE, failing=False)], tmp_path)
    text = path.read_text()
    assert text.startswith("# Readiness\n\n- [x] backups tested\n\n<!-- prodval:begin gating-status -->\n")
    assert text.endswith("<!-- prodval:end gating-status -->\n")


def test_rows_accumulate_across_updates_and_the_same_run_is_not_duplicated(tmp_path: Path) -> None:
    first = make_report(BASELINE, timestamp="20261127T010000Z")
    update_capacity_docs([first], tmp_path)
    second = make_report(BASELINE, timestamp="20261128T010000Z", failing=False)
    third = make_report(AI_HEAVY, timestamp="20261128T020000Z", failing=False, ai=True)
    update_capacity_docs([third, second], tmp_path)
    assert [(r[1], r[4], r[10]) for r in rows_of(tmp_path)] == [
        (BASELINE, "20261127T010000Z", "ERROR"), (BASELINE, "20261128T010000Z", "GO"), (AI_HEAVY, "20261128T020000Z", "GO")]
    before = {p: p.read_text() for p in (tmp_path / CAPACITY_DOC, tmp_path / CHECKLIST_DOC)}
    assert update_capacity_docs([second, third], tmp_path) == []  # idempotent for the same runs
    assert {p: p.read_text() for p in before} == before
    gating = parse_gating(read_block(before[tmp_path / CHECKLIST_DOC], "gating-status") or "")
    assert {k: (e.verdict, e.timestamp) for k, e in gating.items()} == {
        BASELINE: ("GO", "20261128T010000Z"), AI_HEAVY: ("GO", "20261128T020000Z")}


def test_an_older_run_does_not_overwrite_a_newer_gating_status(tmp_path: Path) -> None:
    update_capacity_docs([make_report(BASELINE, timestamp="20261128T010000Z", failing=False)], tmp_path)
    update_capacity_docs([make_report(BASELINE, timestamp="20261120T010000Z")], tmp_path)
    checklist = (tmp_path / CHECKLIST_DOC).read_text()
    assert f"`{BASELINE}`: **GO**" in checklist and "NO-GO" not in checklist and "ERROR" not in checklist
    assert len(rows_of(tmp_path)) == 2  # but the capacity history keeps both runs


def test_incomplete_run_and_pipes_in_values(tmp_path: Path) -> None:
    report = make_report(BASELINE, failing=False, complete=False, env="stag|ing")
    report.concurrency = {}
    update_capacity_docs([report], tmp_path)
    [row] = rows_of(tmp_path)
    assert row[2] == r"stag\|ing" and row[5] == row[6] == "–" and row[10] == "ERROR (incomplete)"
    assert "**ERROR**" in (tmp_path / CHECKLIST_DOC).read_text()
