"""Seeding the user pool over HTTP against the local stack: create, verify, repair, report."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import httpx
import pytest

from pytest_prodval.seeding import SeedingError, SeedResult, seed_users, seed_users_http
from pytest_prodval.settings import PoolSettings
from pytest_prodval.refstack.launcher import LocalStack

PASSWORD = "SeedPass123!"


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack() as running:
        yield running


def can_log_in(stack: LocalStack, email: str, password: str = PASSWORD) -> bool:
    response = httpx.post(f"{stack.base_url}/api/auth/login", json={"email": email, "password": password}, timeout=5)
    return response.status_code == 200


def change_password(stack: LocalStack, email: str, password: str) -> None:
    """What an earlier run with another LOADTEST_USER_PASSWORD left behind."""
    response = httpx.post(f"{stack.base_url}/api/admin/users/password", json={"email": email, "password": password},
                          headers={"X-Admin-Token": stack.admin_token}, timeout=5)
    assert response.status_code == 200, response.text


def pool_emails(prefix: str, domain: str, size: int) -> list[str]:
    """Users 1..size of a pool, as the session seeds them (`PoolSettings.email`)."""
    pool = PoolSettings(prefix=prefix, domain=domain, size=size)
    return [pool.email(n) for n in range(1, size + 1)]


def test_pool_emails_are_the_format_the_k6_script_gets() -> None:
    """One fact: the e-mails seeded are the `pool.emailFormat` k6 fills in with its VU number."""
    assert pool_emails("loadtest_user_", "loadtest.local", 3) == [
        "loadtest_user_1@loadtest.local", "loadtest_user_2@loadtest.local", "loadtest_user_3@loadtest.local",
    ]
    pool = PoolSettings(prefix="loadtest_user_", domain="loadtest.local")
    assert pool.email_format == "loadtest_user_{n}@loadtest.local"
    assert all(pool.email_format.replace("{n}", str(n)) == pool.email(n) for n in (1, 7, 400))


def test_seeding_creates_the_pool_concurrently_and_is_idempotent(stack: LocalStack) -> None:
    emails = pool_emails("loadtest_seed_", "loadtest.local", 120)
    first = seed_users(stack.base_url, emails=emails, password=PASSWORD, admin_token=stack.admin_token, concurrency=16)
    assert first == SeedResult(created=120, existing=0, reset=0, failed=[])
    assert all(can_log_in(stack, email) for email in (emails[0], emails[59], emails[-1]))
    again = seed_users(stack.base_url, emails=emails, password=PASSWORD, admin_token=stack.admin_token)
    assert again == SeedResult(created=0, existing=120, reset=0, failed=[])
    assert again.ok and again.summary() == "0 created, 120 existing, 0 reset, 0 failed"


def test_existing_user_with_an_old_password_is_reset_with_the_admin_token(stack: LocalStack) -> None:
    emails = pool_emails("loadtest_reset_", "loadtest.local", 5)
    seed_users(stack.base_url, emails=emails, password=PASSWORD, admin_token=None)
    change_password(stack, emails[2], "OldPassword-1")
    assert not can_log_in(stack, emails[2])
    result = seed_users(stack.base_url, emails=emails, password=PASSWORD, admin_token=stack.admin_token)
    assert result == SeedResult(created=0, existing=4, reset=1, failed=[])
    assert can_log_in(stack, emails[2])


def test_without_an_admin_token_a_stale_password_is_a_failure_not_a_skip(stack: LocalStack) -> None:
    emails = pool_emails("loadtest_stale_", "loadtest.local", 9)
    seed_users(stack.base_url, emails=emails, password=PASSWORD, admin_token=None)
    for email in emails[1:8]:
        change_password(stack, email, "OldPassword-2")
    with pytest.raises(SeedingError) as caught:
        seed_users(stack.base_url, emails=emails, password=PASSWORD, admin_token=None)
    result = caught.value.result
    assert (result.created, result.existing, result.reset, len(result.failed)) == (0, 2, 0, 7)
    assert result.failed[0] == (
        f"{emails[1]}: exists with a different password and no admin token to reset it (set PRODVAL_ADMIN_TOKEN)"
    )
    message = str(caught.value)
    assert message.startswith("seeding the user pool failed: 0 created, 2 existing, 0 reset, 7 failed: ")
    assert all(email in message for email in emails[1:6]) and emails[6] not in message and "(+2 more)" in message
    assert PASSWORD not in message and "OldPassword-2" not in message
    # The caller may also take the result and decide.
    quiet = seed_users(stack.base_url, emails=emails, password=PASSWORD, admin_token=None, raise_on_failure=False)
    assert len(quiet.failed) == 7 and not quiet.ok


def test_wrong_admin_token_is_reported_per_user(stack: LocalStack) -> None:
    emails = pool_emails("loadtest_badadmin_", "loadtest.local", 2)
    seed_users(stack.base_url, emails=emails, password=PASSWORD, admin_token=None)
    change_password(stack, emails[0], "OldPassword-3")
    result = seed_users(stack.base_url, emails=emails, password=PASSWORD, admin_token="wrong-token", raise_on_failure=False)
    assert result.failed == [f"{emails[0]}: password reset returned HTTP 401 AUTH_REQUIRED"]
    assert result.existing == 1


def test_unreachable_target_fails_every_user_with_the_error_name() -> None:
    emails = pool_emails("loadtest_down_", "loadtest.local", 2)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = seed_users(f"http://127.0.0.1:{port}", emails=emails, password=PASSWORD, admin_token=None, timeout_s=1,
                        raise_on_failure=False)
    assert result.failed == [f"{emails[0]}: ConnectError", f"{emails[1]}: ConnectError"]


def test_sync_wrapper_works_inside_a_running_event_loop(stack: LocalStack) -> None:
    emails = pool_emails("loadtest_loop_", "loadtest.local", 3)

    async def caller() -> SeedResult:
        return seed_users(stack.base_url, emails=emails, password=PASSWORD, admin_token=None)

    assert asyncio.run(caller()).created == 3
    assert asyncio.run(seed_users_http(stack.base_url, emails=emails, password=PASSWORD, admin_token=None)).existing == 3


def test_rate_limited_auth_routes_are_retried_not_failed(stack: LocalStack) -> None:
    emails = pool_emails("loadtest_limited_", "loadtest.local", 24)
    stack.set_faults(ip_burst=8, ip_rate_per_s=40.0)
    try:
        result = seed_users(stack.base_url, emails=emails, password=PASSWORD, admin_token=None, concurrency=24)
    finally:
        stack.set_faults(reset=True)
    assert result == SeedResult(created=24, existing=0, reset=0, failed=[])
