"""Server-side criteria judged from a real Prometheus server, end to end.

A reference stack (API + AI service) runs for the module; Debian's Prometheus scrapes the
API's /metrics every 1 s. A smoke run (real pytest in a subprocess, real k6) targets the
stack through an environment `promstack` that sets `prometheus_url` and no `metrics_url`,
so the four `source = "server"` criteria come from Prometheus' HTTP API (PrometheusQuery),
never from the plugin's own scraper. While it runs, this test scrapes /metrics itself
(the direct Scraper, every 0.5 s) and judges the same window from that, for comparison.

    run      stack                                   server-side criteria
    healthy  default knobs                           all four PASS, plausible values
    fault    AI service: ai_fallback_rate = 1.0      ai_fallback_rate FAILs at ~1.0, hint names
             (every answer an invalid move)          the reason (invalid_move)

Both runs use the same stack, so Prometheus' counters carry the first run into the second:
only the steady window's deltas count.
"""

from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import prometheus_server, reset_stack

from pytest_prodval.refstack.launcher import LocalStack
from pytest_prodval.server_criteria import TRIAGE_NAMES, bind
from pytest_prodval.servermetrics import Scraper, ServerMetrics, ServerMetricsRecord

pytestmark = pytest.mark.slow

SMOKE_ID = "BCAP_SMOKE_4G_12P"
POOL_SIZE = 16  # smoke peaks at 9 player + 3 companion VUs
PASSWORD = "Prom-Source-Pool-Pass-123"
ADMIN_TOKEN = "Prom-Source-Admin-Token-456"
JOB = "prodval_refstack"

PROMSTACK_ENV = """
[promstack]
description = "A reference stack started by tests/test_prometheus_source.py, judged through Prometheus"
base_url = "${PROMSTACK_URL}"
ws_url = "${PROMSTACK_WS_URL}"
ai_service_url = "${PROMSTACK_AI_URL}"
prometheus_url = "${PROMSTACK_PROMETHEUS_URL}"
prometheus_match = { job = "prodval_refstack" }  # only the stack's series, as on a shared Prometheus
"""

# criterion -> (metric, aggregation, denominator): what the direct scrape is asked for the same window
SERVER_CRITERIA: dict[str, tuple[str, str, str | None]] = {
    "ai_fallback_rate": ("ringrift_ai_fallback_total", "rate", "ringrift_ai_requests_total"),
    "server_games_active_peak": ("ringrift_games_active", "peak", None),
    "server_ai_latency_p95": ("ringrift_ai_request_duration_seconds", "p(95)", None),
    "move_server_processing_p95": ("ringrift_game_move_latency_seconds", "p(95)", None),
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """One reference stack for the module (each run's plugin seeds its pool)."""
    with LocalStack(admin_token=ADMIN_TOKEN, log_dir=tmp_path_factory.mktemp("promstack-logs")) as running:
        yield running


@pytest.fixture(scope="module")
def prometheus(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Prometheus scraping the stack's API /metrics every 1 s, from before the first run starts."""
    with prometheus_server(tmp_path_factory.mktemp("prometheus"), [urlsplit(stack.base_url).netloc], job=JOB,
                           wait_scraped=True) as url:
        yield url


@pytest.fixture
def promstack(stack: LocalStack, prometheus: str, smoke_scenarios: Path, pytester: pytest.Pytester,
              monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalStack]:
    """The pytester folder targets the module stack through `promstack`; default knobs before and after."""
    (pytester.path / "pytest.ini").write_text("[pytest]\n")  # no ini of an outer folder applies
    with (smoke_scenarios / "_environments.toml").open("a") as handle:
        handle.write(PROMSTACK_ENV)
    for name in list(os.environ):
        if name.startswith(("PRODVAL_", "LOADTEST_", "SEED_LOADTEST", "RATE_LIMIT_", "PROMSTACK_", "PROMETHEUS_")):
            monkeypatch.delenv(name)
    env = {"PROMSTACK_URL": stack.base_url, "PROMSTACK_WS_URL": stack.ws_url, "PROMSTACK_AI_URL": stack.ai_url,
           "PROMSTACK_PROMETHEUS_URL": prometheus, "PRODVAL_ADMIN_TOKEN": ADMIN_TOKEN,
           "SEED_LOADTEST_USERS": "true", "LOADTEST_USER_POOL_SIZE": str(POOL_SIZE),
           "LOADTEST_USER_POOL_PASSWORD": PASSWORD}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    reset_stack(stack)
    yield stack
    reset_stack(stack)


@dataclass
class Run:
    """A smoke run: JUnit outcomes, the SLO report, the Prometheus record, and the direct scrape beside it."""

    result: pytest.RunResult
    cases: dict[str, ET.Element]
    report: dict[str, Any]
    record: ServerMetricsRecord
    direct: ServerMetricsRecord
    t0: float  # k6's start (setup_data.t0), wall-clock seconds
    window: tuple[float, float]  # the steady window, wall-clock seconds

    def outcome(self, name: str) -> str:
        case = self.cases[name]
        return next((kind for kind in ("failure", "error", "skipped") if case.find(kind) is not None), "passed")

    def criterion(self, name: str) -> dict[str, Any]:
        return next(c for c in self.report["criteria"] if c["name"] == name)

    def direct_value(self, name: str) -> float | None:
        """The criterion's value (in its unit) from the test's own /metrics scrapes over the same window."""
        metric, aggregation, per = SERVER_CRITERIA[name]
        result = ServerMetrics(self.direct).evaluate(metric, aggregation, *self.window, denominator=per)
        scale = 1000.0 if metric.endswith("_seconds") else 1.0
        return None if result.value is None else result.value * scale

    def summary(self) -> str:
        return "\n".join(f"{c['name']}: {c['verdict']} {c['message']}" for c in self.report["criteria"]
                         if c["name"] in SERVER_CRITERIA)


def smoke_run(pytester: pytest.Pytester, stack: LocalStack) -> Run:
    """`pytest -m smoke --env promstack` in a subprocess, with a direct scraper of the stack running beside it."""
    results = pytester.path / "res"
    names = sorted({m for m, _, _ in SERVER_CRITERIA.values()} | {"ringrift_ai_requests_total", *TRIAGE_NAMES})
    scraper = Scraper(stack.metrics_url, names=names, interval_s=0.5)
    scraper.start()
    try:
        result = pytester.runpytest_subprocess(
            "-p", "no:cacheprovider", "--env", "promstack", "-m", "smoke", "--junitxml", "slo.xml",
            "--prodval-results-dir", str(results), timeout=75,
        )
    finally:
        scraper.stop()
    output = result.stdout.str()[-3000:] + result.stderr.str()[-2000:]
    root = ET.parse(pytester.path / "slo.xml").getroot()
    cases = {case.get("name", ""): case for case in root.iter("testcase")}
    reports = sorted(results.glob(f"{SMOKE_ID}_promstack_*_slo_report.json"))
    assert len(reports) == 1, (reports, output)
    report_path = reports[0]
    stem = report_path.name.removesuffix("_slo_report.json")
    report = json.loads(report_path.read_text())
    assert report["complete"] is True, (report.get("incomplete_reason"), output)
    record = ServerMetricsRecord.model_validate_json((results / f"{stem}_server_metrics.json").read_text())
    t0 = json.loads((results / f"{stem}_summary.json").read_text())["setup_data"]["t0"] / 1000
    steady = report["steady_window_s"]
    return Run(result, cases, report, record, scraper.record(), t0, (t0 + steady[0], t0 + steady[1]))


def assert_from_prometheus(run: Run, stack: LocalStack, prometheus: str) -> None:
    """The record came from the Prometheus server over its API, scraped at 1 s, and every criterion says so."""
    record = run.record
    assert record.source == "prometheus", record.notes
    assert record.endpoint == prometheus + '{job="prodval_refstack"}' and not record.notes  # the match is recorded
    assert [t.name for t in record.targets] == [f"{JOB}/{urlsplit(stack.base_url).netloc}"]
    assert record.interval_s == pytest.approx(1.0, abs=0.1)
    for name in SERVER_CRITERIA:
        criterion = run.criterion(name)
        assert criterion["source"] == "server", criterion
        assert criterion["samples"] >= 5, criterion  # ~10 s steady window at 1 s scrapes
        assert "scrapes (prometheus)" in criterion["message"], criterion["message"]


def test_healthy_run_passes_the_server_criteria_from_prometheus(
        pytester: pytest.Pytester, promstack: LocalStack, prometheus: str) -> None:
    run = smoke_run(pytester, promstack)

    assert_from_prometheus(run, promstack, prometheus)
    for name in SERVER_CRITERIA:
        assert run.outcome(name) == "passed" and run.criterion(name)["verdict"] == "pass", run.summary()
    observed = {name: run.criterion(name)["observed"] for name in SERVER_CRITERIA}
    assert observed["ai_fallback_rate"] == 0.0, run.summary()
    assert observed["server_games_active_peak"] >= 4, run.summary()  # the scenario's games, by the server's gauge
    assert 0 < observed["move_server_processing_p95"] < 200, run.summary()
    assert 25 <= observed["server_ai_latency_p95"] < 1500, run.summary()  # AI think time 50 ± 20 ms, + HTTP
    # The direct scrape of /metrics over the same window tells the same story.
    direct = {name: run.direct_value(name) for name in SERVER_CRITERIA}
    assert direct["ai_fallback_rate"] == 0.0
    assert direct["server_games_active_peak"] == pytest.approx(observed["server_games_active_peak"], abs=1)
    for name in ("move_server_processing_p95", "server_ai_latency_p95"):
        value = direct[name]
        assert value is not None and value == pytest.approx(observed[name], rel=0.5), (name, value, observed[name])
    assert run.outcome("concurrent_games") == "passed"
    # Until the first fallback the counter has no series, only HELP/TYPE: Prometheus' metadata says the
    # target exposes it, so the rate is 0 of N requests (as from the direct scrape), never "not available".
    assert "ringrift_ai_fallback_total" in run.record.names_seen
    # Without a steady window the run counts from its start, not from Prometheus' lookback before it.
    assert min(s.t for s in run.record.targets[0].scrapes) < run.t0 - 1
    whole = bind(run.record, run.t0 * 1000, None)
    assert whole is not None and whole.window[0] == pytest.approx(run.t0)
    print(f"\nprometheus: {observed}\ndirect:     {direct}")


def test_every_ai_move_a_fallback_fails_ai_fallback_rate_from_prometheus_with_the_reason(
        pytester: pytest.Pytester, promstack: LocalStack, prometheus: str) -> None:
    promstack.set_ai_faults(ai_fallback_rate=1.0)  # every answer names a move that is not valid
    run = smoke_run(pytester, promstack)

    assert_from_prometheus(run, promstack, prometheus)
    fallback = run.criterion("ai_fallback_rate")
    assert run.outcome("ai_fallback_rate") == "failure" and fallback["verdict"] == "fail", run.summary()
    assert fallback["observed"] == pytest.approx(1.0, abs=0.01), run.summary()
    assert run.direct_value("ai_fallback_rate") == pytest.approx(fallback["observed"], abs=0.01)
    hint = fallback["hint"] or ""
    counted = re.search(r"fallbacks by reason: invalid_move (\d[\d,]*)", hint)  # from Prometheus' counter deltas
    assert counted is not None and int(counted[1].replace(",", "")) >= 10, hint
    assert hint.startswith("AI fallbacks: the AI service is slow or failing")  # the general advice first
    # The fallback is local and instant: the game goes on, so the other server criteria still hold.
    for name in ("server_games_active_peak", "move_server_processing_p95", "server_ai_latency_p95"):
        assert run.criterion(name)["verdict"] == "pass", run.summary()
    print(f"\nprometheus: ai_fallback_rate {fallback['observed']}; hint: {hint}")
