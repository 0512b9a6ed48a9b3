"""Offline re-evaluation of a run (--prodval-from-results): verdicts, messages, JUnit, no data."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import passing_metrics, write_run

BASELINE = "BCAP_STAGING_BASELINE_20G_60P"
# The schema Jenkins' xUnit plugin enforces (a copy of shared/data/junit-10.xsd, kept in the
# repository so the test runs on any clone).
XSD = Path(__file__).resolve().parent / "data" / "junit-10.xsd"

pytestmark = pytest.mark.usefixtures("scenarios_dir")


def _run(pytester: pytest.Pytester, results: Path, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-m", "baseline", "--prodval-from-results", str(results), "--junitxml", "slo.xml", *args)


def test_every_criterion_passes_on_good_results(pytester: pytest.Pytester) -> None:
    results = pytester.path / "results"
    write_run(results, BASELINE, metrics=passing_metrics("baseline"), games=20, players=60)
    result = _run(pytester, results)
    result.assert_outcomes(passed=25)
    result.stdout.fnmatch_lines(["*prodval: production validation*", f"{BASELINE}: GO*", "prodval overall: GO"])


def test_failure_message_shows_value_threshold_unit_profile_samples_and_hint(pytester: pytest.Pytester) -> None:
    results = pytester.path / "results"
    metrics = passing_metrics("baseline", overrides={
        "req_errors{phase:steady}": {"rate": 0.0231, "passes": 953, "fails": 40_277},
        "status_401{phase:steady}": {"rate": 0.02, "passes": 824, "fails": 40_406},
    })
    write_run(results, BASELINE, metrics=metrics, games=20, players=60)
    result = _run(pytester, results, "-k", "failed_requests_rate or http_401")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([
        "*failed_requests_rate rate 2.31% >= 1.00% (staging profile, 41,230 requests); expected rate<0.01",
        "*hint: Look at the error classes*",
        "*http_401_rate rate 2.00% >= 0.10% (staging profile, 41,230 requests)*",
        "*hint: 401s: set LOADTEST_AUTH_TOKEN_TTL_S*",
    ])


def test_no_data_is_an_error_never_a_pass(pytester: pytest.Pytester) -> None:
    results = pytester.path / "results"
    metrics = passing_metrics("baseline", overrides={"move_e2e_latency{phase:steady}": {"count": 0, "p(95)": 0.0}})
    write_run(results, BASELINE, metrics=metrics, games=0, players=0)
    result = _run(pytester, results, "-k", "move_e2e_latency_p95 or concurrent_games")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*move_e2e_latency_p95: no data: metric move_e2e_latency{phase:steady} had 0 samples*"])
    result.stdout.fnmatch_lines(["*concurrent_games: no data: metric games_active_delta had 0 samples*"])


def test_concurrency_below_target_fails(pytester: pytest.Pytester) -> None:
    results = pytester.path / "results"
    write_run(results, BASELINE, metrics=passing_metrics("baseline"), games=19, players=60)
    result = _run(pytester, results, "-k", "concurrent")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(["*concurrent_games peak 19 games < 20 games (staging profile*"])


def test_profile_rejudges_the_same_values(pytester: pytest.Pytester) -> None:
    results = pytester.path / "results"
    metrics = passing_metrics("baseline", overrides={"http_req_duration{phase:steady}": {"p(95)": 600.0}})
    write_run(results, BASELINE, metrics=metrics, games=20, players=60)
    _run(pytester, results, "-k", "api_latency_p95").assert_outcomes(passed=1)
    result = _run(pytester, results, "-k", "api_latency_p95", "--prodval-profile", "production")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*api_latency_p95 p(95) 600 ms >= 500 ms (production profile, 500 requests)*"])


def test_junit_carries_values_in_system_out_and_validates_against_strict_schema(pytester: pytest.Pytester) -> None:
    results = pytester.path / "results"
    metrics = passing_metrics("baseline", overrides={"req_errors{phase:steady}": {"rate": 0.0231, "passes": 953, "fails": 40_277}})
    write_run(results, BASELINE, metrics=metrics, games=20, players=60)
    _run(pytester, results)
    root = ET.parse(pytester.path / "slo.xml").getroot()
    cases = {case.get("name"): case for case in root.iter("testcase")}
    assert len(cases) == 25
    failed = cases["failed_requests_rate"]
    assert failed.get("classname") == f"scenarios.baseline.toml.{BASELINE}"
    assert failed.find("failure") is not None
    out = "\n".join(node.text or "" for node in failed.iter("system-out"))
    for line in (f"scenario_id={BASELINE}", "criterion=failed_requests_rate", "observed=0.0231", "threshold=rate<0.01",
                 "unit=%", "profile=staging", "samples=41230", "verdict=fail"):
        assert line in out
    passed = "\n".join(node.text or "" for node in cases["api_latency_p99"].iter("system-out"))
    assert "verdict=pass" in passed and "observed=40" in passed
    assert root.find(".//testcase/properties") is None
    import lxml.etree as lxml  # a test extra: missing is an error, never a skip
    schema = lxml.XMLSchema(lxml.parse(str(XSD)))
    assert schema.validate(lxml.parse(str(pytester.path / "slo.xml"))), schema.error_log


def test_truncated_summary_is_a_clear_error(pytester: pytest.Pytester) -> None:
    results = pytester.path / "results"
    summary = write_run(results, BASELINE, metrics=passing_metrics("baseline"), games=20, players=60)
    summary.write_text(summary.read_text()[:200])
    result = _run(pytester, results, "-k", "http_401")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*summary is not valid JSON (truncated?)*"])


def test_the_runs_k6_log_in_the_folder_is_not_taken_for_a_broken_summary(pytester: pytest.Pytester) -> None:
    """k6 writes its log as JSON lines (`--log-format json`): a folder of our artifacts holds one
    beside the summary; re-judging the folder must read the run, not stop at the log."""
    results = pytester.path / "results"
    summary = write_run(results, BASELINE, metrics=passing_metrics("baseline"), games=20, players=60)
    log = summary.with_name(summary.name.replace("_summary.json", "_k6.log"))
    log.write_text('{"error":"request timeout","level":"warning","msg":"Request Failed","time":"2026-12-01T14:41:30Z"}\n' * 3)
    result = _run(pytester, results, "-k", "http_401")
    result.assert_outcomes(passed=1)


def test_user_test_reads_the_run_through_the_fixture(pytester: pytest.Pytester) -> None:
    results = pytester.path / "results"
    write_run(results, BASELINE, metrics=passing_metrics("baseline"), games=20, players=60)
    pytester.makepyfile(test_mine="""
        import pytest

        @pytest.mark.prodval_scenario("baseline")
        def test_marked(prodval_run):
            assert prodval_run.report.concurrency["games"].peak == 20

        def test_every_scenario(prodval_run):
            assert prodval_run.report.scenario_id.startswith("BCAP_")
    """)
    result = pytester.runpytest("test_mine.py", "--prodval-from-results", str(results), "-m", "baseline", "-v")
    result.stdout.fnmatch_lines(["*test_every_scenario?baseline? PASSED*"])
    result.assert_outcomes(passed=2)


def _report_from(pytester: pytest.Pytester, results: Path) -> Path:
    """Run once offline and write what it judged as an SLO report (a 'previous run')."""
    from pytest_prodval.models import SloReport

    data_dir = pytester.path / "prev"
    data_dir.mkdir()
    pytester.makeconftest(f"""
        def pytest_sessionfinish(session):
            from pytest_prodval.items import SESSION_KEY
            prodval = session.config.stash[SESSION_KEY]
            for outcome in prodval.runs.all():
                open({str(data_dir)!r} + "/prev_slo_report.json", "w").write(outcome.report.model_dump_json())
    """)
    _run(pytester, results)
    (pytester.path / "conftest.py").unlink()
    path = data_dir / "prev_slo_report.json"
    SloReport.model_validate_json(path.read_text())
    return path


def test_baseline_adds_run_over_run_items(pytester: pytest.Pytester) -> None:
    before = pytester.path / "before"
    write_run(before, BASELINE, metrics=passing_metrics("baseline"), games=20, players=60)
    previous = _report_from(pytester, before)
    slower = passing_metrics("baseline", overrides={"http_req_duration{phase:steady}": {"p(95)": 27.0, "p(99)": 80.0}})
    after = pytester.path / "after"
    write_run(after, BASELINE, metrics=slower, games=20, players=60, stamp="20261127T020000Z")
    result = _run(pytester, after, "--prodval-baseline", str(previous), "-k", "api_latency")
    # p95 25 → 27 ms is within 10 %; p99 40 → 80 ms is not. The absolute SLOs still pass.
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["*api_latency_p99_vs_baseline: 80.0 ms vs baseline 40.0 ms, more than allowed "
                                 "(<= baseline + max(20%, 20.0 ms); staging profile; baseline: prev_slo_report.json)*"])


def test_warn_level_criterion_warns_and_never_fails(pytester: pytest.Pytester) -> None:
    results = pytester.path / "results"
    metrics = passing_metrics("baseline", overrides={"ws_message_latency": {"p(95)": 900.0}})
    write_run(results, BASELINE, metrics=metrics, games=20, players=60)
    result = _run(pytester, results, "-k", "ws_message_latency_p95")
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(["*ProdvalWarning*ws_message_latency_p95 p(95) 900 ms >= 500 ms*"])
    assert 'verdict=warn' in (pytester.path / "slo.xml").read_text()


def test_user_adds_a_criterion_as_data(pytester: pytest.Pytester, scenarios_dir: Path) -> None:
    with (scenarios_dir / "baseline.toml").open("a") as handle:
        handle.write('\n[criteria.login_latency_p99]\nmetric = "http_req_duration{name:login}"\nunit = "ms"\n'
                     'hint = "Login tail latency"\nstaging = "p(99)<35"\nproduction = "p(99)<30"\n')
    results = pytester.path / "results"
    write_run(results, BASELINE, metrics=passing_metrics("baseline", scenarios=scenarios_dir), games=20, players=60)
    result = _run(pytester, results, "-k", "login_latency")
    # the fake summary's p(99) is 40 ms: the user's new criterion fails, the catalogue's p95 passes
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*login_latency_p99 p(99) 40.0 ms >= 35.0 ms (staging profile, 500 requests)*",
                                 "*hint: Login tail latency*"])
