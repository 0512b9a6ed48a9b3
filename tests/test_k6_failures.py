"""k6 itself failing, or a user's preflight check: every item of the scenario is an ERROR with the reason.

Real subprocesses: an in-process pytester run re-imports httpx and the stack launcher, whose
exception classes then no longer match (an artefact of running pytest twice in one process).
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("smoke_scenarios")]


def _broken_script(scenarios: Path, body: str) -> None:
    (scenarios / "k6" / "broken.js").write_text(body)
    smoke = scenarios / "smoke.toml"
    smoke.write_text(smoke.read_text().replace('script = "k6/game.js"', 'script = "k6/broken.js"'))


def test_script_exception_errors_every_item_with_k6s_message(pytester: pytest.Pytester, smoke_scenarios: Path) -> None:
    _broken_script(smoke_scenarios, "throw new Error('scenario file points at a broken script');\n")
    results = pytester.path / "res"
    result = pytester.runpytest_subprocess("--env", "local", "-m", "smoke", "--prodval-results-dir", str(results),
                                           "--junitxml", "slo.xml")
    result.assert_outcomes(errors=29)
    result.stdout.fnmatch_lines(["*run incomplete: k6 exited with code 107 (script exception)*scenario file points at a broken script*"])
    junit = (pytester.path / "slo.xml").read_text()
    assert junit.count("<error ") == 29 and "<failure" not in junit
    report = next(p for p in results.glob("BCAP_SMOKE*_slo_report.json"))
    assert '"complete": false' in report.read_text()


def test_custom_preflight_hook_stops_the_run_before_k6(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("""
        from pytest_prodval.preflight import PreflightError

        def pytest_prodval_preflight(config, prepared, session):
            raise PreflightError("the change freeze is on", check="freeze", hint="wait for Monday")
    """)
    results = pytester.path / "res"
    result = pytester.runpytest_subprocess("--env", "local", "-m", "smoke", "--prodval-results-dir", str(results))
    result.assert_outcomes(errors=29)
    result.stdout.fnmatch_lines(["*preflight (freeze) failed: the change freeze is on*", "*hint: wait for Monday*"])
    assert not list(results.glob("*.json.gz"))  # k6 never started
