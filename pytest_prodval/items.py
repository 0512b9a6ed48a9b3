"""Collection: a scenario file becomes one test item per acceptance criterion."""

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


class ProdvalWarning(UserWarning):
    """A warn-level criterion that did not hold (never fails the gate)."""


class CriterionFailed(AssertionError):
    """A criterion's observed value breaks its threshold: a FAILURE."""


class CriterionError(Exception):
    """A criterion could not be judged (no data, preflight failed, k6 broke): an ERROR."""


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


class CriterionItem(pytest.Item):
    """One acceptance criterion of one scenario, judged on the scenario's single k6 run."""

    def __init__(self, *, scenario: Scenario, criterion: Criterion, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scenario = scenario
        self.criterion = criterion
        self.result: CriterionResult | None = None

    def setup(self) -> None:
        """Get the scenario's run (k6 runs here for the first item); no verdict → ERROR."""
        session: ProdvalSession = self.config.stash[SESSION_KEY]
        outcome = session.outcome(self.scenario)
        if session.interrupted:  # Ctrl-C / SIGTERM during k6: artifacts are written, stop here
            self.session.shouldstop = session.interrupted
        self.result = outcome.result(self.name)
        if outcome.error and (self.result is None or outcome.error_kind != "k6"):
            hint = f"\nhint: {outcome.hint}" if outcome.hint else ""
            raise CriterionError(f"{self.scenario.id}: {outcome.error}{hint}")
        if self.result is None:
            raise CriterionError(f"{self.scenario.id}: criterion {self.name} was not judged")
        if self.result.verdict == "error":
            raise CriterionError(self._text(self.result))

    def runtest(self) -> None:
        """Pass, fail, or warn on the judged value."""
        result = self.result
        assert result is not None
        if result.verdict == "fail":
            raise CriterionFailed(self._text(result))
        if result.verdict == "warn":
            warnings.warn(ProdvalWarning(self._text(result)), stacklevel=1)

    def _text(self, result: CriterionResult) -> str:
        hint = f"\nhint: {result.hint}" if result.hint and result.verdict != "pass" else ""
        return f"{self.scenario.id}: {result.message}{hint}"

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        """The criterion's own message instead of a traceback."""
        if isinstance(excinfo.value, (CriterionFailed, CriterionError)):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def _repr_failure_py(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        # Setup errors (no data, preflight) get the same plain message as failures.
        if isinstance(excinfo.value, (CriterionFailed, CriterionError)):
            return str(excinfo.value)
        return super()._repr_failure_py(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        """Location shown in reports."""
        return self.path, None, f"{self.scenario.id}::{self.name}"

    def junit_data(self) -> dict[str, str]:
        """Values CI needs per testcase (system-out lines and, optionally, properties)."""
        result = self.result
        session: ProdvalSession = self.config.stash[SESSION_KEY]
        outcome = session.outcomes.get(self.scenario.id)
        report = outcome.report if outcome else None
        data = {
            "scenario_id": self.scenario.id,
            "criterion": self.name,
            "metric": self.criterion.metric.k6_name,
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
        if report is not None:
            data.update(k6_version=report.k6_version or "", env=report.env, run=report.timestamp,
                        complete=str(report.complete).lower())
        if outcome is not None and outcome.error_kind:
            data["error_kind"] = outcome.error_kind
        return data


# Set by the plugin; defined here so items and fixtures share it without import cycles.
SESSION_KEY = pytest.StashKey["ProdvalSession"]()
