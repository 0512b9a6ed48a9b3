"""Triage hints name the cause the data shows (counters from k6, breakdowns from the target's metrics)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pytest_prodval.facts import SEAT_LOST
from pytest_prodval.models import CriterionResult
from pytest_prodval.server_criteria import ServerData
from pytest_prodval.triage import causes


def result(name: str, verdict: Any = "fail") -> CriterionResult:
    return CriterionResult(name=name, scenario_id="S", metric="m", expression="count==0", aggregation="count",
                           operator="==", threshold=0, observed=1, unit="count", profile="staging", samples=1,
                           verdict=verdict)


@dataclass
class Row:
    labels: dict[str, str]
    value: float


@dataclass
class Breakdown:
    rows: list[Row]
    status: str = "ok"


@dataclass
class Metrics:
    """A target's counter deltas over the window, by metric name (what ServerMetrics.breakdown answers)."""

    counters: dict[str, list[Row]] = field(default_factory=dict)

    def breakdown(self, metric: str, by: list[str], start: float, end: float) -> Breakdown:
        return Breakdown(self.counters.get(metric, []))


def server(**counters: list[Row]) -> Any:
    return ServerData(metrics=Metrics(counters), window=(0.0, 1.0), source="scrape")  # type: ignore[arg-type]


def test_ringrifts_double_counted_ai_requests_are_explained_with_the_real_share() -> None:
    # What RingRift's counters said in an ai_heavy run: the service call's outcome, then the
    # fallback move itself in the same counter, so fallback / requests stops at 50 %.
    data = server(ringrift_ai_fallback_total=[Row({"reason": "overloaded"}, 267), Row({"reason": "validation_failed"}, 45)],
                  ringrift_ai_requests_total=[Row({"outcome": "fallback"}, 312), Row({"outcome": "error"}, 267),
                                              Row({"outcome": "success"}, 45)])
    found = causes(result("ai_fallback_rate"), {}, data)
    assert found[0] == "fallbacks by reason: overloaded 267, validation_failed 45"
    assert found[1].endswith("312 fallbacks for 312 AI service calls = 100% of AI moves"), found


def test_a_target_that_counts_requests_once_gets_no_such_note() -> None:
    data = server(ringrift_ai_fallback_total=[Row({"reason": "timeout"}, 3)],
                  ringrift_ai_requests_total=[Row({"outcome": "success"}, 97)])
    assert causes(result("ai_fallback_rate"), {}, data) == ["fallbacks by reason: timeout 3"]


def test_lost_seats_are_named_where_they_explain_the_failure() -> None:
    metrics = {SEAT_LOST: {"values": {"count": 69}}, "contract_failures_total{name:game_join}": {"values": {"count": 69}}}
    contract = causes(result("contract_failures"), metrics, None)
    assert contract == ["by endpoint: game_join 69", "69 joins were answered 200 but the seat went to a later join "
                        "(seat_lost): the join route admits more players than a game has seats"]
    assert any("seat_lost" in line for line in causes(result("concurrent_games"), metrics, None))
    assert causes(result("login_latency_p95"), metrics, None) == []
    assert not any("seat_lost" in line for line in causes(result("contract_failures"), {}, None))


def test_a_server_gauge_that_never_moves_is_named() -> None:
    gauge = result("server_games_active_peak", "warn").model_copy(update={"observed": 0})
    assert causes(gauge, {}, None, client_games_peak=94) == [
        "the server's gauge stayed at 0 while the client held 94 games at once: the target does not maintain "
        "ringrift_games_active"]
    assert causes(gauge, {}, None, client_games_peak=0) == []
    assert causes(gauge.model_copy(update={"observed": 12}), {}, None, client_games_peak=94) == []


def test_unformable_games_explain_every_concurrency_criterion() -> None:
    metrics = {"game_shape_unformable_total": {"values": {"count": 925}}}
    for name in ("concurrent_games", "concurrent_players", "games_target_held", "players_target_held"):
        assert causes(result(name), metrics, None) == [
            "925 games could not be formed (game_shape_formed): the target refused the shape"], name
    assert causes(result("api_latency_p95"), metrics, None) == []


def test_a_login_far_slower_than_the_game_routes_is_put_on_the_hash() -> None:
    """What the baseline against RingRift showed: login p95 19 s, game_state p95 382 ms."""
    metrics = {"http_req_duration{name:game_state,phase:steady}": {"values": {"p(95)": 382.0}},
               "http_req_duration{name:game_create,phase:steady}": {"values": {"p(95)": 34.3}}}
    login = result("login_latency_p95").model_copy(update={"observed": 19141.0})
    assert causes(login, metrics, None) == [
        "login p95 19,141 ms is 50x the game routes' (game_state 382 ms, game_create 34 ms): the time goes into each "
        "login itself, i.e. its password hash (RingRift: bcryptjs cost 12 on the API's event loop, 0.45 s a hash "
        "measured here: ~2 logins/s per process), not into the API as a whole"]
    # everything slow alike (a saturated API), or no game route measured: the data does not say
    slow = {k: {"values": {"p(95)": 15000.0}} for k in metrics}
    assert causes(login, slow, None) == [] and causes(login, {}, None) == []
