"""A simulated game engine: RingRift's turn, move and decision-phase shapes, without its rules.

Enough for a load test to exercise the real protocol: the current player gets a handful
of `validMoves` with unique ids, any of them is legal, the turn passes over the
non-resigned players, now and then a human move opens a `line_processing` decision
(a PlayerChoice), and a game ends naturally after a random 150-250 moves.
"""

from __future__ import annotations

import dataclasses
import random
import secrets
from typing import Any

BOARD_SIZE = {"square8": 8, "square19": 19, "hex8": 9, "hexagonal": 13}
RINGS_PER_PLAYER = 3  # placements before the movement phase
NATURAL_END_MOVES = (150, 250)
NATURAL_END_REASONS = ("ring_elimination", "territory_control", "last_player_standing")


@dataclasses.dataclass
class Player:
    """One seat of a started game."""

    id: str
    username: str
    player_number: int
    type: str  # "human" | "ai"
    difficulty: int | None = None
    resigned: bool = False

    def public(self) -> dict[str, Any]:
        """The player as `gameState.players[]` shows it."""
        body: dict[str, Any] = {"id": self.id, "username": self.username, "playerNumber": self.player_number,
                                "type": self.type}
        if self.difficulty is not None:
            body["aiDifficulty"] = self.difficulty
        return body


@dataclasses.dataclass
class Outcome:
    """What applying a move led to."""

    move: dict[str, Any]
    phase: str  # the phase the move was made in
    choice: dict[str, Any] | None = None  # a decision the mover must make now
    over: bool = False


class Engine:
    """The state of one started game."""

    def __init__(self, game_id: str, board_type: str, players: list[Player], *, length: int = 0,
                 choice_rate: float = 0.1) -> None:
        self.game_id = game_id
        self.board_type = board_type
        self.players = players
        self.length = length or random.randint(*NATURAL_END_MOVES)
        self.choice_rate = choice_rate
        self.current_player = players[0].player_number
        self.phase = "ring_placement"
        self.history: list[dict[str, Any]] = []
        self.valid: list[dict[str, Any]] = []
        self.choice: dict[str, Any] | None = None
        self.winner: int | None = None
        self.reason: str | None = None
        self._new_turn()

    # -- reading ------------------------------------------------------------------------------

    def player(self, number: int) -> Player | None:
        """The player with this number."""
        return next((p for p in self.players if p.player_number == number), None)

    def current(self) -> Player:
        """The player on turn."""
        player = self.player(self.current_player)
        assert player is not None
        return player

    def find(self, move_id: str) -> dict[str, Any] | None:
        """The valid move with this id."""
        return next((m for m in self.valid if m["id"] == move_id), None)

    def state(self, status: str) -> dict[str, Any]:
        """`gameState` as game_state / game_over carry it."""
        return {"gameId": self.game_id, "boardType": self.board_type, "gameStatus": status,
                "currentPlayer": self.current_player, "currentPhase": self.phase,
                "players": [p.public() for p in self.players], "moveHistory": self.history,
                "winner": self.winner}

    def standing(self) -> list[Player]:
        """Players who have not resigned."""
        return [p for p in self.players if not p.resigned]

    # -- changing -----------------------------------------------------------------------------

    def apply(self, move: dict[str, Any]) -> Outcome:
        """Apply a move of `validMoves` for the current player."""
        phase = self.phase
        entry = {"id": move["id"], "player": move["player"], "type": move["type"], "moveNumber": len(self.history) + 1}
        self.history.append(entry)
        mover = self.current()
        if len(self.history) >= self.length:
            self._end(random.choice(self.standing()).player_number, random.choice(NATURAL_END_REASONS))
            return Outcome(entry, phase, over=True)
        if move["type"] != "process_line" and mover.type == "human" and random.random() < self.choice_rate:
            self.choice = self._line_choice(mover)
            return Outcome(entry, phase, choice=self.choice)
        self.choice = None
        self._advance()
        return Outcome(entry, phase)

    def resign(self, number: int) -> bool:
        """A player resigns; True when that ends the game (one player left, or no human left)."""
        player = self.player(number)
        if player is None or player.resigned:
            return False
        player.resigned = True
        standing = self.standing()
        if len(standing) <= 1 or not any(p.type == "human" for p in standing):
            self._end(standing[0].player_number if standing else None, "resignation")
            return True
        if self.current_player == number:
            self.choice = None
            self._advance()
        return False

    def abandon(self) -> None:
        """End without a winner (a player disconnected for good, or never came)."""
        self._end(None, "abandonment")

    def _end(self, winner: int | None, reason: str) -> None:
        self.winner, self.reason = winner, reason
        self.valid, self.choice = [], None
        self.phase = "game_over"

    def _advance(self) -> None:
        numbers = [p.player_number for p in self.players]
        index = numbers.index(self.current_player)
        for step in range(1, len(numbers) + 1):
            candidate = self.players[(index + step) % len(numbers)]
            if not candidate.resigned:
                self.current_player = candidate.player_number
                break
        self._new_turn()

    def _new_turn(self) -> None:
        placing = len(self.history) < RINGS_PER_PLAYER * len(self.players)
        self.phase = "ring_placement" if placing else "movement"
        count = random.randint(3, 6)
        if placing:
            self.valid = [self._move("place_ring", to=self._cell()) for _ in range(count)]
        else:
            self.valid = [self._move(random.choice(("move_stack", "move_stack", "overtaking_capture")),
                                     **{"from": self._cell(), "to": self._cell()}) for _ in range(count)]

    def _line_choice(self, mover: Player) -> dict[str, Any]:
        self.phase = "line_processing"
        self.valid = [self._move("process_line") for _ in range(2)]
        options = [{"lineId": f"line-{secrets.token_hex(4)}", "markerPositions": [self._cell() for _ in range(4)],
                    "moveId": move["id"]} for move in self.valid]
        return {"id": f"choice-{secrets.token_hex(6)}", "gameId": self.game_id, "playerNumber": mover.player_number,
                "type": "line_order", "prompt": "Choose which line to process first", "options": options}

    def _move(self, kind: str, **where: Any) -> dict[str, Any]:
        return {"id": f"{kind}-{len(self.history) + 1}-{secrets.token_hex(4)}", "player": self.current_player,
                "type": kind, **where}

    def _cell(self) -> dict[str, int]:
        size = BOARD_SIZE.get(self.board_type, 8)
        return {"x": random.randrange(size), "y": random.randrange(size)}
