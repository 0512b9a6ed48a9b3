"""The run-over-run gate: median of the last GO runs, a tolerance and a floor per criterion, as data."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import passing_metrics, store_report, write_run

BASELINE = "BCAP_STAGING_BASELINE_20G_60P"

pytestmark = pytest.mark.usefixtures("scenarios_dir")


def _history(folder: Path) -> None:
    """Six GO runs (the oldest out of the last five), a newer NO-GO run and a newer run of another env."""
    store_report(folder, "baseline", "20261101T010000Z", observed={"api_latency_p95": 300.0})
    for day, p95 in zip((2, 3, 4, 5, 6), (24.0, 25.0, 26.0, 25.0, 80.0), strict=True):  # median 25, mean 36
        store_report(folder, "baseline", f"202611{day:02d}T010000Z",
                     observed={"api_latency_p95": p95, "failed_requests_rate": 0.0009})
    store_report(folder, "baseline", "20261107T010000Z", observed={"api_latency_p95": 1.0, "failed_requests_rate": 0.5})
    store_report(folder, "baseline", "20261108T010000Z", env="staging", observed={"api_latency_p95": 1.0})


def _current(folder: Path, *, p95: float, failed_rate: float) -> Path:
    metrics = passing_metrics("baseline", overrides={
        "http_req_duration{phase:steady}": {"p(95)": p95},
        "req_errors{phase:steady}": {"rate": failed_rate, "passes": round(failed_rate * 10_000), "fails": 10_000}})
    write_run(folder, BASELINE, metrics=metrics, games=20, players=60, stamp="20261127T010000Z")
    return folder


def test_median_of_the_last_go_runs_with_a_floor_does_not_cry_wolf(pytester: pytest.Pytester) -> None:
    history = pytester.path / "history"
    _history(history)
    # 0.10 % after a median of 0.09 %: within the floor (0.1 pp); 34 ms after a median of 25 ms: within 10 ms
    now = _current(pytester.path / "now", p95=34.0, failed_rate=0.0010)
    result = pytester.runpytest("-m", "baseline", "--prodval-from-results", str(now), "--prodval-baseline", str(history),
                                "-k", "vs_baseline", "-v")
    result.assert_outcomes(passed=14)  # every latency and lower-is-better gate rate
    result.stdout.fnmatch_lines([
        "prodval: baseline */history (median of the last 5 GO runs of each scenario and env)",
        "*PASSED*"])
    # the one previous run alone (80 ms) or the mean (36 ms) would judge differently; the median is 25 ms
    later = _current(pytester.path / "later", p95=36.0, failed_rate=0.0030)
    result = pytester.runpytest("-m", "baseline", "--prodval-from-results", str(later), "--prodval-baseline", str(history),
                                "-k", "api_latency_p95_vs or failed_requests_rate_vs")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([
        "*failed_requests_rate_vs_baseline: 0.30% vs baseline 0.09%, more than allowed (<= baseline + max(10%, 0.10 pp)*",
        "*api_latency_p95_vs_baseline: 36.0 ms vs baseline 25.0 ms, more than allowed (<= baseline + max(10%, 10.0 ms); "
        "staging profile; baseline: median of 5 GO runs 20261102T010000Z … 20261106T010000Z)",
    ])


def test_baseline_runs_alone_takes_the_results_folder(pytester: pytest.Pytester) -> None:
    history = pytester.path / "history"
    _history(history)
    now = _current(pytester.path / "now", p95=34.0, failed_rate=0.0)
    result = pytester.runpytest("-m", "baseline", "--prodval-from-results", str(now), "--prodval-results-dir",
                                str(history), "--prodval-baseline-runs", "2", "-k", "api_latency_p95_vs", "-rA")
    result.assert_outcomes(passed=1)  # the last two GO runs: 25 and 80 ms, median 52.5
    result.stdout.fnmatch_lines(["prodval: baseline */history (median of the last 2 GO runs of each scenario and env)",
                                 "*PASSES*", "baseline_observed=52.5", "observed=34"])


def test_rule_is_max_of_tolerance_and_floor() -> None:
    from pytest_prodval.baseline import regressed, rule_text
    from pytest_prodval.models import BaselineRule

    plain, floored = BaselineRule(tolerance=0.10), BaselineRule(tolerance=0.10, floor=0.001)
    assert regressed(0.0010, 0.0009, plain)  # a fixed 10 % cries wolf on a tiny rate
    assert not regressed(0.0010, 0.0009, floored)
    assert regressed(0.0020, 0.0009, floored)
    assert not regressed(540.0, 500.0, floored) and regressed(560.0, 500.0, floored)  # 10 % of 500 beats the floor
    assert rule_text(plain, "ms") == "<= baseline x 1.1"
    assert rule_text(floored, "%") == "<= baseline + max(10%, 0.10 pp)"


def test_bad_baseline_settings_are_usage_errors(pytester: pytest.Pytester, scenarios_dir: Path) -> None:
    now = _current(pytester.path / "now", p95=34.0, failed_rate=0.0)
    report = store_report(pytester.path / "history", "baseline", "20261102T010000Z")
    result = pytester.runpytest("--prodval-from-results", str(now), "--prodval-baseline-runs", "0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--prodval-baseline-runs: '0' is not a whole number >= 1"])
    result = pytester.runpytest("--prodval-from-results", str(now), "--prodval-baseline", str(report),
                                "--prodval-baseline-runs", "3")
    result.stderr.fnmatch_lines(["*--prodval-baseline-runs: */history/*_slo_report.json is one SLO report; give a "
                                 "results folder to take a median"])
    with (scenarios_dir / "_criteria.toml").open("a") as handle:
        handle.write('\n[my_latency]\nmetric = "http_req_duration"\nunit = "ms"\nbaseline = { tolerence = 0.1 }\n'
                     'staging = "p(95)<800"\nproduction = "p(95)<500"\n')
    result = pytester.runpytest("--prodval-from-results", str(now))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*_criteria.toml: invalid:*", "*my_latency.baseline.tolerence: Extra inputs are not permitted*"])
