"""Stop a doomed run: `abort_on_fail` criteria become k6 abortOnFail thresholds; an aborted run
FAILS the criterion that stopped it (with when and why) and flags every other one incomplete.

The real part: a tiny scenario whose login latency criterion cannot hold runs against the
embedded stack; k6 stops it after a few seconds of a 25 s plan, exit 99, and the JUnit says so.
"""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import REPO, SCENARIOS, passing_metrics

from pytest_prodval.aborts import abort_record, k6_abort_message
from pytest_prodval.judging import judge
from pytest_prodval.k6run import k6_thresholds
from pytest_prodval.models import SloReport
from pytest_prodval.scenarios import ScenarioFileError, load_catalogue

K6_LINE = ("thresholds on metrics 'http_req_duration{name:login}, req_errors{phase:steady}' were crossed; "
           "at least one has abortOnFail enabled, stopping test prematurely")


def _catalogue(tmp_path: Path, extra: str) -> Path:
    folder = tmp_path / "scenarios"
    shutil.copytree(SCENARIOS, folder)
    shutil.copy(REPO / "tests" / "data" / "tiny.toml", folder / "tiny.toml")
    with (folder / "tiny.toml").open("a") as handle:
        handle.write(extra)
    return folder


ABORT_LOGIN = '\n[criteria.login_latency_p95]\nabort_on_fail = true\nabort_delay = "10s"\n'


def test_abort_on_fail_becomes_a_k6_abort_threshold(tmp_path: Path) -> None:
    catalogue = load_catalogue(_catalogue(tmp_path, ABORT_LOGIN))
    criteria = catalogue.criteria_for(catalogue.scenario("tiny"))
    thresholds = k6_thresholds(criteria, time_scale=0.5)
    assert thresholds["http_req_duration{name:login}"] == [
        {"threshold": "p(95)<750", "abortOnFail": True, "delayAbortEval": "5000ms"}]  # the delay scales with the run
    assert thresholds["http_req_duration{phase:steady}"] == ["p(95)<800", "p(99)<2000"]  # the others as before


@pytest.mark.parametrize(("body", "message"), [
    ('[criteria.concurrent_games]\nabort_on_fail = true\n', "abort_on_fail works only for criteria k6 evaluates itself"),
    ('[criteria.server_games_active_peak]\nlevel = "gate"\nabort_on_fail = true\n', "abort_on_fail works only for"),
    ('[criteria.api_latency_p95]\nlevel = "warn"\nabort_on_fail = true\n', "abort_on_fail needs level gate"),
    ('[criteria.api_latency_p95]\nabort_delay = "10s"\n', "abort_delay needs abort_on_fail = true"),
    ('[criteria.api_latency_p95]\nabort_on_fail = true\nabort_delay = "soon"\n', "'soon' is not a duration"),
])
def test_abort_on_fail_where_k6_cannot_stop_is_refused(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ScenarioFileError) as caught:
        load_catalogue(_catalogue(tmp_path, "\n" + body))
    assert "tiny.toml: invalid" in str(caught.value) and message in str(caught.value)


def _aborted_report(tmp_path: Path, *, login_p95: float) -> SloReport:
    """A tiny run k6 stopped 4.2 s in: the login threshold crossed in k6's summary (or not)."""
    catalogue = load_catalogue(_catalogue(tmp_path, ABORT_LOGIN.replace("10s", "2s")))
    scenario = catalogue.scenario("tiny")
    criteria = catalogue.criteria_for(scenario)
    metrics = passing_metrics("tiny", scenarios=tmp_path / "scenarios",
                              overrides={"http_req_duration{name:login}": {"p(95)": login_p95}})
    metrics["http_req_duration{name:login}"]["thresholds"] = {"p(95)<750": {"ok": login_p95 < 750}}
    aborted = abort_record(K6_LINE, criteria, metrics, 4.2)
    report = SloReport(scenario_id=scenario.id, marker="tiny", env="local", profile="staging", timestamp="t",
                       aborted=aborted, complete=False, incomplete_reason=aborted.reason)
    return judge(report, criteria, metrics=metrics, concurrency=None)


def test_the_criterion_that_stopped_the_run_fails_and_the_others_are_incomplete(tmp_path: Path) -> None:
    report = _aborted_report(tmp_path, login_p95=1200.0)
    assert report.aborted is not None and report.aborted.criteria == ["login_latency_p95"]
    assert report.aborted.reason == ("k6 stopped the run 4.2 s in: abort_on_fail criterion login_latency_p95 (p(95)<750) "
                                     "crossed its threshold")
    results = {c.name: c for c in report.criteria}
    login = results.pop("login_latency_p95")
    assert login.verdict == "fail" and login.observed == 1200.0
    assert login.message.endswith("; it stopped the run 4.2 s in (abort_on_fail), judged on the data up to then")
    # Every other criterion passes on these values, yet none passes: each is flagged incomplete.
    assert {c.verdict for c in results.values()} == {"error"}
    assert all("run incomplete: k6 stopped the run 4.2 s in" in c.message for c in results.values())
    assert results["api_latency_p95"].observed == 25.0  # judged on the partial data, shown
    assert report.verdict == "NO-GO"


def test_a_stopper_that_holds_on_the_final_data_is_not_a_pass(tmp_path: Path) -> None:
    report = _aborted_report(tmp_path, login_p95=10.0)  # k6's summary says the threshold held
    assert report.aborted is not None and report.aborted.criteria == []
    assert "stopped the run 4.2 s in on an abortOnFail threshold (thresholds on metrics" in report.aborted.reason
    assert {c.verdict for c in report.criteria} == {"error"} and report.verdict == "ERROR"


def test_k6s_abort_line_is_found_in_its_json_log(tmp_path: Path) -> None:
    log = tmp_path / "k6.log"
    log.write_text('{"level":"info","msg":"hello"}\n' + json.dumps({"level": "error", "msg": K6_LINE}) + "\n")
    assert k6_abort_message(log) == K6_LINE
    log.write_text('{"level":"error","msg":"thresholds on metrics \'x\' have been crossed"}\n')
    assert k6_abort_message(log) is None and k6_abort_message(tmp_path / "missing.log") is None


@pytest.mark.slow
def test_k6_stops_a_doomed_run_and_the_junit_says_when_and_why(pytester: pytest.Pytester) -> None:
    # tiny, 20 s longer at 2 VUs, with a login latency no stack meets; k6 may stop it after 1 s.
    text = (REPO / "tests" / "data" / "tiny.toml").read_text().replace(
        '{ duration = "1s", target = 0 }', '{ duration = "20s", target = 2 }, { duration = "1s", target = 0 }')
    folder = _catalogue(pytester.path, '\n[criteria.login_latency_p95]\nstaging = "p(95)<0.01"\n'
                        'abort_on_fail = true\nabort_delay = "1s"\n')
    (folder / "tiny.toml").write_text(text + (folder / "tiny.toml").read_text().removeprefix(
        (REPO / "tests" / "data" / "tiny.toml").read_text()))
    results = pytester.path / "res"
    result = pytester.runpytest_subprocess("--env", "local", "-m", "tiny", "--prodval-results-dir", str(results),
                                           "--junitxml", "slo.xml", timeout=120)
    report = json.loads(next(results.glob("*_slo_report.json")).read_text())
    assert report["k6_exit_code"] == 99 and report["verdict"] == "NO-GO" and report["complete"] is False
    aborted = report["aborted"]
    assert aborted["criteria"] == ["login_latency_p95"] and 1 <= aborted["at_s"] < 15, aborted
    assert "abortOnFail enabled, stopping test prematurely" in aborted["k6_message"]
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed") == 1 and "passed" not in outcomes and outcomes.get("errors", 0) >= 10, outcomes
    cases = {case.get("name"): case for case in ET.parse(pytester.path / "slo.xml").getroot().iter("testcase")}
    failure = cases["login_latency_p95"].find("failure")
    assert failure is not None and "stopped the run" in failure.get("message", "")
    for name, case in cases.items():
        if name != "login_latency_p95":
            error = case.find("error")
            assert error is not None and "run incomplete: k6 stopped the run" in error.get("message", ""), name
    result.stdout.fnmatch_lines(["BCAP_TINY_1G_2P: NO-GO  *", "*run stopped early: k6 stopped the run * s in: "
                                 "abort_on_fail criterion login_latency_p95 (p(95)<0.01) crossed its threshold"])
