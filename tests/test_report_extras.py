"""A criterion's values where pytest-html and Allure users look (both test extras; neither a dependency)."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest

from conftest import passing_metrics, write_run

BASELINE = "BCAP_STAGING_BASELINE_20G_60P"

pytestmark = pytest.mark.usefixtures("scenarios_dir")


def _failing_run(pytester: pytest.Pytester) -> Path:
    results = pytester.path / "results"
    metrics = passing_metrics("baseline", overrides={"req_errors{phase:steady}": {"rate": 0.0231, "passes": 953, "fails": 40_277}})
    write_run(results, BASELINE, metrics=metrics, games=20, players=60)
    return results


def test_pytest_html_report_shows_each_criterions_values(pytester: pytest.Pytester) -> None:
    results = _failing_run(pytester)
    result = pytester.runpytest("-m", "baseline", "--prodval-from-results", str(results), "-k", "failed_requests or api_latency_p95",
                                "--html", "report.html", "--self-contained-html")
    result.assert_outcomes(passed=1, failed=1)
    page = (pytester.path / "report.html").read_text()
    blob = re.search(r'data-jsonblob="([^"]*)"', page)
    assert blob, "pytest-html 4 keeps its results in data-jsonblob"
    tests = json.loads(html.unescape(blob.group(1)))["tests"]
    extras = {nodeid.rsplit("::", 1)[-1]: [e for run in runs for e in run["extras"]] for nodeid, runs in tests.items()}
    table = next(e["content"] for e in extras["failed_requests_rate"] if e["format_type"] == "html")
    cells = dict(re.findall(r"<tr><th>(\w+)</th><td>([^<]*)</td></tr>", table))
    assert cells == {"observed": "2.31%", "threshold": "rate&lt;0.01", "unit": "%", "profile": "staging",
                     "samples": "41230", "verdict": "fail", "hint": cells["hint"]}
    assert cells["hint"].startswith("Look at the error classes")
    passed = next(e["content"] for e in extras["api_latency_p95"] if e["format_type"] == "html")
    assert "<td>25.0 ms</td>" in passed and "<td>pass</td>" in passed
    assert any(e["format_type"] == "json" and e["name"] == "prodval values" for e in extras["api_latency_p95"])


def test_allure_results_carry_each_criterions_values(pytester: pytest.Pytester) -> None:
    results = _failing_run(pytester)
    result = pytester.runpytest("-m", "baseline", "--prodval-from-results", str(results), "-k", "failed_requests_rate",
                                "--alluredir", "allure")
    result.assert_outcomes(failed=1)
    (test,) = [json.loads(p.read_text()) for p in (pytester.path / "allure").glob("*-result.json")]
    assert test["name"] == "failed_requests_rate" and test["status"] == "failed"
    (attachment,) = [a for a in test["attachments"] if a["name"] == "prodval failed_requests_rate"]
    values = json.loads((pytester.path / "allure" / attachment["source"]).read_text())
    assert {k: values[k] for k in ("observed", "threshold", "unit", "profile", "samples", "verdict")} == {
        "observed": 0.0231, "threshold": "rate<0.01", "unit": "%", "profile": "staging", "samples": 41230, "verdict": "fail"}
    assert values["hint"].startswith("Look at the error classes")
