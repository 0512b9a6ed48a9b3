"""Seed the load-test user pool over HTTP (plan §3.2): create, verify, repair — never skip silently.

RingRift's way: `POST /api/auth/register {username, email, password, confirmPassword}`, the
username being the e-mail's local part (`loadtest_user_7`); 409 `EMAIL_EXISTS` or
`USERNAME_EXISTS` means the user is there. The register route is limited to a few calls
per hour per IP unless bypassed: with RATE_LIMIT_BYPASS_TOKEN set every call carries the
bypass header; otherwise a 429 is waited out (Retry-After, capped) and then reported as
the register limiter, never skipped.

The original seeder skipped users that already existed, so a changed pool password never
reached them and the run drowned in 401s. Here an existing user is logged in with the pool
password; if that fails its password is reset through the admin endpoint, or the user is
reported as failed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import re
from dataclasses import dataclass, field

import httpx

log = logging.getLogger(__name__)

REGISTER = "/api/auth/register"
LOGIN = "/api/auth/login"
ADMIN_PASSWORD = "/api/admin/users/password"
RETRY_STATUSES = frozenset({429, 502, 503, 504})  # auth routes are rate limited per IP and e-mail
MAX_ATTEMPTS = 6
MAX_CONNECT_ATTEMPTS = 3  # preflight checked /health already: a dead target need not be retried long
MAX_RETRY_WAIT_S = 5.0


@dataclass
class SeedResult:
    """What seeding did to the pool; `failed` holds "email: reason" (never a password)."""

    created: int = 0
    existing: int = 0
    reset: int = 0
    failed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every pool user can now log in with the pool password."""
        return not self.failed

    def summary(self) -> str:
        """One line for the terminal and the error message."""
        text = f"{self.created} created, {self.existing} existing, {self.reset} reset, {len(self.failed)} failed"
        if self.failed:
            shown = "; ".join(self.failed[:5])
            more = f" (+{len(self.failed) - 5} more)" if len(self.failed) > 5 else ""
            text += f": {shown}{more}"
        return text


class SeedingError(RuntimeError):
    """Some pool users could not be made to log in with the pool password."""

    def __init__(self, result: SeedResult) -> None:
        self.result = result
        super().__init__(f"seeding the user pool failed: {result.summary()}")


class _Failed(Exception):
    """One user could not be seeded; the message is the short reason."""


async def seed_users_http(
    base_url: str,
    *,
    emails: list[str],
    password: str,
    admin_token: str | None,
    concurrency: int = 8,
    timeout_s: float = 30,
    raise_on_failure: bool = True,
) -> SeedResult:
    """Register every pool user, or verify (and if needed reset) the password of existing ones.

    Idempotent: a second run finds every user existing and nothing failed. Raises
    `SeedingError` when any user failed, unless `raise_on_failure` is False.
    """
    result = SeedResult()
    semaphore = asyncio.Semaphore(max(concurrency, 1))
    limits = httpx.Limits(max_connections=max(concurrency, 1), max_keepalive_connections=max(concurrency, 1))
    from .preflight import bypass_headers

    async with httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout_s, limits=limits,
                                 headers=bypass_headers(os.environ)) as client:

        async def one(email: str) -> str:
            async with semaphore:
                try:
                    return await _seed_one(client, email, password, admin_token)
                except _Failed as exc:
                    return f"failed:{exc}"
                except httpx.HTTPError as exc:
                    return f"failed:{type(exc).__name__}"

        outcomes = await asyncio.gather(*(one(email) for email in emails))
    for email, outcome in zip(emails, outcomes):
        if outcome.startswith("failed:"):
            result.failed.append(f"{email}: {outcome.removeprefix('failed:')}")
        else:
            setattr(result, outcome, getattr(result, outcome) + 1)
    log.info("user pool seeding: %s", result.summary())
    if raise_on_failure and result.failed:
        raise SeedingError(result)
    return result


def seed_users(
    base_url: str,
    *,
    emails: list[str],
    password: str,
    admin_token: str | None,
    concurrency: int = 8,
    timeout_s: float = 30,
    raise_on_failure: bool = True,
) -> SeedResult:
    """`seed_users_http` for synchronous callers (also from a thread that already runs an event loop)."""
    coroutine = seed_users_http(
        base_url, emails=emails, password=password, admin_token=admin_token,
        concurrency=concurrency, timeout_s=timeout_s, raise_on_failure=raise_on_failure,
    )
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    # asyncio.run refuses to nest: run the seeding on its own loop in a helper thread.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def username_for(email: str) -> str:
    """RingRift usernames are 3-20 of [A-Za-z0-9_-]: the e-mail's local part, made to fit."""
    local = re.sub(r"[^A-Za-z0-9_-]", "_", email.split("@", 1)[0])
    if len(local) > 20:  # keep the distinguishing number at the end
        local = local[:8] + local[-12:]
    return local.ljust(3, "_")


async def _seed_one(client: httpx.AsyncClient, email: str, password: str, admin_token: str | None) -> str:
    """Make one user log in with `password`; returns the SeedResult counter to bump."""
    credentials = {"email": email, "password": password}
    register = {"username": username_for(email), "email": email, "password": password, "confirmPassword": password}
    response = await _post(client, REGISTER, register)
    if response.status_code == 201:
        return "created"
    if response.status_code == 429:
        raise _Failed(f"register returned {_describe(response)}: the register limiter refused it "
                      "(set RATE_LIMIT_BYPASS_TOKEN, enable the bypass, or seed through pytest_prodval_seed_users)")
    if response.status_code != 409:
        raise _Failed(f"register returned {_describe(response)}")
    # The user exists: its password may be an old one (the 401 storm of the original run).
    response = await _post(client, LOGIN, credentials)
    if response.status_code == 200:
        return "existing"
    if response.status_code != 401:
        raise _Failed(f"login of the existing user returned {_describe(response)}")
    if not admin_token:
        raise _Failed("exists with a different password and no admin token to reset it (set PRODVAL_ADMIN_TOKEN)")
    response = await _post(client, ADMIN_PASSWORD, credentials, headers={"X-Admin-Token": admin_token})
    if response.status_code != 200:
        raise _Failed(f"password reset returned {_describe(response)}")
    response = await _post(client, LOGIN, credentials)
    if response.status_code != 200:
        raise _Failed(f"login after the password reset returned {_describe(response)}")
    return "reset"


async def _post(
    client: httpx.AsyncClient, path: str, body: dict[str, str], *, headers: dict[str, str] | None = None
) -> httpx.Response:
    """POST with retries on rate limiting and transient gateway errors (Retry-After honoured, capped)."""
    delay = 0.2
    for attempt in range(MAX_ATTEMPTS):
        try:
            response = await client.post(path, json=body, headers=headers)
        except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError, httpx.ReadTimeout):
            # A register that timed out may still have created the user: the retry then sees 409
            # and the login check decides. Password hashing makes registers slow under load.
            if attempt >= MAX_CONNECT_ATTEMPTS - 1:
                raise
        else:
            if response.status_code not in RETRY_STATUSES or attempt == MAX_ATTEMPTS - 1:
                return response
            delay = _retry_after(response, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, MAX_RETRY_WAIT_S)
    raise AssertionError("unreachable")  # pragma: no cover


def _retry_after(response: httpx.Response, default: float) -> float:
    try:
        return min(max(float(response.headers.get("Retry-After", default)), 0.05), MAX_RETRY_WAIT_S)
    except ValueError:
        return default


def _describe(response: httpx.Response) -> str:
    """Status and error code of a failed call (the body's error code, not the body: it may echo input)."""
    code = ""
    try:
        error = response.json().get("error")
        if isinstance(error, dict) and isinstance(error.get("code"), str):
            code = f" {error['code']}"
    except (ValueError, AttributeError):
        pass
    return f"HTTP {response.status_code}{code}"
