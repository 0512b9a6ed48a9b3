"""The life of a game once it exists: start, moves, decisions, AI turns, leaving, the end (contract.md §1-§2).

Shared by the HTTP routes (create, join, leave) and the Socket.IO handlers (join_game,
moves, choices, disconnects); every event RingRift sends about a game is sent from here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import deque
from collections.abc import Coroutine
from typing import Any

import socketio  # type: ignore[import-untyped]

from .aiclient import AiClient
from .engine import Engine
from .faults import ApiFaults
from .games import TERMINAL, Game, Games, iso_now
from .metrics import Metrics

LOBBY = "lobby"


def game_room(game_id: str) -> str:
    """The Socket.IO room of a game's players."""
    return f"game:{game_id}"


def user_room(user_id: str) -> str:
    """The Socket.IO room of one user's sockets."""
    return f"user:{user_id}"


def error_event(code: str, event: str, message: str) -> dict[str, Any]:
    """The payload of RingRift's `error` event."""
    return {"type": "error", "code": code, "event": event, "message": message}


@dataclasses.dataclass
class Session:
    """One authenticated socket."""

    sid: str
    user_id: str
    email: str
    username: str
    bypass_token: str | None
    ip: str | None
    games: set[str] = dataclasses.field(default_factory=set)
    pings: deque[float] = dataclasses.field(default_factory=deque)


class Play:
    """Game flow over Socket.IO rooms; holds the sessions so a game knows who is connected."""

    def __init__(self, *, sio: socketio.AsyncServer, games: Games, faults: ApiFaults, metrics: Metrics,
                 ai: AiClient) -> None:
        self.sio = sio
        self.games = games
        self.faults = faults
        self.metrics = metrics
        self.ai = ai
        self.sessions: dict[str, Session] = {}
        self.user_sids: dict[str, set[str]] = {}
        self.user_gone_at: dict[str, float] = {}  # user -> monotonic time their last socket closed
        self.moves = 0
        self._choices: dict[str, str] = {}  # choice id -> game id
        self._tasks: set[asyncio.Task[None]] = set()

    # -- sessions ------------------------------------------------------------------------------

    def connected(self, session: Session) -> None:
        """Count a new socket."""
        self.sessions[session.sid] = session
        self.user_sids.setdefault(session.user_id, set()).add(session.sid)
        self.user_gone_at.pop(session.user_id, None)
        self._gauges()

    async def disconnected(self, sid: str) -> None:
        """A socket closed: players it leaves without a socket in an active game are `player_disconnected`."""
        session = self.sessions.pop(sid, None)
        if session is None:
            return
        sids = self.user_sids.get(session.user_id, set())
        sids.discard(sid)
        if not sids:
            self.user_sids.pop(session.user_id, None)
            self.user_gone_at[session.user_id] = time.monotonic()
        self._gauges()
        for game_id in session.games:
            game = self.games.get(game_id)
            seat = game.seat_of(session.user_id) if game else None
            if game is None or seat is None or game.status != "active" or self._in_room(game, session.user_id):
                continue
            seat.disconnected_at = time.monotonic()
            await self.sio.emit("player_disconnected", {"gameId": game.id, "userId": session.user_id,
                                                        "playerNumber": seat.number}, room=game_room(game.id))

    def _in_room(self, game: Game, user_id: str) -> bool:
        return any(game.id in self.sessions[s].games for s in self.user_sids.get(user_id, ()) if s in self.sessions)

    def _gauges(self) -> None:
        self.metrics.websocket_connections.set(len(self.sessions))
        self.metrics.users_active.set(len(self.user_sids))

    # -- created, joined, started ---------------------------------------------------------------

    async def created(self, game: Game, *, stored: bool) -> None:
        """After POST /api/games: count it, tell the lobby, start an AI game that is active at once."""
        self.metrics.games_total.labels(type="ai" if game.ai_count else "pvp").inc()
        if not stored:
            return
        if game.status == "active":
            self._active_gauge()
            if game.human_seats == 1:
                self._start_engine(game)
        elif not game.is_private:
            await self.sio.emit("lobby:game_created", game.public(), room=LOBBY)

    async def joined(self, game: Game, *, started: bool) -> None:
        """After an HTTP join: tell the lobby; a full game starts for everyone in its room."""
        await self.sio.emit("lobby:game_joined", {"gameId": game.id, "playerCount": game.player_count()}, room=LOBBY)
        if started:
            await self._started(game)

    async def _started(self, game: Game) -> None:
        """A game that just became active: its engine, the lobby and everyone in its room learn it."""
        self.games.changed(game)
        self._active_gauge()
        self._start_engine(game)
        await self.sio.emit("lobby:game_started", {"gameId": game.id, "status": game.status,
                                                   "startedAt": game.started_at,
                                                   "playerCount": game.player_count()}, room=LOBBY)
        await self.sio.emit("game_state", self.snapshot(game), room=game_room(game.id))

    def _start_engine(self, game: Game) -> Engine:
        return game.start_engine(length=self.faults.game_length_moves, choice_rate=self.faults.choice_rate)

    def snapshot(self, game: Game) -> dict[str, Any]:
        """The `game_state` event for this game now."""
        if game.engine is not None:
            state, valid = game.engine.state(game.status), game.engine.valid
        else:  # not started (waiting, or RingRift's AI game that never gets its other humans)
            players = [{"id": s.user_id, "username": s.username, "playerNumber": s.number, "type": "human"}
                       for s in game.seated()]
            players += [{"id": f"ai-{n}", "username": "AI", "playerNumber": n, "type": "ai"}
                        for n in range(game.human_seats + 1, game.max_players + 1)]
            state = {"gameId": game.id, "boardType": game.board_type, "gameStatus": game.status, "currentPlayer": 1,
                     "currentPhase": "ring_placement", "players": players, "moveHistory": [], "winner": None}
            valid = []
        if game.status != "active":
            valid = []
        return {"type": "game_update", "data": {"gameId": game.id, "gameState": state, "validMoves": valid},
                "timestamp": iso_now()}

    async def join_room(self, session: Session, game: Game) -> None:
        """`join_game` by a seated player: into the room, a snapshot, `player_joined` for the others.

        A full game still waiting (fault `join_last_write_wins`: RingRift starts a game when the
        first `join_game` builds its session) starts here, with the seats as they are now.
        """
        seat = game.seat_of(session.user_id)
        assert seat is not None
        if game.activate_if_full():
            await self._started(game)
        await self.sio.enter_room(session.sid, game_room(game.id))
        first = game.id not in session.games
        session.games.add(game.id)
        seat.joined_room = True
        await self.sio.emit("game_state", self.snapshot(game), to=session.sid)
        if game.status in TERMINAL and game.engine is not None:
            await self.sio.emit("game_over", self._game_over(game), to=session.sid)
            return
        if seat.disconnected_at is not None:
            seat.disconnected_at = None
            await self.sio.emit("player_reconnected", {"gameId": game.id, "userId": session.user_id,
                                                       "playerNumber": seat.number},
                                room=game_room(game.id), skip_sid=session.sid)
        elif first:
            await self.sio.emit("player_joined", {"gameId": game.id, "userId": session.user_id,
                                                  "username": session.username, "playerNumber": seat.number},
                                room=game_room(game.id), skip_sid=session.sid)
        self._ai_if_due(game)

    async def leave_room(self, session: Session, game: Game) -> None:
        """`leave_game` on a game that is not active: out of the room only."""
        session.games.discard(game.id)
        await self.sio.leave_room(session.sid, game_room(game.id))

    # -- moves ----------------------------------------------------------------------------------

    def check_move(self, game: Game, user_id: str, move_id: Any) -> dict[str, Any] | str:
        """The move `player_move_by_id` names, or why it is rejected."""
        engine, seat = game.engine, game.seat_of(user_id)
        if seat is None:
            return "not a player of this game"
        if game.status != "active" or engine is None:
            return f"game is {game.status}" if game.status != "active" else "game has not started"
        if engine.current_player != seat.number:
            return f"not your turn (current player {engine.current_player})"
        move = engine.find(move_id) if isinstance(move_id, str) else None
        return move if move is not None else f"unknown move id {move_id!r}"

    def pending_choice(self, choice_id: Any) -> Game | None:
        """The game whose open decision has this id."""
        game = self.games.get(self._choices.get(choice_id, "")) if isinstance(choice_id, str) else None
        if game is None or game.engine is None or game.engine.choice is None or game.engine.choice["id"] != choice_id:
            return None
        return game

    async def apply(self, game: Game, move: dict[str, Any], received: float) -> None:
        """Apply a valid move, then tell the room (and the mover, about a decision to make)."""
        engine = game.engine
        assert engine is not None
        if engine.choice is not None:
            self._choices.pop(engine.choice["id"], None)
        outcome = engine.apply(move)
        self.moves += 1
        self.metrics.moves_total.labels(type="placement" if move["type"] == "place_ring" else "movement").inc()
        if outcome.over:
            await self.finish(game, "completed")
        else:
            await self.sio.emit("game_state", self.snapshot(game), room=game_room(game.id))
            if outcome.choice is not None:
                self._choices[outcome.choice["id"]] = game.id
                await self.sio.emit("player_choice_required", outcome.choice, room=user_room(engine.current().id))
        self.metrics.move_latency.labels(board_type=game.board_type, phase=outcome.phase).observe(
            time.perf_counter() - received)
        self._ai_if_due(game)

    # -- AI turns -------------------------------------------------------------------------------

    def _ai_if_due(self, game: Game) -> None:
        engine = game.engine
        if (game.status == "active" and engine is not None and not game.ai_running
                and engine.current().type == "ai" and engine.valid):
            game.ai_running = True
            self._spawn(self._ai_turns(game))

    async def _ai_turns(self, game: Game) -> None:
        """One AI turn through the AI service (or its fallback); `apply` starts the next one."""
        try:
            engine = game.engine
            if game.status != "active" or engine is None or engine.current().type != "ai" or not engine.valid:
                return  # the game ended (or moved on) between scheduling and running
            before = len(engine.history)
            move = await self.ai.choose(engine, engine.current(), engine.state(game.status))
            stale = game.status != "active" or len(engine.history) != before or engine.find(move["id"]) is None
        finally:
            game.ai_running = False
        if stale:  # the game moved on while the AI thought (a resignation): maybe another AI is due
            self._ai_if_due(game)
            return
        await self.apply(game, move, time.perf_counter())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- leaving and the end ----------------------------------------------------------------------

    async def leave(self, game: Game, user_id: str) -> None:
        """HTTP leave (and socket leave_game on an active game): leave a waiting game, resign an active one."""
        seat = game.seat_of(user_id)
        if seat is None or game.status in TERMINAL:
            return
        if game.status == "waiting":
            if user_id == game.created_by:
                await self.cancel(game)
            else:
                seat.user_id = seat.username = None
                seat.joined_room = False
                await self.sio.emit("player_left", {"gameId": game.id, "userId": user_id,
                                                    "playerNumber": seat.number}, room=game_room(game.id))
            return
        engine = game.engine
        if engine is not None and engine.choice is not None and engine.current_player == seat.number:
            self._choices.pop(engine.choice["id"], None)  # the resignation closes the leaver's open decision
        if engine is None or engine.resign(seat.number):
            # Over for everyone (an active game that never started can't go on either): the
            # leaver is still in the room, so it sees the game_over too.
            await self.finish(game, "abandoned" if engine is None else "completed")
            await self._out_of_room(game, user_id)
            return
        await self._out_of_room(game, user_id)
        await self.sio.emit("player_left", {"gameId": game.id, "userId": user_id, "playerNumber": seat.number},
                            room=game_room(game.id))
        await self.sio.emit("game_state", self.snapshot(game), room=game_room(game.id))
        self._ai_if_due(game)

    async def _out_of_room(self, game: Game, user_id: str) -> None:
        for sid in list(self.user_sids.get(user_id, ())):
            session = self.sessions.get(sid)
            if session is not None and game.id in session.games:
                session.games.discard(game.id)
                await self.sio.leave_room(sid, game_room(game.id))

    async def cancel(self, game: Game) -> None:
        """A waiting game is called off (its creator left or went away)."""
        game.end("abandoned")
        self.games.changed(game)
        await self.sio.emit("lobby:game_cancelled", {"gameId": game.id}, room=LOBBY)

    def _game_over(self, game: Game) -> dict[str, Any]:
        assert game.engine is not None
        return {"type": "game_over", "data": {"gameId": game.id, "gameState": game.engine.state(game.status),
                                              "gameResult": {"winner": game.engine.winner,
                                                             "reason": game.engine.reason}}}

    async def finish(self, game: Game, status: str) -> None:
        """End an active game (`completed`, or `abandoned` when a player never came back) for the whole room."""
        if game.status in TERMINAL:
            return
        if game.engine is None:
            self._start_engine(game)
        assert game.engine is not None
        if status == "abandoned" or game.engine.reason is None:
            game.engine.abandon()
        if game.engine.choice is not None:
            self._choices.pop(game.engine.choice["id"], None)
        game.end(status)
        self.games.changed(game)
        self._active_gauge()
        await self.sio.emit("game_over", self._game_over(game), room=game_room(game.id))

    def _active_gauge(self) -> None:
        self.metrics.games_active.set(sum(1 for g in self.games.all() if g.status == "active"))

    # -- the sweeper: nothing stays stuck -------------------------------------------------------

    async def sweep(self) -> None:
        """End games whose players went away: disconnected past the grace, seated but never joined, or a
        waiting game whose creator has had no socket for the absent-seat grace."""
        now = time.monotonic()
        f = self.faults
        for game in self.games.all():
            if game.status == "active":
                gone = any(s.disconnected_at is not None and now - s.disconnected_at >= f.disconnect_grace_s
                           for s in game.seats)
                absent = game.activated_mono is not None and now - game.activated_mono >= f.absent_seat_grace_s and \
                    any(not s.joined_room for s in game.seats)
                if gone or absent:
                    await self.finish(game, "abandoned")
            elif game.status == "waiting" and game.created_by not in self.user_sids:
                since = max(self.user_gone_at.get(game.created_by, game.created_mono), game.created_mono)
                if now - since >= f.absent_seat_grace_s:
                    await self.cancel(game)
        self.games.sweep()

    def stats(self) -> dict[str, int]:
        """Counts for the admin stats route."""
        return {"wsConnections": len(self.sessions), "aiMoves": self.ai.moves, "aiFallbacks": self.ai.fallbacks,
                "movesTotal": self.moves}
