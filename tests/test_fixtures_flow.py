"""The run's steps are fixtures a user sees and overrides; settings are checked once, at start."""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_prodval.preflight import PreflightError, check_password_policy, check_pool_pattern
from pytest_prodval.target import normalise_ws_url

pytestmark = pytest.mark.usefixtures("scenarios_dir")

DEAD_TARGET_CONFTEST = '''
import pytest
from pytest_prodval.target import Target

@pytest.fixture(scope="session")
def prodval_target():
    """A target of the user's own: nothing listens on port 9 of 127.0.0.1."""
    yield Target(base_url="http://127.0.0.1:9", ws_url="ws://127.0.0.1:9/socket.io/?EIO=4&transport=websocket")
'''


def test_setup_show_lists_the_steps_and_a_conftest_overrides_the_target(pytester: pytest.Pytester,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("STAGING_URL", "WS_URL", "AI_SERVICE_URL"):  # the environment's own, never used here
        monkeypatch.setenv(name, "http://127.0.0.1:8")
    pytester.makeconftest(DEAD_TARGET_CONFTEST)
    result = pytester.runpytest("-m", "baseline", "--env", "staging", "--setup-show", "-k", "api_latency_p95",
                                "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    out = result.stdout.str()
    for step in ("SETUP    S prodval_target", "SETUP    S prodval_preflight"):
        assert step in out
    # The user's target is the one preflighted: its port is in the error, and no stack was started.
    assert "http://127.0.0.1:9/health" in out
    assert "preflight (health) failed" in out


def test_fixtures_are_documented(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--fixtures", "--env", "local", "-p", "no:cacheprovider")
    out = result.stdout.str()
    for name, scope in (("prodval_target", " [session scope]"), ("prodval_preflight", " [session scope]"),
                        ("prodval_pool", " [session scope]"), ("prodval_bypass", " [session scope]"), ("prodval_run", "")):
        # the fixture's own header line, with its scope and its docstring under it
        assert re.search(rf"^{name}{re.escape(scope)} -- .*fixtures\.py:\d+\n    \S", out, re.M), name


@pytest.mark.parametrize(("name", "value"), [
    ("LOADTEST_USER_POOL_SIZE", "abc"),
    ("LOADTEST_USER_POOL_SIZE", "0"),
    ("LOADTEST_AUTH_TOKEN_TTL_S", "-5"),
    ("LOADTEST_AUTH_REFRESH_WINDOW_S", "soon"),
    ("PRODVAL_BYPASS_LEASE_S", "0"),
    ("PRODVAL_LOCAL_FAULTS", "{not json"),
    ("LOADTEST_USER_POOL_DOMAIN", "no domain"),
])
def test_a_bad_environment_variable_is_a_usage_error_naming_it(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                                               name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    result = pytester.runpytest("-m", "baseline", "--env", "local", "--collect-only", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert name in result.stderr.str()
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()


@pytest.mark.parametrize("spelling", ["two words", "equals"])
@pytest.mark.parametrize("option", ["--prodval-results-dir", "--prodval-from-results"])
def test_an_existing_folder_as_option_value_does_not_move_the_scenarios(pytester: pytest.Pytester, tmp_path: Path,
                                                                        spelling: str, option: str) -> None:
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    args = [option, str(folder)] if spelling == "two words" else [f"{option}={folder}"]
    result = pytester.runpytest("-m", "baseline", "--env", "local", "--collect-only", "-q", *args, "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str() + result.stderr.str()
    # node ids stay relative to the project (no "../" through a moved rootdir): stable JUnit names
    result.stdout.fnmatch_lines(["scenarios/baseline.toml::BCAP_STAGING_BASELINE_20G_60P::failed_requests_rate"])
    # pytest itself still moves its rootdir for the two-word spelling: the header says so and how to avoid it
    header = pytester.runpytest("-m", "baseline", "--env", "local", "--collect-only", *args, "-p", "no:cacheprovider")
    moved = [line for line in header.stdout.lines if "took its rootdir from an option's value" in line]
    assert len(moved) == (1 if spelling == "two words" else 0), header.stdout.str()


# The writers run in a fresh interpreter with the umask set first: the mode is read once, at import.
UMASK_WRITER = """
import os, sys
from pathlib import Path
os.umask(int(sys.argv[2], 8))
from pytest_prodval.artifacts import write_atomic, write_report
from pytest_prodval.html import write_html
from pytest_prodval.models import SloReport
folder = Path(sys.argv[1])
report = SloReport(scenario_id="BCAP_X", marker="x", env="local", profile="staging", timestamp="20261201T000000Z")
write_report(report, folder / "x_slo_report.json")
write_html(report, folder / "x_report.html")
write_atomic(folder / "go_no_go.json", "{}")
"""


@pytest.mark.parametrize(("umask", "mode"), [(0o027, 0o640), (0o002, 0o664)], ids=["umask-027", "umask-002"])
def test_artifacts_honour_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    """Not the temporary file's private 0600, and not a fixed 0644 either: what the umask gives."""
    subprocess.run([sys.executable, "-c", UMASK_WRITER, str(tmp_path), oct(umask)], check=True, timeout=60)
    written = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert written == dict.fromkeys(["x_slo_report.json", "x_report.html", "go_no_go.json"], mode)


@pytest.mark.parametrize(("given", "expected"), [
    ("ws://127.0.0.1:3101", "ws://127.0.0.1:3101/socket.io/?EIO=4&transport=websocket"),
    ("ws://127.0.0.1:3101/", "ws://127.0.0.1:3101/socket.io/?EIO=4&transport=websocket"),
    ("wss://staging.example.com/socket.io/?EIO=4&transport=websocket",
     "wss://staging.example.com/socket.io/?EIO=4&transport=websocket"),
    ("https://staging.example.com", "wss://staging.example.com/socket.io/?EIO=4&transport=websocket"),
    ("ws://h:1/rt/socket.io", "ws://h:1/rt/socket.io/?EIO=4&transport=websocket"),
])
def test_one_websocket_url_for_preflight_and_k6(given: str, expected: str) -> None:
    assert normalise_ws_url(given) == expected


def test_the_password_rule_is_checked_before_anything_is_created() -> None:
    check_password_policy("TestPassword123!")
    with pytest.raises(PreflightError) as info:
        check_password_policy("loadtest")
    assert "an upper-case letter" in info.value.reason and "a digit" in info.value.reason
    assert "loadtest" not in info.value.reason  # the password itself is never shown


def test_a_bypass_pattern_that_misses_the_pool_is_a_preflight_error() -> None:
    check_pool_pattern(r"loadtest.*@loadtest\.local", "loadtest_user_1@loadtest.local")
    with pytest.raises(PreflightError) as info:  # RingRift's default pattern needs a dot after "loadtest"
        check_pool_pattern(r"^loadtest\..+@loadtest\.local$", "loadtest_user_1@loadtest.local")
    assert r"^loadtest\..+@loadtest\.local$" in info.value.reason and "loadtest_user_1@loadtest.local" in info.value.reason


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("WS_URL", "127.0.0.1:3101", "ws_url"),
    ("STAGING_URL", "staging.example.com", "base_url"),
])
def test_an_unusable_url_is_a_usage_error_at_start(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                                   name: str, value: str, expected: str) -> None:
    for var in ("STAGING_URL", "WS_URL", "AI_SERVICE_URL"):
        monkeypatch.setenv(var, "http://127.0.0.1:9" if var != "WS_URL" else "ws://127.0.0.1:9")
    monkeypatch.setenv(name, value)
    result = pytester.runpytest("-m", "baseline", "--env", "staging", "--collect-only", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*environment 'staging': {expected}*{value}*"])


def test_xdist_installed_but_not_loaded(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """`-p no:xdist` (or PYTEST_DISABLE_PLUGIN_AUTOLOAD): no xdist options exist; the session must not ask for them."""
    pytester.makeconftest(DEAD_TARGET_CONFTEST)
    for name in ("STAGING_URL", "WS_URL", "AI_SERVICE_URL"):
        monkeypatch.setenv(name, "http://127.0.0.1:8" if name != "WS_URL" else "ws://127.0.0.1:8")
    result = pytester.runpytest("-p", "no:xdist", "-m", "baseline", "--env", "staging", "-k", "api_latency_p95",
                                "-p", "no:cacheprovider")
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    result.assert_outcomes(errors=1)


def test_k6_gets_the_seeder_password_and_the_bypass_token_never_the_admin_token(monkeypatch: pytest.MonkeyPatch,
                                                                                tmp_path: Path) -> None:
    """The child's environment passes LOADTEST_USER_PASSWORD through (an earlier one dropped a
    LOADTEST_PASSWORD nothing uses); the secrets it carries are the ones a k6-operator Secret holds."""
    from pytest_prodval.k6run import SECRET_VARS, k6_env

    monkeypatch.setenv("LOADTEST_USER_PASSWORD", "Seeder-Secret-1")
    monkeypatch.setenv("RATE_LIMIT_BYPASS_TOKEN", "bypass-token-0123456789")
    monkeypatch.setenv("PRODVAL_ADMIN_TOKEN", "admin-token-never-in-k6")
    env = k6_env({"scenarioId": "BCAP_X"}, "Pool-Secret-2", tmp_path / "dashboard.html", duration_s=60)
    assert (env["LOADTEST_USER_PASSWORD"], env["LOADTEST_USER_POOL_PASSWORD"], env["RATE_LIMIT_BYPASS_TOKEN"]) == (
        "Seeder-Secret-1", "Pool-Secret-2", "bypass-token-0123456789")
    assert "PRODVAL_ADMIN_TOKEN" not in env
    assert env["PRODVAL_CONFIG"] == '{"scenarioId": "BCAP_X"}'
    assert set(SECRET_VARS) == {"LOADTEST_USER_PASSWORD", "LOADTEST_USER_POOL_PASSWORD", "RATE_LIMIT_BYPASS_TOKEN"}


def test_a_criterion_the_environment_has_no_source_for_is_skipped_with_its_reason(pytester: pytest.Pytester,
                                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """`[staging.not_applicable]` in data: the item is skipped with the reason, before any step runs
    (never judged "no data, pass", never an ERROR on every run); elsewhere the criterion is judged."""
    for name in ("STAGING_URL", "WS_URL", "AI_SERVICE_URL"):
        monkeypatch.setenv(name, "http://127.0.0.1:8")
    pytester.makeconftest(DEAD_TARGET_CONFTEST)
    args = ("-m", "baseline", "-k", "move_server_processing_p95", "-p", "no:cacheprovider")
    result = pytester.runpytest(*args, "--env", "staging", "-rs", "--junitxml", "slo.xml")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED * move_server_processing_p95: not applicable here: RingRift declares "
                                 "ringrift_game_move_latency_seconds but never observes it*"])
    assert "preflight" not in result.stdout.str()  # nothing was sent to the (dead) target
    assert 'type="pytest.skip" message="move_server_processing_p95: not applicable here' in (pytester.path / "slo.xml").read_text()
    # The embedded stack observes the histogram: there the same criterion is an item like any other.
    pytester.runpytest(*args, "--env", "local", "--collect-only", "-q").stdout.fnmatch_lines(
        ["scenarios/baseline.toml::BCAP_STAGING_BASELINE_20G_60P::move_server_processing_p95"])


SEEDING_RECORDER = '''
import pytest

@pytest.hookimpl(tryfirst=True)
def pytest_prodval_seed_users(config, base_url, emails, password, admin_token):
    with open("seeded.txt", "a") as log:
        log.write(f"{len(emails)} users\\n")
'''


def test_a_bypass_pattern_that_misses_the_pool_errors_the_run_before_any_user_is_created(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """RingRift's default pattern needs a dot after "loadtest": the pool would be rate limited
    all run long. A preflight error showing both values, and nothing seeded first."""
    monkeypatch.setenv("RATE_LIMIT_BYPASS_USER_PATTERN", r"^loadtest\..+@loadtest\.local$")
    monkeypatch.delenv("RATE_LIMIT_BYPASS_TOKEN", raising=False)
    pytester.makeconftest(SEEDING_RECORDER)
    result = pytester.runpytest("-m", "baseline", "--env", "local", "--prodval-bypass", "true", "-k", "api_latency_p95",
                                "--prodval-results-dir", "res", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([r"*preflight (bypass) failed: the rate-limit bypass is on but its user pattern "
                                 r"'^loadtest\..+@loadtest\.local$' does not match the pool e-mail "
                                 "'loadtest_user_1@loadtest.local'*"])
    assert not (pytester.path / "seeded.txt").exists()


def test_a_bypass_that_does_not_reach_pool_user_1_errors_the_run_before_any_load(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bypass is switched on, but the check before load still sees pool user 1 counted by a
    limiter (here: one the stack's bypass does not cover): a clean-signal error naming it, no k6
    run, and the bypass still turned off at the end."""
    monkeypatch.setenv("PRODVAL_LOCAL_FAULTS", '{"unbypassed_limiters": ["apiAuthenticated"]}')
    result = pytester.runpytest("-m", "baseline", "--env", "local", "--prodval-bypass", "true", "-k", "api_latency_p95",
                                "--prodval-results-dir", "res", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*preflight (bypass) failed: the rate-limit bypass is on, but an authenticated request "
                                 "of pool user 1 (loadtest_user_1@loadtest.local) was still counted by a limiter*",
                                 "*hint: a limiter the bypass does not cover*"])
    assert not list((pytester.path / "res").glob("*.json.gz"))  # no k6 run
    report = json.loads(next((pytester.path / "res").glob("*_slo_report.json")).read_text())
    assert report["bypass"]["verified_on"] is False and report["bypass"]["disabled_at"]
