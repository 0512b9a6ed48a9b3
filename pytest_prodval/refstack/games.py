"""Game records and their lifecycle (waiting → active → completed/abandoned → forgotten), without I/O."""

from __future__ import annotations

import dataclasses
import secrets
import string
import time
import uuid
from datetime import datetime, timezone
from typing import Any

from .engine import Engine, Player

FORGET_ENDED_AFTER_S = 300.0
TERMINAL = ("completed", "abandoned", "finished")


def iso_now() -> str:
    """An ISO 8601 UTC timestamp with milliseconds, as JavaScript's `toISOString()` writes it."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JoinError(Exception):
    """A join RingRift refuses with 400: `GAME_NOT_JOINABLE`, `GAME_FULL` or `ALREADY_JOINED`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclasses.dataclass
class Seat:
    """A human seat (player number 1..humans); `user_id` None while free."""

    number: int
    user_id: str | None = None
    username: str | None = None
    joined_room: bool = False  # sent join_game at least once
    disconnected_at: float | None = None  # monotonic; None while connected (or never connected)


@dataclasses.dataclass
class Game:
    """One game: the row RingRift would store plus the engine once started."""

    id: str
    invite_code: str
    board_type: str
    max_players: int
    time_control: dict[str, Any]
    is_rated: bool
    is_private: bool
    ai_count: int
    ai_difficulty: list[int]
    seats: list[Seat]
    created_by: str
    created_at: str = dataclasses.field(default_factory=iso_now)
    created_mono: float = dataclasses.field(default_factory=time.monotonic)
    status: str = "waiting"
    started_at: str | None = None
    ended_at: str | None = None
    activated_mono: float | None = None  # when it became active (monotonic)
    ended_mono: float | None = None
    engine: Engine | None = None
    ai_running: bool = False
    displaced: set[str] = dataclasses.field(default_factory=set)  # answered 200, seat taken by a later join

    @property
    def human_seats(self) -> int:
        """How many seats humans play."""
        return self.max_players - self.ai_count

    def seat_of(self, user_id: str) -> Seat | None:
        """The seat this user holds, if any."""
        return next((s for s in self.seats if s.user_id == user_id), None)

    def seated(self) -> list[Seat]:
        """Human seats taken."""
        return [s for s in self.seats if s.user_id is not None]

    def player_count(self) -> int:
        """Seated humans plus the AI seats."""
        return len(self.seated()) + self.ai_count

    def public(self) -> dict[str, Any]:
        """The `game` object of contract.md §1."""
        body: dict[str, Any] = {"id": self.id, "inviteCode": self.invite_code, "boardType": self.board_type,
                                "maxPlayers": self.max_players, "status": self.status}
        for number in range(1, 5):
            seat = self.seats[number - 1] if number <= len(self.seats) else None
            body[f"player{number}Id"] = seat.user_id if seat else None
            body[f"player{number}"] = ({"id": seat.user_id, "username": seat.username}
                                       if seat and seat.user_id else None)
        state: dict[str, Any] = {}
        if self.ai_count:
            state["aiOpponents"] = {"count": self.ai_count, "difficulty": list(self.ai_difficulty)}
        body.update({"timeControl": self.time_control, "isRated": self.is_rated, "isPrivate": self.is_private,
                     "gameState": state, "createdBy": self.created_by, "createdAt": self.created_at,
                     "startedAt": self.started_at, "endedAt": self.ended_at,
                     "winner": self.engine.winner if self.engine else None})
        return body

    def join(self, user_id: str, username: str, *, last_write_wins: bool = False) -> bool:
        """Seat a user over HTTP; True when that filled the game (it is active now). JoinError if refused.

        `last_write_wins` (fault `join_last_write_wins`) is RingRift's unlocked join: the game
        stays waiting when full (it starts at the first `join_game`, `activate_if_full`), and a
        join of a full game overwrites the last human seat instead of GAME_FULL.
        """
        if self.seat_of(user_id) is not None:
            raise JoinError("ALREADY_JOINED", "you already joined this game")
        if self.status != "waiting":
            raise JoinError("GAME_NOT_JOINABLE", f"game is {self.status}, not waiting for players")
        seat = next((s for s in self.seats if s.user_id is None), None)
        if seat is None and not last_write_wins:
            raise JoinError("GAME_FULL", "game is full")
        if seat is None:
            seat = self.seats[-1]  # never the creator's: a waiting game has at least two human seats
            assert seat.user_id is not None
            self.displaced.add(seat.user_id)
        seat.user_id, seat.username = user_id, username
        self.displaced.discard(user_id)
        return False if last_write_wins else self.activate_if_full()

    def activate_if_full(self) -> bool:
        """Waiting with every human seat taken → active; True if it changed now."""
        if self.status == "waiting" and all(s.user_id is not None for s in self.seats):
            self.activate()
            return True
        return False

    def activate(self) -> None:
        """Active from now (RingRift sets startedAt here)."""
        self.status = "active"
        self.started_at = iso_now()
        self.activated_mono = time.monotonic()

    def start_engine(self, *, length: int, choice_rate: float) -> Engine:
        """The engine over the seated humans and the AI seats (humans first, then AI)."""
        players = [Player(s.user_id, s.username or "", s.number, "human") for s in self.seats if s.user_id]
        for index in range(self.ai_count):
            number = self.human_seats + index + 1
            difficulty = self.ai_difficulty[index] if index < len(self.ai_difficulty) else 5
            players.append(Player(f"ai-{number}", f"AI (level {difficulty})", number, "ai", difficulty))
        self.engine = Engine(self.id, self.board_type, players, length=length, choice_rate=choice_rate)
        return self.engine

    def end(self, status: str) -> None:
        """Terminal status from now."""
        self.status = status
        self.ended_at = iso_now()
        self.ended_mono = time.monotonic()


class Games:
    """All games in memory, with the waiting ones kept apart (oldest first) for cheap listing."""

    def __init__(self) -> None:
        self._games: dict[str, Game] = {}
        self._by_invite: dict[str, Game] = {}
        self._waiting: dict[str, Game] = {}

    def create(self, *, creator_id: str, creator_name: str, board_type: str, max_players: int,
               time_control: dict[str, Any], is_rated: bool, is_private: bool, ai_count: int,
               ai_difficulty: list[int], start_at_once: bool, keep: bool = True) -> Game:
        """A new game, creator on seat 1; `keep=False` makes a lost game (answered, never stored)."""
        seats = [Seat(n) for n in range(1, max_players - ai_count + 1)]
        seats[0].user_id, seats[0].username = creator_id, creator_name
        code = "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(8))
        game = Game(id=str(uuid.uuid4()), invite_code=code, board_type=board_type, max_players=max_players,
                    time_control=time_control, is_rated=is_rated, is_private=is_private, ai_count=ai_count,
                    ai_difficulty=ai_difficulty, seats=seats, created_by=creator_id)
        if ai_count and (len(seats) == 1 or start_at_once):
            game.activate()  # RingRift: a game with AI opponents is active at once
        else:
            game.activate_if_full()
        if keep:
            self._games[game.id] = game
            self._by_invite[code] = game
            if game.status == "waiting":
                self._waiting[game.id] = game
        return game

    def get(self, game_id: str) -> Game | None:
        """A game that has not been forgotten."""
        return self._games.get(game_id)

    def by_invite(self, code: str) -> Game | None:
        """The game with this invite code."""
        return self._by_invite.get(code.upper())

    def changed(self, game: Game) -> None:
        """Keep the waiting index in step after a game's status changed."""
        if game.status != "waiting":
            self._waiting.pop(game.id, None)

    def available(self, *, board_type: str | None, max_players: int | None, limit: int) -> list[Game]:
        """Public waiting games, oldest first (full ones only with fault `join_last_write_wins`, as on RingRift)."""
        found: list[Game] = []
        for game in list(self._waiting.values()):
            if game.status != "waiting":
                del self._waiting[game.id]
                continue
            if game.is_private or (board_type and game.board_type != board_type):
                continue
            if max_players is not None and game.max_players != max_players:
                continue
            found.append(game)
            if len(found) >= limit:
                break
        return found

    def of_user(self, user_id: str, *, status: str | None, board_type: str | None, max_players: int | None
                ) -> list[Game]:
        """The games this user holds a seat in, newest first."""
        found = [g for g in self._games.values() if g.seat_of(user_id) is not None
                 and (status is None or g.status == status) and (board_type is None or g.board_type == board_type)
                 and (max_players is None or g.max_players == max_players)]
        return found[::-1]

    def all(self) -> list[Game]:
        """Every stored game."""
        return list(self._games.values())

    def sweep(self) -> None:
        """Forget games ended more than FORGET_ENDED_AFTER_S ago."""
        cutoff = time.monotonic() - FORGET_ENDED_AFTER_S
        for game in [g for g in self._games.values() if g.ended_mono is not None and g.ended_mono < cutoff]:
            del self._games[game.id]
            self._by_invite.pop(game.invite_code, None)

    def stats(self) -> dict[str, int]:
        """Counts for the admin stats route."""
        active = [g for g in self._games.values() if g.status == "active"]
        return {
            "activeGames": len(active),
            "activePlayers": sum(g.max_players for g in active),
            "waitingGames": sum(1 for g in self._games.values() if g.status == "waiting"),
            "finishedGames": sum(1 for g in self._games.values() if g.status in TERMINAL),
            "movesTotal": sum(len(g.engine.history) for g in self._games.values() if g.engine),
        }
