"""Loading a scenarios folder: every file read, validated and cross-checked once, at configure time.

Files live in one folder (`scenarios/` by default):
`_environments.toml`, `_criteria.toml` and one `<marker>.toml` per scenario. Files whose name
starts with `_` are not scenarios. Every problem is reported as a `ScenarioFileError` naming
the file, the field and what was expected; the plugin turns it into a `pytest.UsageError`.
The models are in `scenario_models` (scenarios, criteria) and `environments`; their names
are importable from here too, where the rest of the plugin imports them.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .environments import Environment, ExecutorConfig, ExecutorKind, RunnerResources, expand_vars, resolve_environment
from .expressions import ExpressionError, MetricRef, parse_expression, parse_metric
from .scenario_models import (
    CONCURRENCY_METRICS, Coverage, Criterion, CriterionSpec, GameSettings, Scenario, ScenarioFileError, Stage, Targets,
    WebSocketCompanion, Window, format_duration, parse_duration,
)

__all__ = [
    "CONCURRENCY_METRICS", "CRITERIA_FILE", "ENVIRONMENTS_FILE", "GENERIC_CRITERIA_FILE", "Catalogue", "Coverage",
    "Criterion", "CriterionSpec", "Environment", "ExecutorConfig", "ExecutorKind", "GameSettings", "RunnerResources",
    "Scenario", "ScenarioFileError", "Stage", "Targets", "WebSocketCompanion", "Window", "expand_vars",
    "format_duration", "load_catalogue", "parse_duration", "resolve_environment",
]

ENVIRONMENTS_FILE = "_environments.toml"
CRITERIA_FILE = "_criteria.toml"  # the game catalogue (the plan's scenarios)
GENERIC_CRITERIA_FILE = "_criteria_generic.toml"  # k6's built-in metrics: holds for any script
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class Catalogue(BaseModel):
    """Criteria catalogue plus the scenarios and environments of one folder."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    folder: Path
    criteria: dict[str, CriterionSpec]  # the game catalogue
    generic: dict[str, CriterionSpec] = Field(default_factory=dict)  # k6's built-in metrics
    scenarios: list[Scenario]
    environments: dict[str, Environment]

    @property
    def profiles(self) -> set[str]:
        """Every profile some criterion has thresholds for."""
        names: set[str] = set()
        for spec in self.criteria.values():
            names.update(spec.thresholds)
        for scenario in self.scenarios:
            for spec in scenario.criteria.values():
                names.update(spec.thresholds)
        return names

    def scenario(self, key: str) -> Scenario:
        """A scenario by id or marker."""
        for scenario in self.scenarios:
            if key in (scenario.id, scenario.marker):
                return scenario
        raise KeyError(key)

    def criteria_for(self, scenario: Scenario, profile: str | None = None,
                     environment: Environment | None = None) -> list[Criterion]:
        """The criteria of a scenario, thresholds resolved at its profile (or `profile` for all)."""
        merged: dict[str, CriterionSpec] = {}
        catalogue = {**(self.criteria if scenario.is_game else {}),
                     **(self.generic if "generic" in scenario.catalogues else {})}
        for name, spec in catalogue.items():
            spec = scenario.criteria.get(name, spec)
            if scenario.applies(spec):
                merged[name] = spec
        for name, spec in scenario.criteria.items():
            merged.setdefault(name, spec)
        result = []
        for name, spec in merged.items():
            chosen = profile or scenario.profile_overrides.get(name, scenario.profile)
            where = scenario.source.name if scenario.source else scenario.id
            if chosen not in spec.thresholds:
                raise ScenarioFileError(
                    f"{where}: criterion {name!r} has no threshold for profile {chosen!r} "
                    f"(it has: {', '.join(sorted(spec.thresholds)) or 'none'})"
                )
            text = spec.thresholds[chosen].format(**scenario.targets.model_dump())
            try:
                expression = parse_expression(text)
            except ExpressionError as exc:
                raise ScenarioFileError(f"{where}: criteria.{name}.{chosen}: {exc}") from None
            metric = parse_metric(spec.metric)
            steady = ("phase", "steady") in metric.tags
            if scenario.steady_window_s() is None:  # judged over the whole run
                metric, steady = MetricRef(metric.name, tuple(t for t in metric.tags if t[0] != "phase")), False
            latency = spec.source == "k6" and expression.percentile is not None and steady
            result.append(
                Criterion(
                    name=name,
                    metric=metric,
                    expression=expression,
                    expression_text=text,
                    profile=chosen,
                    unit=spec.unit,
                    description=spec.description,
                    hint=spec.hint,
                    level=spec.level,
                    samples_from=parse_metric(spec.samples_from) if spec.samples_from else None,
                    source=spec.source,
                    per=parse_metric(spec.per) if spec.per else None,
                    scale=spec.scale,
                    abort_on_fail=spec.abort_on_fail,
                    abort_delay=spec.abort_delay,
                    not_applicable=environment.not_applicable.get(name) if environment else None,
                    when=spec.when,
                    absent_is_zero=spec.absent_is_zero,
                    coverage=scenario.coverage if latency else None,
                    baseline=spec.baseline,
                )
            )
        if not scenario.is_game and scenario.script_thresholds:
            from .scripts import threshold_criteria

            result.extend(threshold_criteria(scenario, profile or scenario.profile))
        return result


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioFileError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ScenarioFileError(f"{path}: cannot be read: {exc.strerror}") from None


def _explain(path: Path, exc: ValidationError, prefix: str = "") -> ScenarioFileError:
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in (prefix, *error["loc"]) if part != "")
        got = error.get("input")
        got_text = "" if isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"  {where or '<file>'}: {error['msg']}{got_text}")
    return ScenarioFileError(f"{path}: invalid:\n" + "\n".join(lines))


def _criterion_spec(path: Path, name: str, body: Any, prefix: str) -> CriterionSpec:
    if not _NAME.match(name):
        raise ScenarioFileError(f"{path}: {prefix}{name}: criterion names are lower_snake_case")
    if not isinstance(body, dict):
        raise ScenarioFileError(f"{path}: {prefix}{name}: expected a table of metric, unit and thresholds")
    fields = set(CriterionSpec.model_fields) - {"thresholds"}
    data = {k: v for k, v in body.items() if k in fields}
    data["thresholds"] = {k: v for k, v in body.items() if k not in fields}
    for profile, text in data["thresholds"].items():
        if not isinstance(text, str):
            raise ScenarioFileError(f"{path}: {prefix}{name}.{profile}: expected an expression string such as 'p(95)<500'")
        try:  # placeholders such as {games} are filled per scenario
            parse_expression(re.sub(r"\{[a-z_]+\}", "1", text))
        except ExpressionError as exc:
            raise ScenarioFileError(f"{path}: {prefix}{name}.{profile}: {exc}") from None
    try:
        return CriterionSpec.model_validate(data)
    except ValidationError as exc:
        raise _explain(path, exc, f"{prefix}{name}") from None


def _check_names(criteria: Mapping[str, Any], where: str) -> None:
    """No criterion name may be a substring of another: `-k NAME` must select exactly one."""
    names = sorted(criteria)
    for a in names:
        for b in names:
            if a != b and a in b:
                raise ScenarioFileError(
                    f"{where}: criterion {a!r} is a substring of {b!r}, so `-k {a}` would select both; rename one"
                )


def load_catalogue(folder: Path) -> Catalogue:
    """Load and validate every file of a scenarios folder."""
    if not folder.is_dir():
        raise ScenarioFileError(f"{folder}: scenarios folder not found (set --prodval-scenarios or ini prodval_scenarios)")
    criteria_path = folder / CRITERIA_FILE
    catalogue_raw = _read_toml(criteria_path) if criteria_path.exists() else {}
    criteria = {name: _criterion_spec(criteria_path, name, body, "") for name, body in catalogue_raw.items()}
    generic_path = folder / GENERIC_CRITERIA_FILE
    generic_raw = _read_toml(generic_path) if generic_path.exists() else {}
    generic = {name: _criterion_spec(generic_path, name, body, "") for name, body in generic_raw.items()}
    for name in set(generic) & set(criteria):
        raise ScenarioFileError(f"{generic_path}: {name}: also a criterion of {criteria_path.name}; names must differ")
    environments: dict[str, Environment] = {}
    env_path = folder / ENVIRONMENTS_FILE
    if env_path.exists():
        for name, body in _read_toml(env_path).items():
            try:
                environments[name] = Environment.model_validate({**body, "name": name})
            except (ValidationError, TypeError) as exc:
                if isinstance(exc, ValidationError):
                    raise _explain(env_path, exc, name) from None
                raise ScenarioFileError(f"{env_path}: {name}: expected a table") from None
    scenarios: list[Scenario] = []
    for path in sorted(folder.glob("*.toml")):
        if path.name.startswith("_"):
            continue
        raw = _read_toml(path)
        raw_criteria = raw.pop("criteria", {})
        if not isinstance(raw_criteria, dict):
            raise ScenarioFileError(f"{path}: criteria: expected tables [criteria.NAME]")
        try:
            scenario = Scenario.model_validate({**raw, "source": path})
        except ValidationError as exc:
            raise _explain(path, exc) from None
        specs = {}  # a scenario entry overrides only the keys it writes
        for name, body in raw_criteria.items():
            base = {**generic_raw, **catalogue_raw}.get(name, {}) if isinstance(body, dict) else {}
            specs[name] = _criterion_spec(path, name, {**base, **body} if isinstance(body, dict) else body, "criteria.")
        scenario = scenario.model_copy(update={"criteria": specs})
        for name in scenario.profile_overrides:
            if name not in criteria and name not in generic and name not in scenario.criteria:
                raise ScenarioFileError(f"{path}: profile_overrides.{name}: no such criterion")
        _check_names({**(criteria if scenario.is_game else {}), **(generic if "generic" in scenario.catalogues else {}),
                      **scenario.criteria}, str(path))
        scenarios.append(scenario)
    seen: dict[str, Path | None] = {}
    for scenario in scenarios:
        for key in (scenario.id, scenario.marker):
            if key in seen:
                raise ScenarioFileError(f"{scenario.source}: {key!r} is also used by {seen[key]}")
            seen[key] = scenario.source
    catalogue = Catalogue(folder=folder, criteria=criteria, generic=generic, scenarios=scenarios,
                          environments=environments)
    for scenario in scenarios:  # every threshold resolves at the scenario's own profiles
        catalogue.criteria_for(scenario)
    return catalogue
