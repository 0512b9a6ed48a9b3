"""The k6 script `scenarios/k6/game.js` (design.md §2), run by the real k6 against the local stack."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pytest_prodval.refstack.launcher import LocalStack

SCRIPT = Path(__file__).resolve().parent.parent / "scenarios" / "k6" / "game.js"
PASSWORD = "k6-script-test-Pass-1"
PREFIX, DOMAIN = "loadtest_k6t_", "loadtest.local"
HTTP_NAMES = {"login", "refresh", "game_create", "game_list", "game_join", "game_state"}
PHASES = {"ramp", "steady", "rampdown"}
CONTRACT_METRICS = [
    "req_errors", "true_errors", "status_401", "status_429", "server_available",
    "contract_failures_total", "id_lifecycle_mismatches_total", "auth_token_expired_total",
    "rate_limit_hit_total", "capacity_failures_total", "http_req_duration", "ws_connecting",
    "ws_connection_success", "ws_message_latency", "move_e2e_latency", "move_server_processing",
    "move_stalled", "ai_move_latency", "ai_fallback", "games_active_delta", "players_active_delta",
]
ZERO_COUNTERS = ["contract_failures_total", "id_lifecycle_mismatches_total", "auth_token_expired_total",
                 "rate_limit_hit_total", "capacity_failures_total"]

pytestmark = pytest.mark.skipif(shutil.which("k6") is None, reason="k6 is not installed")


# -- helpers ----------------------------------------------------------------------------------

def config(tmp_path: Path, *, base_url: str = "http://127.0.0.1:9", ws_url: str = "ws://127.0.0.1:9/ws",
           **overrides: Any) -> dict[str, Any]:
    """A PRODVAL_CONFIG; `overrides` replace top-level keys (nested dicts are merged)."""
    cfg: dict[str, Any] = {
        "scenarioId": "K6_SCRIPT_TEST", "baseUrl": base_url, "wsUrl": ws_url, "aiServiceUrl": None,
        "stages": [{"duration": "2s", "target": 6}, {"duration": "8s", "target": 6}, {"duration": "2s", "target": 0}],
        "steady": {"startS": 2.0, "endS": 10.0},
        "gracefulRampDownS": 6,
        "game": {"board": "square8", "playersPerGame": 3, "aiSeats": 1, "movesPerGame": 10, "thinkTimeMs": 150,
                 "stallMs": 2000},
        "pool": {"prefix": PREFIX, "domain": DOMAIN, "size": 10},
        "auth": {"tokenTtlS": None, "refreshWindowS": 60},
        "wsCompanion": {"enabled": True, "vus": 2, "pingIntervalMs": 500, "durationS": 12},
        "thresholds": {"req_errors{phase:steady}": ["rate<0.01"], "move_e2e_latency{phase:steady}": ["p(95)<1000"],
                       "ai_move_latency{phase:steady}": ["p(95)<1500"], "ws_connection_success": ["rate>=0.99"]},
        "summaryTrendStats": ["avg", "min", "med", "max", "p(90)", "p(95)", "p(99)", "count"],
        "summaryPath": str(tmp_path / "summary.json"),
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict) and key != "thresholds":
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


def run_k6(tmp_path: Path, cfg: dict[str, Any] | None, *args: str, password: str | None = PASSWORD,
           extra_env: dict[str, str] | None = None, timeout: float = 45) -> subprocess.CompletedProcess[str]:
    """`k6 run` the way the plugin runs it (design.md §2), bounded by `timeout`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("K6_")}
    env.pop("PRODVAL_CONFIG", None)
    env.pop("LOADTEST_USER_POOL_PASSWORD", None)
    if cfg is not None:
        env["PRODVAL_CONFIG"] = json.dumps(cfg)
    if password is not None:
        env["LOADTEST_USER_POOL_PASSWORD"] = password
    env.update(extra_env or {})
    argv = ["k6", "run", "--no-usage-report", "--address", "", "--quiet", "--no-color",
            "--out", f"json={tmp_path / 'raw.json'}", *args, str(SCRIPT)]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, cwd=tmp_path)


def seed(stack: LocalStack, count: int) -> None:
    with httpx.Client(base_url=stack.base_url, timeout=10) as client:
        for n in range(1, count + 1):
            response = client.post("/api/auth/register", json={"email": f"{PREFIX}{n}@{DOMAIN}", "password": PASSWORD})
            assert response.status_code in (201, 409), response.text


def stats(stack: LocalStack) -> dict[str, Any]:
    response = httpx.get(f"{stack.base_url}/api/admin/stats", headers={"X-Admin-Token": stack.admin_token}, timeout=5)
    data: dict[str, Any] = response.json()["data"]
    return data


def points(raw: Path) -> Iterator[dict[str, Any]]:
    with raw.open() as handle:
        for line in handle:
            record = json.loads(line)
            if record["type"] == "Point":
                yield record


def running_sum(samples: list[tuple[str, float]]) -> tuple[float, float, float]:
    """(minimum, peak, final) of the running sum of delta points ordered by time."""
    total = low = peak = 0.0
    for _, value in sorted(samples):
        total += value
        low, peak = min(low, total), max(peak, total)
    return low, peak, total


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[LocalStack]:
    with LocalStack(log_dir=tmp_path / "stack-logs") as running:
        seed(running, 10)
        yield running


# -- fast: the script refuses bad input before any VU starts ----------------------------------

def test_missing_config_fails_fast(tmp_path: Path) -> None:
    result = run_k6(tmp_path, None)
    assert result.returncode == 107
    assert "PRODVAL_CONFIG" in result.stderr and "not set" in result.stderr


@pytest.mark.parametrize(("text", "message"), [
    ("{not json", "not valid JSON"),
    ('{"scenarioId": "x"}', "baseUrl"),
])
def test_invalid_config_fails_fast(tmp_path: Path, text: str, message: str) -> None:
    env = {"PRODVAL_CONFIG": text}
    result = run_k6(tmp_path, None, extra_env=env)
    assert result.returncode == 107
    assert message in result.stderr


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


# -- slow: real load against the local stack ---------------------------------------------------

@pytest.mark.slow
def test_players_and_companion_against_local_stack(tmp_path: Path, stack: LocalStack) -> None:
    cfg = config(tmp_path, base_url=stack.base_url, ws_url=stack.ws_url)
    result = run_k6(tmp_path, cfg)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout == ""  # handleSummary: no text summary
    server = stats(stack)

    summary_text = (tmp_path / "summary.json").read_text()
    raw_text = (tmp_path / "raw.json").read_text()
    for text in (summary_text, raw_text):
        assert PASSWORD not in text
        assert "eyJ" not in text  # no JWT (tokens are never in setup data, tags or logs)
    summary = json.loads(summary_text)
    assert set(summary["setup_data"]) == {"t0"}
    metrics = summary["metrics"]
    missing = [name for name in CONTRACT_METRICS if name not in metrics]
    assert not missing, missing
    for name, threshold in [(n, t) for n, m in metrics.items() for t in m.get("thresholds", {}).values()]:
        assert threshold["ok"], name

    values = {name: metric["values"] for name, metric in metrics.items()}
    assert values["req_errors"]["passes"] == 0 and values["req_errors"]["fails"] > 50
    assert values["true_errors"]["rate"] == 0
    assert values["status_401"]["rate"] == 0 and values["status_429"]["rate"] == 0
    assert values["server_available"]["rate"] == 1
    for name in ZERO_COUNTERS:
        assert values[name]["count"] == 0, name
    assert values["http_req_failed"]["passes"] == 0  # k6's own view agrees (409 on join is expected)
    assert values["ws_connection_success"]["rate"] == 1
    assert values["ws_connection_success"]["passes"] >= 2 + server["finishedGames"]
    assert values["ws_message_latency"]["count"] >= 2 * 5  # two companions, ~2 pings/s for ~12 s
    human_moves = values["move_e2e_latency"]["count"]
    assert human_moves > 20
    assert values["move_server_processing"]["count"] == human_moves
    assert values["move_stalled"]["rate"] <= 0.05
    # AI moves are measured once each, by the human who moved last.
    ai_moves = values["ai_move_latency"]["count"]
    assert 0.8 * server["aiMoves"] <= ai_moves <= server["aiMoves"]
    assert values["ai_fallback"]["passes"] + values["ai_fallback"]["fails"] == ai_moves
    assert human_moves <= server["movesTotal"] - server["aiMoves"]
    assert values["ai_move_latency"]["p(95)"] < 1500

    http_names: Counter[tuple[str, str]] = Counter()
    deltas: dict[str, list[tuple[str, float]]] = {"games_active_delta": [], "players_active_delta": []}
    steady_samples = 0
    for point in points(tmp_path / "raw.json"):
        metric, data = point["metric"], point["data"]
        tags = data["tags"] or {}
        if metric in ("vus", "vus_max"):
            continue
        assert tags.get("phase") in PHASES, (metric, tags)
        assert "url" not in tags
        steady_samples += tags["phase"] == "steady"
        if metric == "http_reqs":
            assert tags["name"] in HTTP_NAMES
            http_names[(tags["name"], tags["status"])] += 1
        if metric in deltas:
            deltas[metric].append((data["time"], data["value"]))
    assert steady_samples > 0
    assert {name for name, _ in http_names} >= {"login", "game_create", "game_list", "game_join", "game_state"}
    assert all(status in ("200", "201") or (name, status) == ("game_join", "409") for name, status in http_names)

    games_low, games_peak, games_final = running_sum(deltas["games_active_delta"])
    players_low, players_peak, players_final = running_sum(deltas["players_active_delta"])
    assert games_low >= 0 and players_low >= 0
    assert games_final == 0 and players_final == 0  # every started game was closed
    assert 2 <= games_peak <= 3  # 6 VUs, 2 humans per game
    assert 6 <= players_peak <= 9  # 3 seats per game, one of them AI (added by the creator)
    completed = values["games_completed_total"]["count"]  # counted by each human of a game
    assert 2 * 2 <= completed <= 2 * server["finishedGames"]


@pytest.mark.slow
def test_lost_games_and_short_token_ttl(tmp_path: Path, stack: LocalStack) -> None:
    stack.set_faults(lost_game_rate=1.0, token_ttl_s=3)
    cfg = config(
        tmp_path, base_url=stack.base_url, ws_url=stack.ws_url,
        stages=[{"duration": "1s", "target": 4}, {"duration": "7s", "target": 4}, {"duration": "1s", "target": 0}],
        steady={"startS": 1.0, "endS": 8.0}, gracefulRampDownS=3,
        game={"playersPerGame": 2, "aiSeats": 0},
        wsCompanion={"enabled": False}, thresholds={"id_lifecycle_mismatches_total": ["count==0"]},
    )
    result = run_k6(tmp_path, cfg)
    assert result.returncode == 99, result.stderr[-3000:]  # the mismatch threshold failed, as it should
    metrics = json.loads((tmp_path / "summary.json").read_text())["metrics"]
    values = {name: metric["values"] for name, metric in metrics.items()}
    assert not metrics["id_lifecycle_mismatches_total"]["thresholds"]["count==0"]["ok"]

    names: Counter[tuple[str, str]] = Counter()
    for point in points(tmp_path / "raw.json"):
        if point["metric"] == "http_reqs":
            tags = point["data"]["tags"]
            names[(tags["name"], tags["status"])] += 1
    # Every created game was lost: the VU saw 404 for its own game, each one a mismatch.
    mismatches = values["id_lifecycle_mismatches_total"]["count"]
    assert mismatches > 4 and mismatches == names[("game_state", "404")]
    assert values["contract_failures_total"]["count"] == 0
    assert values["true_errors"]["passes"] == mismatches
    # Tokens of 3 s were renewed before they expired: refreshes, no 401.
    assert names[("refresh", "200")] >= 4
    assert names[("login", "200")] <= 4
    assert values["status_401"]["passes"] == 0 and values["auth_token_expired_total"]["count"] == 0
    assert values["games_active_delta"]["count"] == 0 and values["players_active_delta"]["count"] == 0
