"""Fault knobs of the reference stack (contract.md §5): typed, validated, changeable at runtime."""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Mapping
from typing import Any

# The names `route_500` may list: the k6 request tags of contract.md §6 plus register.
ROUTE_NAMES = frozenset({"login", "refresh", "register", "game_create", "game_list", "game_join", "game_state",
                         "game_leave"})
# RingRift's limiter names (contract.md §3); `unbypassed_limiters` may list them.
LIMITER_NAMES = frozenset({"api", "apiAuthenticated", "auth", "authLogin", "authRegister", "game", "gameMoves",
                           "gameCreateUser", "gameCreateIp", "websocket"})


class FaultError(ValueError):
    """A faults object with an unknown knob or a value of the wrong type."""


@dataclasses.dataclass
class _Knobs:
    """Base for a set of knobs; every field has a default so `reset` can restore it."""

    health_status: int | None = None

    def update(self, partial: Mapping[str, Any]) -> None:
        """Apply a partial faults object; `{"reset": true}` first restores the defaults."""
        partial = dict(partial)
        reset = partial.pop("reset", False)
        known = {field.name: field for field in dataclasses.fields(self)}
        staged: dict[str, Any] = {}
        for key, value in partial.items():
            if key not in known:
                raise FaultError(f"unknown fault knob {key!r} (known: {', '.join(sorted(known))})")
            staged[key] = _coerce(key, value, _default(known[key]))
        # All or nothing: a bad knob leaves the others (and a requested reset) undone.
        if reset:
            for field in dataclasses.fields(self):
                setattr(self, field.name, _default(field))
        for key, value in staged.items():
            setattr(self, key, value)

    def as_dict(self) -> dict[str, Any]:
        """The knobs as a JSON-ready object."""
        return dataclasses.asdict(self)

    def health_code(self) -> int:
        """The status /health answers: 200 unless the `health_status` fault is set."""
        if self.health_status in (None, 0, 200):
            return 200
        return int(self.health_status) if 400 <= int(self.health_status) <= 599 else 503

    @staticmethod
    def roll(rate: float) -> bool:
        """True with probability `rate`."""
        return rate > 0 and random.random() < rate


def _default(field: dataclasses.Field[Any]) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Check a knob's value against the type of its default (bool, int, float, list of names, or int|None)."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise FaultError(f"{key} must be true or false")
        return value
    if isinstance(default, list):
        allowed = ROUTE_NAMES if key == "route_500" else LIMITER_NAMES
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise FaultError(f"{key} must be a list of names")
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise FaultError(f"{key}: unknown name(s) {', '.join(unknown)} (known: {', '.join(sorted(allowed))})")
        return sorted(set(value))
    if default is None:
        if value is None or value is False:
            return None
        if value is True:
            return 503
        if isinstance(value, int | float):
            return int(value)
        raise FaultError(f"{key} must be a status code or null")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FaultError(f"{key} must be a number")
    if value < 0:
        raise FaultError(f"{key} must not be negative")
    if key.endswith("_rate") and value > 1:
        raise FaultError(f"{key} is a probability between 0 and 1")
    return type(default)(value)


@dataclasses.dataclass
class ApiFaults(_Knobs):
    """Knobs of the API process; the defaults give a healthy, generously limited stack."""

    token_ttl_s: int = 900
    omit_expires_in: bool = False
    opaque_tokens: bool = False  # access tokens are not readable JWTs: no `exp` for clients
    # Per-user limiters: a human player sends ~1 move/s plus a few HTTP calls per game.
    user_rate_per_s: float = 20.0
    user_burst: int = 40
    # Per-IP limiters: every k6 VU comes from 127.0.0.1, so these must cover the whole run.
    ip_rate_per_s: float = 5000.0
    ip_burst: int = 10000
    # RingRift tunes each limiter on its own (RATE_LIMIT_WEBSOCKET_POINTS, ...): the websocket
    # limiter's connects per IP, 0 = the per-IP knobs above.
    websocket_rate_per_s: float = 0.0
    websocket_burst: int = 0
    api_latency_ms: int = 0
    ws_latency_ms: int = 0
    # Delays the WebSocket upgrade answer (k6's ws_connecting), not the messages after it.
    ws_handshake_latency_ms: int = 0
    error_5xx_rate: float = 0.0
    contract_violation_rate: float = 0.0
    contract_violations: int = 0  # the next N successful player-route answers break the contract (deterministic)
    lost_game_rate: float = 0.0
    ai_timeout_ms: int = 1500
    route_500: list[str] = dataclasses.field(default_factory=list)
    unbypassed_limiters: list[str] = dataclasses.field(default_factory=list)
    ai_games_start_at_once: bool = False
    # RingRift's join reads the free seat and writes it without a lock, and its game starts at
    # the first join_game: a full waiting game takes every further join (200), the last write
    # keeping the last human seat, until a seated player sends join_game.
    join_last_write_wins: bool = False
    # Game shape (stack only, not faults of RingRift): length of a game, share of human
    # moves followed by a decision phase, disconnect and absent-seat grace periods.
    game_length_moves: int = 0  # 0: a random natural end after 150-250 moves
    choice_rate: float = 0.1
    disconnect_grace_s: float = 10.0
    absent_seat_grace_s: float = 30.0


@dataclasses.dataclass
class AiFaults(_Knobs):
    """Knobs of the AI service; `think_ms` ± `think_jitter_ms` is its normal think time."""

    think_ms: int = 50
    think_jitter_ms: int = 20
    ai_latency_ms: int = 0
    ai_failure_rate: float = 0.0
    ai_fallback_rate: float = 0.0  # share of answers with a move that is not a valid move


def parse_faults_arg(text: str | None) -> dict[str, Any]:
    """The `--faults` CLI value: a JSON object (or nothing)."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FaultError(f"--faults is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise FaultError("--faults must be a JSON object")
    return value
