"""The embedded reference stack as real processes on 127.0.0.1, spoken to the way k6 speaks to RingRift.

HTTP with httpx; Socket.IO as Engine.IO 4 framing over a plain WebSocket (`0{…}`, `40{auth}`,
`42[name, payload]`, ping `2` → `3`), exactly what the k6 script sends: no Socket.IO client.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import ClientConnection, connect

from pytest_prodval.bypass import HttpBypass
from pytest_prodval.refstack.launcher import LocalStack, StackError

PASSWORD = "Pool-Passw0rd"
AI_GAME = {"boardType": "square8", "timeControl": {"type": "rapid", "initialTime": 600, "increment": 0},
           "isRated": False, "isPrivate": False, "maxPlayers": 2, "aiOpponents": {"count": 1, "difficulty": [2]}}
PVP_GAME = {**{k: v for k, v in AI_GAME.items() if k != "aiOpponents"}, "boardType": "hex8"}
BYPASS_TOKEN = "bypass-token-" + "x" * 12


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    """One stack for the module, short games off by default; knobs are reset after every test."""
    with LocalStack(ai_faults={"think_ms": 5, "think_jitter_ms": 2}) as running:
        yield running


@pytest.fixture(autouse=True)
def clean_faults(request: pytest.FixtureRequest) -> Iterator[None]:
    """Put every knob and the bypass back after a test that used the shared stack."""
    yield
    if "stack" in request.fixturenames:
        running: LocalStack = request.getfixturevalue("stack")
        running.set_faults(reset=True, choice_rate=0.0)
        running.set_ai_faults(reset=True, think_ms=5, think_jitter_ms=2)
        admin(running, "POST", "/api/admin/rate-limit-bypass", {"enabled": False})


@pytest.fixture(autouse=True)
def no_choices_by_default(request: pytest.FixtureRequest) -> None:
    """Decision phases only where a test asks for them (they make move counting irregular)."""
    if "stack" in request.fixturenames:
        request.getfixturevalue("stack").set_faults(choice_rate=0.0)


@pytest.fixture
def api(stack: LocalStack) -> Iterator[httpx.Client]:
    """An HTTP client on the API."""
    with httpx.Client(base_url=stack.base_url, timeout=10) as client:
        yield client


# -- helpers ------------------------------------------------------------------------------------


def admin(stack: LocalStack, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
    """An admin request with the stack's token."""
    return httpx.request(method, stack.base_url + path, json=body, headers={"X-Admin-Token": stack.admin_token})


class Player:
    """A registered, logged-in user."""

    def __init__(self, api: httpx.Client, email: str | None = None) -> None:
        self.username = "u_" + secrets.token_hex(5)
        self.email = email or f"{self.username}@example.test"
        body = {"username": self.username, "email": self.email, "password": PASSWORD, "confirmPassword": PASSWORD}
        response = api.post("/api/auth/register", json=body)
        assert response.status_code == 201, response.text
        self.id = response.json()["data"]["user"]["id"]
        login = api.post("/api/auth/login", json={"email": self.email, "password": PASSWORD})
        assert login.status_code == 200, login.text
        self.token: str = login.json()["data"]["accessToken"]
        self.headers = {"Authorization": f"Bearer {self.token}"}


def claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))  # type: ignore[no-any-return]


class Sio:
    """Socket.IO v4 over a plain WebSocket, the way the k6 script frames it."""

    def __init__(self, url: str, auth: dict[str, Any] | None, *, headers: dict[str, str] | None = None) -> None:
        self.ws: ClientConnection = connect(url, open_timeout=5, compression=None, additional_headers=headers,
                                          ping_interval=None, legacy=True)
        opened = self.ws.recv(timeout=5)
        assert isinstance(opened, str) and opened.startswith("0")
        self.handshake = json.loads(opened[1:])
        self.ws.send("40" + json.dumps(auth) if auth is not None else "40")
        self.connect_reply = self._packet(5)
        self.events: list[tuple[str, Any]] = []

    @property
    def connected(self) -> bool:
        return self.connect_reply.startswith("40")

    def _packet(self, timeout: float) -> str:
        while True:
            message = self.ws.recv(timeout=timeout)
            assert isinstance(message, str)
            if message == "2":
                self.ws.send("3")
                continue
            return message

    def emit(self, name: str, payload: Any = None) -> None:
        self.ws.send("42" + json.dumps([name] if payload is None else [name, payload]))

    def wait(self, name: str, where: Callable[[Any], bool] = lambda _: True, timeout: float = 5) -> Any:
        """The first event `name` matching `where`, already read or still to come; older `name` events are dropped."""
        for index, (seen, payload) in enumerate(self.events):
            if seen == name and where(payload):
                self.events = [e for i, e in enumerate(self.events) if i > index or e[0] != name]
                return payload
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {name!r} within {timeout} s; got {[e[0] for e in self.events]}")
            try:
                packet = self._packet(left)
            except TimeoutError:
                continue
            assert packet.startswith("42"), packet
            seen, *rest = json.loads(packet[2:])
            payload = rest[0] if rest else None
            if seen == name and where(payload):
                self.events = [e for e in self.events if e[0] != name]
                return payload
            self.events.append((seen, payload))

    def state(self, where: Callable[[dict[str, Any]], bool] = lambda _: True, timeout: float = 5) -> dict[str, Any]:
        """The `data` of the next game_state matching `where`."""
        payload = self.wait("game_state", lambda p: where(p["data"]), timeout)
        assert payload["type"] == "game_update"
        return payload["data"]  # type: ignore[no-any-return]

    def close(self) -> None:
        self.ws.close()


def sio(stack: LocalStack, exits: ExitStack, player: Player, **kwargs: Any) -> Sio:
    """A connected Socket.IO session for `player`."""
    client = Sio(stack.ws_url, {"token": player.token}, **kwargs)
    exits.callback(client.close)
    assert client.connected, client.connect_reply
    return client


def create(api: httpx.Client, player: Player, body: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    response = api.post("/api/games", json={**(body or AI_GAME), **overrides}, headers=player.headers)
    assert response.status_code == 201, response.text
    return response.json()["data"]["game"]  # type: ignore[no-any-return]


def my_turn(number: int) -> Callable[[dict[str, Any]], bool]:
    return lambda data: data["gameState"]["currentPlayer"] == number and bool(data["validMoves"])


def metric(stack: LocalStack, name: str, **labels: str) -> float:
    """One sample of the API's /metrics (0 when absent)."""
    text = httpx.get(stack.metrics_url).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def wait_until(check: Callable[[], bool], timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


# -- auth ----------------------------------------------------------------------------------------


def test_register_enforces_the_policy_and_refuses_taken_names(api: httpx.Client) -> None:
    player = Player(api)
    body = {"username": "fresh_" + secrets.token_hex(3), "email": player.email, "password": PASSWORD,
            "confirmPassword": PASSWORD}
    taken = api.post("/api/auth/register", json=body)
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "EMAIL_EXISTS"
    taken = api.post("/api/auth/register", json={**body, "email": "x" + player.email, "username": player.username})
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "USERNAME_EXISTS"
    weak = api.post("/api/auth/register", json={**body, "email": "y" + player.email, "password": "alllower1",
                                                 "confirmPassword": "alllower1"})
    error = weak.json()
    assert weak.status_code == 400 and error["success"] is False and error["error"]["code"] == "VALIDATION_FAILED"
    assert "upper-case" in error["error"]["message"] and {"requestId", "timestamp"} <= set(error["error"])
    missing = api.post("/api/auth/register", json={"email": "z@example.test", "password": PASSWORD})
    assert missing.status_code == 400 and "username" in missing.json()["error"]["message"]


def test_login_and_refresh_bodies_and_jwt_claims(api: httpx.Client) -> None:
    player = Player(api)
    login = api.post("/api/auth/login", json={"email": player.email, "password": PASSWORD}).json()
    assert login["success"] is True
    data = login["data"]
    assert data["user"] == {"id": player.id, "email": player.email, "username": player.username, "role": "USER"}
    assert data["expiresIn"] == 900 and data["refreshToken"]
    token = claims(data["accessToken"])
    assert set(token) == {"userId", "email", "tv", "iat", "exp", "aud", "iss"} and token["exp"] - token["iat"] == 900
    refreshed = api.post("/api/auth/refresh", json={"refreshToken": data["refreshToken"]})
    assert refreshed.status_code == 200 and set(refreshed.json()["data"]) == {"accessToken", "refreshToken"}
    games = api.get("/api/games", headers={"Authorization": f"Bearer {refreshed.json()['data']['accessToken']}"})
    assert games.status_code == 200 and games.json()["data"]["games"] == []
    for body, code in (({"refreshToken": data["accessToken"]}, "AUTH_REFRESH_TOKEN_INVALID"),
                       ({"refreshToken": "nope"}, "AUTH_REFRESH_TOKEN_INVALID")):
        answer = api.post("/api/auth/refresh", json=body)
        assert answer.status_code == 401 and answer.json()["error"]["code"] == code
    wrong = api.post("/api/auth/login", json={"email": player.email, "password": "Wrong-Passw0rd"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "AUTH_INVALID_CREDENTIALS"
    assert api.get("/api/games").json()["error"]["code"] == "AUTH_REQUIRED"


def test_socket_connect_takes_the_token_from_auth_only(stack: LocalStack, api: httpx.Client) -> None:
    player = Player(api)
    with ExitStack() as exits:
        good = sio(stack, exits, player)
        assert {"sid", "upgrades", "pingInterval", "pingTimeout", "maxPayload"} <= set(good.handshake)
        assert (good.handshake["pingInterval"], good.handshake["pingTimeout"]) == (25000, 20000)
        assert json.loads(good.connect_reply[2:])["sid"]
        stack.set_faults(token_ttl_s=1)
        expired = Player(api).token
        time.sleep(1.1)
        for auth, url in (({}, stack.ws_url), ({"token": "garbage"}, stack.ws_url), ({"token": expired}, stack.ws_url),
                          ({}, f"{stack.ws_url}&token={player.token}")):
            refused = Sio(url, auth)
            exits.callback(refused.close)
            assert refused.connect_reply.startswith("44") and "message" in json.loads(refused.connect_reply[2:])


# -- games ---------------------------------------------------------------------------------------


def test_ai_game_is_active_at_once_plays_ai_turns_and_ends_when_the_human_resigns(stack: LocalStack,
                                                                                  api: httpx.Client) -> None:
    player = Player(api)
    ai_before = metric(stack, "ringrift_ai_requests_total", outcome="success")
    game = create(api, player)
    assert game["status"] == "active" and game["gameState"]["aiOpponents"] == {"count": 1, "difficulty": [2]}
    assert game["player1"] == {"id": player.id, "username": player.username} and game["player2Id"] is None
    with ExitStack() as exits:
        socket_ = sio(stack, exits, player)
        socket_.emit("join_game", {"gameId": game["id"]})
        snapshot = socket_.state()
        state = snapshot["gameState"]
        assert state["gameStatus"] == "active" and state["currentPlayer"] == 1 and snapshot["validMoves"]
        assert [(p["playerNumber"], p["type"]) for p in state["players"]] == [(1, "human"), (2, "ai")]
        data = snapshot
        for _ in range(3):
            move = data["validMoves"][-1]
            assert move["player"] == 1 and move["type"] in ("place_ring", "move_stack", "overtaking_capture")
            socket_.emit("player_move_by_id", {"gameId": game["id"], "moveId": move["id"]})
            mine = socket_.state(lambda d, m=move: d["gameState"]["moveHistory"][-1]["id"] == m["id"])
            assert mine["gameState"]["moveHistory"][-1] == {"id": move["id"], "player": 1, "type": move["type"],
                                                            "moveNumber": len(mine["gameState"]["moveHistory"])}
            data = socket_.state(lambda d: d["gameState"]["moveHistory"][-1]["player"] == 2)  # the AI's move
            assert data["gameState"]["currentPlayer"] == 1
        assert api.post(f"/api/games/{game['id']}/leave", headers=player.headers).status_code == 200
        over = socket_.wait("game_over")
        assert over["type"] == "game_over" and over["data"]["gameResult"] == {"winner": 2, "reason": "resignation"}
        assert over["data"]["gameState"]["gameStatus"] == "completed"
    assert api.get(f"/api/games/{game['id']}", headers=player.headers).json()["data"]["game"]["status"] == "completed"
    assert metric(stack, "ringrift_ai_requests_total", outcome="success") >= ai_before + 3


def test_human_only_game_waits_in_the_lobby_until_full_then_starts_for_everyone(stack: LocalStack,
                                                                                api: httpx.Client) -> None:
    creator, joiner, late = Player(api), Player(api), Player(api)
    with ExitStack() as exits:
        watcher, host, guest = sio(stack, exits, late), sio(stack, exits, creator), sio(stack, exits, joiner)
        watcher.emit("lobby:subscribe")
        time.sleep(0.1)  # the subscription is processed before the game exists
        game = create(api, creator, PVP_GAME)
        assert game["status"] == "waiting"
        announced = watcher.wait("lobby:game_created", lambda g: g["id"] == game["id"])
        assert announced["player1"] == {"id": creator.id, "username": creator.username} and announced["inviteCode"]
        listed = api.get("/api/games/lobby/available", params={"boardType": "hex8", "maxPlayers": 2},
                         headers=late.headers).json()["data"]["games"]
        assert game["id"] in [g["id"] for g in listed]
        host.emit("join_game", {"gameId": game["id"]})
        assert host.state()["gameState"]["gameStatus"] == "waiting"
        lookup = api.get(f"/api/games/invite/{game['inviteCode']}", headers=joiner.headers)
        assert lookup.json()["data"]["game"]["id"] == game["id"]
        joined = api.post(f"/api/games/invite/{game['inviteCode']}/join", headers=joiner.headers)
        assert joined.status_code == 200 and joined.json()["data"]["game"]["status"] == "active"
        assert watcher.wait("lobby:game_joined", lambda e: e["gameId"] == game["id"]) == {"gameId": game["id"],
                                                                                       "playerCount": 2}
        started = watcher.wait("lobby:game_started", lambda e: e["gameId"] == game["id"])
        assert started["status"] == "active" and started["playerCount"] == 2 and started["startedAt"]
        assert host.state(lambda d: d["gameState"]["gameStatus"] == "active")["gameState"]["currentPlayer"] == 1
        for answer, code in ((api.post(f"/api/games/{game['id']}/join", headers=joiner.headers), "ALREADY_JOINED"),
                             (api.post(f"/api/games/{game['id']}/join", headers=late.headers), "GAME_NOT_JOINABLE"),
                             (api.post(f"/api/games/{secrets.token_hex(4)}/join", headers=late.headers), "GAME_NOT_FOUND")):
            assert answer.json()["error"]["code"] == code
        guest.emit("join_game", {"gameId": game["id"]})
        data = guest.state()
        assert [p["id"] for p in data["gameState"]["players"]] == [creator.id, joiner.id]
        assert host.wait("player_joined")["userId"] == joiner.id
        # The other human moves, and both see it.
        guest.emit("player_move_by_id", {"gameId": game["id"], "moveId": data["validMoves"][0]["id"]})
        assert guest.wait("error")["code"] == "MOVE_REJECTED"  # not its turn: player 1 starts
        move = data["validMoves"][0]
        host.emit("player_move_by_id", {"gameId": game["id"], "moveId": move["id"]})
        for seen in (host, guest):
            assert seen.state(lambda d: d["gameState"]["currentPlayer"] == 2)["gameState"]["moveHistory"][-1]["id"] == move["id"]
        assert api.post(f"/api/games/{game['id']}/leave", headers=joiner.headers).status_code == 200
        assert host.wait("game_over")["data"]["gameResult"] == {"winner": 1, "reason": "resignation"}


def test_the_creator_leaving_a_waiting_game_cancels_it(stack: LocalStack, api: httpx.Client) -> None:
    creator, watcher_user = Player(api), Player(api)
    with ExitStack() as exits:
        watcher = sio(stack, exits, watcher_user)
        watcher.emit("lobby:subscribe")
        time.sleep(0.1)
        game = create(api, creator, PVP_GAME)
        assert api.post(f"/api/games/{game['id']}/leave", headers=creator.headers).status_code == 200
        assert watcher.wait("lobby:game_cancelled") == {"gameId": game["id"]}
    assert api.get(f"/api/games/{game['id']}", headers=creator.headers).json()["data"]["game"]["status"] == "abandoned"


def test_a_game_with_ai_and_two_human_seats_waits_unless_ringrifts_rule_is_on(stack: LocalStack,
                                                                               api: httpx.Client) -> None:
    creator, joiner = Player(api), Player(api)
    shape = {**AI_GAME, "maxPlayers": 3}
    waiting = create(api, creator, shape)
    assert waiting["status"] == "waiting"
    assert api.post(f"/api/games/{waiting['id']}/join", headers=joiner.headers).json()["data"]["game"]["status"] == "active"
    stack.set_faults(ai_games_start_at_once=True)
    ringrift = create(api, creator, shape)
    assert ringrift["status"] == "active"
    refused = api.post(f"/api/games/{ringrift['id']}/join", headers=joiner.headers)
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "GAME_NOT_JOINABLE"
    with ExitStack() as exits:
        host = sio(stack, exits, creator)
        host.emit("join_game", {"gameId": ringrift["id"]})
        data = host.state()
        assert data["gameState"]["gameStatus"] == "active" and len(data["gameState"]["players"]) == 2  # never 3
        assert data["validMoves"] == []
    rated = api.post("/api/games", json={**AI_GAME, "isRated": True}, headers=creator.headers)
    assert rated.status_code == 400 and rated.json()["error"]["code"] == "AI_GAMES_UNRATED"


def test_join_last_write_wins_answers_both_joins_of_the_last_seat_and_the_first_loses_it(stack: LocalStack,
                                                                                         api: httpx.Client) -> None:
    stack.set_faults(join_last_write_wins=True)
    creator, first, second, late = Player(api), Player(api), Player(api), Player(api)
    game = create(api, creator, PVP_GAME)
    answers = [api.post(f"/api/games/{game['id']}/join", headers=p.headers) for p in (first, second)]
    assert [a.status_code for a in answers] == [200, 200]  # RingRift: "Joined game successfully" twice
    assert answers[0].json()["data"]["game"]["player2Id"] == first.id
    assert answers[1].json()["data"]["game"]["player2Id"] == second.id  # the last write keeps the seat
    looked = api.get(f"/api/games/{game['id']}", headers=first.headers).json()["data"]["game"]
    assert looked["status"] == "waiting" and looked["player2Id"] == second.id
    with ExitStack() as exits:
        host, loser, winner = sio(stack, exits, creator), sio(stack, exits, first), sio(stack, exits, second)
        loser.emit("join_game", {"gameId": game["id"]})
        refused = loser.wait("error")
        assert (refused["code"], refused["event"]) == ("INTERNAL_ERROR", "join_game")
        leave = api.post(f"/api/games/{game['id']}/leave", headers=first.headers)
        assert leave.status_code == 403 and leave.json()["error"]["code"] == "ACCESS_DENIED"
        winner.emit("join_game", {"gameId": game["id"]})  # the first join_game starts the game
        data = winner.state(lambda d: d["gameState"]["gameStatus"] == "active")
        assert [p["id"] for p in data["gameState"]["players"]] == [creator.id, second.id]
        host.emit("join_game", {"gameId": game["id"]})
        assert host.state()["gameState"]["gameStatus"] == "active"
    refused_late = api.post(f"/api/games/{game['id']}/join", headers=late.headers)
    assert refused_late.status_code == 400 and refused_late.json()["error"]["code"] == "GAME_NOT_JOINABLE"


def test_decision_phase_by_choice_response_or_by_move_id(stack: LocalStack, api: httpx.Client) -> None:
    stack.set_faults(choice_rate=1.0)
    player = Player(api)
    game = create(api, player)
    with ExitStack() as exits:
        socket_ = sio(stack, exits, player)
        socket_.emit("join_game", {"gameId": game["id"]})
        socket_.emit("player_move_by_id", {"gameId": game["id"], "moveId": socket_.state()["validMoves"][0]["id"]})
        choice = socket_.wait("player_choice_required")
        assert {k: choice[k] for k in ("gameId", "playerNumber", "type")} == {"gameId": game["id"], "playerNumber": 1,
                                                                           "type": "line_order"}
        assert choice["prompt"] and all(set(o) == {"lineId", "markerPositions", "moveId"} for o in choice["options"])
        answer = {"choiceId": choice["id"], "playerNumber": 1, "choiceType": "line_order"}
        socket_.emit("player_choice_response", {**answer, "selectedOption": {**choice["options"][0], "lineId": "x"}})
        rejected = socket_.wait("error")
        assert (rejected["code"], rejected["event"]) == ("CHOICE_REJECTED", "player_choice_response")
        socket_.emit("player_choice_response", {**answer, "selectedOption": choice["options"][1]})
        done = socket_.state(lambda d: d["gameState"]["moveHistory"][-1]["type"] == "process_line")
        assert done["gameState"]["moveHistory"][-1]["id"] == choice["options"][1]["moveId"]
        # The next decision is answered with a move id instead.
        data = socket_.state(my_turn(1))
        socket_.emit("player_move_by_id", {"gameId": game["id"], "moveId": data["validMoves"][0]["id"]})
        choice = socket_.wait("player_choice_required")
        decision = socket_.state(lambda d: d["gameState"]["currentPhase"] == "line_processing")
        assert {m["type"] for m in decision["validMoves"]} == {"process_line"}
        socket_.emit("player_move_by_id", {"gameId": game["id"], "moveId": choice["options"][0]["moveId"]})
        assert socket_.state(lambda d: d["gameState"]["moveHistory"][-1]["id"] == choice["options"][0]["moveId"])


def test_moves_out_of_turn_unknown_or_malformed_are_rejected(stack: LocalStack, api: httpx.Client) -> None:
    player, stranger = Player(api), Player(api)
    game = create(api, player)
    with ExitStack() as exits:
        socket_, other = sio(stack, exits, player), sio(stack, exits, stranger)
        socket_.emit("join_game", {"gameId": game["id"]})
        socket_.state()
        for payload, code in (({"gameId": game["id"], "moveId": "no-such-move"}, "MOVE_REJECTED"),
                              ({"gameId": game["id"]}, "INVALID_PAYLOAD"),
                              ({"gameId": "nope", "moveId": "x"}, "GAME_NOT_FOUND")):
            socket_.emit("player_move_by_id", payload)
            error = socket_.wait("error")
            assert (error["type"], error["code"], error["event"]) == ("error", code, "player_move_by_id")
        other.emit("join_game", {"gameId": game["id"]})
        assert other.wait("error")["code"] == "ACCESS_DENIED"


def test_diagnostic_ping_pong_and_its_limit(stack: LocalStack, api: httpx.Client) -> None:
    with ExitStack() as exits:
        socket_ = sio(stack, exits, Player(api))
        socket_.emit("diagnostic:ping", {"timestamp": 123, "vu": 7, "sequence": 1})
        pong = socket_.wait("diagnostic:pong")
        assert pong["timestamp"] == 123 and (pong["vu"], pong["sequence"]) == (7, 1)
        assert abs(pong["serverTimestamp"] - time.time() * 1000) < 5000
        for n in range(2, 62):
            socket_.emit("diagnostic:ping", {"timestamp": n, "sequence": n})
        for n in range(2, 61):
            assert socket_.wait("diagnostic:pong", lambda p, n=n: p["sequence"] == n)
        limited = socket_.wait("error")
        assert (limited["code"], limited["event"]) == ("RATE_LIMITED", "diagnostic:ping")


# -- limits and the bypass -----------------------------------------------------------------------------------


def test_429_body_retry_after_metric_and_the_bypass_by_pattern(stack: LocalStack, api: httpx.Client) -> None:
    pooled, other = Player(api, f"loadtest_{secrets.token_hex(3)}@loadtest.local"), Player(api)
    stack.set_faults(user_burst=3, user_rate_per_s=0.5)
    hits = metric(stack, "ringrift_rate_limit_hits_total", endpoint="/api/games", limiter="apiAuthenticated")
    answers = [api.get("/api/games", headers=other.headers) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    body = answers[-1].json()
    assert body["success"] is False and body["error"]["code"] == "RATE_LIMITED"
    assert int(answers[-1].headers["Retry-After"]) >= 1
    assert metric(stack, "ringrift_rate_limit_hits_total", endpoint="/api/games", limiter="apiAuthenticated") == hits + 1
    controller = HttpBypass(stack.base_url, stack.admin_token, timeout_s=5)  # pytest_prodval.bypass keeps working
    controller.enable(r"loadtest.*@loadtest\.local", lease_s=30)
    assert controller.status() is True
    assert all(api.get("/api/games", headers=pooled.headers).status_code == 200 for _ in range(10))
    assert api.get("/api/games", headers=other.headers).status_code == 429  # not matching the pattern
    stack.set_faults(unbypassed_limiters=["apiAuthenticated"])
    assert 429 in [api.get("/api/games", headers=pooled.headers).status_code for _ in range(5)]
    controller.disable()
    assert controller.status() is False


def test_the_bypass_token_covers_http_and_the_websocket_handshake(stack: LocalStack, api: httpx.Client) -> None:
    player = Player(api)
    state = admin(stack, "POST", "/api/admin/rate-limit-bypass", {"enabled": True, "leaseSeconds": 30,
                                                                  "token": BYPASS_TOKEN}).json()["data"]
    assert state["enabled"] is True and state["tokenConfigured"] is True
    stack.set_faults(ip_burst=2, ip_rate_per_s=0.1)
    token = {"X-RateLimit-Bypass-Token": BYPASS_TOKEN}
    logins = [api.post("/api/auth/login", json={"email": player.email, "password": PASSWORD}).status_code for _ in range(3)]
    assert logins[-1] == 429
    assert api.post("/api/auth/login", json={"email": player.email, "password": PASSWORD}, headers=token).status_code == 200
    with ExitStack() as exits:
        replies = [Sio(stack.ws_url, {"token": player.token}) for _ in range(3)]
        for reply in replies:
            exits.callback(reply.close)
        refused = replies[-1]
        assert refused.connect_reply.startswith("44") and json.loads(refused.connect_reply[2:])["data"]["code"] == "RATE_LIMITED"
        assert sio(stack, exits, player, headers=token).connected
    assert metric(stack, "ringrift_rate_limit_hits_total", endpoint="websocket:connect", limiter="websocket") >= 1


def test_token_knobs_ttl_expires_in_and_opaque_tokens(stack: LocalStack, api: httpx.Client) -> None:
    player = Player(api)
    stack.set_faults(token_ttl_s=120, omit_expires_in=True)
    data = api.post("/api/auth/login", json={"email": player.email, "password": PASSWORD}).json()["data"]
    assert "expiresIn" not in data and claims(data["accessToken"])["exp"] - claims(data["accessToken"])["iat"] == 120
    stack.set_faults(opaque_tokens=True)
    opaque = api.post("/api/auth/login", json={"email": player.email, "password": PASSWORD}).json()["data"]["accessToken"]
    assert "." not in opaque
    assert api.get("/api/games", headers={"Authorization": f"Bearer {opaque}"}).status_code == 200


def test_latency_knobs_slow_http_and_socket_events(stack: LocalStack, api: httpx.Client) -> None:
    player = Player(api)
    stack.set_faults(api_latency_ms=300, ws_latency_ms=300)
    started = time.monotonic()
    assert api.get("/api/games", headers=player.headers).status_code == 200
    assert time.monotonic() - started >= 0.3
    assert api.get("/health").elapsed.total_seconds() < 0.3  # only /api/* routes
    with ExitStack() as exits:
        socket_ = sio(stack, exits, player)
        started = time.monotonic()
        socket_.emit("diagnostic:ping", {"timestamp": 1})
        socket_.wait("diagnostic:pong")
        assert time.monotonic() - started >= 0.3
    # The handshake knob delays the WebSocket upgrade itself (what k6's ws_connecting times), not HTTP.
    stack.set_faults(reset=True, ws_handshake_latency_ms=1000)
    assert api.get("/api/games", headers=player.headers).elapsed.total_seconds() < 0.8  # a loaded CI box: margin
    started = time.monotonic()
    with connect(stack.ws_url, open_timeout=5, ping_interval=None):
        assert time.monotonic() - started >= 1.0


def test_error_5xx_rate_and_route_500_fail_player_routes_but_not_register(stack: LocalStack, api: httpx.Client) -> None:
    player = Player(api)
    stack.set_faults(error_5xx_rate=1.0)
    login = api.post("/api/auth/login", json={"email": player.email, "password": PASSWORD})
    assert login.status_code in (500, 503) and login.json()["success"] is False
    body = {"username": "u_" + secrets.token_hex(5), "email": f"{secrets.token_hex(5)}@example.test",
            "password": PASSWORD, "confirmPassword": PASSWORD}
    assert api.post("/api/auth/register", json=body).status_code == 201  # register keeps working, so seeding does
    stack.set_faults(reset=True, route_500=["game_list"])
    for path in ("/api/games", "/api/games/lobby/available"):
        answer = api.get(path, headers=player.headers)
        assert answer.status_code == 500 and answer.json()["error"]["code"] == "INTERNAL_ERROR"
    assert api.post("/api/games", json=AI_GAME, headers=player.headers).status_code == 201


def test_contract_violation_rate_breaks_bodies_of_2xx_answers(stack: LocalStack, api: httpx.Client) -> None:
    player = Player(api)
    stack.set_faults(contract_violation_rate=1.0)
    login = api.post("/api/auth/login", json={"email": player.email, "password": PASSWORD}).json()["data"]
    assert "accessToken" not in login and login["access_token"]
    game = api.post("/api/games", json=AI_GAME, headers=player.headers).json()["data"]["game"]
    assert "id" not in game and game["status"] == "active"
    listed = api.get("/api/games/lobby/available", headers=player.headers).json()["data"]
    assert "games" not in listed and "items" in listed


def test_lost_game_rate_makes_fresh_games_answer_404(stack: LocalStack, api: httpx.Client) -> None:
    player = Player(api)
    stack.set_faults(lost_game_rate=1.0)
    game = create(api, player)
    assert api.get(f"/api/games/{game['id']}", headers=player.headers).json()["error"]["code"] == "GAME_NOT_FOUND"
    assert api.post(f"/api/games/{game['id']}/join", headers=player.headers).status_code == 404
    with ExitStack() as exits:
        socket_ = sio(stack, exits, player)
        socket_.emit("join_game", {"gameId": game["id"]})
        assert socket_.wait("error")["code"] == "GAME_NOT_FOUND"


def test_health_status_knob_on_both_services(stack: LocalStack) -> None:
    health = httpx.get(stack.base_url + "/health").json()
    assert health["status"] == "healthy" and {"timestamp", "version", "uptime"} <= set(health)
    ready = httpx.get(stack.base_url + "/readyz").json()
    assert ready["status"] == "ready" and set(ready["checks"]) == {"database", "redis", "aiService"}
    stack.set_faults(health_status=503)
    stack.set_ai_faults(health_status=500)
    assert httpx.get(stack.base_url + "/healthz").status_code == 503
    assert httpx.get(stack.ai_url + "/health").status_code == 500
    stack.set_faults(health_status=None)
    wait_until(lambda: httpx.get(stack.base_url + "/ready").json()["status"] == "degraded")  # AI down: still 200


@pytest.mark.parametrize(("api_knobs", "ai_knobs", "reason"), [
    ({"ai_timeout_ms": 100}, {"ai_latency_ms": 400}, "timeout"),
    ({}, {"ai_failure_rate": 1.0}, "service_error"),
    ({}, {"ai_fallback_rate": 1.0}, "invalid_move"),
])
def test_ai_faults_make_the_api_fall_back_and_count_why(stack: LocalStack, api: httpx.Client, api_knobs: dict[str, Any],
                                                        ai_knobs: dict[str, Any], reason: str) -> None:
    stack.set_faults(**api_knobs)
    stack.set_ai_faults(**ai_knobs)
    before = metric(stack, "ringrift_ai_fallback_total", reason=reason)
    fallbacks = metric(stack, "ringrift_ai_requests_total", outcome="fallback")
    player = Player(api)
    game = create(api, player)
    with ExitStack() as exits:
        socket_ = sio(stack, exits, player)
        socket_.emit("join_game", {"gameId": game["id"]})
        socket_.emit("player_move_by_id", {"gameId": game["id"], "moveId": socket_.state()["validMoves"][0]["id"]})
        socket_.state(lambda d: d["gameState"]["moveHistory"][-1]["player"] == 2)  # the AI still moved
    assert metric(stack, "ringrift_ai_fallback_total", reason=reason) == before + 1
    assert metric(stack, "ringrift_ai_requests_total", outcome="fallback") == fallbacks + 1


def test_an_ai_answer_for_a_game_that_ended_meanwhile_is_dropped(stack: LocalStack, api: httpx.Client) -> None:
    stack.set_ai_faults(ai_latency_ms=300)
    player = Player(api)
    game = create(api, player)
    fallbacks = metric(stack, "ringrift_ai_requests_total", outcome="fallback")
    with ExitStack() as exits:
        socket_ = sio(stack, exits, player)
        socket_.emit("join_game", {"gameId": game["id"]})
        socket_.emit("player_move_by_id", {"gameId": game["id"], "moveId": socket_.state()["validMoves"][0]["id"]})
        socket_.state(lambda d: d["gameState"]["currentPlayer"] == 2)  # the AI is thinking now
        api.post(f"/api/games/{game['id']}/leave", headers=player.headers)
        over = socket_.wait("game_over")["data"]
        time.sleep(0.5)
    final = api.get(f"/api/games/{game['id']}", headers=player.headers).json()["data"]["game"]
    assert final["status"] == "completed" and len(over["gameState"]["moveHistory"]) == 1
    assert metric(stack, "ringrift_ai_requests_total", outcome="fallback") == fallbacks


def test_game_length_ends_a_game_naturally(stack: LocalStack, api: httpx.Client) -> None:
    stack.set_faults(game_length_moves=6)
    player = Player(api)
    game = create(api, player)
    with ExitStack() as exits:
        socket_ = sio(stack, exits, player)
        socket_.emit("join_game", {"gameId": game["id"]})
        for _ in range(3):
            socket_.emit("player_move_by_id", {"gameId": game["id"], "moveId": socket_.state(my_turn(1))["validMoves"][0]["id"]})
        over = socket_.wait("game_over")["data"]
        assert len(over["gameState"]["moveHistory"]) == 6 and over["gameResult"]["reason"] != "resignation"


def test_disconnect_grace_and_absent_seats_end_games_as_abandoned(stack: LocalStack, api: httpx.Client) -> None:
    stack.set_faults(disconnect_grace_s=0.5, absent_seat_grace_s=1.0)
    creator, joiner, absent = Player(api), Player(api), Player(api)
    pvp = create(api, creator, PVP_GAME)
    api.post(f"/api/games/{pvp['id']}/join", headers=joiner.headers)
    never_joined = create(api, absent)
    with ExitStack() as exits:
        host = sio(stack, exits, creator)
        guest = Sio(stack.ws_url, {"token": joiner.token})
        for seen in (host, guest):
            seen.emit("join_game", {"gameId": pvp["id"]})
            seen.state()
        guest.close()
        assert host.wait("player_disconnected")["userId"] == joiner.id
        over = host.wait("game_over", timeout=3)["data"]
        assert over["gameResult"] == {"winner": None, "reason": "abandonment"}
        assert over["gameState"]["gameStatus"] == "abandoned"
    wait_until(lambda: api.get(f"/api/games/{never_joined['id']}", headers=absent.headers)
               .json()["data"]["game"]["status"] == "abandoned", timeout=4)


def test_unknown_or_badly_typed_knobs_are_refused(stack: LocalStack) -> None:
    for body in ({"no_such_knob": 1}, {"error_5xx_rate": 2}, {"omit_expires_in": "yes"}, {"route_500": ["nope"]}):
        assert admin(stack, "POST", "/api/admin/faults", body).status_code == 400
    assert admin(stack, "GET", "/api/admin/faults").json()["data"]["faults"]["error_5xx_rate"] == 0.0
    assert httpx.post(stack.ai_url + "/admin/faults", json={"nope": 1},
                      headers={"X-Admin-Token": stack.admin_token}).status_code == 400


@pytest.mark.parametrize(("method", "path"), [("GET", "/api/admin/faults"), ("POST", "/api/admin/rate-limit-bypass"),
                                              ("GET", "/api/admin/stats"), ("POST", "/api/admin/users/password")])
def test_admin_routes_refuse_a_missing_or_wrong_token(stack: LocalStack, method: str, path: str) -> None:
    for headers in ({}, {"X-Admin-Token": "wrong"}):
        assert httpx.request(method, stack.base_url + path, json={}, headers=headers).status_code == 401


def test_admin_password_reset_and_stats(stack: LocalStack, api: httpx.Client) -> None:
    player = Player(api)
    assert admin(stack, "POST", "/api/admin/users/password", {"email": player.email, "password": "New-Passw0rd"}).status_code == 200
    assert api.post("/api/auth/login", json={"email": player.email, "password": "New-Passw0rd"}).status_code == 200
    stats = admin(stack, "GET", "/api/admin/stats").json()["data"]
    assert {"activeGames", "waitingGames", "movesTotal", "wsConnections", "aiMoves", "aiFallbacks", "users"} <= set(stats)


# -- metrics -------------------------------------------------------------------------------------------------


def test_metrics_parse_and_move_with_play(stack: LocalStack, api: httpx.Client) -> None:
    player = Player(api)
    text = httpx.get(stack.metrics_url).text
    names = {f.name for f in text_string_to_metric_families(text)}
    assert {"ringrift_games_active", "ringrift_games", "ringrift_moves", "ringrift_websocket_connections",
            "ringrift_users_active", "ringrift_ai_requests", "ringrift_ai_fallback", "ringrift_ai_request_duration_seconds",
            "ringrift_game_move_latency_seconds", "ringrift_rate_limit_hits", "http_requests",
            "http_request_duration_seconds"} <= names
    games, moves = metric(stack, "ringrift_games_total", type="ai"), metric(stack, "ringrift_moves_total", type="placement")
    game = create(api, player)
    api.get(f"/api/games/{game['id']}", headers=player.headers)
    with ExitStack() as exits:
        socket_ = sio(stack, exits, player)
        socket_.emit("join_game", {"gameId": game["id"]})
        socket_.emit("player_move_by_id", {"gameId": game["id"], "moveId": socket_.state()["validMoves"][0]["id"]})
        socket_.state(lambda d: d["gameState"]["moveHistory"][-1]["player"] == 2)
        assert metric(stack, "ringrift_websocket_connections") >= 1 and metric(stack, "ringrift_users_active") >= 1
        assert metric(stack, "ringrift_games_active") >= 1
    assert metric(stack, "ringrift_games_total", type="ai") == games + 1
    assert metric(stack, "ringrift_moves_total", type="placement") == moves + 2
    assert metric(stack, "ringrift_game_move_latency_seconds_count", board_type="square8", phase="ring_placement") >= 2
    assert metric(stack, "ringrift_game_move_latency_seconds_bucket", board_type="square8", phase="ring_placement",
                  le="2.56") >= 2
    assert metric(stack, "ringrift_ai_request_duration_seconds_count", ai_type="heuristic", difficulty="2") >= 1
    assert metric(stack, "http_requests_total", method="GET", path="/api/games/:id", status="200") >= 1


# -- the launcher --------------------------------------------------------------------------------------------


def test_launcher_env_bypass_start_faults_and_no_admin_token_on_the_command_line(tmp_path: Any) -> None:
    env = {"RATE_LIMIT_BYPASS_ENABLED": "true", "RATE_LIMIT_BYPASS_TOKEN": BYPASS_TOKEN,
           "RATE_LIMIT_BYPASS_USER_PATTERN": r"^pool_"}
    with LocalStack(faults={"omit_expires_in": True, "user_burst": 1, "user_rate_per_s": 0.01}, ai_faults={"think_ms": 1},
                    log_dir=tmp_path, admin_token="tok-" + secrets.token_hex(8), env=env) as local:
        assert local.ws_url == local.base_url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
        bypass = admin(local, "GET", "/api/admin/rate-limit-bypass").json()["data"]
        assert bypass == {"enabled": True, "pattern": "^pool_", "expiresAt": None, "tokenConfigured": True}
        with httpx.Client(base_url=local.base_url) as client:
            pooled = Player(client, f"pool_{secrets.token_hex(3)}@example.test")
            assert all(client.get("/api/games", headers=pooled.headers).status_code == 200 for _ in range(3))
            other = Player(client)
            assert [client.get("/api/games", headers=other.headers).status_code for _ in range(2)] == [200, 429]
            assert client.get("/api/games", headers={**other.headers,
                                                     "X-RateLimit-Bypass-Token": BYPASS_TOKEN}).status_code == 200
        for pid in local.pids.values():
            assert local.admin_token not in open(f"/proc/{pid}/cmdline", "rb").read().decode()
            assert os.getpgid(pid) == pid  # its own process group
    assert {p.name for p in tmp_path.iterdir()} >= {"api.stderr.log", "ai.stderr.log"}
    with pytest.raises(StackError):
        _ = local.base_url


def test_launcher_reports_a_child_that_fails_to_start_and_a_port_it_cannot_bind() -> None:
    with pytest.raises(StackError, match="unknown fault knob"):
        LocalStack(faults={"no_such_knob": 1}).start()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        with pytest.raises(StackError, match="cannot listen"):
            LocalStack(api_port=squatter.getsockname()[1]).start()


def test_children_die_with_a_parent_killed_by_sigkill() -> None:
    code = ("import json, time; from pytest_prodval.refstack.launcher import LocalStack\n"
            "s = LocalStack().start(); print(json.dumps(s.pids), flush=True); time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        pids = json.loads(parent.stdout.readline())
        assert len(pids) == 2
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=5)

        def gone() -> bool:
            for pid in pids.values():
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    continue
                if open(f"/proc/{pid}/stat").read().split()[2] != "Z":
                    return False
            return True

        wait_until(gone, timeout=2)
    finally:
        if parent.poll() is None:
            parent.kill()
