"""CI surfaces read the way their consumers read them: the job summary rendered, GitLab's files parsed."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from conftest import markdown_tables, passing_metrics, render_markdown, write_run

BASELINE = "BCAP_STAGING_BASELINE_20G_60P"
SECRET = "Sup3rSecretPw!"

pytestmark = pytest.mark.usefixtures("scenarios_dir")


def _k6_http_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The built-in metrics GitLab's widget reads, as k6's handleSummary writes them."""
    metrics["http_reqs"] = {"type": "counter", "contains": "default", "values": {"count": 41230, "rate": 137.4}}
    metrics["http_req_waiting"] = {"type": "trend", "contains": "time", "values": {
        "avg": 8.0, "min": 1.0, "med": 7.0, "max": 90.0, "p(90)": 14.5, "p(95)": 19.25, "p(99)": 40.0, "count": 41230}}
    metrics["checks"] = {"type": "rate", "contains": "default", "values": {"rate": 0.75, "passes": 3, "fails": 1}}
    return metrics


def test_job_summary_tables_gitlab_reports_and_no_secret(pytester: pytest.Pytester, scenarios_dir: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    with (scenarios_dir / "baseline.toml").open("a") as handle:  # a hint that (wrongly) holds the secret
        handle.write(f'\n[criteria.failed_requests_rate]\nhint = "Look at the error classes | pw {SECRET}"\n')
    results = pytester.path / "results"
    metrics = _k6_http_metrics(passing_metrics("baseline", scenarios=scenarios_dir, overrides={
        "req_errors{phase:steady}": {"rate": 0.0231, "passes": 953, "fails": 40_277}}))
    write_run(results, BASELINE, metrics=metrics, games=20, players=60)
    summary = pytester.path / "step_summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.setenv("GITHUB_WORKSPACE", str(pytester.path))
    monkeypatch.setenv("GITHUB_SERVER_URL", "https://github.com")
    monkeypatch.setenv("GITHUB_REPOSITORY", "acme/game")
    monkeypatch.setenv("GITHUB_RUN_ID", "42")
    monkeypatch.setenv("LOADTEST_USER_POOL_PASSWORD", SECRET)
    out = pytester.path / "out"
    result = pytester.runpytest("-m", "baseline", "--prodval-from-results", str(results), "--prodval-results-dir", str(out))
    result.assert_outcomes(passed=24, failed=1)

    text = summary.read_text()
    assert text.startswith("earlier step\n") and SECRET not in text and "pw \\*\\*\\*" in text
    html = render_markdown(text)
    assert "<h2>pytest-prodval: ❌ NO-GO</h2>" in html
    assert f"<h3>{BASELINE}: ❌ NO-GO</h3>" in html
    header, *rows = markdown_tables(text)
    assert header == ["criterion", "verdict", "observed", "threshold", "margin", "unit", "profile"]
    assert len(rows) == 25
    assert rows[0] == ["failed_requests_rate", "❌ fail", "2.31%", "< 1.00%", "1.31 pp beyond · 131.0%", "%", "staging"]
    latency = next(r for r in rows if r[0] == "api_latency_p95")
    assert latency == ["api_latency_p95", "✅ pass", "25.0 ms", "< 800 ms", "775 ms headroom · 96.9%", "ms", "staging"]
    assert "<strong>Triage</strong>" in html
    assert "hint: Look at the error classes | pw ***" in html  # the pipe is text, not a cell
    assert 'href="https://github.com/acme/game/actions/runs/42#artifacts"' in html
    assert "Artifacts:" not in html  # the re-judged run left no SLO report or HTML: nothing to point at

    lines = (out / "metrics.txt").read_text()
    assert SECRET not in lines
    _check_metrics(lines, observed={"failed_requests_rate": 0.0231, "api_latency_p95": 25.0}, count=25)
    widget = _gitlab_widget(json.loads((out / "load-performance.json").read_text()))
    assert widget == {"RPS": 137.4, "TTFB P90": 14.5, "TTFB P95": 19.25, "Checks": "75.00%"}


def _gitlab_widget(data: dict[str, Any]) -> dict[str, Any]:
    """GitLab's normalizeLoadPerformanceMetrics (merge-request widget), in Python: what the MR shows."""
    metrics = data["metrics"]
    shown: dict[str, Any] = {}
    for name in metrics:
        if name == "http_reqs":
            shown["RPS"] = metrics["http_reqs"]["rate"]
        elif name == "http_req_waiting":
            shown["TTFB P90"] = metrics["http_req_waiting"]["p(90)"]
            shown["TTFB P95"] = metrics["http_req_waiting"]["p(95)"]
        elif name == "checks":
            checks = metrics["checks"]
            shown["Checks"] = f"{checks['passes'] / (checks['passes'] + checks['fails']) * 100:.2f}%"
    return shown


def _check_metrics(text: str, *, observed: dict[str, float], count: int) -> None:
    """Both of prometheus_client's parsers read it; GitLab's line rule (`name value`, `#` a comment) too."""
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
    from prometheus_client.parser import text_string_to_metric_families as prometheus

    for parse in (prometheus, openmetrics):
        samples = {s.name: s for family in parse(text) for s in family.samples}
        assert len(samples) == count
        for name, value in observed.items():
            sample = samples[f"prodval_{name}"]
            assert sample.value == pytest.approx(value)
            assert sample.labels["scenario"] == BASELINE and sample.labels["profile"] == "staging"
    gitlab = {}
    for line in text.splitlines():
        parts = line.split("#", 1)[0].split()
        if parts:
            gitlab[parts[0]] = parts[1]
    assert len(gitlab) == count
    assert float(gitlab[f'prodval_failed_requests_rate{{scenario="{BASELINE}",env="local",profile="staging",unit="ratio"}}']) == 0.0231


def test_metrics_text_no_data_is_nan_and_markdown_cells_hold_pipes() -> None:
    from pytest_prodval.ci_reports import md, metrics_text
    from pytest_prodval.models import CriterionResult, SloReport

    criterion = CriterionResult(name="api_latency_p95", scenario_id="S", metric="m", expression="p(95)<800",
                                aggregation="p(95)", operator="<", threshold=800, unit="ms", profile="staging",
                                verdict="error")
    report = SloReport(scenario_id="S", marker="s", env="local", profile="staging", timestamp="t", criteria=[criterion])
    from prometheus_client.parser import text_string_to_metric_families

    (sample,) = [s for f in text_string_to_metric_families(metrics_text([report])) for s in f.samples]
    assert math.isnan(sample.value) and sample.labels["unit"] == "ms"
    rows = markdown_tables("| a | b |\n|---|---|\n| " + md("x | <b>y</b> *z*") + " | 2 |\n")
    assert rows[1] == ["x | <b>y</b> *z*", "2"]
