"""What the API and the AI service share: JSON bodies, the admin check, the CLI and uvicorn settings."""

from __future__ import annotations

import argparse
import hmac
import importlib.util
import os
from collections.abc import Sequence
from typing import Any

import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .faults import FaultError, _Knobs, parse_faults_arg

ADMIN_TOKEN_ENV = "PRODVAL_ADMIN_TOKEN"


def ok(data: dict[str, Any], status: int = 200) -> JSONResponse:
    """A success body `{"data": ...}`."""
    return JSONResponse({"data": data}, status_code=status)


def error(status: int, code: str, message: str) -> JSONResponse:
    """An error body `{"error": {code, message}}`."""
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def is_admin(request: Request, admin_token: str | None) -> bool:
    """The request carries the admin token (never true when the process has none)."""
    given = request.headers.get("x-admin-token")
    if not admin_token or given is None:
        return False
    return hmac.compare_digest(given.encode(), admin_token.encode())


async def json_body(request: Request) -> dict[str, Any] | None:
    """The request body as a JSON object, or None when it is not one."""
    try:
        body = await request.json()
    except Exception:
        return None
    return body if isinstance(body, dict) else None


async def faults_endpoint(request: Request, knobs: _Knobs, admin_token: str | None) -> Response:
    """GET/POST the fault knobs (admin only); POST takes a partial object."""
    if not is_admin(request, admin_token):
        return error(401, "unauthorized", "admin token required")
    if request.method == "POST":
        body = await json_body(request)
        if body is None:
            return error(400, "bad_request", "expected a JSON object")
        try:
            knobs.update(body)
        except FaultError as exc:
            return error(400, "bad_request", str(exc))
    return ok({"faults": knobs.as_dict()})


def health(knobs: _Knobs, service: str) -> JSONResponse:
    """`/health`: ok, or the status the `health_status` fault asks for."""
    code = knobs.health_code()
    if code == 200:
        return JSONResponse({"status": "ok", "service": service})
    return JSONResponse({"status": "unavailable", "service": service}, status_code=code)


def cli(description: str, argv: Sequence[str] | None, *, api: bool) -> argparse.Namespace:
    """Parse the command line of either process (design.md §1)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--faults", default=None, help="JSON object of fault knobs")
    parser.add_argument("--admin-token-env", default=ADMIN_TOKEN_ENV,
                        help="Name of the env var holding the admin token (the token is never an argument)")
    if api:
        parser.add_argument("--ai-url", default=None, help="Base URL of the AI service")
    args = parser.parse_args(argv)
    try:
        args.faults = parse_faults_arg(args.faults)
    except FaultError as exc:
        parser.error(str(exc))
    args.admin_token = os.environ.get(args.admin_token_env) or None
    return args


def serve(app: Any, host: str, port: int) -> None:
    """Run one uvicorn worker tuned for a shared 2-core box: no access log, fastest parsers present.

    Server pings and per-message deflate are off: k6 does its own pings and compression
    would cost CPU that the load generator on the same machine needs.
    """
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    uvicorn.run(app, host=host, port=port, loop=loop, http=http, ws="websockets-sansio", log_level="warning",
                access_log=False, lifespan="on", ws_ping_interval=None, ws_per_message_deflate=False, backlog=2048,
                timeout_keep_alive=30, timeout_graceful_shutdown=2)
