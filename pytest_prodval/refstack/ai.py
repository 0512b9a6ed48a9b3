"""The reference AI service: `python -m pytest_prodval.refstack.ai --port P [--faults JSON]`."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .faults import AiFaults, FaultError
from .games import BOARD_CELLS
from .server import cli, error, faults_endpoint, health, json_body, ok, serve


class AiService:
    """Answers `POST /ai/move` after a think time; faults add latency or fail requests."""

    def __init__(self, *, faults: dict[str, Any] | None = None, admin_token: str | None = None) -> None:
        self.faults = AiFaults()
        self.faults.update(faults or {})
        self.admin_token = admin_token
        self.moves = 0
        self.failures = 0

    def think_s(self) -> float:
        """Think time: `think_ms` ± uniform jitter, plus the `ai_latency_ms` fault."""
        f = self.faults
        jitter = random.uniform(-f.think_jitter_ms, f.think_jitter_ms)
        return max(0.0, f.think_ms + jitter + f.ai_latency_ms) / 1000

    async def move(self, request: Request) -> Response:
        """POST /ai/move: a move for the seat after the think time."""
        body = await json_body(request)
        if body is None:
            return error(400, "bad_request", "expected a JSON object")
        await asyncio.sleep(self.think_s())
        if AiFaults.roll(self.faults.ai_failure_rate):
            self.failures += 1
            return error(500, "ai_failure", "injected fault")
        self.moves += 1
        cells = BOARD_CELLS.get(str(body.get("board", "square8")), 64)
        move = {"from": random.randrange(cells), "to": random.randrange(cells)}
        return ok({"move": move, "gameId": body.get("gameId"), "seat": body.get("seat")})

    async def health(self, request: Request) -> Response:
        """GET /health."""
        return health(self.faults, "ai")

    async def admin_faults(self, request: Request) -> Response:
        """GET/POST /admin/faults (admin)."""
        return await faults_endpoint(request, self.faults, self.admin_token)

    def app(self) -> Starlette:
        """The Starlette application."""
        return Starlette(routes=[
            Route("/health", self.health),
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
    serve(service.app(), args.host, args.port)


if __name__ == "__main__":
    main()
