"""The staging rate-limit bypass (plan §3.4), held on a lease and always turned off after the run.

A `BypassLease` turns the bypass on with a short lease and renews it from a daemon thread;
if pytest dies (even by SIGKILL) the renewals stop and the target turns the bypass off by
itself when the lease runs out. On a normal exit, an exception or Ctrl-C it is turned off
at once, and an `atexit` hook catches what slips past.
"""

from __future__ import annotations

import atexit
import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

import httpx

from .models import BypassRecord

log = logging.getLogger(__name__)

DEFAULT_LEASE_S = 120.0
BYPASS_PATH = "/api/admin/rate-limit-bypass"


class BypassError(RuntimeError):
    """The bypass could not be switched (or its state read)."""


@runtime_checkable
class BypassController(Protocol):
    """Turns the bypass on and off; `status()` is None when the state cannot be read."""

    def enable(self, pattern: str, lease_s: float) -> None: ...

    def renew(self, lease_s: float) -> None: ...

    def disable(self) -> None: ...

    def status(self) -> bool | None: ...


class HttpBypass:
    """The admin endpoint of the reference stack API (design.md §1), `X-Admin-Token` auth."""

    def __init__(self, base_url: str, admin_token: str, *, timeout_s: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"X-Admin-Token": admin_token}
        self.timeout_s = timeout_s
        self.pattern: str | None = None

    def enable(self, pattern: str, lease_s: float) -> None:
        """Switch on for users matching `pattern`, for `lease_s` seconds."""
        self.pattern = pattern
        self._post({"enabled": True, "leaseSeconds": lease_s, "pattern": pattern})

    def renew(self, lease_s: float) -> None:
        """Extend the lease by switching on again with the same pattern."""
        self._post({"enabled": True, "leaseSeconds": lease_s, "pattern": self.pattern})

    def disable(self) -> None:
        """Switch off now."""
        self._post({"enabled": False})

    def status(self) -> bool | None:
        """Whether the target has the bypass on right now."""
        return bool(self._call("GET", None).get("enabled"))

    def _post(self, body: dict[str, Any]) -> None:
        self._call("POST", {k: v for k, v in body.items() if v is not None})

    def _call(self, method: str, body: dict[str, Any] | None) -> dict[str, Any]:
        url = self.base_url + BYPASS_PATH
        try:
            response = httpx.request(method, url, json=body, headers=self._headers, timeout=self.timeout_s)
        except httpx.HTTPError as exc:
            raise BypassError(f"{method} {url} failed: {type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            raise BypassError(f"{method} {url} returned HTTP {response.status_code}: {response.text[:200]!r}")
        data = response.json().get("data")
        return data if isinstance(data, dict) else {}


class CommandBypass:
    """A pair of commands (e.g. a deploy tool toggling RATE_LIMIT_BYPASS_ENABLED).

    The commands see `PRODVAL_BYPASS_PATTERN` and `PRODVAL_BYPASS_LEASE_S` in their
    environment. There is no lease on the target's side: renew does nothing and the
    state is unknown (`status()` is None), so a killed pytest leaves it on.
    """

    def __init__(self, enable_cmd: Sequence[str], disable_cmd: Sequence[str], *, timeout_s: float = 120.0) -> None:
        self.enable_cmd = list(enable_cmd)
        self.disable_cmd = list(disable_cmd)
        self.timeout_s = timeout_s

    def enable(self, pattern: str, lease_s: float) -> None:
        """Run the enable command."""
        self._run(self.enable_cmd, {"PRODVAL_BYPASS_PATTERN": pattern, "PRODVAL_BYPASS_LEASE_S": f"{lease_s:g}"})

    def renew(self, lease_s: float) -> None:
        """Nothing to renew: the commands have no lease."""

    def disable(self) -> None:
        """Run the disable command."""
        self._run(self.disable_cmd, {})

    def status(self) -> bool | None:
        """Unknown."""
        return None

    def _run(self, argv: list[str], extra_env: dict[str, str]) -> None:
        try:
            proc = subprocess.run(
                argv, env={**os.environ, **extra_env}, capture_output=True, text=True, timeout=self.timeout_s, check=False
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise BypassError(f"bypass command {argv[0]!r} could not run: {type(exc).__name__}: {exc}") from exc
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip()[-200:]
            raise BypassError(f"bypass command {argv[0]!r} exited {proc.returncode}: {tail!r}")


class HeaderBypass:
    """A target whose bypass is always configured (RingRift's environment) and reached by a header.

    The k6 script and the preflight send `X-RateLimit-Bypass-Token` (RATE_LIMIT_BYPASS_TOKEN);
    nothing is switched, so nothing needs turning off. The lease's verification still
    checks that pool traffic is not limited.
    """

    def enable(self, pattern: str, lease_s: float) -> None:
        """Nothing to switch."""

    def renew(self, lease_s: float) -> None:
        """Nothing to renew."""

    def disable(self) -> None:
        """Nothing to switch."""

    def status(self) -> bool | None:
        """Unknown: only the verification tells."""
        return None


def default_switch(environment: Any, admin_token: str | None, base_url: str,
                   env: Mapping[str, str]) -> BypassController | None:
    """The first switch that applies (None: none does): the environment's `bypass_on`/`bypass_off`
    commands; the admin endpoint with an admin token (the embedded stack); the header alone when
    RATE_LIMIT_BYPASS_TOKEN is set (a target configured for it, like RingRift)."""
    from .facts import BYPASS_TOKEN_VAR

    if environment is not None and environment.bypass_on and environment.bypass_off:
        return CommandBypass(environment.bypass_on, environment.bypass_off)
    if admin_token:
        return HttpBypass(base_url, admin_token)
    if env.get(BYPASS_TOKEN_VAR):
        return HeaderBypass()
    return None


class BypassLease:
    """Context manager: bypass on (with a lease renewed every lease/3) inside, off after — always."""

    def __init__(self, controller: BypassController, *, pattern: str, lease_s: float = DEFAULT_LEASE_S) -> None:
        self.controller = controller
        self.pattern = pattern
        self.lease_s = lease_s
        self.enabled_at: str | None = None
        self.disabled_at: str | None = None
        self.verified_on: bool | None = None
        self.verified_off: bool | None = None
        self.renewals = 0
        self.renew_errors: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # A lock that is acquired once and never released: the first disable() wins, any
        # later one (atexit, a signal handler re-entering) returns at once, never blocks.
        self._disable_claim = threading.Lock()

    def __enter__(self) -> BypassLease:
        try:
            self.controller.enable(self.pattern, self.lease_s)
        except BaseException:
            # The switch may have happened before the failure (a timeout): switch off, best effort.
            try:
                self.controller.disable()
            except Exception as exc:
                log.warning("disabling the bypass after a failed enable failed too: %s", exc)
            raise
        self.enabled_at = _utc_now()
        atexit.register(self.disable)
        self._thread = threading.Thread(target=self._renew_loop, name="prodval-bypass-renew", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.disable(raise_errors=exc_type is None)

    def disable(self, *, raise_errors: bool = False) -> None:
        """Stop renewing and switch the bypass off; idempotent, safe from atexit and signal paths."""
        if self.enabled_at is None or not self._disable_claim.acquire(blocking=False):
            return
        finished = False
        try:
            self._stop.set()
            thread = self._thread
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=5.0)
            error = self._disable_with_retries()
            finished = True
        finally:
            if finished:
                atexit.unregister(self.disable)
            else:  # interrupted (a second Ctrl-C): leave it to the atexit hook to try again
                self._disable_claim.release()
        if error is None:
            self.disabled_at = _utc_now()
            return
        log.error("could not disable the rate-limit bypass: %s; a lease on the target ends it within %.0f s", error, self.lease_s)
        if raise_errors:
            raise BypassError(f"the rate-limit bypass may still be on: {error}") from error

    def _disable_with_retries(self, attempts: int = 3) -> BypassError | None:
        error: BypassError | None = None
        for attempt in range(attempts):
            try:
                self.controller.disable()
                return None
            except BypassError as exc:
                error = exc
                if attempt < attempts - 1:
                    time.sleep(0.2 * (attempt + 1))
        return error

    @property
    def active(self) -> bool:
        """Entered and not yet disabled."""
        return self.enabled_at is not None and not self._stop.is_set()

    def verify_on(self, probe: Callable[[], bool | None]) -> bool | None:
        """Record whether pool users are unlimited now; `probe` answers "was the user rate limited?"."""
        limited = probe()
        self.verified_on = None if limited is None else not limited
        return self.verified_on

    def verify_off(self, probe: Callable[[], bool | None]) -> bool | None:
        """Record whether limits apply again after `disable`; `probe` answers "was the user rate limited?"."""
        limited = probe()
        self.verified_off = limited
        return self.verified_off

    def to_record(self) -> BypassRecord:
        """The lease as recorded in the SLO report."""
        return BypassRecord(
            pattern=self.pattern, enabled_at=self.enabled_at, disabled_at=self.disabled_at,
            verified_on=self.verified_on, verified_off=self.verified_off,
        )

    def _renew_loop(self) -> None:
        interval = max(self.lease_s / 3, 0.05)
        while not self._stop.wait(interval):
            try:
                self.controller.renew(self.lease_s)
                self.renewals += 1
            except Exception as exc:  # keep trying: a missed renewal only shortens the lease
                self.renew_errors.append(str(exc)[:200])
                log.warning("rate-limit bypass renewal failed: %s", exc)


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
