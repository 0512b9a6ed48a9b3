"""The create-game body and list queries checked against RingRift's schema (contract.md §1)."""

from __future__ import annotations

from typing import Any

BOARD_TYPES = ("square8", "square19", "hex8", "hexagonal")
TIME_CONTROLS = ("blitz", "rapid", "classical")
DEFAULT_TIME_CONTROL = {"type": "rapid", "initialTime": 600, "increment": 0}
LIST_LIMIT, LIST_MAX = 20, 100  # RingRift's page size of game lists: default and largest


class Invalid(ValueError):
    """A request body or query that breaks the schema: 400 VALIDATION_FAILED."""


def game_spec(body: dict[str, Any]) -> dict[str, Any]:
    """The create-game body checked against RingRift's schema (Invalid names the field)."""
    board = body.get("boardType", "square8")
    if board not in BOARD_TYPES:
        raise Invalid(f"boardType must be one of {', '.join(BOARD_TYPES)}")
    tc = body.get("timeControl", DEFAULT_TIME_CONTROL)
    if not isinstance(tc, dict) or tc.get("type") not in TIME_CONTROLS:
        raise Invalid(f"timeControl.type must be one of {', '.join(TIME_CONTROLS)}")
    initial, increment = _int(tc.get("initialTime"), 60, 7200, "timeControl.initialTime"), \
        _int(tc.get("increment", 0), 0, 60, "timeControl.increment")
    max_players = _int(body.get("maxPlayers", 2), 2, 4, "maxPlayers")
    ai = body.get("aiOpponents") or {}
    if not isinstance(ai, dict):
        raise Invalid("aiOpponents must be an object {count, difficulty}")
    count = _int(ai.get("count", 0), 0, min(3, max_players - 1), "aiOpponents.count")
    difficulty = ai.get("difficulty", [5] * count)
    if not isinstance(difficulty, list) or len(difficulty) != count:
        raise Invalid("aiOpponents.difficulty must list one level (1-10) per AI opponent")
    levels = [_int(d, 1, 10, "aiOpponents.difficulty[]") for d in difficulty]
    flags = {}
    for key, default in (("isRated", False), ("isPrivate", False)):
        value = body.get(key, default)
        if not isinstance(value, bool):
            raise Invalid(f"{key} must be true or false")
        flags[key] = value
    return {"board_type": board, "max_players": max_players, "ai_count": count, "ai_difficulty": levels,
            "time_control": {"type": tc["type"], "initialTime": initial, "increment": increment},
            "is_rated": flags["isRated"], "is_private": flags["isPrivate"]}


def _int(value: Any, low: int, high: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise Invalid(f"{name} must be an integer from {low} to {high}")
    return value


def query_int(query: Any, key: str) -> int | None:
    text = query.get(key)
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise Invalid(f"{key} must be an integer") from None


def limit(query: Any) -> int:
    """The `limit` query parameter of a game list, within RingRift's bounds."""
    return max(1, min(LIST_MAX, query_int(query, "limit") or LIST_LIMIT))
