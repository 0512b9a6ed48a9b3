"""The API's side of AI turns: ask the AI service, fall back to a local move, count both (contract.md §5)."""

from __future__ import annotations

import random
import time
from typing import Any

import httpx

from .engine import Engine, Player
from .faults import ApiFaults
from .metrics import Metrics


def ai_type(difficulty: int) -> str:
    """RingRift's engine per difficulty: 1 random, 2-3 heuristic, 4-5 minimax, 6+ a search that needs weights."""
    if difficulty <= 1:
        return "random"
    if difficulty <= 3:
        return "heuristic"
    if difficulty <= 5:
        return "minimax"
    return "mcts"


class AiClient:
    """One pooled HTTP client to the AI service; `choose` never fails (a fallback is a move too)."""

    def __init__(self, ai_url: str | None, faults: ApiFaults, metrics: Metrics) -> None:
        self.ai_url = ai_url.rstrip("/") if ai_url else None
        self.faults = faults
        self.metrics = metrics
        self.moves = 0
        self.fallbacks = 0
        self._client: httpx.AsyncClient | None = None

    async def open(self) -> None:
        """Open the pooled client (keep-alive)."""
        self._client = httpx.AsyncClient(limits=httpx.Limits(max_connections=200, max_keepalive_connections=100))

    async def close(self) -> None:
        """Close the pooled client."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def choose(self, engine: Engine, player: Player, state: dict[str, Any]) -> dict[str, Any]:
        """A move of `engine.valid` for the AI seat: the service's, or a local one (timeout, error, garbage)."""
        difficulty = player.difficulty or 5
        valid = list(engine.valid)
        reason, picked = "no_service", None
        if self._client is not None and self.ai_url:
            started = time.perf_counter()
            try:
                response = await self._client.post(
                    f"{self.ai_url}/ai/move",
                    json={"gameId": engine.game_id, "gameState": {**state, "validMoves": valid},
                          "playerNumber": player.player_number, "difficulty": difficulty},
                    timeout=self.faults.ai_timeout_ms / 1000,
                )
                reason, picked = self._judge(response, valid)
            except httpx.TimeoutException:
                reason = "timeout"
            except (httpx.HTTPError, ValueError):
                reason = "service_error"
            finally:
                self.metrics.ai_duration.labels(ai_type=ai_type(difficulty), difficulty=str(difficulty)).observe(
                    time.perf_counter() - started)
            if picked is not None:
                self.moves += 1
                self.metrics.ai_requests.labels(outcome="success").inc()
                return picked
        self.moves += 1
        self.fallbacks += 1
        self.metrics.ai_requests.labels(outcome="fallback").inc()
        self.metrics.ai_fallbacks.labels(reason=reason).inc()
        return random.choice(valid)

    @staticmethod
    def _judge(response: httpx.Response, valid: list[dict[str, Any]]) -> tuple[str, dict[str, Any] | None]:
        """(fallback reason, None), or ("", the valid move the answer names)."""
        if response.status_code != 200:
            return "service_error", None
        try:
            move_id = response.json()["move"]["id"]
        except (ValueError, KeyError, TypeError):
            return "invalid_response", None
        picked = next((m for m in valid if m["id"] == move_id), None)
        return ("", picked) if picked is not None else ("invalid_move", None)
