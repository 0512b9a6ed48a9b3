"""RingRift's named rate limiters as token buckets, and its bypass (environment + an admin lease).

Each limiter is keyed by client IP or by user (contract.md §5 lists which route or event
charges which); per-user limiters run on the `user_rate_per_s` / `user_burst` knobs,
per-IP ones on `ip_rate_per_s` / `ip_burst`, so one pair of knobs tightens a whole class.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from collections.abc import Mapping
from typing import Any

from .faults import ApiFaults
from .metrics import Metrics

# RingRift's default user pattern at 2aa9f89b5: note the dot after `loadtest`, which the
# plan's pool e-mails (`loadtest_user_N@...`) do not have.
DEFAULT_BYPASS_PATTERN = r"^loadtest\..+@loadtest\.local$"
MIN_TOKEN_CHARS = 16

# limiter -> what it is keyed by
LIMITERS: dict[str, str] = {
    "api": "ip", "apiAuthenticated": "user", "auth": "ip", "authLogin": "user", "authRegister": "ip",
    "game": "user", "gameMoves": "user", "gameCreateUser": "user", "gameCreateIp": "ip", "websocket": "ip",
}


class Buckets:
    """Token buckets keyed by a string; rate and burst are read at each take so knobs apply at once."""

    def __init__(self) -> None:
        self._state: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill)

    def take(self, key: str, rate_per_s: float, burst: int) -> float:
        """Take one token: 0.0 when allowed, else the seconds until a token is back."""
        now = time.monotonic()
        tokens, last = self._state.get(key, (float(burst), now))
        tokens = min(float(burst), tokens + (now - last) * rate_per_s)
        if tokens < 1.0:
            self._state[key] = (tokens, now)
            return (1.0 - tokens) / rate_per_s if rate_per_s > 0 else 3600.0
        self._state[key] = (tokens - 1.0, now)
        return 0.0

    def remaining(self, key: str) -> int:
        """Whole tokens left in a bucket (after the last take)."""
        return int(self._state.get(key, (0.0, 0.0))[0])

    def prune(self, idle_s: float = 300.0) -> None:
        """Forget buckets not touched for a while (they would be full again anyway)."""
        cutoff = time.monotonic() - idle_s
        for key in [k for k, (_, last) in self._state.items() if last < cutoff]:
            del self._state[key]


class Bypass:
    """RingRift's bypass: on (from the environment, or for a lease from the admin route), then a
    request bypasses when its bypass token equals the server's or the user's e-mail matches."""

    def __init__(self, *, enabled: bool = False, token: str | None = None, pattern: str | None = None) -> None:
        self.pattern = pattern or DEFAULT_BYPASS_PATTERN
        self._regex = re.compile(self.pattern)
        self.token = token if token and len(token) >= MIN_TOKEN_CHARS else None
        self._on = enabled
        self._expires_at: float | None = None  # wall clock, so it can be shown; None: no lease

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Bypass:
        """RATE_LIMIT_BYPASS_ENABLED / _TOKEN / _USER_PATTERN, read once at start like RingRift."""
        return cls(enabled=env.get("RATE_LIMIT_BYPASS_ENABLED", "").lower() == "true",
                   token=env.get("RATE_LIMIT_BYPASS_TOKEN") or None,
                   pattern=env.get("RATE_LIMIT_BYPASS_USER_PATTERN") or None)

    @property
    def enabled(self) -> bool:
        """On, and its lease (if any) has not run out (an expired lease switches it off here)."""
        if self._expires_at is not None and time.time() >= self._expires_at:
            self._on, self._expires_at = False, None
        return self._on

    def set(self, *, enabled: bool, lease_s: float | None, pattern: str | None, token: str | None = None) -> None:
        """Switch on (for `lease_s` seconds; None: until switched off), or off; re.error on a bad pattern."""
        if pattern is not None:
            self._regex = re.compile(pattern)
            self.pattern = pattern
        if token is not None:
            if len(token) < MIN_TOKEN_CHARS:
                raise ValueError(f"the bypass token needs at least {MIN_TOKEN_CHARS} characters")
            self.token = token
        self._on = enabled
        self._expires_at = time.time() + lease_s if enabled and lease_s is not None else None

    def covers(self, *, token: str | None, email: str | None) -> bool:
        """On, and the token matches or the (authenticated) e-mail matches the pattern (a search, like JS `test`)."""
        if not self.enabled:
            return False
        if token is not None and self.token is not None and token == self.token:
            return True
        return email is not None and self._regex.search(email) is not None

    def as_dict(self) -> dict[str, Any]:
        """The state as the admin route shows it (`expiresAt` in epoch seconds, null without a lease)."""
        enabled = self.enabled
        return {"enabled": enabled, "pattern": self.pattern, "expiresAt": self._expires_at if enabled else None,
                "tokenConfigured": self.token is not None}


@dataclasses.dataclass
class Counted:
    """An allowed request that a limiter counted: RingRift then sets X-RateLimit-Limit/-Remaining
    (a bypassed request gets none, which is how a client can tell it is bypassed)."""

    limit: int
    remaining: int


@dataclasses.dataclass
class Limited:
    """A refused request: which limiter said no and when to retry."""

    limiter: str
    retry_after_s: int


class RateLimiter:
    """All named limiters, driven by the current fault knobs, minus the bypass."""

    def __init__(self, faults: ApiFaults, bypass: Bypass, metrics: Metrics) -> None:
        self.faults = faults
        self.bypass = bypass
        self.metrics = metrics
        self.buckets = Buckets()
        self.limited = 0

    def check(self, limiters: tuple[str, ...], *, endpoint: str, ip: str | None, user: str | None,
              token: str | None, email: str | None) -> Limited | Counted | None:
        """Charge one request to each limiter in turn; the first that refuses answers.

        Counted: allowed, and the last limiter that counted it (for the headers); None: no limiter counted it.
        """
        bypassed = self.bypass.covers(token=token, email=email)
        f = self.faults
        counted: Counted | None = None
        for name in limiters:
            if bypassed and name not in f.unbypassed_limiters:
                continue
            key = ip if LIMITERS[name] == "ip" else user
            if key is None:
                continue
            bucket = f"{name}:{key}" if LIMITERS[name] == "ip" else f"{name}:{key.lower()}"
            burst = f.ip_burst if LIMITERS[name] == "ip" else f.user_burst
            rate = f.ip_rate_per_s if LIMITERS[name] == "ip" else f.user_rate_per_s
            if name == "websocket" and f.websocket_burst:
                burst, rate = f.websocket_burst, f.websocket_rate_per_s
            wait = self.buckets.take(bucket, rate, burst)
            if wait > 0:
                self.limited += 1
                self.metrics.rate_limit_hits.labels(endpoint=endpoint, limiter=name).inc()
                return Limited(name, max(1, math.ceil(wait)))
            counted = Counted(burst, self.buckets.remaining(bucket))
        return counted
