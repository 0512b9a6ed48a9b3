"""`prodval compare A B`: the side-by-side diff a reviewer reads, the files it leaves, its exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import markdown_tables, store_report

from pytest_prodval.__main__ import main

BASELINE = "BCAP_STAGING_BASELINE_20G_60P"


def test_a_regression_exits_1_with_table_json_and_markdown(tmp_path: Path) -> None:
    a = store_report(tmp_path / "a", "baseline", "20261101T010000Z",
                     observed={"api_latency_p95": 100.0, "failed_requests_rate": 0.0009, "http_401_rate": 0.0})
    b = store_report(tmp_path / "b", "baseline", "20261102T010000Z",
                     observed={"api_latency_p95": 150.0, "failed_requests_rate": 0.0010, "http_401_rate": 0.0})
    # the console script, as CI calls it
    done = subprocess.run([sys.executable, "-m", "pytest_prodval", "compare", str(a), str(tmp_path / "b")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"{BASELINE} (local)"
    row = next(line.split() for line in lines if line.strip().startswith("api_latency_p95 "))
    assert row == ["api_latency_p95", "100", "ms", "150", "ms", "+50.0", "ms", "REGRESSION"]
    rate = next(line.split() for line in lines if line.strip().startswith("failed_requests_rate "))
    assert rate == ["failed_requests_rate", "0.09%", "0.10%", "+0.01", "pp", "no"]  # within the floor
    games = next(line.split() for line in lines if line.strip().startswith("concurrent_games "))
    assert games[-1] == "-"  # not a kind the gate compares
    assert "1 regression(s): api_latency_p95" in done.stdout
    diff = json.loads((b.parent / f"{BASELINE}_local_20261102T010000Z_compare.json").read_text())
    assert diff["regressions"] == ["api_latency_p95"] and diff["a"] == a.name
    by_name = {r["criterion"]: r for r in diff["rows"]}
    assert by_name["api_latency_p95"]["delta"] == 50.0 and by_name["api_latency_p95"]["rule"] == "<= baseline + max(10%, 10.0 ms)"
    rows = markdown_tables((b.parent / f"{BASELINE}_local_20261102T010000Z_compare.md").read_text())
    assert rows[0] == ["criterion", "A", "B", "delta", "regression?"]
    assert ["api_latency_p95", "100 ms", "150 ms", "+50.0 ms", "REGRESSION"] in rows


def test_baseline_is_the_median_of_the_go_runs_before_b(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for day, p95 in ((1, 500.0), (2, 100.0), (3, 110.0), (4, 90.0)):
        store_report(tmp_path, "baseline", f"2026110{day}T010000Z", observed={"api_latency_p95": p95})
    store_report(tmp_path, "baseline", "20261105T010000Z", observed={"failed_requests_rate": 0.5})  # NO-GO: not a baseline
    b = store_report(tmp_path, "baseline", "20261106T010000Z", observed={"api_latency_p95": 109.0})
    assert main(["compare", "--baseline", "--runs", "3", str(b)]) == 0
    out = capsys.readouterr().out
    assert "A: median of 3 GO runs 20261102T010000Z … 20261104T010000Z" in out
    assert next(line.split() for line in out.splitlines() if "api_latency_p95 " in line)[1:3] == ["100", "ms"]
    assert main(["compare", "--baseline", str(tmp_path)]) == 0  # a folder: its latest run is B


@pytest.mark.parametrize(("args", "message"), [
    (["compare", "missing_report.json", "b"], "missing_report.json: no such SLO report or run folder"),
    (["compare", "{b}"], "expected A B (two SLO reports or run folders), or --baseline B; got 1 path(s)"),
    (["compare", "--baseline", "{b}"], "no GO run of BCAP_STAGING_BASELINE_20G_60P (env local) before 20261102T010000Z"),
    (["compare", "{empty}", "{b}"], "empty: no *_slo_report.json in this folder"),
    (["compare", "{junk}", "{b}"], "junk_slo_report.json: not a readable SLO report"),
])
def test_bad_input_exits_2_with_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                                               message: str) -> None:
    b = store_report(tmp_path, "baseline", "20261102T010000Z")
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk_slo_report.json").write_text("{")
    paths = {"b": str(b), "empty": str(tmp_path / "empty"), "junk": str(tmp_path / "junk_slo_report.json")}
    assert main([arg.format(**paths) for arg in args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("prodval compare: ") and message in err and len(err.strip().splitlines()) == 1
