"""Game records and their lifecycle (waiting → active → finished → forgotten), without any I/O."""

from __future__ import annotations

import dataclasses
import random
import secrets
import time
from typing import Any, Protocol

FORGET_FINISHED_AFTER_S = 60.0
# A seated human who never opens the WebSocket would stall the game for everyone else.
ABSENT_SEAT_GRACE_S = 30.0
LIST_LIMIT = 20
BOARD_CELLS = {"square8": 64, "square19": 361, "hex8": 61}


class Sink(Protocol):
    """Where game messages go: a WebSocket connection."""

    def send(self, message: dict[str, Any]) -> None:
        """Queue one message (never blocks)."""


class GameFull(Exception):
    """No free human seat left."""


@dataclasses.dataclass
class Seat:
    """One seat; AI seats have no user."""

    seat: int
    kind: str
    user_id: str | None = None


@dataclasses.dataclass
class Game:
    """One game and who is listening to it over the WebSocket."""

    id: str
    board: str
    max_players: int
    ai_seats: int
    moves_per_game: int
    seats: list[Seat]
    created_at: float = dataclasses.field(default_factory=time.time)
    status: str = "waiting"
    move_count: int = 0
    turn_seat: int = 0
    finished_at: float | None = None
    conns: dict[int, Sink] = dataclasses.field(default_factory=dict)
    started_sent: set[int] = dataclasses.field(default_factory=set)
    ai_running: bool = False
    seated_at: dict[int, float] = dataclasses.field(default_factory=lambda: {0: time.monotonic()})
    joined_seats: set[int] = dataclasses.field(default_factory=set)

    def public(self) -> dict[str, Any]:
        """The `game` object of design.md §1."""
        return {
            "id": self.id, "status": self.status, "board": self.board, "maxPlayers": self.max_players,
            "aiSeats": self.ai_seats, "movesPerGame": self.moves_per_game, "moveCount": self.move_count,
            "turnSeat": self.turn_seat,
            "seats": [{"seat": s.seat, "kind": s.kind, "userId": s.user_id} for s in self.seats],
            "createdAt": self.created_at,
        }

    def seat_of(self, user_id: str) -> int | None:
        """The seat this user holds, if any."""
        for seat in self.seats:
            if seat.user_id == user_id:
                return seat.seat
        return None

    def take_seat(self, user_id: str) -> tuple[int, bool]:
        """Seat a user (idempotent); returns (seat, whether the game just became active)."""
        held = self.seat_of(user_id)
        if held is not None:
            return held, False
        if self.status != "waiting":
            raise GameFull
        free = next((s for s in self.seats if s.kind == "human" and s.user_id is None), None)
        if free is None:
            raise GameFull
        free.user_id = user_id
        self.seated_at[free.seat] = time.monotonic()
        return free.seat, self._activate_if_full()

    def absent_seat(self, grace_s: float = ABSENT_SEAT_GRACE_S) -> int | None:
        """A human seat taken over HTTP more than `grace_s` ago but never joined over the WebSocket."""
        cutoff = time.monotonic() - grace_s
        for seat, since in self.seated_at.items():
            if seat not in self.joined_seats and since < cutoff:
                return seat
        return None

    def _activate_if_full(self) -> bool:
        if self.status == "waiting" and all(s.user_id is not None for s in self.seats if s.kind == "human"):
            self.status = "active"
            return True
        return False

    def broadcast(self, message: dict[str, Any], *, skip: Sink | None = None) -> None:
        """Send to every connected seat (but `skip`)."""
        for conn in list(self.conns.values()):
            if conn is not skip:
                conn.send(message)

    def is_ai_turn(self) -> bool:
        """Whether the seat on turn is played by the AI service."""
        return self.status == "active" and self.seats[self.turn_seat].kind == "ai"

    def random_move(self) -> dict[str, int]:
        """A plausible move on this board (for fallbacks)."""
        cells = BOARD_CELLS.get(self.board, 64)
        return {"from": random.randrange(cells), "to": random.randrange(cells)}


class Games:
    """All games in memory, with the waiting ones kept apart (oldest first) for cheap listing."""

    def __init__(self) -> None:
        self._games: dict[str, Game] = {}
        self._waiting: dict[str, Game] = {}
        self.moves_total = 0

    def create(self, *, creator_id: str, board: str, max_players: int, ai_seats: int, moves_per_game: int,
               keep: bool = True) -> Game:
        """A new game, creator on seat 0 and AI on the last seats; `keep=False` makes a lost game."""
        humans = max_players - ai_seats
        seats = [Seat(i, "human" if i < humans else "ai") for i in range(max_players)]
        seats[0].user_id = creator_id
        game = Game(id=f"g_{secrets.token_hex(8)}", board=board, max_players=max_players, ai_seats=ai_seats,
                    moves_per_game=moves_per_game, seats=seats)
        if game._activate_if_full() or not keep:
            if keep:
                self._games[game.id] = game
            return game
        self._games[game.id] = game
        self._waiting[game.id] = game
        return game

    def get(self, game_id: str) -> Game | None:
        """A game that has not been forgotten."""
        return self._games.get(game_id)

    def left_waiting(self, game: Game) -> None:
        """Keep the waiting index in step after a game's status changed."""
        if game.status != "waiting":
            self._waiting.pop(game.id, None)

    def list_waiting(self, *, board: str | None, max_players: int | None, ai_seats: int | None) -> list[Game]:
        """Waiting games matching the filters, oldest first, at most LIST_LIMIT."""
        found: list[Game] = []
        for game in list(self._waiting.values()):
            if game.status != "waiting":  # seated full by a path that did not tell us
                del self._waiting[game.id]
                continue
            if board and game.board != board:
                continue
            if max_players is not None and game.max_players != max_players:
                continue
            if ai_seats is not None and game.ai_seats != ai_seats:
                continue
            found.append(game)
            if len(found) >= LIST_LIMIT:
                break
        return found

    def finish(self, game: Game) -> None:
        """Mark finished; it stays readable until `sweep` forgets it."""
        game.status = "finished"
        game.finished_at = time.monotonic()
        self._waiting.pop(game.id, None)

    def unfinished(self) -> list[Game]:
        """Games waiting or active."""
        return [g for g in self._games.values() if g.status != "finished"]

    def sweep(self) -> None:
        """Forget games finished more than FORGET_FINISHED_AFTER_S ago."""
        cutoff = time.monotonic() - FORGET_FINISHED_AFTER_S
        for game_id in [g.id for g in self._games.values() if g.finished_at is not None and g.finished_at < cutoff]:
            del self._games[game_id]

    def stats(self) -> dict[str, int]:
        """Counts for the admin stats endpoint."""
        active = [g for g in self._games.values() if g.status == "active"]
        return {
            "activeGames": len(active),
            "activePlayers": sum(g.max_players for g in active),
            "waitingGames": len(self._waiting),
            "finishedGames": sum(1 for g in self._games.values() if g.status == "finished"),
            "movesTotal": self.moves_total,
        }
