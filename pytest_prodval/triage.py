"""Triage hints that name the cause when the data shows it (plan §8, made specific).

A criterion's own hint says where to look in general; when the run's data points at one
endpoint, one limiter or one unformable game shape, the hint says so, with the numbers.
Sources: k6's per-request-name submetrics (`req_errors{name:game_list}` …, see
k6run.k6_thresholds) and, when scraped, the target's own metrics (limiter, path).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .facts import REQUEST_NAMES, SEAT_LOST
from .models import BypassRecord, CriterionResult, SloReport
from .server_criteria import breakdown

# criterion -> (per-name rate, which value counts: "passes" = true samples, "fails" = false ones)
_PER_NAME = {
    "failed_requests_rate": ("req_errors", "passes", "failed"),
    "true_error_rate": ("req_errors", "passes", "failed"),
    "http_429_rate": ("status_429", "passes", "answered 429"),
    "http_401_rate": ("status_401", "passes", "answered 401"),
    "availability": ("server_available", "fails", "answered 5xx or not at all"),
}


def _by_name(metrics: Mapping[str, Any], rate: str, side: str) -> list[tuple[str, int, int]]:
    """(request name, counted, total) per request name, most counted first."""
    rows = []
    for name in REQUEST_NAMES:
        entry = metrics.get(f"{rate}{{name:{name}}}")
        if not entry:
            continue
        values = entry.get("values", {})
        total = int(values.get("passes", 0)) + int(values.get("fails", 0))
        counted = int(values.get(side, 0))
        if counted:
            rows.append((name, counted, total))
    return sorted(rows, key=lambda row: -row[1])


def _counter(metrics: Mapping[str, Any], name: str) -> int:
    entry = metrics.get(name) or {}
    return int(entry.get("values", {}).get("count", 0))


# The bypass was switched on, but its check before load (preflight.limit_probe) saw pool user 1
# still counted by a limiter: one the bypass does not cover.
BYPASS_NOT_EFFECTIVE = ("the rate-limit bypass was on, but its check before load found pool user 1 still counted "
                        "by a limiter (X-RateLimit-Remaining set): a limiter the bypass does not cover")


# The game routes a slow login is compared with (their steady-window p95, when the run has them).
_GAME_ROUTES = ("game_state", "game_create")


def _login_alone(metrics: Mapping[str, Any], login_p95: float) -> list[str]:
    """Login far slower than the game routes: the cost is in the login itself (password hashing)."""
    others = {name: (metrics.get(f"http_req_duration{{name:{name},phase:steady}}") or {}).get("values", {}).get("p(95)")
              for name in _GAME_ROUTES}
    known = {name: value for name, value in others.items() if isinstance(value, (int, float)) and value > 0}
    if not known or login_p95 < 5 * max(known.values()):
        return []
    shown = ", ".join(f"{name} {value:,.0f} ms" for name, value in known.items())
    return [f"login p95 {login_p95:,.0f} ms is {login_p95 / max(known.values()):,.0f}x the game routes' ({shown}): "
            "the time goes into each login itself, i.e. its password hash (RingRift: bcryptjs cost 12 on the API's "
            "event loop, 0.45 s a hash measured here: ~2 logins/s per process), not into the API as a whole"]


def causes(result: CriterionResult, metrics: Mapping[str, Any] | None, server: Any,
           bypass: BypassRecord | None = None, client_games_peak: int | None = None) -> list[str]:
    """What the data says about why `result` did not hold (empty when it says nothing)."""
    found: list[str] = []
    if result.name == "server_games_active_peak" and result.observed == 0 and client_games_peak:
        found.append(f"the server's gauge stayed at 0 while the client held {client_games_peak:,} games at once: "
                     "the target does not maintain ringrift_games_active")
    if metrics is None:
        return found
    if result.name == "http_429_rate" and bypass is not None and bypass.verified_on is False:
        found.append(BYPASS_NOT_EFFECTIVE)
    spec = _PER_NAME.get(result.name)
    if spec is not None:
        rate, side, what = spec
        rows = _by_name(metrics, rate, side)
        if rows:
            shown = ", ".join(f"{name} {counted:,} of {total:,} ({counted / total:.0%})" for name, counted, total in rows[:3])
            found.append(f"requests that {what}, by endpoint: {shown}")
    counter = {"contract_failures": "contract_failures_total", "id_lifecycle_mismatches": "id_lifecycle_mismatches_total"}
    if result.name in counter:
        counts = [(name, _counter(metrics, f"{counter[result.name]}{{name:{name}}}")) for name in REQUEST_NAMES]
        counts = sorted((row for row in counts if row[1]), key=lambda row: -row[1])
        if counts:
            found.append("by endpoint: " + ", ".join(f"{name} {count:,}" for name, count in counts[:4]))
    if result.name == "http_429_rate" and server is not None:
        limiters = breakdown(server, "ringrift_rate_limit_hits_total", ("limiter", "endpoint"))
        if limiters:
            found.append("the server's limiters: " + ", ".join(f"{'/'.join(k)} {v:,.0f}" for k, v in limiters[:3]))
    if result.name in ("failed_requests_rate", "true_error_rate", "availability") and server is not None:
        paths = breakdown(server, "http_requests_total{status:5xx}", ("path", "status"))
        if paths:
            found.append("5xx by the server's own count: " + ", ".join(f"{' '.join(k)} {v:,.0f}" for k, v in paths[:3]))
    if result.name == "ai_fallback_rate" and server is not None:
        reasons = breakdown(server, "ringrift_ai_fallback_total", ("reason",))
        if reasons:
            found.append("fallbacks by reason: " + ", ".join(f"{k[0]} {v:,.0f}" for k, v in reasons[:3]))
        outcomes = dict((k[0], v) for k, v in breakdown(server, "ringrift_ai_requests_total", ("outcome",)))
        asked = outcomes.get("success", 0) + outcomes.get("error", 0)
        if outcomes.get("fallback") and asked:
            # RingRift counts the service call (success/error) and then the fallback move itself
            # (outcome="fallback") in the same counter, so this share can never pass 50 %.
            found.append(f"the target also counts each fallback in ringrift_ai_requests_total (outcome=fallback "
                         f"{outcomes['fallback']:,.0f}): {outcomes['fallback']:,.0f} fallbacks for {asked:,.0f} "
                         f"AI service calls = {outcomes['fallback'] / asked:.0%} of AI moves")
    if result.name == "login_latency_p95" and result.observed:
        found.extend(_login_alone(metrics, result.observed))
    lost = _counter(metrics, SEAT_LOST)
    if lost and result.name in ("contract_failures", "concurrent_games", "concurrent_players",
                                "games_target_held", "players_target_held"):
        found.append(f"{lost:,} joins were answered 200 but the seat went to a later join (seat_lost): "
                     "the join route admits more players than a game has seats")
    if result.name in ("concurrent_games", "concurrent_players", "games_target_held", "players_target_held"):
        unformable = _counter(metrics, "game_shape_unformable_total")
        if unformable:
            found.append(f"{unformable:,} games could not be formed (game_shape_formed): the target refused the shape")
    return found


def annotate(report: SloReport, metrics: Mapping[str, Any] | None, server: Any,
             concurrency: Mapping[str, Any] | None = None) -> None:
    """Add the data's causes to the hints of criteria that failed or errored."""
    for result in report.criteria:
        if result.verdict not in ("fail", "warn", "error"):
            continue
        try:
            games = (concurrency or {}).get("games")
            found = causes(result, metrics, server, report.bypass, games.peak if games is not None else None)
        except Exception:  # a hint must never break judging
            continue
        if found:
            general = (result.hint or "").rstrip()
            result.hint = f"{general} In this run: {'; '.join(found)}.".strip()
