"""The rate-limit bypass lease: on inside, off after — on exceptions, Ctrl-C and a killed pytest too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from pytest_prodval.seeding import username_for
from pytest_prodval.bypass import BypassController, BypassError, BypassLease, CommandBypass, HttpBypass
from pytest_prodval.refstack.launcher import LocalStack

PATTERN = r"loadtest.*@loadtest\.local"


class RecordingController:
    """A controller that only records what the lease asked of it."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.fail_disable = 0

    def enable(self, pattern: str, lease_s: float) -> None:
        self.calls.append(f"enable {pattern} {lease_s:g}")

    def renew(self, lease_s: float) -> None:
        self.calls.append("renew")

    def disable(self) -> None:
        if self.fail_disable:
            self.fail_disable -= 1
            raise BypassError("target unreachable")
        self.calls.append("disable")

    def status(self) -> bool | None:
        return None


def wait_for(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


# -- the lease, with a recording controller ------------------------------------------------


def test_lease_enables_renews_every_third_of_the_lease_and_disables() -> None:
    controller = RecordingController()
    with BypassLease(controller, pattern=PATTERN, lease_s=0.3) as lease:
        time.sleep(0.5)
        record = lease.to_record()
        assert record.enabled_at is not None and record.disabled_at is None
    assert controller.calls[0] == f"enable {PATTERN} 0.3"
    assert controller.calls[-1] == "disable"
    assert 2 <= controller.calls.count("renew") <= 6
    record = lease.to_record()
    assert record.pattern == PATTERN and record.enabled_at is not None and record.disabled_at is not None
    assert record.enabled_at.endswith("Z") and record.enabled_at <= record.disabled_at
    renewals = controller.calls.count("renew")
    time.sleep(0.25)
    assert controller.calls.count("renew") == renewals, "the renew thread kept running after exit"


def test_lease_disables_when_the_block_raises() -> None:
    controller = RecordingController()
    with pytest.raises(RuntimeError, match="k6 broke"):
        with BypassLease(controller, pattern=PATTERN, lease_s=60):
            raise RuntimeError("k6 broke")
    assert controller.calls == [f"enable {PATTERN} 60", "disable"]


def test_lease_disables_on_ctrl_c_inside_the_block() -> None:
    controller = RecordingController()
    # A shell that starts a job in the background (as CI may) leaves SIGINT ignored: use
    # Python's own handler so the signal below is a real Ctrl-C.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            with BypassLease(controller, pattern=PATTERN, lease_s=60) as lease:
                os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, delivered to the main thread
                time.sleep(5)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert controller.calls[-1] == "disable"
    assert lease.disabled_at is not None
    assert not any(t.name == "prodval-bypass-renew" and t.is_alive() for t in threading.enumerate())


def test_disable_is_idempotent_and_survives_atexit_and_handler_calls() -> None:
    controller = RecordingController()
    lease = BypassLease(controller, pattern=PATTERN, lease_s=60)
    lease.disable()  # never entered: nothing to switch off
    with lease:
        lease.disable()  # e.g. from a SIGTERM handler path
        lease.disable()
    lease.disable()  # e.g. atexit
    assert controller.calls == [f"enable {PATTERN} 60", "disable"]


def test_disable_retries_then_reports_that_the_bypass_may_still_be_on() -> None:
    controller = RecordingController()
    controller.fail_disable = 1
    with BypassLease(controller, pattern=PATTERN, lease_s=60) as lease:
        pass
    assert controller.calls[-1] == "disable" and lease.disabled_at is not None

    controller = RecordingController()
    controller.fail_disable = 99
    with pytest.raises(BypassError, match="may still be on"):
        with BypassLease(controller, pattern=PATTERN, lease_s=60) as lease:
            pass
    assert lease.disabled_at is None


def test_verification_results_land_in_the_record() -> None:
    lease = BypassLease(RecordingController(), pattern=PATTERN)
    assert lease.verify_on(lambda: False) is True  # not limited while on
    assert lease.verify_off(lambda: None) is None  # inconclusive
    record = lease.to_record()
    assert (record.verified_on, record.verified_off) == (True, None)


# -- a pair of commands --------------------------------------------------------------------


def test_command_bypass_runs_the_commands_with_pattern_and_lease(tmp_path: Path) -> None:
    state = tmp_path / "bypass.log"
    on = ["sh", "-c", f'echo "on $PRODVAL_BYPASS_PATTERN $PRODVAL_BYPASS_LEASE_S" >> {state}']
    off = ["sh", "-c", f"echo off >> {state}"]
    controller = CommandBypass(on, off)
    assert isinstance(controller, BypassController)
    with BypassLease(controller, pattern=PATTERN, lease_s=0.3) as lease:
        time.sleep(0.35)  # renewals are no-ops for commands
        assert controller.status() is None
    assert state.read_text().splitlines() == [f"on {PATTERN} 0.3", "off"]
    assert lease.to_record().disabled_at is not None


def test_command_bypass_failure_names_the_command_and_exit_code(tmp_path: Path) -> None:
    state = tmp_path / "bypass.log"
    controller = CommandBypass(["sh", "-c", "echo no permission >&2; exit 3"], ["sh", "-c", f"echo off >> {state}"])
    with pytest.raises(BypassError, match=r"'sh' exited 3: 'no permission'"):
        with BypassLease(controller, pattern=PATTERN):
            pytest.fail("the block must not run when enabling failed")
    assert state.read_text() == "off\n", "a failed enable is followed by a best-effort disable"
    with pytest.raises(BypassError, match="could not run"):
        CommandBypass(["/nonexistent/toggle"], ["true"]).enable(PATTERN, 1)


# -- against the reference stack -----------------------------------------------------------


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack() as running:
        yield running


@pytest.fixture
def http_bypass(stack: LocalStack) -> Iterator[HttpBypass]:
    controller = HttpBypass(stack.base_url, stack.admin_token, timeout_s=5)
    yield controller
    controller.disable()


def test_http_bypass_lease_is_renewed_while_held_and_off_after_exit(http_bypass: HttpBypass) -> None:
    assert http_bypass.status() is False
    with BypassLease(http_bypass, pattern=PATTERN, lease_s=1.0) as lease:
        assert http_bypass.status() is True
        time.sleep(1.6)  # longer than the lease: only the renewals keep it on
        assert http_bypass.status() is True
        deadline = time.monotonic() + 5  # a loaded machine may run the renewal thread late, not never
        while lease.renewals < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert lease.renewals >= 2 and not lease.renew_errors
        assert http_bypass.status() is True
    assert http_bypass.status() is False


def test_http_bypass_turns_itself_off_when_pytest_is_killed(stack: LocalStack, http_bypass: HttpBypass) -> None:
    # The lease holder dies by SIGKILL: no exit handler runs, only the target's lease ends it.
    code = (
        "import os, sys, time\n"
        "from pytest_prodval.bypass import BypassLease, HttpBypass\n"
        "lease = BypassLease(HttpBypass(sys.argv[1], os.environ['PRODVAL_ADMIN_TOKEN']), pattern=sys.argv[2], lease_s=1.0)\n"
        "lease.__enter__()\n"
        "print('on', flush=True)\n"
        "time.sleep(60)\n"
    )
    env = {**os.environ, "PRODVAL_ADMIN_TOKEN": stack.admin_token}
    holder = subprocess.Popen([sys.executable, "-c", code, stack.base_url, PATTERN], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "on"
        time.sleep(1.3)
        assert http_bypass.status() is True, "the holder's renewals should keep the bypass on past its lease"
        holder.kill()
        holder.wait()
        killed_at = time.monotonic()
        assert wait_for(lambda: http_bypass.status() is False, timeout_s=3.0)
        assert time.monotonic() - killed_at <= 2.0  # the 1 s lease, not some other timeout
    finally:
        holder.kill()
        holder.wait()


def test_http_bypass_with_a_wrong_admin_token_fails_loudly(stack: LocalStack) -> None:
    controller = HttpBypass(stack.base_url, "not-the-admin-token", timeout_s=5)
    with pytest.raises(BypassError, match="401"):
        with BypassLease(controller, pattern=PATTERN):
            pytest.fail("the block must not run when enabling failed")


def burst_limited(base_url: str, token: str, *, requests: int) -> bool:
    """Fire `requests` quick authenticated GETs as one user: whether any got 429."""
    with httpx.Client(timeout=5, headers={"Authorization": f"Bearer {token}"}) as client:
        return any(client.get(f"{base_url}/api/games").status_code == 429 for _ in range(requests))


def test_burst_is_limited_when_off_and_not_when_on(stack: LocalStack, http_bypass: HttpBypass) -> None:
    email = "loadtest_bypass_burst@loadtest.local"
    body = {"username": username_for(email), "email": email, "password": "BurstPass123!", "confirmPassword": "BurstPass123!"}
    httpx.post(f"{stack.base_url}/api/auth/register", json=body, timeout=5)
    login = httpx.post(f"{stack.base_url}/api/auth/login", json={"email": email, "password": "BurstPass123!"}, timeout=5)
    token = login.json()["data"]["accessToken"]
    stack.set_faults(user_burst=10, user_rate_per_s=1.0)
    try:
        with BypassLease(http_bypass, pattern=PATTERN, lease_s=30) as lease:
            assert lease.verify_on(lambda: burst_limited(stack.base_url, token, requests=30)) is True
        assert lease.verify_off(lambda: burst_limited(stack.base_url, token, requests=30)) is True
        record = lease.to_record()
        assert (record.verified_on, record.verified_off) == (True, True)
    finally:
        stack.set_faults(reset=True)


def test_the_bypass_check_reads_ringrifts_rate_limit_headers(stack: LocalStack, http_bypass: HttpBypass) -> None:
    """One authenticated GET, nothing created: counted by a limiter = X-RateLimit-Remaining is set."""
    from pytest_prodval.preflight import limit_probe
    from pytest_prodval.target import Target

    email, password = "loadtest_user_77@loadtest.local", "BurstPass123!"
    body = {"username": username_for(email), "email": email, "password": password, "confirmPassword": password}
    httpx.post(f"{stack.base_url}/api/auth/register", json=body, timeout=5)
    probe = limit_probe(Target(stack.base_url, stack.ws_url), email, password)
    assert probe() is True  # bypass off: the user's requests are counted
    with BypassLease(http_bypass, pattern=PATTERN, lease_s=30) as lease:
        assert lease.verify_on(probe) is True
    assert lease.verify_off(probe) is True
    assert limit_probe(Target(stack.base_url, stack.ws_url), email, "wrong-Password1")() is None  # cannot tell


@pytest.mark.parametrize(("env_commands", "admin", "token", "expected"), [
    (True, "admin-token", "bypass-token-0123456789", "CommandBypass"),  # RingRift: a restart with the variables
    (False, "admin-token", "bypass-token-0123456789", "HttpBypass"),   # the embedded stack's admin endpoint
    (False, None, "bypass-token-0123456789", "HeaderBypass"),          # a target configured with a token
])
def test_the_default_switch_is_the_first_that_applies(monkeypatch: pytest.MonkeyPatch, env_commands: bool,
                                                      admin: str | None, token: str, expected: str) -> None:
    from types import SimpleNamespace

    from pytest_prodval.plugin import pytest_prodval_bypass_controller

    monkeypatch.setenv("RATE_LIMIT_BYPASS_TOKEN", token)
    environment = SimpleNamespace(bypass_on=["deploy", "on"] if env_commands else None,
                                  bypass_off=["deploy", "off"] if env_commands else None)
    session = SimpleNamespace(environment=environment, admin_token=admin)
    prepared = SimpleNamespace(base_url="http://127.0.0.1:9")
    controller = pytest_prodval_bypass_controller(config=None, prepared=prepared, session=session)  # type: ignore[arg-type]
    assert type(controller).__name__ == expected
    if env_commands:
        assert (controller.enable_cmd, controller.disable_cmd) == (["deploy", "on"], ["deploy", "off"])  # type: ignore[union-attr]


@pytest.mark.parametrize("verified_on", [False, True, None])
def test_429s_after_a_bypass_that_did_not_cover_pool_user_1_say_so(verified_on: bool | None) -> None:
    """The check before load is recorded; when it found pool user 1 still limited, the 429 hint names that."""
    from pytest_prodval.models import BypassRecord, CriterionResult, SloReport
    from pytest_prodval.triage import BYPASS_NOT_EFFECTIVE, annotate

    failed = CriterionResult(name="http_429_rate", scenario_id="BCAP_X", metric="status_429{phase:steady}",
                             expression="rate<0.001", aggregation="rate", operator="<", threshold=0.001, observed=0.2,
                             profile="staging", samples=100, verdict="fail", hint="429s: increase the pool.")
    report = SloReport(scenario_id="BCAP_X", marker="x", env="staging", profile="staging", timestamp="20261201T000000Z",
                       criteria=[failed], bypass=BypassRecord(pattern=PATTERN, verified_on=verified_on))
    annotate(report, {}, None)
    assert (BYPASS_NOT_EFFECTIVE in (report.criteria[0].hint or "")) is (verified_on is False)
