"""The reference AI service: `python -m pytest_prodval.refstack.ai --port P [--faults JSON]`.

`POST /ai/move {gameId, gameState, playerNumber, difficulty}` → `{move, evaluation,
thinkingTimeMs}` after a think time; the move is one of `gameState.validMoves` (the API
sends them along, since this service knows no rules). Faults add latency, fail requests
(500) or answer garbage (a move that is not valid: the API must fall back).
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections.abc import Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .faults import AiFaults, FaultError
from .server import cli, faults_endpoint, health, json_body, serve


def _error(status: int, message: str) -> JSONResponse:
    # FastAPI's error shape, as RingRift's Python AI service answers.
    return JSONResponse({"detail": message}, status_code=status)


class AiService:
    """Answers `POST /ai/move` after a think time; faults add latency, fail or garble answers."""

    def __init__(self, *, faults: dict[str, Any] | None = None, admin_token: str | None = None) -> None:
        self.faults = AiFaults()
        self.faults.update(faults or {})
        self.admin_token = admin_token
        self.moves = 0
        self.failures = 0
        self.garbage = 0

    def think_s(self) -> float:
        """Think time: `think_ms` ± uniform jitter, plus the `ai_latency_ms` fault."""
        f = self.faults
        jitter = random.uniform(-f.think_jitter_ms, f.think_jitter_ms)
        return max(0.0, f.think_ms + jitter + f.ai_latency_ms) / 1000

    async def move(self, request: Request) -> Response:
        """POST /ai/move: one of the valid moves for the player after the think time."""
        started = time.perf_counter()
        body = await json_body(request)
        state = body.get("gameState") if body else None
        valid = state.get("validMoves") if isinstance(state, dict) else None
        if body is None or not isinstance(valid, list) or not valid:
            return _error(422, "gameState.validMoves must be a non-empty list")
        await asyncio.sleep(self.think_s())
        if AiFaults.roll(self.faults.ai_failure_rate):
            self.failures += 1
            return _error(500, "injected fault")
        if AiFaults.roll(self.faults.ai_fallback_rate):
            self.garbage += 1
            move: Any = {"id": f"garbage-{secrets.token_hex(4)}", "player": body.get("playerNumber"),
                         "type": "move_stack"}
        else:
            self.moves += 1
            move = random.choice(valid)
        return JSONResponse({"move": move, "evaluation": round(random.uniform(-1, 1), 3),
                             "thinkingTimeMs": round((time.perf_counter() - started) * 1000)})

    async def health(self, request: Request) -> Response:
        """GET /health, /ready, /live."""
        return health(self.faults)

    async def admin_faults(self, request: Request) -> Response:
        """GET/POST /admin/faults (admin)."""
        return await faults_endpoint(request, self.faults, self.admin_token)

    def app(self) -> Starlette:
        """The Starlette application."""
        return Starlette(routes=[
            Route("/health", self.health), Route("/ready", self.health), Route("/live", self.health),
            Route("/ai/move", self.move, methods=["POST"]),
            Route("/admin/faults", self.admin_faults, methods=["GET", "POST"]),
        ])


def main(argv: Sequence[str] | None = None) -> None:
    """Run the AI service on one uvicorn worker."""
    args = cli("pytest-prodval reference AI service", argv, api=False)
    try:
        service = AiService(faults=args.faults, admin_token=args.admin_token)
    except FaultError as exc:
        raise SystemExit(f"--faults: {exc}") from None
    serve(service.app(), args)


if __name__ == "__main__":
    main()
