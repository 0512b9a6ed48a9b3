"""The embedded reference stack, as real processes on 127.0.0.1: auth, games, WebSocket play, limits, faults."""

from __future__ import annotations

import base64
import json
import secrets
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from pytest_prodval.refstack.launcher import LocalStack, StackError

PASSWORD = "pool-password-1"


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    """One stack for the module; tests that change knobs get them reset by `clean_faults`."""
    with LocalStack() as running:
        yield running


@pytest.fixture(autouse=True)
def clean_faults(request: pytest.FixtureRequest) -> Iterator[None]:
    """Put every fault knob back to its default after a test that used the shared stack."""
    yield
    if "stack" in request.fixturenames:
        running: LocalStack = request.getfixturevalue("stack")
        running.set_faults(reset=True)
        running.set_ai_faults(reset=True)
        admin(running, "POST", "/api/admin/rate-limit-bypass", {"enabled": False})


@pytest.fixture
def api(stack: LocalStack) -> Iterator[httpx.Client]:
    """An HTTP client on the API."""
    with httpx.Client(base_url=stack.base_url, timeout=10) as client:
        yield client


def admin(stack: LocalStack, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
    """An admin request with the stack's token."""
    return httpx.request(method, stack.base_url + path, json=body, headers={"X-Admin-Token": stack.admin_token})


def new_user(api: httpx.Client, email: str | None = None) -> tuple[str, str]:
    """Register a fresh user and log in: (email, access token)."""
    email = email or f"user_{secrets.token_hex(4)}@example.test"
    assert api.post("/api/auth/register", json={"email": email, "password": PASSWORD}).status_code == 201
    response = api.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return email, response.json()["data"]["accessToken"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def create_game(api: httpx.Client, token: str, **overrides: Any) -> httpx.Response:
    body = {"board": "square8", "maxPlayers": 3, "aiSeats": 1, "movesPerGame": 8, **overrides}
    return api.post("/api/games", json=body, headers=bearer(token))


def ws_session(stack: LocalStack, exits: ExitStack, token: str) -> ClientConnection:
    """A WebSocket that has authenticated."""
    ws = exits.enter_context(connect(stack.ws_url, open_timeout=5))
    ws.send(json.dumps({"type": "auth", "token": token}))
    assert recv(ws)["type"] == "auth_ok"
    return ws


def recv(ws: ClientConnection, timeout: float = 5) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(ws.recv(timeout=timeout))
    return message


def recv_until(ws: ClientConnection, kind: str, timeout: float = 5) -> dict[str, Any]:
    """Skip messages until one of `kind` arrives."""
    deadline = time.monotonic() + timeout
    while True:
        message = recv(ws, timeout=max(0.01, deadline - time.monotonic()))
        if message["type"] == kind:
            return message


def play_to_end(players: list[ClientConnection], game_id: str, timeout: float = 15) -> dict[str, list[dict[str, Any]]]:
    """Every human moves when its seat is on turn; returns all messages per seat until game over."""
    seen: dict[str, list[dict[str, Any]]] = {str(seat): [] for seat in range(len(players))}
    over = [False] * len(players)
    deadline = time.monotonic() + timeout
    move_id = 0
    while not all(over):
        assert time.monotonic() < deadline, f"game did not finish: {seen}"
        for seat, ws in enumerate(players):
            if over[seat]:
                continue
            try:
                message = recv(ws, timeout=0.02)
            except TimeoutError:
                continue
            seen[str(seat)].append(message)
            if message["type"] == "turn" and message["seat"] == seat:
                move_id += 1
                ws.send(json.dumps({"type": "move", "gameId": game_id, "moveId": f"m{move_id}",
                                    "move": {"from": seat, "to": move_id}}))
            over[seat] = message["type"] == "game_over"
    return seen


def start_game(stack: LocalStack, api: httpx.Client, exits: ExitStack, **overrides: Any) -> tuple[str, list[ClientConnection]]:
    """Two humans (seats 0 and 1) in a fresh 3-seat game with one AI seat, both joined over WS."""
    _, t0 = new_user(api)
    _, t1 = new_user(api)
    game = create_game(api, t0, **overrides).json()["data"]["game"]
    players = [ws_session(stack, exits, t0), ws_session(stack, exits, t1)]
    players[0].send(json.dumps({"type": "join", "gameId": game["id"]}))
    assert recv(players[0])["seat"] == 0
    joined = api.post(f"/api/games/{game['id']}/join", headers=bearer(t1))
    assert joined.status_code == 200 and joined.json()["data"]["seat"] == 1
    players[1].send(json.dumps({"type": "join", "gameId": game["id"]}))
    return game["id"], players


# -- auth ------------------------------------------------------------------------------------


def test_register_login_refresh_issue_hs256_tokens_with_expiry(api: httpx.Client) -> None:
    email = f"auth_{secrets.token_hex(4)}@example.test"
    registered = api.post("/api/auth/register", json={"email": email, "password": PASSWORD})
    assert registered.status_code == 201 and registered.json()["data"]["user"]["email"] == email
    again = api.post("/api/auth/register", json={"email": email, "password": PASSWORD})
    assert again.status_code == 409 and again.json()["error"]["code"] == "user_exists"
    assert api.post("/api/auth/register", json={"email": email}).status_code == 400

    login = api.post("/api/auth/login", json={"email": email, "password": PASSWORD}).json()["data"]
    assert set(login) >= {"accessToken", "refreshToken", "expiresIn", "user"}
    token = claims(login["accessToken"])
    assert json.loads(base64.urlsafe_b64decode(login["accessToken"].split(".")[0] + "=="))["alg"] == "HS256"
    assert token["email"] == email and token["sub"] == login["user"]["id"]
    assert token["exp"] - token["iat"] == login["expiresIn"] == 900

    wrong = api.post("/api/auth/login", json={"email": email, "password": "nope"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_credentials"
    refreshed = api.post("/api/auth/refresh", json={"refreshToken": login["refreshToken"]})
    assert refreshed.status_code == 200 and "accessToken" in refreshed.json()["data"]
    assert api.post("/api/auth/refresh", json={"refreshToken": login["accessToken"]}).status_code == 401
    tampered = login["accessToken"][:-2] + ("AA" if not login["accessToken"].endswith("AA") else "BB")
    assert api.get("/api/games", headers=bearer(tampered)).status_code == 401


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/api/admin/faults"), ("POST", "/api/admin/faults"), ("GET", "/api/admin/rate-limit-bypass"),
    ("POST", "/api/admin/rate-limit-bypass"), ("POST", "/api/admin/users/password"), ("GET", "/api/admin/stats"),
])
def test_admin_endpoints_refuse_a_missing_or_wrong_token(stack: LocalStack, method: str, path: str) -> None:
    for headers in ({}, {"X-Admin-Token": "wrong"}):
        response = httpx.request(method, stack.base_url + path, json={}, headers=headers)
        assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"
    assert httpx.post(stack.ai_url + "/admin/faults", json={"ai_failure_rate": 1}).status_code == 401


def test_admin_password_reset(stack: LocalStack, api: httpx.Client) -> None:
    email, _ = new_user(api)
    reset = admin(stack, "POST", "/api/admin/users/password", {"email": email, "password": "new-password"})
    assert reset.status_code == 200 and reset.json()["data"]["user"]["email"] == email
    assert api.post("/api/auth/login", json={"email": email, "password": PASSWORD}).status_code == 401
    assert api.post("/api/auth/login", json={"email": email, "password": "new-password"}).status_code == 200
    assert admin(stack, "POST", "/api/admin/users/password", {"email": "x@nobody.test", "password": "p"}).status_code == 404


# -- games -----------------------------------------------------------------------------------


def test_game_lifecycle_over_http(api: httpx.Client) -> None:
    _, creator = new_user(api)
    _, joiner = new_user(api)
    _, late = new_user(api)
    game = create_game(api, creator, maxPlayers=2, aiSeats=0, board="hex8").json()["data"]["game"]
    assert game["status"] == "waiting" and game["seats"][0]["kind"] == "human" and game["turnSeat"] == 0
    listed = api.get("/api/games", params={"status": "waiting", "board": "hex8", "maxPlayers": 2, "aiSeats": 0},
                     headers=bearer(joiner)).json()["data"]["games"]
    assert game["id"] in [g["id"] for g in listed]
    joined = api.post(f"/api/games/{game['id']}/join", headers=bearer(joiner)).json()["data"]
    assert joined["seat"] == 1 and joined["game"]["status"] == "active"
    full = api.post(f"/api/games/{game['id']}/join", headers=bearer(late))
    assert full.status_code == 409 and full.json()["error"]["code"] == "game_full"
    assert api.get(f"/api/games/{game['id']}", headers=bearer(late)).json()["data"]["game"]["status"] == "active"
    assert api.get("/api/games/g_missing", headers=bearer(late)).status_code == 404
    assert create_game(api, creator, maxPlayers=3, aiSeats=3).status_code == 400
    assert api.get("/api/games").status_code == 401


def test_full_game_with_two_humans_and_an_ai_seat_over_websocket(stack: LocalStack, api: httpx.Client) -> None:
    with ExitStack() as exits:
        game_id, players = start_game(stack, api, exits, movesPerGame=9)
        seen = play_to_end(players, game_id)
    for seat in ("0", "1"):
        kinds = [m["type"] for m in seen[seat]]
        assert "game_started" in kinds and kinds[-1] == "game_over"
        assert seen[seat][-1]["reason"] == "completed"
        ai_moves = [m for m in seen[seat] if m["type"] == "ai_move"]
        assert len(ai_moves) == 3 and not any(m["fallback"] for m in ai_moves)
        assert all(m["seat"] == 2 and m["aiLatencyMs"] >= 20 for m in ai_moves)
        acks = [m for m in seen[seat] if m["type"] == "move_ack"]
        assert len(acks) == 3 and all(a["serverProcessingMs"] >= 0 and a["moveId"] for a in acks)
        others = [m for m in seen[seat] if m["type"] == "move"]
        assert len(others) == 3 and all(m["seat"] != int(seat) for m in others)
    numbers = sorted(m["moveNumber"] for m in seen["0"] if m["type"] in ("move_ack", "move", "ai_move"))
    assert numbers == list(range(1, 10))
    state = api.get(f"/api/games/{game_id}", headers=bearer(new_user(api)[1])).json()["data"]["game"]
    assert state["status"] == "finished" and state["moveCount"] == 9


def test_moves_out_of_turn_are_refused(stack: LocalStack, api: httpx.Client) -> None:
    with ExitStack() as exits:
        game_id, players = start_game(stack, api, exits)
        recv_until(players[1], "game_started")
        players[1].send(json.dumps({"type": "move", "gameId": game_id, "moveId": "x", "move": {"from": 1, "to": 2}}))
        refused = recv_until(players[1], "error")
        assert refused["code"] == "not_your_turn" and refused["moveId"] == "x"


def test_a_human_leaving_an_active_game_ends_it_for_the_others(stack: LocalStack, api: httpx.Client) -> None:
    with ExitStack() as exits:
        game_id, players = start_game(stack, api, exits)
        recv_until(players[0], "game_started")
        players[1].close()
        over = recv_until(players[0], "game_over")
    assert over["reason"] == "player_left" and over["gameId"] == game_id


@pytest.mark.parametrize("ai_faults", [{"ai_failure_rate": 1.0}, {"ai_latency_ms": 800}], ids=["failure", "slow"])
def test_ai_seat_falls_back_when_the_ai_service_fails_or_is_too_slow(
    stack: LocalStack, api: httpx.Client, ai_faults: dict[str, Any]
) -> None:
    stack.set_ai_faults(**ai_faults)
    stack.set_faults(ai_timeout_ms=200)
    with ExitStack() as exits:
        game_id, players = start_game(stack, api, exits, movesPerGame=3)
        seen = play_to_end(players, game_id)
    ai_move = next(m for m in seen["0"] if m["type"] == "ai_move")
    assert ai_move["fallback"] is True and set(ai_move["move"]) == {"from", "to"}
    if "ai_latency_ms" in ai_faults:
        assert 190 <= ai_move["aiLatencyMs"] < 800


# -- rate limits and the bypass -------------------------------------------------------------


def test_strict_limits_answer_429_over_http_and_websocket(stack: LocalStack, api: httpx.Client) -> None:
    _, token = new_user(api)
    ws_token = new_user(api)[1]
    stack.set_faults(user_rate_per_s=0.5, user_burst=3)
    statuses = [api.get("/api/games", headers=bearer(token)).status_code for _ in range(5)]
    assert statuses[:3] == [200, 200, 200] and statuses[3:] == [429, 429]
    limited = api.get("/api/games", headers=bearer(token))
    assert limited.json()["error"]["code"] == "rate_limited" and limited.headers["Retry-After"] == "1"
    stack.set_faults(user_rate_per_s=20, user_burst=40, ip_rate_per_s=0.1, ip_burst=2)
    with connect(stack.ws_url) as ws:
        ws.send(json.dumps({"type": "auth", "token": ws_token}))
        assert recv(ws)["type"] == "auth_ok"
        replies = []
        for n in range(3):
            ws.send(json.dumps({"type": "ping", "t": n}))
            replies.append(recv(ws))
    assert [r["type"] for r in replies] == ["pong", "error", "error"]
    assert replies[1]["code"] == "rate_limited"


def test_bypass_covers_matching_users_until_its_lease_runs_out(stack: LocalStack, api: httpx.Client) -> None:
    _, pool_token = new_user(api, f"loadtest_user_{secrets.token_hex(3)}@loadtest.local")
    _, other_token = new_user(api)
    stack.set_faults(user_rate_per_s=0.1, user_burst=2, ip_rate_per_s=0.1, ip_burst=4)
    enabled = admin(stack, "POST", "/api/admin/rate-limit-bypass",
                    {"enabled": True, "leaseSeconds": 1.0, "pattern": r"loadtest.*@loadtest\.local"}).json()["data"]
    assert enabled["enabled"] is True and enabled["expiresAt"] > time.time()
    assert all(api.get("/api/games", headers=bearer(pool_token)).status_code == 200 for _ in range(10))
    assert 429 in [api.get("/api/games", headers=bearer(other_token)).status_code for _ in range(4)]

    time.sleep(max(0.0, enabled["expiresAt"] - time.time()) + 0.05)
    status = admin(stack, "GET", "/api/admin/rate-limit-bypass").json()["data"]
    assert status == {"enabled": False, "pattern": r"loadtest.*@loadtest\.local", "expiresAt": None}
    assert api.get("/api/games", headers=bearer(pool_token)).status_code == 429


# -- fault knobs -----------------------------------------------------------------------------


def test_token_ttl_and_omit_expires_in(stack: LocalStack, api: httpx.Client) -> None:
    email, _ = new_user(api)
    stack.set_faults(token_ttl_s=1, omit_expires_in=True)
    login = api.post("/api/auth/login", json={"email": email, "password": PASSWORD}).json()["data"]
    assert "expiresIn" not in login
    expiry = claims(login["accessToken"])["exp"]
    assert expiry - claims(login["accessToken"])["iat"] == 1
    time.sleep(max(0.0, expiry - time.time()) + 0.05)
    expired = api.get("/api/games", headers=bearer(login["accessToken"]))
    assert expired.status_code == 401 and expired.json()["error"]["code"] == "token_expired"
    with connect(stack.ws_url) as ws:
        ws.send(json.dumps({"type": "auth", "token": login["accessToken"]}))
        assert recv(ws)["code"] == "unauthorized"
        with pytest.raises(Exception):
            ws.recv(timeout=2)
        assert ws.close_code == 4401


def test_latency_knobs_slow_http_and_websocket(stack: LocalStack, api: httpx.Client) -> None:
    _, token = new_user(api)
    stack.set_faults(api_latency_ms=150, ws_latency_ms=150)
    started = time.perf_counter()
    assert api.get("/api/games", headers=bearer(token)).status_code == 200
    assert time.perf_counter() - started >= 0.15
    with ExitStack() as exits:
        ws = ws_session(stack, exits, token)
        started = time.perf_counter()
        ws.send(json.dumps({"type": "ping", "t": 1}))
        assert recv(ws) == {"type": "pong", "t": 1}
        assert time.perf_counter() - started >= 0.15


def test_ws_latency_shows_in_server_processing_time(stack: LocalStack, api: httpx.Client) -> None:
    with ExitStack() as exits:
        game_id, players = start_game(stack, api, exits)
        recv_until(players[0], "turn")
        stack.set_faults(ws_latency_ms=120)
        players[0].send(json.dumps({"type": "move", "gameId": game_id, "moveId": "slow", "move": {"from": 0, "to": 1}}))
        ack = recv_until(players[0], "move_ack")
    assert ack["serverProcessingMs"] >= 120


def test_error_5xx_rate_fails_player_routes_but_not_admin(stack: LocalStack, api: httpx.Client) -> None:
    email, token = new_user(api)
    stack.set_faults(error_5xx_rate=1.0)
    assert {api.get("/api/games", headers=bearer(token)).status_code for _ in range(12)} <= {500, 503}
    assert api.post("/api/auth/login", json={"email": email, "password": PASSWORD}).status_code in (500, 503)
    assert admin(stack, "GET", "/api/admin/stats").status_code == 200


def test_contract_violation_rate_breaks_bodies_of_2xx_answers(stack: LocalStack, api: httpx.Client) -> None:
    email, token = new_user(api)
    stack.set_faults(contract_violation_rate=1.0)
    login = api.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200 and "accessToken" not in login.json()["data"]
    created = create_game(api, token)
    assert created.status_code == 201 and "id" not in created.json()["data"]["game"]
    listed = api.get("/api/games", headers=bearer(token))
    assert listed.status_code == 200 and "games" not in listed.json()["data"]


def test_lost_game_rate_makes_fresh_games_answer_404(stack: LocalStack, api: httpx.Client) -> None:
    _, token = new_user(api)
    _, other = new_user(api)
    stack.set_faults(lost_game_rate=1.0)
    created = create_game(api, token)
    assert created.status_code == 201
    game_id = created.json()["data"]["game"]["id"]
    stack.set_faults(lost_game_rate=0.0)  # the decision was made at creation and sticks
    assert api.get(f"/api/games/{game_id}", headers=bearer(token)).status_code == 404
    assert api.post(f"/api/games/{game_id}/join", headers=bearer(other)).status_code == 404


def test_health_status_knob_on_both_services(stack: LocalStack) -> None:
    stack.set_faults(health_status=503)
    stack.set_ai_faults(health_status=503)
    assert httpx.get(stack.base_url + "/health").status_code == 503
    assert httpx.get(stack.ai_url + "/health").status_code == 503
    stack.set_faults(reset=True)
    assert httpx.get(stack.base_url + "/health").json() == {"status": "ok", "service": "api"}


def test_unknown_or_badly_typed_knobs_are_refused(stack: LocalStack) -> None:
    for body in ({"no_such_knob": 1}, {"error_5xx_rate": 2}, {"omit_expires_in": "yes"}):
        assert admin(stack, "POST", "/api/admin/faults", body).status_code == 400
    assert admin(stack, "GET", "/api/admin/faults").json()["data"]["faults"]["error_5xx_rate"] == 0.0


# -- the launcher ----------------------------------------------------------------------------


def test_launcher_applies_start_faults_and_keeps_the_admin_token_off_the_command_line(tmp_path: Any) -> None:
    with LocalStack(faults={"omit_expires_in": True}, ai_faults={"think_ms": 1}, log_dir=tmp_path,
                    admin_token="tok-" + secrets.token_hex(8)) as local:
        assert local.ws_url == local.base_url.replace("http://", "ws://") + "/ws"
        faults = httpx.get(local.base_url + "/api/admin/faults", headers={"X-Admin-Token": local.admin_token})
        assert faults.json()["data"]["faults"]["omit_expires_in"] is True
        for child in (local._api, local._ai):
            assert child is not None
            cmdline = open(f"/proc/{child.proc.pid}/cmdline", "rb").read().decode()
            assert local.admin_token not in cmdline
    assert {p.name for p in tmp_path.iterdir()} >= {"api.stderr.log", "ai.stderr.log"}
    with pytest.raises(StackError):
        _ = local.base_url


def test_launcher_reports_a_child_that_fails_to_start() -> None:
    with pytest.raises(StackError, match="unknown fault knob"):
        LocalStack(faults={"no_such_knob": 1}).start()


def test_launcher_retries_when_another_process_takes_the_port_first(monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_prodval import processes

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        ports = iter([squatter.getsockname()[1]])
        real = processes.free_loopback_port
        monkeypatch.setattr(processes, "free_loopback_port", lambda: next(ports, None) or real())
        with LocalStack(startup_timeout_s=10) as local:
            assert httpx.get(local.ai_url + "/health").json()["service"] == "ai"
