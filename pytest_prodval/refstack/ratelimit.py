"""Token buckets per user and per IP, and the staging-style rate-limit bypass with a lease."""

from __future__ import annotations

import re
import time
from typing import Any

from .faults import ApiFaults

DEFAULT_BYPASS_PATTERN = r"loadtest.*@loadtest\.local"


class Buckets:
    """Token buckets keyed by a string; rate and burst are read at each take so knobs apply at once."""

    def __init__(self) -> None:
        self._state: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill)

    def take(self, key: str, rate_per_s: float, burst: int) -> bool:
        """Take one token; False when the bucket is empty."""
        now = time.monotonic()
        tokens, last = self._state.get(key, (float(burst), now))
        tokens = min(float(burst), tokens + (now - last) * rate_per_s)
        if tokens < 1.0:
            self._state[key] = (tokens, now)
            return False
        self._state[key] = (tokens - 1.0, now)
        return True

    def prune(self, idle_s: float = 300.0) -> None:
        """Forget buckets not touched for a while (they would be full again anyway)."""
        cutoff = time.monotonic() - idle_s
        for key in [k for k, (_, last) in self._state.items() if last < cutoff]:
            del self._state[key]


class Bypass:
    """The rate-limit bypass: on for a lease, then off by itself (checked lazily on each use)."""

    def __init__(self, pattern: str = DEFAULT_BYPASS_PATTERN) -> None:
        self.pattern = pattern
        self._regex = re.compile(pattern)
        self._expires_at: float | None = None  # wall clock, so it can be shown

    @property
    def enabled(self) -> bool:
        """On, and the lease has not run out (an expired lease switches it off here)."""
        if self._expires_at is not None and time.time() >= self._expires_at:
            self._expires_at = None
        return self._expires_at is not None

    def set(self, *, enabled: bool, lease_s: float, pattern: str | None) -> None:
        """Switch on for `lease_s` seconds (with an optional new pattern), or off."""
        if pattern is not None:
            self._regex = re.compile(pattern)
            self.pattern = pattern
        self._expires_at = time.time() + lease_s if enabled else None

    def covers(self, email: str | None) -> bool:
        """True when the bypass is on and the e-mail matches the whole pattern."""
        return email is not None and self.enabled and self._regex.fullmatch(email) is not None

    def as_dict(self) -> dict[str, Any]:
        """The state as the admin endpoint shows it (`expiresAt` in epoch seconds or null)."""
        enabled = self.enabled
        return {"enabled": enabled, "pattern": self.pattern, "expiresAt": self._expires_at if enabled else None}


class RateLimiter:
    """Per-user and per-IP limits driven by the current fault knobs, minus the bypass."""

    def __init__(self, faults: ApiFaults, bypass: Bypass) -> None:
        self.faults = faults
        self.bypass = bypass
        self.users = Buckets()
        self.ips = Buckets()
        self.limited = 0

    def allow(self, *, ip: str | None, email: str | None) -> bool:
        """One request or message from `ip` by `email` (None when unknown): within the limits?"""
        if self.bypass.covers(email):
            return True
        f = self.faults
        ok = ip is None or self.ips.take(ip, f.ip_rate_per_s, f.ip_burst)
        if ok and email is not None:
            ok = self.users.take(email.lower(), f.user_rate_per_s, f.user_burst)
        if not ok:
            self.limited += 1
        return ok
