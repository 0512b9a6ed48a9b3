"""Start and stop the reference stack (API + AI service) as child processes on 127.0.0.1."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx

from .. import processes
from .server import ADMIN_TOKEN_ENV

HOST = "127.0.0.1"
START_ATTEMPTS = 3


class StackError(RuntimeError):
    """The stack did not come up (the message carries the child's stderr tail)."""


class _Child:
    """One service process; stderr always goes to a file so a failed start can be explained."""

    def __init__(self, name: str, module: str, args: list[str], env: dict[str, str], log_dir: Path | None) -> None:
        self.name = name
        self.port = processes.free_loopback_port()
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
        argv = [sys.executable, "-m", module, "--host", HOST, "--port", str(self.port), *args]
        self.proc = processes.spawn(argv, env=env, stdout=stdout, stderr=self._stderr)

    def stderr_tail(self, lines: int = 20) -> str:
        """The last lines this child wrote to stderr."""
        with open(self._stderr.name, "rb") as handle:
            handle.seek(self._stderr_offset)
            text = handle.read().decode("utf-8", "replace")
        return "\n".join(text.splitlines()[-lines:])

    def port_taken(self) -> bool:
        """The child died because its port was taken in the meantime (the bind race)."""
        return self.proc.poll() is not None and "address already in use" in self.stderr_tail().lower()

    def stop(self) -> None:
        """Stop the process and close (or, when temporary, remove) its log files."""
        processes.stop(self.proc, grace_s=5)
        if not isinstance(self._stdout, int):
            self._stdout.close()
        self._stderr.close()
        if self._temporary:
            Path(self._stderr.name).unlink(missing_ok=True)


class LocalStack:
    """The embedded reference stack for `--env local`: `with LocalStack() as stack: stack.base_url`."""

    def __init__(self, *, faults: dict[str, Any] | None = None, ai_faults: dict[str, Any] | None = None,
                 admin_token: str | None = None, log_dir: Path | None = None, startup_timeout_s: float = 30) -> None:
        self.faults = dict(faults or {})
        self.ai_faults = dict(ai_faults or {})
        self._admin_token = admin_token or secrets.token_urlsafe(24)
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.startup_timeout_s = startup_timeout_s
        self._api: _Child | None = None
        self._ai: _Child | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> LocalStack:
        """Start the AI service, then the API; wait until both answer /health."""
        if self._api is not None:
            return self
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                self._start_once()
                return self
            except _PortRace:
                self.stop()
                if attempt == START_ATTEMPTS:
                    raise StackError("could not bind free ports for the local stack") from None
            except BaseException:
                self.stop()
                raise
        return self

    def _start_once(self) -> None:
        env = {**os.environ, ADMIN_TOKEN_ENV: self._admin_token}
        self._ai = _Child("ai", "pytest_prodval.refstack.ai", ["--faults", json.dumps(self.ai_faults)], env, self.log_dir)
        self._api = _Child("api", "pytest_prodval.refstack.api",
                           ["--ai-url", self._ai.url, "--faults", json.dumps(self.faults)], env, self.log_dir)
        deadline = time.monotonic() + self.startup_timeout_s
        for child in (self._ai, self._api):
            self._wait_healthy(child, deadline)

    def _wait_healthy(self, child: _Child, deadline: float) -> None:
        # /health may answer 503 on purpose (`health_status` fault): the body still names the service.
        with httpx.Client(timeout=1.0) as client:
            while True:
                if child.proc.poll() is not None:
                    if child.port_taken():
                        raise _PortRace
                    raise StackError(f"{child.name} exited with code {child.proc.returncode} during start:\n"
                                     f"{child.stderr_tail()}")
                try:
                    # Check it is our service, not whoever won the port race.
                    if client.get(f"{child.url}/health").json().get("service") == child.name:
                        return
                except (httpx.HTTPError, ValueError, AttributeError):
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
        """`ws://127.0.0.1:PORT/ws`."""
        return f"ws://{HOST}:{self._running(self._api).port}/ws"

    @property
    def ai_url(self) -> str:
        """`http://127.0.0.1:PORT` of the AI service."""
        return self._running(self._ai).url

    @property
    def admin_token(self) -> str:
        """The admin token both processes got through their environment."""
        return self._admin_token

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


class _PortRace(Exception):
    """A child lost its port to another process between our probe and its bind."""
