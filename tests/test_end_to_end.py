"""A user's session end to end: real k6 against the embedded stack, every output a person or CI reads."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
import stat
import subprocess
import sys

import pytest

from pytest_prodval.scenarios import load_catalogue

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("smoke_scenarios")]


def test_smoke_run_produces_every_artifact_docs_and_decision(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(pytester.path / "step_summary.md"))
    monkeypatch.setenv("GITHUB_WORKSPACE", str(pytester.path))
    docs = pytester.path / "docs" / "testing"
    docs.mkdir(parents=True)
    (docs / "BASELINE_CAPACITY.md").write_text("# Capacity\n\nHand-written notes stay.\n")
    results = pytester.path / "res"
    result = pytester.runpytest_subprocess(
        "--env", "local", "-m", "smoke", "--prodval-results-dir", str(results), "--junitxml", "slo.xml",
        "--prodval-update-docs", "--setup-show", timeout=240,
    )
    result.assert_outcomes(passed=29)
    # The README's steps are fixtures, set up once, in its order; the run's is the items' own.
    out = result.stdout.str()
    steps = [out.find(f"SETUP    S {name}") for name in ("prodval_target", "prodval_preflight", "prodval_pool",
                                                       "prodval_bypass")]
    assert -1 not in steps and steps == sorted(steps), steps
    assert out.count("SETUP    S prodval_pool") == 1 and out.count("SETUP    F prodval_run") == 29
    assert steps[-1] < out.find("SETUP    F prodval_run") < out.find("TEARDOWN S prodval_target")
    # The healthy half of the fault matrix (tests/test_criteria_faults.py): every criterion of
    # the catalogue is a JUnit testcase and passes on a healthy stack, warn-level ones included.
    catalogue = load_catalogue(pytester.path / "scenarios")
    names = [c.name for c in catalogue.criteria_for(catalogue.scenario("smoke"))]
    cases = {case.get("name"): case for case in ET.parse(pytester.path / "slo.xml").getroot().iter("testcase")}
    assert sorted(cases) == sorted(names) and len(names) == 29
    assert all(not list(case) or all(child.tag == "system-out" for child in case) for case in cases.values())
    result.stdout.fnmatch_lines([
        "prodval: BCAP_SMOKE_4G_12P */* s, * VUs, * requests, errors: *",  # live progress line
        "BCAP_SMOKE_4G_12P: GO  (env local, profile staging, k6 v1.1.0, run *)",
        "prodval overall: GO",
        "*go/no-go over*",
    ])
    stems = {p.name.split("_summary.json")[0] for p in results.glob("*_summary.json")}
    assert len(stems) == 1
    stem = stems.pop()
    for suffix in (".json.gz", "_summary.json", "_slo_report.json", "_report.html", "_k6_dashboard.html", "_k6.log",
                   "_server_metrics.json", "_load_performance.json", "_metrics.txt"):
        assert (results / f"{stem}{suffix}").is_file(), suffix
    umask = os.umask(0)
    os.umask(umask)
    for suffix in ("_slo_report.json", "_report.html", "_server_metrics.json"):  # not the temp file's 0600
        assert stat.S_IMODE((results / f"{stem}{suffix}").stat().st_mode) == 0o666 & ~umask, suffix
    assert stat.S_IMODE((results / "go_no_go.json").stat().st_mode) == 0o666 & ~umask
    assert (results / f"websocket_{stem}.json").stat().st_size > 0
    ws_report = json.loads((results / f"websocket_{stem}_slo_report.json").read_text())
    assert {c["name"] for c in ws_report["criteria"]} == {"ws_connect_p95", "ws_connection_success", "ws_message_latency_p95"}
    report = json.loads((results / f"{stem}_slo_report.json").read_text())
    assert report["verdict"] == "GO" and report["complete"] is True
    assert all(c["verdict"] == "pass" for c in report["criteria"]), [c["message"] for c in report["criteria"]]
    assert report["concurrency"]["games"]["peak"] >= 4 and report["concurrency"]["players"]["peak"] >= 12
    assert report["token_ttl_source"] == "expiresIn" and report["k6_version"] == "v1.1.0"
    assert json.loads((results / "go_no_go.json").read_text())["overall"] == "GO"
    # CI surfaces (tests/test_ci_reports.py reads them as GitHub and GitLab do): real k6 values in them
    gitlab = json.loads((results / f"{stem}_load_performance.json").read_text())["metrics"]
    assert gitlab["http_reqs"]["rate"] > 0 and gitlab["http_req_waiting"]["p(95)"] > 0
    assert (results / "load-performance.json").read_text() == (results / f"{stem}_load_performance.json").read_text()
    assert "prodval_api_latency_p95{" in (results / "metrics.txt").read_text()
    assert set(report["artifacts"]) >= {"load_performance", "metrics"}
    job_summary = (pytester.path / "step_summary.md").read_text()
    assert "## pytest-prodval: ✅ GO" in job_summary
    assert f"SLO report: [`res/{stem}_slo_report.json`](<res/{stem}_slo_report.json>)" in job_summary
    assert f"HTML report: [`res/{stem}_report.html`](<res/{stem}_report.html>)" in job_summary
    capacity = (docs / "BASELINE_CAPACITY.md").read_text()
    assert "Hand-written notes stay." in capacity and "BCAP_SMOKE_4G_12P" in capacity
    checklist = (pytester.path / "docs" / "production" / "PRODUCTION_READINESS_CHECKLIST.md").read_text()
    assert "BCAP_SMOKE_4G_12P" in checklist and "GO" in checklist
    analyze = subprocess.run([sys.executable, "-m", "pytest_prodval", "analyze", str(results)], capture_output=True, text=True)
    assert analyze.returncode == 0, analyze.stdout + analyze.stderr
    assert "overall: GO" in analyze.stdout
