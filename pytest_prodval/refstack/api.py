"""The reference game API: `python -m pytest_prodval.refstack.api --port P --ai-url URL [--faults JSON]`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute

from .faults import ApiFaults, FaultError
from .games import Game, GameFull, Games
from .play import Play
from .ratelimit import DEFAULT_BYPASS_PATTERN, Bypass, RateLimiter
from .security import Jwt, TokenError, Users, issue_tokens
from .server import cli, error, faults_endpoint, health, is_admin, json_body, ok, serve

Handler = Callable[[Request, dict[str, Any]], Awaitable[Response]]
MAX_MOVES_PER_GAME = 10_000


class Api:
    """State and HTTP handlers of the API process."""

    def __init__(self, *, faults: dict[str, Any] | None = None, ai_url: str | None = None,
                 admin_token: str | None = None, bypass_pattern: str = DEFAULT_BYPASS_PATTERN) -> None:
        self.faults = ApiFaults()
        self.faults.update(faults or {})
        self.admin_token = admin_token
        self.users = Users()
        self.jwt = Jwt()
        self.games = Games()
        self.bypass = Bypass(bypass_pattern)
        self.limiter = RateLimiter(self.faults, self.bypass)
        self.play = Play(games=self.games, jwt=self.jwt, faults=self.faults, limiter=self.limiter, ai_url=ai_url)

    # -- the pipeline every /api route goes through -----------------------------------------

    async def _guard(self, request: Request, email: str | None, *, faults: bool) -> Response | None:
        """Latency, rate limit and (for player routes) injected 5xx: a response means stop here."""
        if self.faults.api_latency_ms:
            await asyncio.sleep(self.faults.api_latency_ms / 1000)
        ip = request.client.host if request.client else None
        if not self.limiter.allow(ip=ip, email=email):
            limited = error(429, "rate_limited", "rate limit exceeded")
            limited.headers["Retry-After"] = "1"
            return limited
        if faults and ApiFaults.roll(self.faults.error_5xx_rate):
            return random.choice((error(503, "unavailable", "injected fault"), error(500, "internal_error", "injected fault")))
        return None

    def _done(self, data: dict[str, Any], status: int = 200) -> Response:
        """A player-route success, broken on purpose when `contract_violation_rate` says so."""
        if ApiFaults.roll(self.faults.contract_violation_rate):
            data = _break_contract(data)
        return ok(data, status)

    def player(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """Wrap a handler that needs a valid access token; it gets the token's claims."""

        async def endpoint(request: Request) -> Response:
            header = request.headers.get("authorization", "")
            try:
                if not header.lower().startswith("bearer "):
                    raise TokenError("unauthorized", "bearer token required")
                claims = self.jwt.verify(header[7:].strip(), kind="access")
            except TokenError as exc:
                # Still count the request against the IP, so a token storm is limited too.
                stop = await self._guard(request, None, faults=False)
                return stop or error(401, exc.code, str(exc))
            stop = await self._guard(request, claims["email"], faults=True)
            return stop or await handler(request, claims)

        return endpoint

    # -- auth -------------------------------------------------------------------------------

    async def _credentials(self, request: Request, *, faults: bool) -> tuple[str, str] | Response:
        """(email, password) of an auth request that passed the limits, or the response that stops it."""
        email, password = _credentials(await json_body(request))
        stop = await self._guard(request, email, faults=faults)
        if stop:
            return stop
        if email is None or password is None or "@" not in email:
            return error(400, "bad_request", "email and password required")
        return email, password

    async def register(self, request: Request) -> Response:
        """POST /api/auth/register."""
        credentials = await self._credentials(request, faults=False)
        if isinstance(credentials, Response):
            return credentials
        user = self.users.register(*credentials)
        if user is None:
            return error(409, "user_exists", "user already exists")
        return ok({"user": user.public()}, 201)

    async def login(self, request: Request) -> Response:
        """POST /api/auth/login."""
        credentials = await self._credentials(request, faults=True)
        if isinstance(credentials, Response):
            return credentials
        user = self.users.check(*credentials)
        if user is None:
            return error(401, "invalid_credentials", "wrong email or password")
        return self._done(self._tokens(user.email))

    async def refresh(self, request: Request) -> Response:
        """POST /api/auth/refresh."""
        body = await json_body(request) or {}
        try:
            claims = self.jwt.verify(str(body.get("refreshToken", "")), kind="refresh")
        except TokenError as exc:
            return await self._guard(request, None, faults=False) or error(401, exc.code, str(exc))
        stop = await self._guard(request, claims["email"], faults=True)
        if stop:
            return stop
        if self.users.get(claims["email"]) is None:
            return error(401, "invalid_token", "unknown user")
        return self._done(self._tokens(claims["email"]))

    def _tokens(self, email: str) -> dict[str, Any]:
        user = self.users.get(email)
        assert user is not None
        return issue_tokens(self.jwt, user, ttl_s=self.faults.token_ttl_s, with_expires_in=not self.faults.omit_expires_in,
                            opaque=self.faults.opaque_tokens)

    # -- games ------------------------------------------------------------------------------

    async def create_game(self, request: Request, claims: dict[str, Any]) -> Response:
        """POST /api/games: the creator takes seat 0, AI the last seats."""
        body = await json_body(request)
        if body is None:
            return error(400, "bad_request", "expected a JSON object")
        try:
            board = str(body.get("board", "square8"))
            max_players = _int(body.get("maxPlayers", 2), 2, 4, "maxPlayers")
            ai_seats = _int(body.get("aiSeats", 0), 0, max_players - 1, "aiSeats")
            moves = _int(body.get("movesPerGame", 30), 1, MAX_MOVES_PER_GAME, "movesPerGame")
        except ValueError as exc:
            return error(400, "bad_request", str(exc))
        # A lost game is decided once, at creation, so every later GET/join agrees: 404.
        lost = ApiFaults.roll(self.faults.lost_game_rate)
        game = self.games.create(creator_id=claims["sub"], board=board, max_players=max_players, ai_seats=ai_seats,
                                 moves_per_game=moves, keep=not lost)
        return self._done({"game": game.public()}, 201)

    async def list_games(self, request: Request, claims: dict[str, Any]) -> Response:
        """GET /api/games: waiting games, oldest first."""
        q = request.query_params
        if q.get("status", "waiting") != "waiting":
            return self._done({"games": []})
        try:
            max_players = int(q["maxPlayers"]) if q.get("maxPlayers") else None
            ai_seats = int(q["aiSeats"]) if q.get("aiSeats") else None
        except ValueError:
            return error(400, "bad_request", "maxPlayers and aiSeats are integers")
        games = self.games.list_waiting(board=q.get("board") or None, max_players=max_players, ai_seats=ai_seats)
        return self._done({"games": [g.public() for g in games]})

    async def join_game(self, request: Request, claims: dict[str, Any]) -> Response:
        """POST /api/games/{id}/join."""
        game = self._game(request)
        if game is None:
            return error(404, "not_found", "no such game")
        try:
            seat, started = game.take_seat(claims["sub"])
        except GameFull:
            return error(409, "game_full", "no free seat")
        if started:
            self.play.game_started(game)
        return self._done({"game": game.public(), "seat": seat})

    async def get_game(self, request: Request, claims: dict[str, Any]) -> Response:
        """GET /api/games/{id}."""
        game = self._game(request)
        if game is None:
            return error(404, "not_found", "no such game")
        return self._done({"game": game.public()})

    def _game(self, request: Request) -> Game | None:
        return self.games.get(request.path_params["game_id"])

    # -- admin ------------------------------------------------------------------------------

    async def admin_password(self, request: Request) -> Response:
        """POST /api/admin/users/password (admin)."""
        if not is_admin(request, self.admin_token):
            return error(401, "unauthorized", "admin token required")
        email, password = _credentials(await json_body(request))
        if email is None or password is None:
            return error(400, "bad_request", "email and password required")
        user = self.users.get(email)
        if user is None:
            return error(404, "not_found", "no such user")
        self.users.set_password(user, password)
        return ok({"user": user.public()})

    async def admin_bypass(self, request: Request) -> Response:
        """GET/POST /api/admin/rate-limit-bypass (admin)."""
        if not is_admin(request, self.admin_token):
            return error(401, "unauthorized", "admin token required")
        if request.method == "POST":
            body = await json_body(request)
            if body is None or not isinstance(body.get("enabled"), bool):
                return error(400, "bad_request", "expected {enabled, leaseSeconds, pattern}")
            lease = body.get("leaseSeconds", 900)
            pattern = body.get("pattern")
            if isinstance(lease, bool) or not isinstance(lease, int | float) or lease <= 0:
                return error(400, "bad_request", "leaseSeconds must be a positive number")
            try:
                self.bypass.set(enabled=body["enabled"], lease_s=float(lease), pattern=pattern or None)
            except Exception as exc:  # re.error
                return error(400, "bad_request", f"bad pattern: {exc}")
        return ok(self.bypass.as_dict())

    async def admin_faults(self, request: Request) -> Response:
        """GET/POST /api/admin/faults (admin)."""
        return await faults_endpoint(request, self.faults, self.admin_token)

    async def admin_stats(self, request: Request) -> Response:
        """GET /api/admin/stats (admin)."""
        if not is_admin(request, self.admin_token):
            return error(401, "unauthorized", "admin token required")
        return ok({**self.games.stats(), **self.play.stats(), "users": len(self.users),
                   "rateLimited": self.limiter.limited, "bypass": self.bypass.as_dict()})

    async def health(self, request: Request) -> Response:
        """GET /health."""
        return health(self.faults, "api")

    # -- the app ----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        """Open the AI client and sweep finished games / idle buckets in the background."""
        await self.play.open()
        sweeper = asyncio.create_task(self._sweep())
        try:
            yield
        finally:
            sweeper.cancel()
            await self.play.close()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(5)
            self.games.sweep()
            self.play.end_absent()
            self.limiter.users.prune()
            self.limiter.ips.prune()

    def app(self) -> Starlette:
        """The Starlette application."""
        routes = [
            Route("/health", self.health),
            Route("/api/auth/register", self.register, methods=["POST"]),
            Route("/api/auth/login", self.login, methods=["POST"]),
            Route("/api/auth/refresh", self.refresh, methods=["POST"]),
            Route("/api/games", self.player(self.create_game), methods=["POST"]),
            Route("/api/games", self.player(self.list_games), methods=["GET"]),
            Route("/api/games/{game_id}/join", self.player(self.join_game), methods=["POST"]),
            Route("/api/games/{game_id}", self.player(self.get_game), methods=["GET"]),
            Route("/api/admin/users/password", self.admin_password, methods=["POST"]),
            Route("/api/admin/rate-limit-bypass", self.admin_bypass, methods=["GET", "POST"]),
            Route("/api/admin/faults", self.admin_faults, methods=["GET", "POST"]),
            Route("/api/admin/stats", self.admin_stats, methods=["GET"]),
            WebSocketRoute("/ws", self.play.serve),
        ]
        return Starlette(routes=routes, lifespan=self.lifespan)


def _credentials(body: dict[str, Any] | None) -> tuple[str | None, str | None]:
    """(email, password) when both are non-empty strings."""
    body = body or {}
    email, password = body.get("email"), body.get("password")
    return (email if isinstance(email, str) and email else None,
            password if isinstance(password, str) and password else None)


def _int(value: Any, low: int, high: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer from {low} to {high}")
    return value


def _break_contract(data: dict[str, Any]) -> dict[str, Any]:
    """The same body with a field missing or renamed, the way a careless deploy breaks clients."""
    data = dict(data)
    if "accessToken" in data:
        data["access_token"] = data.pop("accessToken")
    elif "game" in data:
        data["game"] = {k: v for k, v in data["game"].items() if k != "id"}
    elif "games" in data:
        data["items"] = data.pop("games")
    return data


def main(argv: Sequence[str] | None = None) -> None:
    """Run the API on one uvicorn worker."""
    args = cli("pytest-prodval reference game API", argv, api=True)
    pattern = os.environ.get("RATE_LIMIT_BYPASS_USER_PATTERN") or DEFAULT_BYPASS_PATTERN
    try:
        api = Api(faults=args.faults, ai_url=args.ai_url, admin_token=args.admin_token, bypass_pattern=pattern)
    except FaultError as exc:
        raise SystemExit(f"--faults: {exc}") from None
    serve(api.app(), args.host, args.port)


if __name__ == "__main__":
    main()
