"""What the API and the AI service share: RingRift's JSON envelopes, the admin check, the CLI, uvicorn."""

from __future__ import annotations

import argparse
import hmac
import importlib.util
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .faults import FaultError, _Knobs, parse_faults_arg
from .games import iso_now

ADMIN_TOKEN_ENV = "PRODVAL_ADMIN_TOKEN"
VERSION = "0.1.0-refstack"
STARTED = time.monotonic()


def ok(data: dict[str, Any], status: int = 200) -> JSONResponse:
    """A success body `{"success": true, "data": ...}`."""
    return JSONResponse({"success": True, "data": data}, status_code=status)


def error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    """An error body `{"success": false, "error": {code, message, requestId, timestamp}}`."""
    body = {"code": code, "message": message, "requestId": str(uuid.uuid4()), "timestamp": iso_now(), **extra}
    return JSONResponse({"success": False, "error": body}, status_code=status)


def is_admin(request: Request, admin_token: str | None) -> bool:
    """The request carries the admin token (never true when the process has none)."""
    given = request.headers.get("x-admin-token")
    if not admin_token or given is None:
        return False
    return hmac.compare_digest(given.encode(), admin_token.encode())


def admin_refused() -> JSONResponse:
    """401 for an admin route without the right token."""
    return error(401, "AUTH_REQUIRED", "admin token required")


async def json_body(request: Request) -> dict[str, Any] | None:
    """The request body as a JSON object, or None when it is not one."""
    try:
        body = await request.json()
    except Exception:
        return None
    return body if isinstance(body, dict) else None


async def faults_endpoint(request: Request, knobs: _Knobs, admin_token: str | None) -> Response:
    """GET/POST the fault knobs (admin only); POST takes a partial object (`reset: true` first restores defaults)."""
    if not is_admin(request, admin_token):
        return admin_refused()
    if request.method == "POST":
        body = await json_body(request)
        if body is None:
            return error(400, "INVALID_REQUEST", "expected a JSON object")
        try:
            knobs.update(body)
        except FaultError as exc:
            return error(400, "INVALID_REQUEST", str(exc))
    return ok({"faults": knobs.as_dict()})


def health(knobs: _Knobs) -> JSONResponse:
    """`/health`: RingRift's body; the status the `health_status` fault asks for."""
    code = knobs.health_code()
    body = {"status": "healthy" if code == 200 else "unhealthy", "timestamp": iso_now(), "version": VERSION,
            "uptime": round(time.monotonic() - STARTED, 3)}
    return JSONResponse(body, status_code=code)


def cli(description: str, argv: Sequence[str] | None, *, api: bool) -> argparse.Namespace:
    """Parse the command line of either process."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", type=int, help="Bind this port on --host")
    where.add_argument("--fd", type=int, help="Serve on this already bound, listening socket (from the launcher)")
    parser.add_argument("--lifeline-fd", type=int, default=None,
                        help="Read end of a pipe held by the parent: exit at once when it closes")
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


def watch_lifeline(fd: int | None) -> None:
    """Exit the moment the parent's end of the pipe closes, however the parent died (even kill -9).

    The same guarantee as PR_SET_PDEATHSIG, without loading libc in the child: the kernel
    closes the parent's write end when it dies, and the blocking read returns.
    """
    if fd is None:
        return

    def wait() -> None:
        try:
            while os.read(fd, 64):
                pass
        except OSError:
            pass
        os._exit(70)

    threading.Thread(target=wait, name="prodval-lifeline", daemon=True).start()


def listening_socket(args: argparse.Namespace) -> socket.socket:
    """The socket to serve on: the inherited one (`--fd`), or a fresh bind of `--port`."""
    if args.fd is not None:
        sock = socket.socket(fileno=args.fd)
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((args.host, args.port))
        sock.listen(2048)
    sock.setblocking(False)
    return sock


def serve(app: Any, args: argparse.Namespace) -> None:
    """Run one uvicorn worker tuned for a shared 2-core box: no access log, fastest parsers present.

    WebSocket-level pings and per-message deflate are off: Engine.IO pings on its own, and
    k6's plain WebSocket neither negotiates compression nor should pay for it.
    """
    # A parent that ignores SIGINT/SIGTERM (a background job) must not leave them ignored here.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    watch_lifeline(args.lifeline_fd)
    sock = listening_socket(args)
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    config = uvicorn.Config(app, loop=loop, http=http, ws="websockets-sansio", log_level="warning", access_log=False,
                            lifespan="on", ws_ping_interval=None, ws_per_message_deflate=False, backlog=2048,
                            timeout_keep_alive=30, timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    if not server.started:
        sys.exit(3)
