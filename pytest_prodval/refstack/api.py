"""The reference game API, RingRift-shaped: `python -m pytest_prodval.refstack.api --port P --ai-url URL [--faults JSON]`.

One ASGI app: python-socketio's `ASGIApp` serves `/socket.io/` and hands every other
request to the Starlette app below (HTTP routes of contract.md §1, admin routes of §5).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import httpx
import socketio  # type: ignore[import-untyped]
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route
from starlette.types import Message, Receive, Scope, Send

from .aiclient import AiClient
from .faults import ApiFaults, FaultError
from .games import Game, Games, JoinError
from .metrics import CONTENT_TYPE, Metrics
from .play import Play
from .ratelimit import Bypass, Counted, RateLimiter
from .schema import Invalid, game_spec, limit, query_int
from .security import Jwt, TokenError, User, Users, issue_tokens, registration_problem
from .server import admin_refused, cli, error, faults_endpoint, health, is_admin, json_body, ok, serve
from .sockets import Sockets, make_server

# Routes that error_5xx_rate and contract_violation_rate hit (not register, admin, health: seeding must work).
FAULTY_ROUTES = frozenset({"login", "refresh", "game_create", "game_list", "game_join", "game_state", "game_leave"})
# Charged per route on top of `api` / `apiAuthenticated`.
ROUTE_LIMITERS: dict[str, tuple[str, ...]] = {
    "register": ("auth", "authRegister"), "login": ("auth", "authLogin"), "refresh": ("auth",),
    "game_create": ("gameCreateUser", "gameCreateIp"), "game_list": ("game",), "game_join": ("game",),
    "game_state": ("game",), "game_leave": ("game",),
}

Handler = Callable[["Call"], Awaitable[Response]]


class Call:
    """One request on its way through the pipeline: body, user, route name."""

    def __init__(self, request: Request, route: str, body: dict[str, Any] | None, user: User | None) -> None:
        self.request = request
        self.route = route
        self.body = body or {}
        self.user = user

    @property
    def me(self) -> User:
        """The authenticated user (routes that require one)."""
        assert self.user is not None
        return self.user


class Api:
    """State and handlers of the API process."""

    def __init__(self, *, faults: dict[str, Any] | None = None, ai_url: str | None = None,
                 admin_token: str | None = None, bypass: Bypass | None = None) -> None:
        self.faults = ApiFaults()
        self.faults.update(faults or {})
        self.admin_token = admin_token
        self.ai_url = ai_url.rstrip("/") if ai_url else None
        self.metrics = Metrics()
        self.users = Users()
        self.jwt = Jwt()
        self.games = Games()
        self.bypass = bypass or Bypass()
        self.limiter = RateLimiter(self.faults, self.bypass, self.metrics)
        self.sio = make_server()
        self.ai = AiClient(ai_url, self.faults, self.metrics)
        self.play = Play(sio=self.sio, games=self.games, faults=self.faults, metrics=self.metrics, ai=self.ai)
        self.sockets = Sockets(sio=self.sio, play=self.play, games=self.games, users=self.users, jwt=self.jwt,
                               faults=self.faults, limiter=self.limiter)
        self._ai_health: tuple[float, bool] = (0.0, False)

    # -- the pipeline every /api route goes through ------------------------------------------

    def route(self, name: str, handler: Handler, *, auth: bool) -> Callable[[Request], Awaitable[Response]]:
        """Latency, user, limits, injected 5xx, the handler, broken bodies: in RingRift's order."""

        async def endpoint(request: Request) -> Response:
            if self.faults.api_latency_ms:
                await asyncio.sleep(self.faults.api_latency_ms / 1000)
            body = await json_body(request) if request.method == "POST" else None
            user, token_error = self._user(request)
            ip = request.client.host if request.client else None
            login_key = str(body.get("email", "")).lower() or None if body and name == "login" else None
            limiters = ("apiAuthenticated",) if user else ("api",)
            limited = self.limiter.check(limiters + ROUTE_LIMITERS.get(name, ()), endpoint=template(request),
                                         ip=ip, user=user.id if user else login_key,
                                         token=request.headers.get("x-ratelimit-bypass-token"),
                                         email=user.email if user else None)
            counted = limited if isinstance(limited, Counted) else None
            if limited is not None and not isinstance(limited, Counted):
                refused = error(429, "RATE_LIMITED", "Too many requests, please try again later",
                                 retryAfter=limited.retry_after_s)
                refused.headers["Retry-After"] = str(limited.retry_after_s)
                return refused
            if auth and user is None:
                return token_error or error(401, "AUTH_REQUIRED", "Authentication required")
            if name in self.faults.route_500:
                return error(500, "INTERNAL_ERROR", "Internal server error")
            if name in FAULTY_ROUTES and ApiFaults.roll(self.faults.error_5xx_rate):
                return random.choice((error(500, "INTERNAL_ERROR", "injected fault"),
                                      error(503, "SERVICE_UNAVAILABLE", "injected fault")))
            try:
                response = await handler(Call(request, name, body, user))
            except Invalid as exc:
                return error(400, "VALIDATION_FAILED", str(exc))
            if name in FAULTY_ROUTES and response.status_code < 300:
                if ApiFaults.roll(self.faults.contract_violation_rate):
                    response = _break_contract(response)
                elif self.faults.contract_violations > 0:
                    self.faults.contract_violations -= 1
                    response = _break_contract(response)
            if counted is not None:  # like RingRift's setRateLimitHeaders: only on counted requests
                response.headers["X-RateLimit-Limit"] = str(counted.limit)
                response.headers["X-RateLimit-Remaining"] = str(counted.remaining)
            return response

        return endpoint

    def _user(self, request: Request) -> tuple[User | None, JSONResponse | None]:
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("bearer "):
            return None, None
        try:
            claims = self.jwt.verify(header[7:].strip(), kind="access")
        except TokenError as exc:
            return None, error(401, exc.code, str(exc))
        user = self.users.by_id(claims["userId"])
        return (user, None) if user else (None, error(401, "AUTH_TOKEN_INVALID", "unknown user"))

    # -- auth -------------------------------------------------------------------------------

    async def register(self, call: Call) -> Response:
        """POST /api/auth/register."""
        problem = registration_problem(call.body)
        if problem:
            return error(400, "VALIDATION_FAILED", problem)
        email, username = call.body["email"], call.body["username"]
        conflict = self.users.conflict(email, username)
        if conflict:
            what = "email" if conflict == "EMAIL_EXISTS" else "username"
            return error(409, conflict, f"a user with this {what} already exists")
        user = self.users.register(email, username, call.body["password"])
        access, refresh = issue_tokens(self.jwt, user, ttl_s=self.faults.token_ttl_s, opaque=self.faults.opaque_tokens)
        return ok({"user": user.public(), "accessToken": access, "refreshToken": refresh}, 201)

    async def login(self, call: Call) -> Response:
        """POST /api/auth/login."""
        email, password = call.body.get("email"), call.body.get("password")
        user = self.users.check(email, password) if isinstance(email, str) and isinstance(password, str) else None
        if user is None:
            return error(401, "AUTH_INVALID_CREDENTIALS", "Invalid email or password")
        access, refresh = issue_tokens(self.jwt, user, ttl_s=self.faults.token_ttl_s, opaque=self.faults.opaque_tokens)
        data: dict[str, Any] = {"user": user.public(), "accessToken": access, "refreshToken": refresh}
        if not self.faults.omit_expires_in:
            data["expiresIn"] = self.faults.token_ttl_s
        return ok(data)

    async def refresh(self, call: Call) -> Response:
        """POST /api/auth/refresh: new tokens, no `user`, no `expiresIn` (like RingRift)."""
        try:
            claims = self.jwt.verify(str(call.body.get("refreshToken", "")), kind="refresh")
        except TokenError:
            return error(401, "AUTH_REFRESH_TOKEN_INVALID", "Invalid or expired refresh token")
        user = self.users.by_id(claims["userId"])
        if user is None or claims.get("tv") != user.token_version:
            return error(401, "AUTH_REFRESH_TOKEN_INVALID", "Invalid or expired refresh token")
        access, refresh = issue_tokens(self.jwt, user, ttl_s=self.faults.token_ttl_s, opaque=self.faults.opaque_tokens)
        return ok({"accessToken": access, "refreshToken": refresh})

    # -- games ------------------------------------------------------------------------------

    async def create_game(self, call: Call) -> Response:
        """POST /api/games: the creator takes seat 1, AI opponents the last seats."""
        spec = game_spec(call.body)
        if spec["ai_count"] and spec["is_rated"]:
            return error(400, "AI_GAMES_UNRATED", "games against AI opponents must set isRated: false")
        # A lost game is decided once, at creation, so every later GET/join agrees: 404.
        lost = ApiFaults.roll(self.faults.lost_game_rate)
        game = self.games.create(creator_id=call.me.id, creator_name=call.me.username,
                                 start_at_once=self.faults.ai_games_start_at_once, keep=not lost, **spec)
        await self.play.created(game, stored=not lost)
        return ok({"game": game.public()}, 201)

    async def lobby(self, call: Call) -> Response:
        """GET /api/games/lobby/available: public waiting games with a free seat, oldest first."""
        q = call.request.query_params
        games = self.games.available(board_type=q.get("boardType") or None, max_players=query_int(q, "maxPlayers"),
                                     limit=limit(q))
        return ok({"games": [g.public() for g in games]})

    async def my_games(self, call: Call) -> Response:
        """GET /api/games: the caller's games, newest first, paged."""
        q = call.request.query_params
        size, offset = limit(q), query_int(q, "offset") or 0
        games = self.games.of_user(call.me.id, status=q.get("status") or None, board_type=q.get("boardType") or None,
                                   max_players=query_int(q, "maxPlayers"))
        page = games[offset:offset + size]
        return ok({"games": [g.public() for g in page],
                   "pagination": {"total": len(games), "limit": size, "offset": offset,
                                  "hasMore": offset + size < len(games)}})

    def _game(self, call: Call) -> Game | None:
        params = call.request.path_params
        return self.games.get(params["id"]) if "id" in params else self.games.by_invite(params["code"])

    async def get_game(self, call: Call) -> Response:
        """GET /api/games/:id and GET /api/games/invite/:code."""
        game = self._game(call)
        return ok({"game": game.public()}) if game else _not_found()

    async def join_game(self, call: Call) -> Response:
        """POST /api/games/:id/join and POST /api/games/invite/:code/join."""
        game = self._game(call)
        if game is None:
            return _not_found()
        try:
            started = game.join(call.me.id, call.me.username, last_write_wins=self.faults.join_last_write_wins)
        except JoinError as exc:
            return error(400, exc.code, str(exc))
        await self.play.joined(game, started=started)
        return ok({"game": game.public()})

    async def leave_game(self, call: Call) -> Response:
        """POST /api/games/:id/leave: leave a waiting game (the creator cancels it), resign an active one."""
        game = self._game(call)
        if game is None:
            return _not_found()
        if game.seat_of(call.me.id) is None:
            return error(403, "ACCESS_DENIED", "You are not a player of this game")
        await self.play.leave(game, call.me.id)
        return ok({"game": game.public()})

    # -- health, metrics ------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        """GET /health, /healthz."""
        return health(self.faults)

    async def ready(self, request: Request) -> Response:
        """GET /ready, /readyz: `degraded` (still 200) when the AI service does not answer."""
        code = self.faults.health_code()
        ai_ok = await self._ai_healthy()
        checks = {"database": {"status": "healthy"}, "redis": {"status": "healthy"},
                  "aiService": {"status": "healthy" if ai_ok else "unhealthy"}}
        status = "not_ready" if code != 200 else "ready" if ai_ok else "degraded"
        return JSONResponse({"status": status, "checks": checks}, status_code=code)

    async def _ai_healthy(self) -> bool:
        checked_at, healthy = self._ai_health
        if time.monotonic() - checked_at < 2.0 or self.ai_url is None:
            return healthy and self.ai_url is not None
        try:
            async with httpx.AsyncClient(timeout=1.0) as client:
                healthy = (await client.get(f"{self.ai_url}/health")).status_code == 200
        except httpx.HTTPError:
            healthy = False
        self._ai_health = (time.monotonic(), healthy)
        return healthy

    async def metrics_route(self, request: Request) -> Response:
        """GET /metrics: Prometheus text format."""
        return Response(self.metrics.render(), media_type=CONTENT_TYPE)

    # -- admin ------------------------------------------------------------------------------

    async def admin_password(self, request: Request) -> Response:
        """POST /api/admin/users/password {email, password} (admin)."""
        if not is_admin(request, self.admin_token):
            return admin_refused()
        body = await json_body(request) or {}
        email, password = body.get("email"), body.get("password")
        if not isinstance(email, str) or not isinstance(password, str) or not password:
            return error(400, "VALIDATION_FAILED", "email and password required")
        user = self.users.get(email)
        if user is None:
            return error(404, "USER_NOT_FOUND", "no such user")
        self.users.set_password(user, password)
        return ok({"user": user.public()})

    async def admin_bypass(self, request: Request) -> Response:
        """GET/POST /api/admin/rate-limit-bypass {enabled, leaseSeconds, pattern, token?} (admin)."""
        if not is_admin(request, self.admin_token):
            return admin_refused()
        if request.method == "POST":
            body = await json_body(request)
            if body is None or not isinstance(body.get("enabled"), bool):
                return error(400, "VALIDATION_FAILED", "expected {enabled, leaseSeconds, pattern}")
            lease = body.get("leaseSeconds", 900)
            if isinstance(lease, bool) or not isinstance(lease, int | float) or lease <= 0:
                return error(400, "VALIDATION_FAILED", "leaseSeconds must be a positive number")
            pattern, token = body.get("pattern"), body.get("token")
            try:
                self.bypass.set(enabled=body["enabled"], lease_s=float(lease), pattern=pattern or None,
                                token=token if isinstance(token, str) else None)
            except (re.error, ValueError) as exc:
                return error(400, "VALIDATION_FAILED", f"bad bypass settings: {exc}")
        return ok(self.bypass.as_dict())

    async def admin_faults(self, request: Request) -> Response:
        """GET/POST /api/admin/faults (admin)."""
        return await faults_endpoint(request, self.faults, self.admin_token)

    async def admin_stats(self, request: Request) -> Response:
        """GET /api/admin/stats (admin)."""
        if not is_admin(request, self.admin_token):
            return admin_refused()
        return ok({**self.games.stats(), **self.play.stats(), "users": len(self.users),
                   "rateLimited": self.limiter.limited, "bypass": self.bypass.as_dict()})

    # -- the app ----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        """Open the AI client; sweep stuck games and idle buckets in the background."""
        await self.ai.open()
        sweeper = asyncio.create_task(self._sweep())
        try:
            yield
        finally:
            sweeper.cancel()
            await self.ai.close()

    async def _sweep(self) -> None:
        rounds = 0
        while True:
            await asyncio.sleep(0.5)
            try:
                await self.play.sweep()
            except Exception:  # one bad game must not stop the sweeper for all others
                pass
            rounds += 1
            if rounds % 120 == 0:
                self.limiter.buckets.prune()

    def starlette(self) -> Starlette:
        """The HTTP routes."""
        r = self.route
        routes = [
            Route("/health", self.health), Route("/healthz", self.health),
            Route("/ready", self.ready), Route("/readyz", self.ready),
            Route("/metrics", self.metrics_route),
            Route("/api/auth/register", r("register", self.register, auth=False), methods=["POST"]),
            Route("/api/auth/login", r("login", self.login, auth=False), methods=["POST"]),
            Route("/api/auth/refresh", r("refresh", self.refresh, auth=False), methods=["POST"]),
            Route("/api/games", r("game_create", self.create_game, auth=True), methods=["POST"]),
            Route("/api/games", r("game_list", self.my_games, auth=True), methods=["GET"]),
            Route("/api/games/lobby/available", r("game_list", self.lobby, auth=True), methods=["GET"]),
            Route("/api/games/invite/{code}", r("game_state", self.get_game, auth=True), methods=["GET"]),
            Route("/api/games/invite/{code}/join", r("game_join", self.join_game, auth=True), methods=["POST"]),
            Route("/api/games/{id}", r("game_state", self.get_game, auth=True), methods=["GET"]),
            Route("/api/games/{id}/join", r("game_join", self.join_game, auth=True), methods=["POST"]),
            Route("/api/games/{id}/leave", r("game_leave", self.leave_game, auth=True), methods=["POST"]),
            Route("/api/admin/users/password", self.admin_password, methods=["POST"]),
            Route("/api/admin/rate-limit-bypass", self.admin_bypass, methods=["GET", "POST"]),
            Route("/api/admin/faults", self.admin_faults, methods=["GET", "POST"]),
            Route("/api/admin/stats", self.admin_stats, methods=["GET"]),
        ]
        return Starlette(routes=routes, lifespan=self.lifespan)

    def app(self) -> SlowHandshake:
        """Socket.IO on /socket.io/, everything else to the Starlette app (with HTTP metrics)."""
        return SlowHandshake(socketio.ASGIApp(self.sio, other_asgi_app=HttpMetrics(self.starlette(), self.metrics),
                                              socketio_path="socket.io"), self.faults)


class SlowHandshake:
    """ASGI middleware: the `ws_handshake_latency_ms` knob holds a WebSocket before the app sees it,
    so the upgrade answer comes late (a slow gateway or load balancer); messages are not delayed."""

    def __init__(self, app: Any, faults: ApiFaults) -> None:
        self.app = app
        self.faults = faults

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and self.faults.ws_handshake_latency_ms:
            await asyncio.sleep(self.faults.ws_handshake_latency_ms / 1000)
        await self.app(scope, receive, send)


class HttpMetrics:
    """ASGI middleware: http_requests_total / http_request_duration_seconds by templated path."""

    def __init__(self, app: Starlette, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            labels = {"method": scope["method"], "path": route_template(self.app, scope), "status": str(status)}
            self.metrics.http_requests.labels(**labels).inc()
            self.metrics.http_duration.labels(**labels).observe(time.perf_counter() - started)


def route_template(app: Starlette, scope: Scope) -> str:
    """The route's path as RingRift labels it (`/api/games/:id`); unknown paths share one label."""
    for route in app.routes:
        match, _ = route.matches(scope)
        if match is not Match.NONE and isinstance(route, Route):
            return re.sub(r"\{(\w+)\}", r":\1", route.path)
    return "unmatched"


def template(request: Request) -> str:
    """The templated path of a request (the `endpoint` label of rate-limit hits)."""
    app = request.scope.get("app")
    return route_template(app, request.scope) if isinstance(app, Starlette) else request.url.path


def _not_found() -> JSONResponse:
    return error(404, "GAME_NOT_FOUND", "Game not found")


def _break_contract(response: Response) -> Response:
    """The same answer with a field missing or renamed, the way a careless deploy breaks clients."""
    import json

    body = json.loads(bytes(response.body))
    data = dict(body.get("data") or {})
    if "accessToken" in data:
        data["access_token"] = data.pop("accessToken")
    elif "game" in data:
        data["game"] = {k: v for k, v in data["game"].items() if k != "id"}
    elif "games" in data:
        data["items"] = data.pop("games")
    return JSONResponse({**body, "data": data}, status_code=response.status_code)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the API on one uvicorn worker."""
    args = cli("pytest-prodval reference game API (RingRift-shaped)", argv, api=True)
    try:
        api = Api(faults=args.faults, ai_url=args.ai_url, admin_token=args.admin_token,
                  bypass=Bypass.from_env(os.environ))
    except FaultError as exc:
        raise SystemExit(f"--faults: {exc}") from None
    serve(api.app(), args)


if __name__ == "__main__":
    main()
