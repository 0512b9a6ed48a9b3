"""The Socket.IO v4 server on `/socket.io/` (python-socketio, ASGI): auth, events, limits (contract.md §2).

The framing (Engine.IO open, pings, `40`/`44`/`42` packets) is python-socketio's; this
module only decides who may connect and what each event does.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import parse_qs

import socketio  # type: ignore[import-untyped]

from .faults import ApiFaults
from .games import Game, Games
from .play import LOBBY, Play, Session, error_event, user_room
from .ratelimit import Limited, RateLimiter
from .security import Jwt, TokenError, Users

DIAGNOSTIC_LIMIT = 60  # diagnostic:ping per socket ...
DIAGNOSTIC_WINDOW_S = 10.0  # ... per this many seconds (RingRift's limit)
MOVE_EVENTS = ("player_move_by_id", "player_choice_response")


def make_server() -> socketio.AsyncServer:
    """python-socketio's ASGI server with RingRift's Engine.IO timings and nothing k6's plain WebSocket lacks.

    HTTP compression only applies to the polling transport; per-message deflate is off at
    uvicorn (`server.serve`).
    """
    return socketio.AsyncServer(async_mode="asgi", cors_allowed_origins="*", ping_interval=25, ping_timeout=20,
                                http_compression=False, logger=False, engineio_logger=False)


class Sockets:
    """Registers every event handler on the server."""

    def __init__(self, *, sio: socketio.AsyncServer, play: Play, games: Games, users: Users, jwt: Jwt,
                 faults: ApiFaults, limiter: RateLimiter) -> None:
        self.sio = sio
        self.play = play
        self.games = games
        self.users = users
        self.jwt = jwt
        self.faults = faults
        self.limiter = limiter
        sio.on("connect", self.connect)
        sio.on("disconnect", self.disconnect)
        events = {"join_game": self.join_game, "leave_game": self.leave_game,
                  "player_move_by_id": self.player_move_by_id, "player_choice_response": self.player_choice_response,
                  "diagnostic:ping": self.diagnostic_ping, "lobby:subscribe": self.lobby_subscribe,
                  "lobby:unsubscribe": self.lobby_unsubscribe}
        for name, handler in events.items():
            sio.on(name, self._wrap(name, handler))

    # -- connect / disconnect ------------------------------------------------------------------

    async def connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        """Auth from the connect packet's `auth.token` only; refused → `44{"message"}`."""
        if "token" in parse_qs(environ.get("QUERY_STRING", "")):
            raise socketio.exceptions.ConnectionRefusedError("Authentication token must be sent in auth, not the query")
        token = auth.get("token") if isinstance(auth, dict) else None
        if not isinstance(token, str) or not token:
            raise socketio.exceptions.ConnectionRefusedError("Authentication token required")
        try:
            claims = self.jwt.verify(token, kind="access")
        except TokenError as exc:
            raise socketio.exceptions.ConnectionRefusedError(f"Authentication failed: {exc}") from None
        user = self.users.by_id(claims["userId"])
        if user is None:
            raise socketio.exceptions.ConnectionRefusedError("Authentication failed: unknown user")
        scope = environ.get("asgi.scope", {})
        client = scope.get("client")
        ip = client[0] if client else None
        bypass_token = environ.get("HTTP_X_RATELIMIT_BYPASS_TOKEN")
        limited = self.limiter.check(("websocket",), endpoint="websocket:connect", ip=ip, user=user.id,
                                     token=bypass_token, email=user.email)
        if isinstance(limited, Limited):
            raise socketio.exceptions.ConnectionRefusedError(
                "Rate limit exceeded", {"code": "RATE_LIMITED", "retryAfter": limited.retry_after_s})
        session = Session(sid=sid, user_id=user.id, email=user.email, username=user.username,
                          bypass_token=bypass_token, ip=ip)
        await self.sio.enter_room(sid, user_room(user.id))
        self.play.connected(session)

    async def disconnect(self, sid: str, reason: Any = None) -> None:
        """The socket is gone (closed, or missed Engine.IO pongs)."""
        await self.play.disconnected(sid)

    # -- the event pipeline --------------------------------------------------------------------

    def _wrap(self, name: str, handler: Any) -> Any:
        async def event(sid: str, data: Any = None) -> None:
            received = time.perf_counter()
            session = self.play.sessions.get(sid)
            if session is None:
                return
            if self.faults.ws_latency_ms:
                await asyncio.sleep(self.faults.ws_latency_ms / 1000)
            if name in MOVE_EVENTS:
                limited = self.limiter.check(("gameMoves",), endpoint=f"websocket:{name}", ip=session.ip,
                                             user=session.user_id, token=session.bypass_token, email=session.email)
                if isinstance(limited, Limited):
                    await self._error(sid, "RATE_LIMITED", name, "Rate limit exceeded")
                    return
            await handler(session, data if isinstance(data, dict) else {}, received)

        return event

    def _game_of(self, data: dict[str, Any]) -> Game | None:
        game_id = data.get("gameId")
        return self.games.get(game_id) if isinstance(game_id, str) else None

    async def _error(self, sid: str, code: str, event: str, message: str) -> None:
        await self.sio.emit("error", error_event(code, event, message), to=sid)

    # -- events --------------------------------------------------------------------------------

    async def join_game(self, session: Session, data: dict[str, Any], received: float) -> None:
        """`join_game {gameId}`: a seated player enters the room and gets a snapshot."""
        game = self._game_of(data)
        if game is None:
            await self._error(session.sid, "GAME_NOT_FOUND", "join_game", "Game not found")
        elif session.user_id in game.displaced:
            # What RingRift sends a user its join admitted but whose seat a later join took.
            await self._error(session.sid, "INTERNAL_ERROR", "join_game", "Failed to join game")
        elif game.seat_of(session.user_id) is None:
            await self._error(session.sid, "ACCESS_DENIED", "join_game", "You are not a player of this game")
        else:
            await self.play.join_room(session, game)

    async def leave_game(self, session: Session, data: dict[str, Any], received: float) -> None:
        """`leave_game {gameId}`: resigns from an active game, else just leaves the room."""
        game = self._game_of(data)
        if game is None:
            await self._error(session.sid, "GAME_NOT_FOUND", "leave_game", "Game not found")
        elif game.status == "active" and game.seat_of(session.user_id) is not None:
            await self.play.leave(game, session.user_id)
        else:
            await self.play.leave_room(session, game)

    async def player_move_by_id(self, session: Session, data: dict[str, Any], received: float) -> None:
        """`player_move_by_id {gameId, moveId}`: no ack; the next game_state holds the move."""
        event = "player_move_by_id"
        game_id, move_id = data.get("gameId"), data.get("moveId")
        if not isinstance(game_id, str) or not isinstance(move_id, str):
            await self._error(session.sid, "INVALID_PAYLOAD", event, "gameId and moveId (strings) are required")
            return
        game = self.games.get(game_id)
        if game is None:
            await self._error(session.sid, "GAME_NOT_FOUND", event, "Game not found")
            return
        if game.seat_of(session.user_id) is None:
            await self._error(session.sid, "ACCESS_DENIED", event, "You are not a player of this game")
            return
        move = self.play.check_move(game, session.user_id, move_id)
        if isinstance(move, str):
            await self._error(session.sid, "MOVE_REJECTED", event, move)
            return
        await self.play.apply(game, move, received)

    async def player_choice_response(self, session: Session, data: dict[str, Any], received: float) -> None:
        """`player_choice_response {choiceId, playerNumber, choiceType, selectedOption}` for an open decision."""
        event = "player_choice_response"
        game = self.play.pending_choice(data.get("choiceId"))
        choice = game.engine.choice if game is not None and game.engine is not None else None
        seat = game.seat_of(session.user_id) if game is not None else None
        if game is None or choice is None or seat is None or seat.number != choice["playerNumber"]:
            await self._error(session.sid, "CHOICE_REJECTED", event, "No such open choice for you")
            return
        if data.get("playerNumber") != choice["playerNumber"] or data.get("choiceType", choice["type"]) != choice["type"]:
            await self._error(session.sid, "CHOICE_REJECTED", event, "playerNumber or choiceType does not match")
            return
        selected = data.get("selectedOption")
        if selected not in choice["options"]:
            await self._error(session.sid, "CHOICE_REJECTED", event, "selectedOption is not one of the options")
            return
        assert game.engine is not None and isinstance(selected, dict)
        move = game.engine.find(selected["moveId"])
        assert move is not None
        await self.play.apply(game, move, received)

    async def diagnostic_ping(self, session: Session, data: dict[str, Any], received: float) -> None:
        """`diagnostic:ping` → `diagnostic:pong`, at most 60 per 10 s per socket."""
        now = time.monotonic()
        while session.pings and now - session.pings[0] >= DIAGNOSTIC_WINDOW_S:
            session.pings.popleft()
        if len(session.pings) >= DIAGNOSTIC_LIMIT:
            await self._error(session.sid, "RATE_LIMITED", "diagnostic:ping", "Too many diagnostic pings")
            return
        session.pings.append(now)
        pong: dict[str, Any] = {"timestamp": data.get("timestamp"), "serverTimestamp": int(time.time() * 1000)}
        for key in ("vu", "sequence"):
            if key in data:
                pong[key] = data[key]
        await self.sio.emit("diagnostic:pong", pong, to=session.sid)

    async def lobby_subscribe(self, session: Session, data: dict[str, Any], received: float) -> None:
        """Into the lobby room (lobby:game_created / joined / started / cancelled)."""
        await self.sio.enter_room(session.sid, LOBBY)

    async def lobby_unsubscribe(self, session: Session, data: dict[str, Any], received: float) -> None:
        """Out of the lobby room."""
        await self.sio.leave_room(session.sid, LOBBY)
