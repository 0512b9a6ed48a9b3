"""A user's own k6 script, judged exactly, and any k6 output re-judged (issue: judge any k6 run).

One real k6 run of `tests/data/k6/api_check.js` (written the way k6's examples are, no
pytest-prodval contract) against the embedded stack; every number the plugin reports is
checked against an independent computation over the raw points, and the same files are
then re-judged offline under other names and shapes.
"""

from __future__ import annotations

import gzip
import json
import math
import shutil
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO, SCENARIOS

SCENARIO = textwrap.dedent("""\
    id = "API_CHECK"
    marker = "api_check"
    description = "A user's own script: health and lobby, constant arrival rate"
    script = "k6/api_check.js"
    catalogues = ["generic"]
    window = { start = "1s", end = "5s" }

    [coverage]
    min = 0.8
    max_multiple_of_target = 2.0
    bucket = "1s"
""")


def _project(folder: Path) -> Path:
    scenarios = folder / "scenarios"
    shutil.copytree(SCENARIOS, scenarios)
    shutil.copy(REPO / "tests" / "data" / "k6" / "api_check.js", scenarios / "k6" / "api_check.js")
    (scenarios / "api_check.toml").write_text(SCENARIO)
    (folder / "pytest.ini").write_text("[pytest]\n")
    return scenarios


def _pytest(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly", *args],
                          cwd=folder, capture_output=True, text=True, timeout=240)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One live run: the pytest result, its JUnit cases, its SLO report and its files."""
    folder = tmp_path_factory.mktemp("own-script")
    _project(folder)
    done = _pytest(folder, "--env", "local", "-m", "api_check", "--junitxml", "slo.xml",
                   "--prodval-results-dir", "res")
    reports = list((folder / "res").glob("API_CHECK_local_*_slo_report.json"))
    assert len(reports) == 1, done.stdout[-4000:] + done.stderr[-2000:]
    report = json.loads(reports[0].read_text())
    cases = {c.get("name"): c for c in ET.parse(folder / "slo.xml").getroot().iter("testcase")}
    stem = reports[0].name[: -len("_slo_report.json")]
    return {"folder": folder, "done": done, "report": report, "cases": cases,
            "raw": folder / "res" / f"{stem}.json.gz", "summary": folder / "res" / f"{stem}_summary.json"}


def _points(raw: Path) -> list[dict[str, Any]]:
    """Every point of a raw file, parsed the plain way (json per line)."""
    with gzip.open(raw, "rt") as handle:
        return [json.loads(line) for line in handle if line.strip() and '"type":"Point"' in line]


def _time(text: str) -> float:
    from datetime import datetime

    whole, _, frac = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(whole + "+00:00").timestamp() * 1000 + float("0." + (frac or "0")) * 1000


def _k6_percentile(values: list[float], pct: float) -> float:
    """k6's formula (lib/metrics TrendSink.P), written again independently."""
    values = sorted(values)
    i = pct / 100 * (len(values) - 1)
    low, high = values[math.floor(i)], values[math.ceil(i)]
    return low + (high - low) * (i - math.floor(i))


def _independent(raw: Path, window: tuple[float, float] | None) -> dict[str, float]:
    points = _points(raw)
    t0 = min(_time(p["data"]["time"]) for p in points if p["metric"] == "prodval_run_start")
    inside = [p for p in points
              if window is None or t0 + window[0] * 1000 <= _time(p["data"]["time"]) < t0 + window[1] * 1000]

    def values(metric: str, **tags: str) -> list[float]:
        return [p["data"]["value"] for p in inside if p["metric"] == metric
                and all((p["data"].get("tags") or {}).get(k) == v for k, v in tags.items())]

    failed = values("http_req_failed")
    requests = values("http_reqs")
    return {
        "k6_http_failed_rate": sum(1 for v in failed if v) / len(failed),
        "k6_http_401_rate": sum(values("http_reqs", status="401")) / sum(requests),
        "k6_http_p95": _k6_percentile(values("http_req_duration"), 95),
        "k6_http_p99": _k6_percentile(values("http_req_duration"), 99),
        "k6_checks_rate": sum(1 for v in values("checks") if v) / len(values("checks")),
        "k6_iterations_done": sum(values("iterations")),
        "threshold__http_req_duration__p95_lt_500": _k6_percentile(values("http_req_duration"), 95),
        "threshold__http_req_duration_name_health__p90_lt_400": _k6_percentile(values("http_req_duration", name="health"), 90),
        "threshold__http_req_failed__rate_lt_0.5": sum(1 for v in failed if v) / len(failed),
    }


def _observed(report: dict[str, Any]) -> dict[str, Any]:
    return {c["name"]: c for c in report["criteria"]}


def test_own_script_every_value_equals_an_independent_computation(live: dict[str, Any]) -> None:
    judged = _observed(live["report"])
    steady = _independent(live["raw"], (1.0, 5.0))
    whole = _independent(live["raw"], None)
    for name, value in steady.items():
        if name.startswith("threshold__"):  # k6 judges thresholds over the whole run
            value = whole[name]
        assert judged[name]["observed"] == pytest.approx(value, rel=1e-12, abs=1e-12), name
    # Every fourth iteration is a 401: the generic criteria see it, by status.
    assert 0.15 < judged["k6_http_401_rate"]["observed"] < 0.35
    assert judged["k6_http_401_rate"]["verdict"] == "fail"
    assert judged["k6_http_failed_rate"]["verdict"] == "fail"
    assert judged["k6_checks_rate"]["verdict"] == "pass"
    # The script opens no WebSocket: not applicable, never a pass.
    assert judged["k6_ws_connecting_p95"]["verdict"] == "n/a"
    assert "emitted no ws_connecting" in judged["k6_ws_connecting_p95"]["message"]


def test_script_thresholds_are_items_with_k6s_verdict_beside_ours(live: dict[str, Any]) -> None:
    cases, judged = live["cases"], _observed(live["report"])
    names = {n for n in cases if n and n.startswith("threshold__")}
    assert names == {"threshold__http_req_duration__p95_lt_500", "threshold__http_req_duration_name_health__p90_lt_400",
                     "threshold__http_req_failed__rate_lt_0.5", "threshold__checks__rate_gt_0.5"}
    summary = json.loads(live["summary"].read_text())  # k6's own --summary-export
    assert judged["threshold__http_req_duration__p95_lt_500"]["observed"] == pytest.approx(
        summary["metrics"]["http_req_duration"]["p(95)"], rel=1e-12)
    for name in names:
        assert judged[name]["k6_verdict"] == "pass" and judged[name]["verdict"] == "pass", judged[name]["message"]
        assert "k6 agrees" in judged[name]["message"]


def test_latency_criteria_carry_the_coverage_rules(live: dict[str, Any]) -> None:
    c = _observed(live["report"])["k6_http_p95"]
    assert c["coverage"] == 1.0 and c["coverage_min"] == 0.8 and c["max_multiple_of_target"] == 2.0
    assert c["worst_bucket"] >= c["observed"] * 0.5
    assert "coverage 100% of 4 1s-buckets" in c["message"]
    system_out = "".join(node.text or "" for node in live["cases"]["k6_http_p95"].iter("system-out"))
    assert "coverage=1" in system_out and "coverage_min=0.8" in system_out
    html = (live["raw"].parent / live["report"]["artifacts"]["html"]).read_text()
    assert "coverage 100% (min 80%) · worst 1 s bucket" in html
    assert "k6: pass" in html  # the script thresholds: k6's verdict beside ours


def _rejudge(live: dict[str, Any], path: Path, *args: str) -> dict[str, Any]:
    folder = live["folder"]
    done = _pytest(folder, "--prodval-from-results", str(path), "--junitxml", "again.xml", *args)
    cases = {c.get("name"): c for c in ET.parse(folder / "again.xml").getroot().iter("testcase")}
    return {"done": done, "cases": cases}


def _outcome(case: ET.Element) -> str:
    for kind in ("failure", "error", "skipped"):
        if case.find(kind) is not None:
            return kind
    return "passed"


@pytest.mark.parametrize("shape", ["plan-name-plain", "any-name-gz", "folder"])
def test_a_raw_file_from_anywhere_is_judged_exactly_as_live(live: dict[str, Any], shape: str, tmp_path: Path) -> None:
    if shape == "plan-name-plain":  # the plan's own file name, not gzipped
        path = tmp_path / "API_CHECK_staging_20261201_101500.json"
        path.write_bytes(gzip.decompress(live["raw"].read_bytes()))
        args: tuple[str, ...] = ("-m", "api_check")
    elif shape == "any-name-gz":
        path = tmp_path / "nightly-run.json.gz"
        shutil.copy(live["raw"], path)
        args = ("--prodval-scenario", "api_check")
    else:
        path = tmp_path / "runs"
        path.mkdir()
        shutil.copy(live["raw"], path / "API_CHECK_perf_20261201_101500.json.gz")
        args = ("-m", "api_check")
    again = _rejudge(live, path, *args)
    compared = {name for name in live["cases"] if name and not name.startswith("threshold__")}  # no summary here
    assert compared and compared <= set(again["cases"]), again["done"].stdout[-3000:]
    for name in compared:
        assert _outcome(again["cases"][name]) == _outcome(live["cases"][name]), (name, again["done"].stdout[-3000:])
    # The same values: the re-judge prints them in the terminal summary.
    judged = _observed(live["report"])
    shown = f"{judged['k6_http_401_rate']['observed'] * 100:.2f}%"
    assert shown in again["done"].stdout


def test_summary_export_alone_judges_whole_run_thresholds_and_errors_the_window(live: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "summary.json"
    shutil.copy(live["summary"], path)
    again = _rejudge(live, path, "--prodval-scenario", "api_check")
    cases = again["cases"]
    assert _outcome(cases["threshold__checks__rate_gt_0.5"]) == "passed", again["done"].stdout[-3000:]
    assert _outcome(cases["k6_checks_rate"]) == "error"  # over the steady window: no per-sample times
    # A summary export has no sample count for trends: an empty trend would look like 0 ms.
    assert _outcome(cases["threshold__http_req_duration__p95_lt_500"]) == "error"
    assert "did not report the sample count" in again["done"].stdout
    # No per-sample times in a summary: the steady window has no data, an ERROR, never a pass.
    assert _outcome(cases["k6_http_p95"]) == "error"


@pytest.mark.parametrize("damage", ["cut-last-line", "corrupt-line", "two-runs"])
def test_a_damaged_raw_file_is_an_error_naming_the_line(live: dict[str, Any], damage: str, tmp_path: Path) -> None:
    lines = gzip.decompress(live["raw"].read_bytes()).split(b"\n")
    if damage == "cut-last-line":
        data, where = b"\n".join(lines)[:-40], ":the last line is cut"
    elif damage == "corrupt-line":
        lines[9] = b"\x00\x13garbage"
        data, where = b"\n".join(lines), ":10: not a k6 JSON record"
    else:
        data, where = b"\n".join(lines) * 2, "defined a second time: two runs in one file?"
    path = tmp_path / "API_CHECK_staging_20261201_101500.json"
    path.write_bytes(data)
    again = _rejudge(live, path, "-m", "api_check")
    outcomes = {_outcome(c) for c in again["cases"].values()}
    assert outcomes == {"error"}, again["done"].stdout[-3000:]
    assert where.split(":", 2)[-1] in again["done"].stdout
