"""The plugin as a user meets it: options, collection, selection, bad input — no k6, no network."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("scenarios_dir")


def test_idle_without_environment_collects_nothing(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--collect-only", "-q")
    assert "BCAP_" not in result.stdout.str()
    result.stdout.fnmatch_lines(["*no tests collected*"])


def test_help_lists_both_env_options(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["*--prodval-env=NAME*", "*--prodval-time-scale=FACTOR*", "*--env=NAME*"])


def test_markers_come_from_scenario_files(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers")
    for line in ("@pytest.mark.target_scale: scenario BCAP_SQ8_3P_TARGET_100G_300P*", "@pytest.mark.baseline: *",
                 "@pytest.mark.ai_heavy: *"):
        result.stdout.fnmatch_lines([line])


def test_one_item_per_scenario_and_criterion(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--collect-only", "-q", "--env", "local")
    out = result.stdout.str()
    assert "scenarios/baseline.toml::BCAP_STAGING_BASELINE_20G_60P::http_401_rate" in out
    assert "scenarios/ai_heavy.toml::BCAP_SQ8_4P_AI_HEAVY_75G_300P::ai_fallback_rate" in out
    assert "BCAP_STAGING_BASELINE_20G_60P::ai_fallback_rate" not in out  # no AI seats, no AI criteria
    result.stdout.fnmatch_lines(["83 tests collected*"])


def test_marker_selects_one_scenario(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--collect-only", "-q", "--env", "local", "-m", "target_scale")
    out = result.stdout.str()
    assert "TARGET_100G_300P" in out and "BASELINE" not in out and "AI_HEAVY" not in out
    result.stdout.fnmatch_lines(["29/83 tests collected (54 deselected)*"])


@pytest.mark.parametrize("name", ["http_401", "failed_requests_rate", "true_error_rate", "api_latency_p95", "ws_connect_p95"])
def test_k_selects_exactly_one_criterion_per_scenario(pytester: pytest.Pytester, name: str) -> None:
    result = pytester.runpytest("--collect-only", "-q", "--env", "local", "-k", name)
    lines = [line for line in result.stdout.lines if "::" in line]
    assert len(lines) == 3, lines
    assert len({line.rsplit("::", 1)[1] for line in lines}) == 1


def test_env_precedence_option_then_env_var_then_ini(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makeini("[pytest]\nprodval_env = perf\n")
    monkeypatch.setenv("PERF_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("PERF_WS_URL", "ws://127.0.0.1:9/ws")
    monkeypatch.setenv("PERF_AI_SERVICE_URL", "http://127.0.0.1:9")
    pytester.runpytest("--collect-only").stdout.fnmatch_lines(["prodval: env=perf (from ini prodval_env)"])
    monkeypatch.setenv("PRODVAL_ENV", "local")
    pytester.runpytest("--collect-only").stdout.fnmatch_lines(["prodval: env=local (from env PRODVAL_ENV)"])
    pytester.runpytest("--collect-only", "--prodval-env", "perf").stdout.fnmatch_lines(
        ["prodval: env=perf (from option --prodval-env)"])


def test_conftest_that_defines_env_still_starts(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("def pytest_addoption(parser):\n    parser.addoption('--env', default='mine')\n")
    pytester.makepyfile(test_own="def test_own(request):\n    assert request.config.getoption('--env') == 'dev'\n")
    result = pytester.runpytest("--env", "dev", "test_own.py")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*--env belongs to another plugin or conftest here; use --prodval-env*"])
    result = pytester.runpytest("--collect-only", "-q", "--prodval-env", "local", "--env", "dev")
    result.stdout.fnmatch_lines(["84 tests collected*"])  # 83 criteria + the conftest user's own test


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--prodval-time-scale", "fast"], "*--prodval-time-scale: 'fast' is not a number*"),
        (["--prodval-time-scale", "0"], "*must be > 0*"),
        (["--env", "nowhere"], "*environment 'nowhere' (option --env) is not defined in*known: local, perf, production, staging*"),
        (["--env", "local", "--prodval-profile", "gold"], "*unknown profile; expected one of production, staging*"),
        (["--env", "production"], "*is marked production: pytest-prodval only targets staging or perf stacks*"),
        (["--env", "staging"], "*environment 'staging': base_url needs the variable STAGING_URL*"),
        (["--prodval-from-results", "missing/dir"], "*--prodval-from-results: */missing/dir does not exist*"),
    ],
)
def test_bad_values_are_usage_errors(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str) -> None:
    monkeypatch.delenv("STAGING_URL", raising=False)
    result = pytester.runpytest("--collect-only", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    if "invalid:" in message:
        result.stderr.fnmatch_lines(["  <file>: Value error, targets: the game scenarios need ?targets? (games, players, players_per_game)"])


def test_production_host_refused_before_anything_is_sent(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAGING_URL", "https://api.prod.example.com")
    monkeypatch.setenv("WS_URL", "wss://api.prod.example.com")
    monkeypatch.setenv("AI_SERVICE_URL", "https://ai.example.com")
    result = pytester.runpytest("--collect-only", "--env", "staging")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*https://api.prod.example.com looks like production*"])


def test_pool_smaller_than_peak_vus_is_a_usage_error(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOADTEST_USER_POOL_SIZE", "100")
    result = pytester.runpytest("--env", "local", "-m", "target_scale")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*LOADTEST_USER_POOL_SIZE=100 is smaller than the 270 peak VUs of BCAP_SQ8_3P_TARGET_100G_300P: "
                                 "set LOADTEST_USER_POOL_SIZE to at least 270 (plan §3.3 recommends ~1.33x peak: 360)"
                                 " (250 players + 20 WebSocket companion VUs)"])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("id = 'BCAP_X'\nmarker = 'x'\n[targets\n", "*x.toml: not valid TOML*"),
        ("id = 'BCAP_X'\nmarker = 'x'\nstages = [{duration = '1m', target = 5}]\n",
         "*x.toml: invalid:"),
        ("id = 'BCAP_X'\nmarker = 'x'\nstages = [{duration = 'soon', target = 5}]\n"
         "[targets]\ngames = 1\nplayers = 2\nplayers_per_game = 2\n", "*stages.0.duration*'soon' is not a duration*"),
        ("id = 'BCAP_X'\nmarker = 'x'\nstages = [{duration = '1m', target = 5}]\n"
         "[targets]\ngames = 1\nplayers = 2\nplayers_per_game = 2\n[criteria.api_latency_p95]\nstaging = 'p95 < 500'\n",
         "*x.toml: criteria.api_latency_p95.staging: 'p95 < 500' is not a threshold expression; expected*p(95)<500*"),
        ("id = 'BCAP_X'\nmarker = 'x'\nstages = [{duration = '1m', target = 5}]\n"
         "[targets]\ngames = 1\nplayers = 2\nplayers_per_game = 2\n[criteria.http_401]\nmetric = 'status_401'\nstaging = 'rate<0.1'\n"
         "production = 'rate<0.1'\n", "*criterion 'http_401' is a substring of 'http_401_rate'*"),
    ],
)
def test_bad_scenario_file_names_file_field_and_expectation(
    pytester: pytest.Pytester, scenarios_dir: Path, content: str, message: str
) -> None:
    (scenarios_dir / "x.toml").write_text(content)
    result = pytester.runpytest("--collect-only", "--env", "local")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    if "invalid:" in message:
        result.stderr.fnmatch_lines(["  <file>: Value error, targets: the game scenarios need ?targets? (games, players, players_per_game)"])


def test_bad_bypass_lease_is_a_usage_error_at_start(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRODVAL_BYPASS_LEASE_S", "soon")
    result = pytester.runpytest("--collect-only", "--env", "local", "--prodval-bypass", "true")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*PRODVAL_BYPASS_LEASE_S='soon': expected a number > 0*"])


def test_bypass_without_a_switch_is_a_usage_error_at_start(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in (("STAGING_URL", "http://127.0.0.1:9"), ("WS_URL", "ws://127.0.0.1:9/ws"),
                        ("AI_SERVICE_URL", "http://127.0.0.1:9")):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("PRODVAL_ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("RATE_LIMIT_BYPASS_TOKEN", raising=False)
    result = pytester.runpytest("--collect-only", "--env", "staging", "--prodval-bypass", "true")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*the rate-limit bypass was requested*no way to switch it*PRODVAL_ADMIN_TOKEN*RATE_LIMIT_BYPASS_TOKEN*"])
    # a switch of the user's own is enough
    pytester.makeconftest("def pytest_prodval_bypass_controller(config, prepared, session):\n    return None\n")
    assert pytester.runpytest("--collect-only", "--env", "staging", "--prodval-bypass", "true").ret == pytest.ExitCode.OK


def test_the_session_is_a_plugin_registered_only_when_active(pytester: pytest.Pytester,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """pytest's LogXML pattern: the session's hooks are its methods; idle, it is simply not registered."""
    pytester.makepyfile(test_registered="""
        import os

        def test_registered(request):
            manager = request.config.pluginmanager
            names = ("prodval-session", "prodval-junit", "prodval-ci-reports", "prodval-extras")
            registered = [name for name in names if manager.get_plugin(name) is not None]
            assert registered == (list(names) if os.environ["EXPECT_ACTIVE"] == "yes" else [])
            session = manager.get_plugin("prodval-session")
            if session is not None:
                assert manager.get_name(session) == "prodval-session"
                hooks = {impl.plugin for impl in manager.hook.pytest_collection_modifyitems.get_hookimpls()}
                assert session in hooks
    """)
    monkeypatch.setenv("EXPECT_ACTIVE", "no")
    pytester.runpytest("test_registered.py", "-p", "no:cacheprovider").assert_outcomes(passed=1)
    monkeypatch.setenv("EXPECT_ACTIVE", "yes")
    pytester.runpytest("test_registered.py", "--env", "local", "-p", "no:cacheprovider").assert_outcomes(passed=1)
