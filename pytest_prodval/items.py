"""Collection: a scenario file becomes one test item per acceptance criterion.

Items are `pytest.Function`s (built from a scenario file, not from Python code) so that
they request fixtures like any test: `prodval_run`, and through it the session's target,
preflight, seeded pool and bypass (`pytest --setup-show`, `--fixtures`; a conftest can
override any of them). A criterion that could not be judged fails in setup, so pytest and
JUnit report it as an ERROR; a breached threshold fails in the call: a FAILURE.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .criteria import BASELINE_SUFFIX, format_value
from .models import CriterionResult
from .scenarios import Criterion, Scenario

if TYPE_CHECKING:
    from .session import ProdvalSession
    from .sharing import RunOutcome


class ProdvalWarning(UserWarning):
    """A warn-level criterion that did not hold (never fails the gate)."""


class ScenarioFile(pytest.File):
    """`scenarios/<marker>.toml`: one collector per scenario file."""

    def collect(self) -> Iterator[pytest.Item | pytest.Collector]:
        session: ProdvalSession = self.config.stash[SESSION_KEY]
        for scenario in session.catalogue.scenarios:
            if scenario.source is not None and Path(scenario.source).resolve() == Path(self.path).resolve():
                yield ScenarioCollector.from_parent(self, name=scenario.id, scenario=scenario)


class ScenarioCollector(pytest.Collector):
    """The scenario id as a node (JUnit classname …<file>.<SCENARIO_ID>)."""

    def __init__(self, *, scenario: Scenario, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scenario = scenario
        self.add_marker(scenario.marker)

    def collect(self) -> Iterator[pytest.Item]:
        session: ProdvalSession = self.config.stash[SESSION_KEY]
        criteria = session.criteria(self.scenario)
        for criterion in criteria:
            yield CriterionItem.from_parent(self, name=criterion.name, scenario=self.scenario, criterion=criterion)
        by_name = {c.name: c for c in criteria}
        for base in session.baseline_pairs(self.scenario.id):
            if base.name in by_name:  # run-over-run comparison against --prodval-baseline
                yield CriterionItem.from_parent(self, name=base.name + BASELINE_SUFFIX, scenario=self.scenario,
                                                criterion=by_name[base.name])


def _judged(prodval_run: RunOutcome) -> None:
    """The test body of every criterion item: the verdict is read in `CriterionItem.runtest`."""


class CriterionItem(pytest.Function):
    """One acceptance criterion of one scenario, judged on the scenario's single k6 run."""

    def __init__(self, *, scenario: Scenario, criterion: Criterion, **kwargs: Any) -> None:
        self.scenario = scenario
        self.criterion = criterion
        self.result: CriterionResult | None = None
        super().__init__(callobj=_judged, **kwargs)

    def setup(self) -> None:
        """Fixtures (k6 runs in `prodval_run` for the first item); no verdict → ERROR."""
        if self.criterion.not_applicable:
            pytest.skip(f"{self.name}: not applicable here: {self.criterion.not_applicable}")
        super().setup()
        session: ProdvalSession = self.config.stash[SESSION_KEY]
        outcome: RunOutcome = self.funcargs["prodval_run"]  # type: ignore[assignment]
        if session.interrupted:  # Ctrl-C / SIGTERM during k6: artifacts are written, stop here
            self.session.shouldstop = session.interrupted
        self.result = outcome.result(self.name)
        if outcome.error and (self.result is None or outcome.error_kind != "k6"):
            hint = f"\nhint: {outcome.hint}" if outcome.hint else ""
            pytest.fail(f"{self.scenario.id}: {outcome.error}{hint}", pytrace=False)
        if self.result is None:
            pytest.fail(f"{self.scenario.id}: criterion {self.name} was not judged", pytrace=False)
        if self.result.verdict == "error":
            pytest.fail(self._text(self.result), pytrace=False)

    def runtest(self) -> None:
        """Pass, fail, or warn on the judged value."""
        result = self.result
        assert result is not None
        if result.verdict == "fail":
            pytest.fail(self._text(result), pytrace=False)
        if result.verdict == "warn":
            warnings.warn(ProdvalWarning(self._text(result)), stacklevel=1)

    def _text(self, result: CriterionResult) -> str:
        hint = f"\nhint: {result.hint}" if result.hint and result.verdict != "pass" else ""
        return f"{self.scenario.id}: {result.message}{hint}"

    def reportinfo(self) -> tuple[Path, int | None, str]:
        """Location shown in reports: the scenario file, not this module."""
        return self.path, None, f"{self.scenario.id}::{self.name}"

    def junit_data(self) -> dict[str, str]:
        """Values CI needs per testcase (system-out lines and, optionally, properties)."""
        result = self.result
        session: ProdvalSession = self.config.stash[SESSION_KEY]
        outcome = session.runs.peek(self.scenario.id)
        report = outcome.report if outcome else None
        data = {
            "scenario_id": self.scenario.id,
            "criterion": self.name,
            "metric": self.criterion.metric.k6_name,
            "source": self.criterion.source,
            "threshold": self.criterion.expression_text,
            "unit": self.criterion.unit,
            "profile": self.criterion.profile,
            "level": self.criterion.level,
        }
        if result is not None:
            data["threshold"] = result.expression  # a _vs_baseline item's own rule
            if result.baseline_observed is not None:
                data["baseline_observed"] = f"{result.baseline_observed:g}"
            data.update(
                observed="" if result.observed is None else f"{result.observed:g}",
                observed_display=format_value(result.observed, result.unit),
                samples=str(result.samples),
                verdict=result.verdict,
            )
            if result.detail:
                data["detail"] = result.detail
            for key in ("coverage", "coverage_min", "worst_bucket", "max_multiple_of_target", "bucket_s"):
                value = getattr(result, key)
                if value is not None:
                    data[key] = f"{value:g}"
            if result.k6_verdict is not None:
                data["k6_verdict"] = result.k6_verdict
        if report is not None:
            data.update(k6_version=report.k6_version or "", env=report.env, run=report.timestamp,
                        complete=str(report.complete).lower(), instances=report.instances_line())
        if outcome is not None and outcome.error_kind:
            data["error_kind"] = outcome.error_kind
        return data


# Set by the plugin; defined here so items and fixtures share it without import cycles.
SESSION_KEY = pytest.StashKey["ProdvalSession"]()
