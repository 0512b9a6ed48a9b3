"""The WebSocket `/ws`: auth, join, moves with acks, broadcasts, AI turns with fallback."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Coroutine
from typing import Any

import httpx
from starlette.websockets import WebSocket

from .faults import ApiFaults
from .games import Game, GameFull, Games
from .ratelimit import RateLimiter
from .security import Jwt, TokenError

CLOSE_UNAUTHORIZED = 4401
CLOSE_RATE_LIMITED = 4429


class Connection:
    """One WebSocket client; messages go through a queue so a slow client never blocks a game."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self.user_id: str | None = None
        self.email: str | None = None
        self.games: set[str] = set()
        self._queue: asyncio.Queue[str | int] = asyncio.Queue()
        self.closing = False

    def send(self, message: dict[str, Any]) -> None:
        """Queue a JSON message."""
        if not self.closing:
            self._queue.put_nowait(json.dumps(message, separators=(",", ":")))

    def close(self, code: int) -> None:
        """Close after the messages already queued."""
        if not self.closing:
            self._queue.put_nowait(code)
            self.closing = True

    async def write_loop(self) -> None:
        """Deliver queued messages in order until a close code or a dead socket."""
        while True:
            item = await self._queue.get()
            try:
                if isinstance(item, int):
                    await self.websocket.close(code=item)
                    return
                await self.websocket.send_text(item)
            except Exception:  # the peer went away; the reader sees the disconnect
                self.closing = True
                return


class Play:
    """Game events over the WebSocket, shared by the HTTP side (a join can start a game)."""

    def __init__(self, *, games: Games, jwt: Jwt, faults: ApiFaults, limiter: RateLimiter, ai_url: str | None) -> None:
        self.games = games
        self.jwt = jwt
        self.faults = faults
        self.limiter = limiter
        self.ai_url = ai_url.rstrip("/") if ai_url else None
        self.connections = 0
        self.ai_moves = 0
        self.ai_fallbacks = 0
        self._client: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def open(self) -> None:
        """One shared HTTP client for all AI calls (keep-alive, pooled)."""
        self._client = httpx.AsyncClient(limits=httpx.Limits(max_connections=200, max_keepalive_connections=100))

    async def close(self) -> None:
        """Close the AI client."""
        if self._client is not None:
            await self._client.aclose()

    # -- the socket ------------------------------------------------------------------------

    async def serve(self, websocket: WebSocket) -> None:
        """Handle one connection until it closes."""
        await websocket.accept()
        conn = Connection(websocket)
        writer = asyncio.create_task(conn.write_loop())
        ip = websocket.client.host if websocket.client else None
        self.connections += 1
        try:
            while not conn.closing:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                received = time.perf_counter()
                text = message.get("text") or (message.get("bytes") or b"").decode("utf-8", "replace")
                await self._dispatch(conn, text, ip, received)
        except Exception:  # a broken socket ends this connection only
            pass
        finally:
            self.connections -= 1
            self._left(conn)
            conn.close(1000)
            try:
                await asyncio.wait_for(writer, timeout=2)
            except (asyncio.TimeoutError, Exception):
                writer.cancel()

    async def _dispatch(self, conn: Connection, text: str, ip: str | None, received: float) -> None:
        try:
            msg = json.loads(text)
            kind = msg["type"]
        except (ValueError, KeyError, TypeError):
            conn.send(_error("bad_request", "expected a JSON object with a type"))
            return
        if self.faults.ws_latency_ms:
            await asyncio.sleep(self.faults.ws_latency_ms / 1000)
        if kind == "auth":
            self._auth(conn, msg, ip)
            return
        if conn.user_id is None:
            conn.send(_error("unauthorized", "send auth first"))
            conn.close(CLOSE_UNAUTHORIZED)
            return
        if not self.limiter.allow(ip=ip, email=conn.email):
            conn.send(_error("rate_limited", "too many messages", moveId=msg.get("moveId"), gameId=msg.get("gameId")))
            return
        if kind == "ping":
            conn.send({"type": "pong", "t": msg.get("t")})
        elif kind == "join":
            self._join(conn, msg)
        elif kind == "move":
            self._move(conn, msg, received)
        else:
            conn.send(_error("bad_request", f"unknown message type {kind!r}"))

    def _auth(self, conn: Connection, msg: dict[str, Any], ip: str | None) -> None:
        try:
            claims = self.jwt.verify(str(msg.get("token", "")), kind="access")
        except TokenError as exc:
            conn.send(_error("unauthorized", str(exc)))
            conn.close(CLOSE_UNAUTHORIZED)
            return
        # The connect is charged here, once the e-mail is known, so the bypass can cover it.
        if not self.limiter.allow(ip=ip, email=claims["email"]):
            conn.send(_error("rate_limited", "too many connections"))
            conn.close(CLOSE_RATE_LIMITED)
            return
        conn.user_id, conn.email = claims["sub"], claims["email"]
        conn.send({"type": "auth_ok", "userId": conn.user_id})

    def _join(self, conn: Connection, msg: dict[str, Any]) -> None:
        game_id = str(msg.get("gameId", ""))
        game = self.games.get(game_id)
        if game is None:
            conn.send(_error("not_found", "no such game", gameId=game_id))
            return
        assert conn.user_id is not None
        try:
            seat, started = game.take_seat(conn.user_id)
        except GameFull:
            conn.send(_error("game_full", "no free seat", gameId=game_id))
            return
        self.games.left_waiting(game)
        game.conns[seat] = conn
        game.joined_seats.add(seat)
        conn.games.add(game.id)
        conn.send({"type": "joined", "gameId": game.id, "seat": seat, "game": game.public()})
        if started:
            self.game_started(game)
        elif game.status == "active" and seat not in game.started_sent:
            game.started_sent.add(seat)
            conn.send({"type": "game_started", "gameId": game.id, "game": game.public()})
            conn.send({"type": "turn", "gameId": game.id, "seat": game.turn_seat})
        elif game.status == "finished":
            conn.send({"type": "game_over", "gameId": game.id, "reason": "completed", "winnerSeat": None})

    def _move(self, conn: Connection, msg: dict[str, Any], received: float) -> None:
        game_id, move_id = str(msg.get("gameId", "")), msg.get("moveId")
        game = self.games.get(game_id)
        move = msg.get("move")
        if game is None:
            conn.send(_error("not_found", "no such game", gameId=game_id, moveId=move_id))
            return
        if not (isinstance(move, dict) and all(isinstance(move.get(k), int) and not isinstance(move.get(k), bool)
                                                 for k in ("from", "to"))):
            conn.send(_error("invalid_move", "move needs integer from/to", gameId=game_id, moveId=move_id))
            return
        assert conn.user_id is not None
        seat = game.seat_of(conn.user_id)
        if game.status != "active" or seat is None or game.turn_seat != seat:
            conn.send(_error("not_your_turn", f"game is {game.status}, turn of seat {game.turn_seat}",
                             gameId=game_id, moveId=move_id))
            return
        game.move_count += 1
        self.games.moves_total += 1
        processing_ms = round((time.perf_counter() - received) * 1000, 3)
        conn.send({"type": "move_ack", "gameId": game_id, "moveId": move_id, "moveNumber": game.move_count,
                   "serverProcessingMs": processing_ms})
        game.broadcast({"type": "move", "gameId": game_id, "seat": seat, "moveNumber": game.move_count,
                        "move": {"from": move["from"], "to": move["to"]}}, skip=conn)
        self._advance(game)

    # -- game events -----------------------------------------------------------------------

    def game_started(self, game: Game) -> None:
        """Tell every connected seat the game started and whose turn it is."""
        self.games.left_waiting(game)
        game.started_sent.update(game.conns)
        game.broadcast({"type": "game_started", "gameId": game.id, "game": game.public()})
        game.broadcast({"type": "turn", "gameId": game.id, "seat": game.turn_seat})

    def _advance(self, game: Game) -> None:
        """After a human move: next turn, and the AI plays when its seats are next."""
        self._next_turn(game)
        if game.is_ai_turn() and not game.ai_running:
            self._spawn(self._ai_turns(game))

    def _next_turn(self, game: Game) -> None:
        """Game over after the last move, else the next seat's turn for everyone to see."""
        if game.move_count >= game.moves_per_game:
            self.finish(game, "completed", winner=random.randrange(game.max_players))
            return
        game.turn_seat = (game.turn_seat + 1) % game.max_players
        game.broadcast({"type": "turn", "gameId": game.id, "seat": game.turn_seat})

    def finish(self, game: Game, reason: str, *, winner: int | None) -> None:
        """End a game and tell everyone still connected."""
        if game.status == "finished":
            return
        self.games.finish(game)
        game.broadcast({"type": "game_over", "gameId": game.id, "reason": reason, "winnerSeat": winner})
        for conn in game.conns.values():
            if isinstance(conn, Connection):
                conn.games.discard(game.id)
        game.conns.clear()

    def _left(self, conn: Connection) -> None:
        """A closed socket ends the games its user is seated in (reason `player_left`)."""
        for game_id in list(conn.games):
            game = self.games.get(game_id)
            if game is None:
                continue
            seat = next((s for s, c in game.conns.items() if c is conn), None)
            if seat is None:
                continue
            del game.conns[seat]
            self._player_left(game, seat)
        conn.games.clear()

    def _player_left(self, game: Game, seat: int) -> None:
        if game.status in ("waiting", "active"):
            others = [s.seat for s in game.seats if s.seat != seat]
            self.finish(game, "player_left", winner=random.choice(others) if others else None)

    def end_absent(self) -> None:
        """End games in which a seated human never came to the WebSocket (a VU stopped mid-way)."""
        for game in self.games.unfinished():
            seat = game.absent_seat()
            if seat is not None:
                self._player_left(game, seat)

    # -- the AI seats ----------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ai_turns(self, game: Game) -> None:
        """Play consecutive AI seats, each through the AI service or, failing that, a fallback."""
        game.ai_running = True
        try:
            while game.is_ai_turn():
                seat = game.turn_seat
                move, fallback, latency_ms = await self._ask_ai(game, seat)
                if game.status != "active":
                    return
                game.move_count += 1
                self.games.moves_total += 1
                self.ai_moves += 1
                self.ai_fallbacks += fallback
                game.broadcast({"type": "ai_move", "gameId": game.id, "seat": seat, "moveNumber": game.move_count,
                                "move": move, "fallback": fallback, "aiLatencyMs": latency_ms})
                self._next_turn(game)
        finally:
            game.ai_running = False

    async def _ask_ai(self, game: Game, seat: int) -> tuple[dict[str, int], bool, float]:
        """(move, fallback?, latency ms): the AI service's move, or a local one on timeout/error."""
        started = time.perf_counter()
        move: dict[str, int] | None = None
        if self._client is not None and self.ai_url:
            try:
                response = await self._client.post(
                    f"{self.ai_url}/ai/move",
                    json={"gameId": game.id, "seat": seat, "board": game.board, "moveNumber": game.move_count + 1},
                    timeout=self.faults.ai_timeout_ms / 1000,
                )
                if response.status_code == 200:
                    candidate = response.json()["data"]["move"]
                    move = {"from": int(candidate["from"]), "to": int(candidate["to"])}
            except Exception:  # timeout, refused, bad body: all mean "fall back"
                move = None
        fallback = move is None
        if move is None:
            move = game.random_move()
        return move, fallback, round((time.perf_counter() - started) * 1000, 3)

    def stats(self) -> dict[str, int]:
        """Counts for the admin stats endpoint."""
        return {"wsConnections": self.connections, "aiMoves": self.ai_moves, "aiFallbacks": self.ai_fallbacks}


def _error(code: str, message: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "error", "code": code, "message": message}
    body.update({k: v for k, v in extra.items() if v is not None})
    return body
