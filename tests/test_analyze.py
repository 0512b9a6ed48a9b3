"""`prodval analyze`: latest run per scenario, GO / NO-GO / ERROR, exit codes, JSON, bad files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_html_report import make_report

from pytest_prodval.__main__ import main
from pytest_prodval.analyze import analyze_folder, format_table
from pytest_prodval.models import SloReport
from pytest_prodval.artifacts import write_report

BASELINE = "BCAP_STAGING_BASELINE_20G_60P"
TARGET = "BCAP_STAGING_TARGET_100G_300P"


def save(folder: Path, report: SloReport, *, mtime: float | None = None, prefix: str = "") -> Path:
    """Write a report under its plan §6 name."""
    path = folder / f"{prefix}{report.scenario_id}_{report.env}_{report.timestamp}_slo_report.json"
    write_report(report, path)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def test_go_when_every_latest_report_is_go(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save(tmp_path, make_report(BASELINE, failing=False))
    save(tmp_path, make_report(TARGET, failing=False, profile="production"))
    out = tmp_path / "out" / "go.json"
    assert main(["analyze", str(tmp_path), "--json", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "overall: GO"
    assert any(line.startswith(BASELINE) and line.endswith("GO") for line in lines)
    data = json.loads(out.read_text())
    assert data["overall"] == "GO"
    assert [s["scenario_id"] for s in data["scenarios"]] == [BASELINE, TARGET]
    assert data["scenarios"][1] == {
        "scenario_id": TARGET, "env": "staging", "profile": "production", "timestamp": "20261127T024723Z",
        "verdict": "GO", "complete": True, "incomplete_reason": None, "failed": [], "report_file": f"{TARGET}_staging_20261127T024723Z_slo_report.json",
        "instances": "local: 1 instance", "instance_count": 1,
    }


def test_no_go_lists_failed_criteria(tmp_path: Path) -> None:
    failing = make_report(BASELINE)
    failing.criteria = [c for c in failing.criteria if c.verdict != "error"]  # fail, not error
    failing.verdict = failing.decide()
    save(tmp_path, failing)
    save(tmp_path, make_report(TARGET, failing=False))
    result = analyze_folder(tmp_path)
    assert result.overall == "NO-GO" and result.exit_code == 1
    assert [c.name for c in result.scenarios[0].failed] == ["api_latency_p95", "http_429_rate"]
    table = format_table(result)
    assert "    FAIL  api_latency_p95: 951 ms vs p(95)<800" in table
    assert "    FAIL  http_429_rate: 1.23% vs rate<0.001" in table
    assert main(["analyze", str(tmp_path)]) == 1


def test_error_and_incomplete_runs_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save(tmp_path, make_report(BASELINE))  # one criterion errored
    assert main(["analyze", str(tmp_path)]) == 2
    assert "ERROR id_lifecycle_mismatches: n/a vs count==0" in capsys.readouterr().out
    incomplete = make_report(TARGET, failing=False, complete=False)
    incomplete.verdict = "GO"  # a stored verdict is not trusted: the report is decided again
    save(tmp_path / "other", incomplete)
    result = analyze_folder(tmp_path / "other")
    assert result.overall == "ERROR" and result.scenarios[0].verdict == "ERROR"
    assert "    run incomplete, it cannot gate a release: raw output BCAP_x.json.gz is truncated" in format_table(result)


def test_latest_run_per_scenario_wins(tmp_path: Path) -> None:
    save(tmp_path, make_report(BASELINE, timestamp="20261126T010000Z"), mtime=2_000_000_000)  # newer file, older run
    save(tmp_path, make_report(BASELINE, timestamp="20261127T010000Z", failing=False), mtime=1_000_000_000)
    save(tmp_path, make_report(TARGET, timestamp="20261127T010000Z", failing=False))
    result = analyze_folder(tmp_path)
    assert result.overall == "GO"
    assert [(s.scenario_id, s.timestamp) for s in result.scenarios] == [(BASELINE, "20261127T010000Z"), (TARGET, "20261127T010000Z")]


def test_same_timestamp_newer_file_wins_and_companion_report_does_not(tmp_path: Path) -> None:
    save(tmp_path, make_report(BASELINE, failing=False), mtime=1_000_000_000)
    rerun = make_report(BASELINE)  # same artifact timestamp, rewritten later (e.g. re-evaluated)
    rerun.env = "perf"
    save(tmp_path, rerun, mtime=1_500_000_000)
    companion = make_report(BASELINE, failing=False)
    save(tmp_path, companion, mtime=2_000_000_000, prefix="websocket_")
    [scenario] = analyze_folder(tmp_path).scenarios
    assert scenario.env == "perf" and scenario.report_file.startswith(BASELINE)


def test_profile_filter(tmp_path: Path) -> None:
    save(tmp_path, make_report(BASELINE, failing=False, profile="staging"))
    save(tmp_path, make_report(TARGET, profile="production"))
    assert analyze_folder(tmp_path, profile="staging").overall == "GO"
    result = analyze_folder(tmp_path, profile="nope")
    assert result.overall == "ERROR" and "with profile 'nope'" in result.problems[0]


def test_malformed_file_is_named_not_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save(tmp_path, make_report(BASELINE, failing=False))
    bad = tmp_path / f"{TARGET}_staging_20261127T010000Z_slo_report.json"
    bad.write_text('{"scenario_id": "X", "criteria": [')
    (tmp_path / f"{TARGET}_staging_20261128T010000Z_slo_report.json").write_text('{"scenario_id": "X"}')
    out = tmp_path / "decision.json"
    assert main(["analyze", str(tmp_path), "--json", str(out)]) == 2
    text = capsys.readouterr()
    assert "Traceback" not in text.out + text.err
    assert f"problem: {bad}: not a readable SLO report" in text.out
    data = json.loads(out.read_text())
    assert data["overall"] == "ERROR" and len(data["problems"]) == 2 and data["scenarios"][0]["verdict"] == "GO"


def test_nothing_found(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", str(tmp_path)]) == 2
    assert "no *_slo_report.json found" in capsys.readouterr().out
    assert main(["analyze", str(tmp_path / "missing")]) == 2
    assert "no such results folder" in capsys.readouterr().out


def test_python_dash_m_and_no_subcommand(tmp_path: Path) -> None:
    save(tmp_path, make_report(BASELINE, failing=False))
    done = subprocess.run([sys.executable, "-m", "pytest_prodval", "analyze", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "overall: GO"
    bare = subprocess.run([sys.executable, "-m", "pytest_prodval"], capture_output=True, text=True, timeout=60)
    assert bare.returncode == 2 and "analyze" in bare.stderr
