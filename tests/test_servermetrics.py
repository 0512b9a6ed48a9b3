"""Server metrics as a criteria source: a real /metrics server on 127.0.0.1, the scraper, a real Prometheus.

The metrics server exposes prometheus_client metrics with prometheus_client's own
exposition (content negotiation included); expected deltas and quantiles are computed
here from the operations the test performed, never from what was scraped.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from conftest import prometheus_server
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

from pytest_prodval.processes import free_loopback_port
from pytest_prodval.servermetrics import (
    PrometheusQuery,
    Scraper,
    ServerMetrics,
    ServerMetricsError,
    histogram_quantile,
    load_record,
    parse_selector,
    redact_url,
    save_record,
    wanted_names,
)

BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8)  # contract §4
AI = "ringrift_ai_requests_total"
AI_LATENCY = "ringrift_ai_request_duration_seconds"
GAMES = "ringrift_games_active"
LIMITS = "ringrift_rate_limit_hits_total"
HTTP = "http_requests_total"
NAMES = [AI, AI_LATENCY, GAMES, LIMITS, HTTP, "ringrift_degradation_level", "servermetrics_phase"]


class RingRiftMetrics:
    """A registry shaped like RingRift's §4 metrics; `restart()` is a process restart (counters reset)."""

    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        self.registry = CollectorRegistry()
        self.ai = Counter(AI, "AI requests", ["outcome"], registry=self.registry)
        self.games = Gauge(GAMES, "Active games", registry=self.registry)
        self.latency = Histogram(AI_LATENCY, "AI latency", ["ai_type"], buckets=BUCKETS, registry=self.registry)
        self.limits = Counter(LIMITS, "429s", ["endpoint", "limiter"], registry=self.registry)
        self.http = Counter(HTTP, "HTTP", ["method", "path", "status"], registry=self.registry)
        self.phase = Gauge("servermetrics_phase", "test phase", registry=self.registry)
        Gauge("ringrift_unrelated_noise", "not wanted", registry=self.registry).set(1)

    def reset_ai_counter(self) -> None:
        """Only the AI counter restarts from 0 (the histogram keeps counting), for Prometheus' own checks."""
        self.registry.unregister(self.ai)
        self.ai = Counter(AI, "AI requests", ["outcome"], registry=self.registry)


class MetricsServer:
    """GET /metrics on 127.0.0.1; `failures` makes the next scrapes answer 500 or garbage."""

    def __init__(self) -> None:
        self.metrics = RingRiftMetrics()
        self.failures: list[str] = []
        self.openmetrics = False  # answer OpenMetrics whatever the client accepts
        self.auth_seen: list[str | None] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                outer.auth_seen.append(self.headers.get("Authorization"))
                failure = outer.failures.pop(0) if outer.failures else None
                if failure == "500":
                    self.send_response(500)
                    self.end_headers()
                    return
                if failure == "garbage":
                    body, ctype = b"this is { not prometheus\n", "text/plain; version=0.0.4"
                else:
                    accept = "application/openmetrics-text" if outer.openmetrics else self.headers.get("Accept", "")
                    encoder, ctype = choose_encoder(accept)
                    body = encoder(outer.metrics.registry)
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.httpd.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}/metrics"
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join()


@pytest.fixture
def server() -> Iterator[MetricsServer]:
    srv = MetricsServer()
    yield srv
    srv.close()


class FakeClock:
    """Wall-clock stand-in, so time-weighted values are exact."""

    def __init__(self, t: float = 1_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def expected_quantile(observations: list[float], q: float) -> float:
    """histogram_quantile as documented, from the raw observations: the bucket holding rank q*n, linear inside."""
    counts = [sum(1 for o in observations if o <= bound) for bound in BUCKETS]
    rank = q * len(observations)
    for i, count in enumerate(counts):
        if count >= rank:
            lower, below = (0.0, 0) if i == 0 else (BUCKETS[i - 1], counts[i - 1])
            return lower + (BUCKETS[i] - lower) * (rank - below) / (count - below)
    return BUCKETS[-1]  # beyond the last finite bucket: its upper bound


def observe(server: MetricsServer, ai_type: str, values: list[float]) -> None:
    for value in values:
        server.metrics.latency.labels(ai_type).observe(value)


# --- the direct scraper ---------------------------------------------------------------------


def test_counter_deltas_ratio_and_breakdowns_count_only_the_window(server: MetricsServer) -> None:
    m = server.metrics
    m.ai.labels("success").inc(50)  # before the window: excluded
    m.http.labels("GET", "/api/games", "500").inc(7)
    scraper = Scraper(server.url, names=NAMES)
    start = scraper.mark("steady_start")
    m.ai.labels("success").inc(180)
    m.ai.labels("fallback").inc(12)  # a child born inside the window counts whole
    m.ai.labels("error").inc(8)
    scraper.scrape()
    m.ai.labels("fallback").inc(3)
    m.limits.labels("/api/auth/login", "login").inc(41)
    m.limits.labels("/api/games", "api").inc(5)
    m.http.labels("GET", "/api/games", "500").inc(4)
    m.http.labels("POST", "/api/games", "503").inc(2)
    m.http.labels("GET", "/api/games", "404").inc(9)  # not a 5xx
    m.http.labels("GET", "/api/users", "502").inc(1)
    end = scraper.mark("steady_end")
    m.ai.labels("fallback").inc(1_000)  # after the window: excluded
    scraper.scrape()
    scraper.stop()
    judge = ServerMetrics(scraper.record())

    total = judge.counter_delta(AI, start, end)
    assert (total.status, total.value, total.points, total.series, total.resets) == ("ok", 203.0, 3, 3, 0)
    assert total.covered == (start, end)
    fallback = judge.counter_delta(f"{AI}{{outcome:fallback}}", start, end)
    assert fallback.value == 15.0
    rate = judge.evaluate(f"{AI}{{outcome:fallback}}", "rate", start, end, denominator=AI)
    assert rate.status == "ok" and rate.value == pytest.approx(15 / 203) and rate.points == 3
    assert (rate.numerator, rate.denominator, rate.method) == (15.0, 203.0, "ratio of counter deltas")
    unused = judge.counter_delta(f"{AI}{{outcome:timeout}}", start, end)
    assert (unused.status, unused.value, unused.points) == ("ok", 0.0, 3)  # scraped fine, never happened
    errors = judge.counter_delta(f"{HTTP}{{status:5xx}}", start, end)
    assert errors.value == 7.0

    limits = judge.breakdown(LIMITS, ("endpoint", "limiter"), start, end)
    assert [(r.labels, r.value) for r in limits.rows] == [
        ({"endpoint": "/api/auth/login", "limiter": "login"}, 41.0), ({"endpoint": "/api/games", "limiter": "api"}, 5.0)]
    assert limits.summary() == f"{LIMITS} by endpoint, limiter: /api/auth/login/login 41, /api/games/api 5"
    by_path = judge.breakdown(f"{HTTP}{{status:5xx}}", ("path",), start, end, top=1)
    assert [(r.labels, r.value) for r in by_path.rows] == [({"path": "/api/games"}, 6.0)]
    assert by_path.other == 1.0 and by_path.total == 7.0


def test_histogram_quantiles_are_bucket_interpolated_over_the_window(server: MetricsServer) -> None:
    observe(server, "mcts", [0.01] * 30)  # before the window: excluded
    scraper = Scraper(server.url, names=NAMES)
    start = scraper.mark("start")
    mcts = [0.03] * 40 + [0.15] * 30 + [0.3] * 20 + [1.0] * 9 + [5.0]
    heuristic = [0.02] * 50 + [0.7] * 50
    observe(server, "mcts", mcts)
    observe(server, "heuristic", heuristic)
    end = scraper.mark("end")
    observe(server, "mcts", [12.0] * 500)  # after the window: excluded
    scraper.scrape()
    scraper.stop()
    judge = ServerMetrics(scraper.record())

    p95 = judge.evaluate(f"{AI_LATENCY}{{ai_type:mcts}}", "p(95)", start, end)
    # by hand: rank 95 of 100 falls in (0.8, 1.6], which holds observations 91..99 → 0.8 + 0.8 * 5/9
    assert p95.value == pytest.approx(0.8 + 0.8 * 5 / 9) == pytest.approx(expected_quantile(mcts, 0.95))
    assert (p95.status, p95.method, p95.observations, p95.points, p95.series) == (
        "ok", "bucket-interpolated", 100.0, 2, 1)
    assert "bucket-interpolated" in p95.message
    both = mcts + heuristic
    for q in (0.5, 0.9, 0.99):
        got = judge.quantile(AI_LATENCY, q, start, end)
        assert got.value == pytest.approx(expected_quantile(both, q)), q
    assert judge.evaluate(AI_LATENCY, "count", start, end).value == 200.0
    assert judge.evaluate(AI_LATENCY, "avg", start, end).value == pytest.approx(sum(both) / len(both))
    none = judge.evaluate(f"{AI_LATENCY}{{ai_type:random}}", "p(95)", start, end)
    assert (none.status, none.value) == ("no_data", None)


def test_gauges_are_step_functions_peak_and_time_weighted_mean(server: MetricsServer) -> None:
    clock = FakeClock()
    scraper = Scraper(server.url, names=NAMES, clock=clock)
    server.metrics.games.set(9)
    scraper.scrape()  # t=1000, before the window: 9 holds until the next scrape
    clock.t, start = 1_010.0, 1_010.0
    server.metrics.games.set(2)
    scraper.scrape()  # t=1010: 2
    for t, value in ((1_020.0, 6), (1_040.0, 4)):
        clock.t = t
        server.metrics.games.set(value)
        scraper.scrape()
    clock.t = end = 1_050.0
    scraper.mark("end")  # still 4
    judge = ServerMetrics(scraper.record())
    mean = judge.evaluate(GAMES, "mean", start, end)
    assert mean.value == pytest.approx((2 * 10 + 6 * 20 + 4 * 10) / 40) and mean.method == "time-weighted mean"
    assert judge.evaluate(GAMES, "peak", start, end).value == 6.0
    assert judge.evaluate(GAMES, "min", start, end).value == 2.0
    assert judge.evaluate(GAMES, "value", start, end).value == 4.0
    # the baseline before the window holds at its start: window [1005, 1015] sees 9 then 2
    early = judge.gauge(GAMES, 1_005.0, 1_015.0, aggregation="mean")
    assert early.value == pytest.approx((9 * 5 + 2 * 5) / 10) and early.points == 2
    assert judge.gauge(GAMES, 1_005.0, 1_015.0).value == 9.0


def test_counter_reset_counts_the_new_value_whole(server: MetricsServer) -> None:
    m = server.metrics
    m.ai.labels("success").inc(100)
    m.limits.labels("/api/games", "api").inc(3)
    observe(server, "mcts", [0.03] * 10)
    scraper = Scraper(server.url, names=NAMES)
    start = scraper.mark("start")
    m.ai.labels("success").inc(20)
    m.limits.labels("/api/games", "api").inc(2)
    observe(server, "mcts", [0.3] * 5)
    scraper.scrape()
    m.restart()  # the server restarted: every counter from 0, label children gone until used
    m.ai.labels("success").inc(7)
    observe(server, "mcts", [1.0] * 4)
    scraper.scrape()
    m.ai.labels("success").inc(1)
    m.limits.labels("/api/games", "api").inc(6)  # reappears after a scrape without it
    end = scraper.mark("end")
    scraper.stop()
    judge = ServerMetrics(scraper.record())
    ai = judge.counter_delta(AI, start, end)
    assert (ai.value, ai.resets) == (20 + 7 + 1, 1)
    assert "1 counter reset" in ai.message
    assert judge.counter_delta(LIMITS, start, end).value == 2 + 6
    p50 = judge.quantile(AI_LATENCY, 0.5, start, end)
    assert p50.observations == 9.0
    assert p50.value == pytest.approx(expected_quantile([0.3] * 5 + [1.0] * 4, 0.5))


def test_a_failing_endpoint_is_recorded_without_its_credentials_and_scraping_goes_on(
    server: MetricsServer, tmp_path: Path
) -> None:
    secret_url = server.url.replace("http://", "http://prodval:hunter2hunter2@") + "?token=tok-98765"
    scraper = Scraper(secret_url, names=NAMES, headers={"Authorization": "Bearer bearer-55555"}, timeout_s=2)
    server.failures = ["500", "garbage"]
    start = scraper.mark("start")
    scraper.scrape()
    judge = ServerMetrics(scraper.record())
    nothing = judge.counter_delta(AI, start, start + 60)
    assert (nothing.status, nothing.value, nothing.points) == ("no_data", None, 0)
    server.metrics.ai.labels("success").inc(5)
    scraper.scrape()
    server.metrics.ai.labels("success").inc(5)
    end = scraper.mark("end")
    closed = free_loopback_port()
    refused = Scraper(f"http://prodval:hunter2hunter2@127.0.0.1:{closed}/metrics?token=tok-98765", names=NAMES)
    refused.scrape()
    refused.stop()
    scraper.stop()
    record = scraper.record()
    scrapes = record.targets[0].scrapes
    assert [s.ok for s in scrapes] == [False, False, True, True]
    assert scrapes[0].error == f"HTTP 500 Internal Server Error (http://***@127.0.0.1:{server.port}/metrics?token=***)"
    assert scrapes[1].error is not None
    refusal = refused.record().targets[0].scrapes[0]
    assert not refusal.ok and refusal.error and "ConnectError" in refusal.error
    assert server.auth_seen[0] and server.auth_seen[0].startswith("Basic ")  # user info → basic auth
    bearer = Scraper(server.url, names=NAMES, headers={"Authorization": "Bearer bearer-55555"})
    bearer.scrape()
    bearer.stop()
    assert server.auth_seen[-1] == "Bearer bearer-55555"
    # the first good scrape is the baseline when none precedes the window: 5 counted, points noted
    late = ServerMetrics(record).counter_delta(AI, start, end)
    assert (late.value, late.points) == (5.0, 2)
    saved = save_record(record, tmp_path / "baseline_staging_20260101T000000Z_server_metrics.json")
    text = saved.read_text() + refusal.error + json.dumps(refused.record().model_dump())
    for secret in ("hunter2hunter2", "tok-98765", "bearer-55555", "prodval:"):
        assert secret not in text
    assert record.endpoint == f"http://***@127.0.0.1:{server.port}/metrics?token=***"
    for prometheus_url, problem in ((f"http://prodval:hunter2hunter2@127.0.0.1:{closed}/?token=tok-98765",
                                     "ConnectError"), (server.url.rsplit("/", 1)[0], "not a Prometheus API answer")):
        with pytest.raises(ServerMetricsError, match=problem) as failed:
            PrometheusQuery(prometheus_url).fetch(NAMES, start, end)
        assert "hunter2hunter2" not in str(failed.value) and "tok-98765" not in str(failed.value)


def test_absent_family_is_not_available_and_an_empty_window_is_no_data(server: MetricsServer) -> None:
    scraper = Scraper(server.url, names=NAMES)
    start = scraper.mark("start")
    end = scraper.mark("end")
    judge = ServerMetrics(scraper.record())
    absent = judge.evaluate("ringrift_degradation_level", "peak", start, end)
    assert absent.status == "not_available" and absent.value is None
    assert GAMES in absent.names_seen and AI in absent.names_seen and "ringrift_degradation_level" not in absent.names_seen
    with pytest.raises(ServerMetricsError, match="not among the names kept"):
        judge.evaluate("ringrift_game_active", "peak", start, end)
    empty = judge.counter_delta(AI, end + 10, end + 20)
    assert (empty.status, empty.value, empty.points) == ("no_data", None, 0)
    assert "no data" in empty.message
    mismatch = judge.evaluate(GAMES, "p(95)", start, end)
    assert mismatch.status == "not_available" and "is a gauge" in mismatch.message
    with pytest.raises(ServerMetricsError, match="needs a denominator"):
        judge.evaluate(AI, "rate", start, end)
    with pytest.raises(ServerMetricsError, match="not computed"):
        judge.evaluate(AI, "stddev", start, end)


def test_only_wanted_families_are_kept_and_cardinality_is_capped(server: MetricsServer) -> None:
    for i in range(30):
        server.metrics.http.labels("GET", f"/api/games/{i}", "200").inc()
    scraper = Scraper(server.url, names=[HTTP, GAMES], max_series_per_family=10)
    scraper.scrape()
    server.metrics.http.labels("GET", "/api/games/0", "200").inc()
    scraper.scrape()
    record = scraper.record()
    assert {s.family for s in record.series} == {"http_requests", GAMES}
    assert sum(s.family == "http_requests" for s in record.series) == 10
    assert any("more than 10 series" in note for note in record.notes)
    assert "ringrift_unrelated_noise" in record.names_seen  # seen, not kept


def test_background_scrapes_at_the_interval_and_stop_joins(server: MetricsServer) -> None:
    scraper = Scraper(server.url, names=NAMES, interval_s=0.05)
    scraper.start()
    time.sleep(0.5)
    scraper.mark("middle")
    scraper.stop()
    scrapes = scraper.record().targets[0].scrapes
    assert not any(t.name == "prodval-servermetrics" for t in threading.enumerate())
    assert 4 <= len(scrapes) <= 13 and all(s.ok for s in scrapes)  # ~10 slots in 0.5 s, never a burst
    count = len(scrapes)
    time.sleep(0.15)
    assert len(scraper.record().targets[0].scrapes) == count


def test_offline_rejudge_from_the_artifact_gives_the_same_values(server: MetricsServer, tmp_path: Path) -> None:
    scraper = Scraper(server.url, names=NAMES)
    start = scraper.mark("steady_start")
    server.metrics.ai.labels("fallback").inc(2)
    server.metrics.ai.labels("success").inc(0.5)
    observe(server, "mcts", [0.033, 0.41, 2.2])
    server.metrics.games.set(3)
    scraper.mark("steady_end")
    scraper.stop()
    live = scraper.record()
    loaded = load_record(save_record(live, tmp_path / "x_server_metrics.json"))
    assert loaded.window("steady_start", "steady_end") == live.window("steady_start", "steady_end")
    end = loaded.mark("steady_end")
    queries = [(f"{AI}{{outcome:fallback}}", "rate", AI), (AI_LATENCY, "p(99)", None), (GAMES, "peak", None),
               (AI_LATENCY, "avg", None)]
    for metric, agg, den in queries:
        a = ServerMetrics(live).evaluate(metric, agg, start, end, denominator=den)
        b = ServerMetrics(loaded).evaluate(metric, agg, start, end, denominator=den)
        assert a.model_dump() == b.model_dump() and a.status == "ok"
    json.loads((tmp_path / "x_server_metrics.json").read_text())
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ServerMetricsError, match="bad.json"):
        load_record(tmp_path / "bad.json")


def test_an_openmetrics_answer_is_parsed_with_its_own_parser(server: MetricsServer) -> None:
    server.openmetrics = True
    scraper = Scraper(server.url, names=NAMES)
    start = scraper.mark("start")
    server.metrics.ai.labels("success").inc(4)
    observe(server, "mcts", [0.3, 0.3, 3.0])
    end = scraper.mark("end")
    scraper.stop()
    record = scraper.record()
    assert all(s.ok for s in record.targets[0].scrapes)
    assert not any(s.name.endswith("_created") for s in record.series)  # timestamps, not counts
    judge = ServerMetrics(record)
    assert judge.counter_delta(AI, start, end).value == 4.0
    assert judge.quantile(AI_LATENCY, 0.5, start, end).value == pytest.approx(expected_quantile([0.3, 0.3, 3.0], 0.5))


def test_selectors_quantile_rules_and_redaction() -> None:
    sel = parse_selector("http_requests_total{status:5xx,method:GET}")
    assert sel.matches({"status": "503", "method": "GET", "path": "/"})
    assert sel.matches({"status": "5xx", "method": "GET"})  # a server that already exports classes
    assert not sel.matches({"status": "404", "method": "GET"}) and not sel.matches({"status": "503"})
    assert str(sel) == "http_requests_total{status:5xx,method:GET}"
    with pytest.raises(ValueError):
        parse_selector("http_requests_total{status=500}")
    assert wanted_names([f"{AI}{{outcome:fallback}}", AI, GAMES]) == [AI, GAMES]
    # Prometheus' bucketQuantile rules: +Inf bucket → the highest finite bound; first bucket from 0
    assert histogram_quantile(0.99, [(0.1, 1.0), (1.0, 1.0), (math.inf, 10.0)]) == 1.0
    assert histogram_quantile(0.5, [(0.1, 10.0), (1.0, 10.0), (math.inf, 10.0)]) == pytest.approx(0.05)
    assert histogram_quantile(0.5, [(0.1, 0.0), (math.inf, 0.0)]) is None
    assert histogram_quantile(0.5, [(0.1, 3.0), (1.0, 4.0)]) is None  # no +Inf bucket
    assert redact_url("https://u:p@h.example:8443/m?a=1&b=2") == "https://***@h.example:8443/m?a=***&b=***"


# --- a real Prometheus ----------------------------------------------------------------------


@pytest.fixture
def prometheus(server: MetricsServer, tmp_path: Path) -> Iterator[str]:
    with prometheus_server(tmp_path / "prometheus", [f"127.0.0.1:{server.port}"], job="servermetrics_test") as url:
        yield url


def wait_for_phase(url: str, phase: int) -> None:
    """Until Prometheus has scraped the server in this phase (every metric change precedes the phase)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        body = httpx.get(f"{url}/api/v1/query", params={"query": "servermetrics_phase"}).json()
        result = body["data"]["result"]
        if result and float(result[0]["value"][1]) == phase:
            return
        time.sleep(0.05)
    raise AssertionError(f"Prometheus never saw phase {phase}")


def promql(url: str, query: str, at: float) -> float:
    body = httpx.get(f"{url}/api/v1/query", params={"query": query, "time": f"{at:.3f}"}).json()
    assert body["status"] == "success", body
    return float(body["data"]["result"][0]["value"][1])


def test_prometheus_query_gives_the_direct_scrapes_values(server: MetricsServer, prometheus: str) -> None:
    m = server.metrics
    scraper = Scraper(server.url, names=NAMES, interval_s=0.25)
    scraper.start()
    m.ai.labels("success").inc(40)
    observe(server, "mcts", [0.01] * 20)
    m.games.set(3)
    m.phase.set(1)
    wait_for_phase(prometheus, 1)
    start = scraper.mark("steady_start")
    time.sleep(0.2)  # a Prometheus scrape sent before the mark has been answered: edges stay clean
    m.ai.labels("success").inc(60)
    m.ai.labels("fallback").inc(6)
    mcts = [0.03] * 50 + [0.3] * 30 + [0.9] * 19 + [4.0]
    observe(server, "mcts", mcts)
    m.limits.labels("/api/auth/login", "login").inc(11)
    m.games.set(7)
    m.phase.set(2)
    wait_for_phase(prometheus, 2)
    scraper.mark("phase2")
    m.reset_ai_counter()  # the AI counter restarts from 0 inside the window
    m.ai.labels("success").inc(9)
    m.ai.labels("fallback").inc(1)
    m.games.set(5)
    m.phase.set(3)
    wait_for_phase(prometheus, 3)
    end = scraper.mark("steady_end")
    time.sleep(0.2)
    m.ai.labels("fallback").inc(500)  # after the window
    observe(server, "mcts", [12.0] * 100)
    m.games.set(50)
    m.phase.set(4)
    wait_for_phase(prometheus, 4)
    scraper.stop()

    direct = ServerMetrics(scraper.record())
    query = PrometheusQuery(prometheus, match={"job": "servermetrics_test"})
    fetched = query.fetch(NAMES, start, end, marks={"steady_start": start, "steady_end": end})
    query.close()
    via_prometheus = ServerMetrics(fetched)
    assert fetched.window("steady_start", "steady_end") == (start, end)
    assert fetched.interval_s == pytest.approx(1.0, abs=0.1)

    expected = {
        ("count", AI, None): 60 + 6 + 9 + 1,
        ("rate", f"{AI}{{outcome:fallback}}", AI): (6 + 1) / (60 + 6 + 9 + 1),
        ("count", LIMITS, None): 11,
        ("peak", GAMES, None): 7,
        ("p(95)", AI_LATENCY, None): expected_quantile(mcts, 0.95),
        ("p(50)", f"{AI_LATENCY}{{ai_type:mcts}}", None): expected_quantile(mcts, 0.5),
        ("count", AI_LATENCY, None): 100,
    }
    for (agg, metric, den), value in expected.items():
        for source in (direct, via_prometheus):
            got = source.evaluate(metric, agg, start, end, denominator=den)
            assert got.status == "ok" and got.value == pytest.approx(value), (source.record.source, agg, metric, got)
            assert got.points >= 2
    # both children (success, fallback) restarted once
    assert via_prometheus.counter_delta(AI, start, end).resets == 2 == direct.counter_delta(AI, start, end).resets
    # Prometheus' own histogram_quantile over the exact bucket deltas agrees with ours
    theirs = promql(prometheus, f"histogram_quantile(0.95, sum by (le) ({AI_LATENCY}_bucket @ {end:.3f} "
                                f"- {AI_LATENCY}_bucket @ {start:.3f}))", end)
    assert via_prometheus.quantile(AI_LATENCY, 0.95, start, end).value == pytest.approx(theirs)
    absent = via_prometheus.evaluate("ringrift_degradation_level", "peak", start, end)
    assert absent.status == "not_available" and GAMES in absent.names_seen
    breakdown = via_prometheus.breakdown(LIMITS, ("endpoint", "limiter"), start, end)
    assert [(r.labels, r.value) for r in breakdown.rows] == [({"endpoint": "/api/auth/login", "limiter": "login"}, 11)]
