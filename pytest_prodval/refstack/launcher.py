"""Start and stop the reference stack (API + AI service) as child processes on 127.0.0.1.

Standalone, for working on the k6 script against it (Ctrl-C stops both children):

    python -m pytest_prodval.refstack.launcher [--port 8080 --ai-port 8081] [--faults JSON]
        [--ai-faults JSON] [--admin-token TOKEN] [--log-dir DIR] [--json]

It prints the API URL, the normalised WS_URL
(`ws://127.0.0.1:PORT/socket.io/?EIO=4&transport=websocket`), the AI service URL, the
metrics URL and the admin token (`X-Admin-Token`). The children inherit this process's
environment, so `RATE_LIMIT_BYPASS_ENABLED=true RATE_LIMIT_BYPASS_TOKEN=... python -m
pytest_prodval.refstack.launcher` starts the API with RingRift's environment bypass.

How children are started: the parent binds each listening socket (port 0 unless asked)
and hands it to the child (`--fd`, `pass_fds`), so there is no probe-then-bind race; the
child gets its own process group (`process_group=0`, no `preexec_fn`) so a Ctrl-C reaches
pytest only; and it holds the read end of a "lifeline" pipe whose write end only this
process has: when this process dies, even by kill -9, the kernel closes it and the child
exits at once. That replaces PR_SET_PDEATHSIG (and its ctypes call in the child).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx

from .. import processes
from .server import ADMIN_TOKEN_ENV

HOST = "127.0.0.1"
WS_PATH = "/socket.io/?EIO=4&transport=websocket"


class StackError(RuntimeError):
    """The stack did not come up (the message carries the child's stderr tail)."""


class _Child:
    """One service process on a socket bound here; stderr always goes to a file so a failed start can be explained."""

    def __init__(self, name: str, module: str, args: list[str], env: Mapping[str, str], log_dir: Path | None,
                 lifeline: int, port: int = 0) -> None:
        self.name = name
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.bind((HOST, port))
            listener.listen(2048)
        except OSError as exc:
            listener.close()
            raise StackError(f"{name}: cannot listen on {HOST}:{port}: {exc}") from exc
        self.port = int(listener.getsockname()[1])
        self.url = f"http://{HOST}:{self.port}"
        stdout: int | IO[bytes] = subprocess.DEVNULL
        if log_dir is not None:
            log_dir.mkdir(parents=True, exist_ok=True)
            stdout = open(log_dir / f"{name}.stdout.log", "ab")
            self._stderr: IO[bytes] = open(log_dir / f"{name}.stderr.log", "ab")
        else:
            self._stderr = tempfile.NamedTemporaryFile(prefix=f"prodval-{name}-", suffix=".log", delete=False)
        self._temporary = log_dir is None
        self._stdout = stdout
        self._stderr_offset = self._stderr.tell()
        argv = [sys.executable, "-m", module, "--fd", str(listener.fileno()), "--lifeline-fd", str(lifeline), *args]
        try:
            self.proc = subprocess.Popen(argv, env=dict(env), stdin=subprocess.DEVNULL, stdout=stdout,
                                         stderr=self._stderr, pass_fds=(listener.fileno(), lifeline),
                                         process_group=0)
        finally:
            listener.close()  # the child has its own copy; connections queue on it until it accepts

    def stderr_tail(self, lines: int = 20) -> str:
        """The last lines this child wrote to stderr."""
        with open(self._stderr.name, "rb") as handle:
            handle.seek(self._stderr_offset)
            text = handle.read().decode("utf-8", "replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Stop the process (by its PID's group) and close (or, when temporary, remove) its log files."""
        processes.stop(self.proc, grace_s=5)
        if not isinstance(self._stdout, int):
            self._stdout.close()
        self._stderr.close()
        if self._temporary:
            Path(self._stderr.name).unlink(missing_ok=True)


class LocalStack:
    """The embedded reference stack for `--env local`: `with LocalStack() as stack: stack.base_url`."""

    def __init__(self, *, faults: dict[str, Any] | None = None, ai_faults: dict[str, Any] | None = None,
                 admin_token: str | None = None, log_dir: Path | None = None, startup_timeout_s: float = 30,
                 env: Mapping[str, str] | None = None, api_port: int = 0, ai_port: int = 0) -> None:
        self.faults = dict(faults or {})
        self.ai_faults = dict(ai_faults or {})
        self._admin_token = admin_token or secrets.token_urlsafe(24)
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.startup_timeout_s = startup_timeout_s
        self.extra_env = dict(env or {})
        self.api_port, self.ai_port = api_port, ai_port
        self._api: _Child | None = None
        self._ai: _Child | None = None
        self._lifeline: tuple[int, int] | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> LocalStack:
        """Start the AI service, then the API; wait until both answer /health."""
        if self._api is not None:
            return self
        try:
            read_end, write_end = os.pipe()  # both non-inheritable: only pass_fds hands the read end on
            self._lifeline = (read_end, write_end)
            env = {**os.environ, **self.extra_env, ADMIN_TOKEN_ENV: self._admin_token}
            self._ai = _Child("ai", "pytest_prodval.refstack.ai", ["--faults", json.dumps(self.ai_faults)], env,
                              self.log_dir, read_end, self.ai_port)
            self._api = _Child("api", "pytest_prodval.refstack.api",
                               ["--ai-url", self._ai.url, "--faults", json.dumps(self.faults)], env, self.log_dir,
                               read_end, self.api_port)
            os.close(read_end)  # the children hold it now
            self._lifeline = (-1, write_end)
            deadline = time.monotonic() + self.startup_timeout_s
            for child in (self._ai, self._api):
                self._wait_healthy(child, deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_healthy(self, child: _Child, deadline: float) -> None:
        # /health may answer 503 on purpose (`health_status` fault): any RingRift-shaped body will do.
        with httpx.Client(timeout=1.0) as client:
            while True:
                if child.proc.poll() is not None:
                    raise StackError(f"{child.name} exited with code {child.proc.returncode} during start:\n"
                                     f"{child.stderr_tail()}")
                try:
                    if "status" in client.get(f"{child.url}/health").json():
                        return
                except (httpx.HTTPError, ValueError, TypeError):
                    pass
                if time.monotonic() > deadline:
                    raise StackError(f"{child.name} did not answer {child.url}/health within "
                                     f"{self.startup_timeout_s:g} s:\n{child.stderr_tail()}")
                time.sleep(0.05)

    def stop(self) -> None:
        """Stop both processes (safe to call twice)."""
        for child in (self._api, self._ai):
            if child is not None:
                child.stop()
        self._api = self._ai = None
        if self._lifeline is not None:
            for fd in self._lifeline:
                if fd >= 0:
                    os.close(fd)
            self._lifeline = None

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    # -- where it is ------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:PORT` of the API."""
        return self._running(self._api).url

    @property
    def ws_url(self) -> str:
        """The normalised WS_URL of contract.md §2: `ws://127.0.0.1:PORT/socket.io/?EIO=4&transport=websocket`."""
        return f"ws://{HOST}:{self._running(self._api).port}{WS_PATH}"

    @property
    def ai_url(self) -> str:
        """`http://127.0.0.1:PORT` of the AI service."""
        return self._running(self._ai).url

    @property
    def metrics_url(self) -> str:
        """The API's Prometheus endpoint."""
        return f"{self.base_url}/metrics"

    @property
    def admin_token(self) -> str:
        """The admin token both processes got through their environment."""
        return self._admin_token

    @property
    def pids(self) -> dict[str, int]:
        """PID of each running child (`api`, `ai`)."""
        return {c.name: c.proc.pid for c in (self._api, self._ai) if c is not None}

    @staticmethod
    def _running(child: _Child | None) -> _Child:
        if child is None:
            raise StackError("the local stack is not running (call start())")
        return child

    # -- runtime faults ---------------------------------------------------------------------

    def set_faults(self, **knobs: Any) -> dict[str, Any]:
        """Change API fault knobs at runtime (`reset=True` first restores the defaults); returns all knobs."""
        return self._post_faults(f"{self.base_url}/api/admin/faults", knobs)

    def set_ai_faults(self, **knobs: Any) -> dict[str, Any]:
        """Change AI service fault knobs at runtime; returns all knobs."""
        return self._post_faults(f"{self.ai_url}/admin/faults", knobs)

    def _post_faults(self, url: str, knobs: dict[str, Any]) -> dict[str, Any]:
        response = httpx.post(url, json=knobs, headers={"X-Admin-Token": self._admin_token}, timeout=5)
        if response.status_code != 200:
            raise StackError(f"setting faults failed: {response.status_code} {response.text}")
        faults: dict[str, Any] = response.json()["data"]["faults"]
        return faults


def main(argv: Sequence[str] | None = None) -> None:
    """Run the stack in the foreground until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m pytest_prodval.refstack.launcher",
                                     description="Run the pytest-prodval reference stack (RingRift-shaped) on 127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="API port (default: a free one)")
    parser.add_argument("--ai-port", type=int, default=0, help="AI service port (default: a free one)")
    parser.add_argument("--faults", default="{}", help="API fault knobs, a JSON object")
    parser.add_argument("--ai-faults", default="{}", help="AI service fault knobs, a JSON object")
    parser.add_argument("--admin-token", default=os.environ.get(ADMIN_TOKEN_ENV), help="Admin token (default: random)")
    parser.add_argument("--log-dir", type=Path, default=None, help="Keep the children's stdout/stderr here")
    parser.add_argument("--json", action="store_true", help="Print one JSON line instead of text")
    args = parser.parse_args(argv)
    try:
        faults, ai_faults = json.loads(args.faults), json.loads(args.ai_faults)
    except json.JSONDecodeError as exc:
        parser.error(f"faults must be JSON objects: {exc}")
    stack = LocalStack(faults=faults, ai_faults=ai_faults, admin_token=args.admin_token, log_dir=args.log_dir,
                       api_port=args.port, ai_port=args.ai_port)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        stack.start()
    except StackError as exc:
        raise SystemExit(f"reference stack failed to start: {exc}") from None
    try:
        where = {"baseUrl": stack.base_url, "wsUrl": stack.ws_url, "aiServiceUrl": stack.ai_url,
                 "metricsUrl": stack.metrics_url, "adminToken": stack.admin_token, "pids": stack.pids}
        if args.json:
            print(json.dumps(where), flush=True)
        else:
            print(f"API         {where['baseUrl']}\nWS_URL      {where['wsUrl']}\nAI service  {where['aiServiceUrl']}\n"
                  f"metrics     {where['metricsUrl']}\nadmin token {where['adminToken']}  (header X-Admin-Token)\n"
                  f"pids        {where['pids']}\nCtrl-C stops both.", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
