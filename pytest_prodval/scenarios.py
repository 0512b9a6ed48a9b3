"""Scenario, criteria-catalogue and environment files: pydantic models and loaders.

Files live in one folder (`scenarios/` by default):
`_environments.toml`, `_criteria.toml` and one `<marker>.toml` per scenario. Files whose name
starts with `_` are not scenarios. Every problem is reported as a `ScenarioFileError` naming
the file, the field and what was expected; the plugin turns it into a `pytest.UsageError`.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .expressions import Expression, ExpressionError, MetricRef, parse_expression, parse_metric
from .outputs import check_env_key, parse_output
from .models import BaselineRule

ENVIRONMENTS_FILE = "_environments.toml"
CRITERIA_FILE = "_criteria.toml"  # the game catalogue (the plan's scenarios)
GENERIC_CRITERIA_FILE = "_criteria_generic.toml"  # k6's built-in metrics: holds for any script

# Metrics the plugin computes itself from the raw output (not by k6).
CONCURRENCY_METRICS = {"prodval_concurrent_games": "games", "prodval_concurrent_players": "players"}

_DURATION = re.compile(r"^(?:(?P<h>\d+(?:\.\d+)?)h)?(?:(?P<m>\d+(?:\.\d+)?)m(?!s))?(?:(?P<s>\d+(?:\.\d+)?)s)?(?:(?P<ms>\d+)ms)?$")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class ScenarioFileError(Exception):
    """A scenario, criteria or environment file that cannot be used."""


def parse_duration(text: str) -> float:
    """Seconds of a k6 duration such as `1m30s`, `90s`, `1500ms`, `2h`."""
    match = _DURATION.match(text.strip())
    if not text.strip() or not match or not any(match.groupdict().values()):
        raise ValueError(f"{text!r} is not a duration; expected k6 style such as '30s', '5m', '1m30s', '1500ms'")
    parts = {k: float(v) for k, v in match.groupdict().items() if v}
    return parts.get("h", 0) * 3600 + parts.get("m", 0) * 60 + parts.get("s", 0) + parts.get("ms", 0) / 1000


def format_duration(seconds: float) -> str:
    """A k6 duration string in whole milliseconds."""
    return f"{max(1, round(seconds * 1000))}ms"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Stage(_Strict):
    """One k6 ramping-vus stage."""

    duration: str
    target: int = Field(ge=0)

    @field_validator("duration")
    @classmethod
    def _valid_duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    @property
    def seconds(self) -> float:
        """The stage duration in seconds."""
        return parse_duration(self.duration)


class Targets(_Strict):
    """What the scenario must reach: games, players (seats incl. AI), game shape."""

    games: int = Field(ge=1)
    players: int = Field(ge=1)
    players_per_game: int = Field(ge=2, le=4)
    ai_seats: int = Field(default=0, ge=0)
    board: str = "square8"

    @model_validator(mode="after")
    def _humans_left(self) -> Targets:
        if self.ai_seats >= self.players_per_game:
            raise ValueError("ai_seats must leave at least one human seat (ai_seats < players_per_game)")
        return self

    @property
    def humans_per_game(self) -> int:
        """Human seats per game (each is one k6 VU)."""
        return self.players_per_game - self.ai_seats


class GameSettings(_Strict):
    """How a game is played by the k6 script."""

    moves_per_game: int = Field(default=30, ge=1)  # then every human leaves (RingRift has no move limit)
    think_time_ms: int = Field(default=800, ge=0)
    stall_ms: int = Field(default=2000, ge=1)
    ai_difficulty: int = Field(default=2, ge=1, le=10)  # RingRift: 1 random, 2-3 heuristic, 4-5 minimax
    time_control: Literal["blitz", "rapid", "classical"] = "rapid"
    initial_time_s: int = Field(default=600, ge=60, le=7200)
    increment_s: int = Field(default=0, ge=0, le=60)


class WebSocketCompanion(_Strict):
    """Long-lived WebSocket connections alongside the players (its own k6 scenario)."""

    enabled: bool = True
    vus: int = Field(default=20, ge=1)
    ping_interval_ms: int = Field(default=1000, ge=50)


class Coverage(_Strict):
    """REFERENCE.md §1: per latency SLO over the steady window, cut into `bucket` long buckets,
    at least `min` of the buckets have data and no bucket's value exceeds
    `max_multiple_of_target` × the threshold."""

    min: float = Field(ge=0, le=1)
    max_multiple_of_target: float | None = Field(default=None, gt=1)
    bucket: str = "10s"

    @property
    def bucket_s(self) -> float:
        """The bucket length in seconds."""
        return parse_duration(self.bucket)

    @field_validator("bucket")
    @classmethod
    def _duration(cls, value: str) -> str:
        if parse_duration(value) <= 0:
            raise ValueError("bucket must be longer than 0s")
        return value


class Window(_Strict):
    """The steady window as offsets from the start of the run's scenarios (a script's own stages)."""

    start: str
    end: str

    @model_validator(mode="after")
    def _ordered(self) -> Window:
        if not parse_duration(self.start) < parse_duration(self.end):
            raise ValueError(f"window start {self.start} must be before its end {self.end}")
        return self


class CriterionSpec(_Strict):
    """A criterion as written in the catalogue or a scenario file: thresholds per profile."""

    metric: str
    unit: str = ""
    description: str = ""
    hint: str | None = None
    # metric_seen: only when the run emitted the metric at all (WebSocket metrics of an HTTP-only
    # script); a run without it makes the criterion n/a, never a pass.
    when: Literal["always", "ai", "websocket_companion", "metric_seen"] = "always"
    level: Literal["gate", "warn"] = "gate"
    samples_from: str | None = None  # for counters: the metric whose sample count is the denominator
    # "k6": the k6 summary and raw output; "server": the target's own Prometheus metrics
    # (docs/contract.md §4), scraped by the plugin or queried from a Prometheus server.
    source: Literal["k6", "server"] = "k6"
    per: str | None = None  # rate: the denominator (count of metric / count of per over the window)
    absent_is_zero: bool = False  # a counter k6 never emitted counted 0 (k6 emits dropped_iterations only when > 0)
    scale: float = 1.0  # source "server": multiply the value (seconds -> ms: 1000)
    # Stop a doomed run: k6 aborts when this criterion's threshold is crossed (abortOnFail),
    # evaluated only after abort_delay (delayAbortEval, scaled by the time scale).
    abort_on_fail: bool = False
    abort_delay: str | None = None
    baseline: BaselineRule | None = None  # run-over-run: allowed worsening (default tolerance 10 %, floor 0)
    thresholds: dict[str, str] = Field(default_factory=dict)  # profile -> expression

    @field_validator("abort_delay")
    @classmethod
    def _valid_delay(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    @model_validator(mode="after")
    def _abort_k6_can_judge(self) -> CriterionSpec:
        if self.abort_delay is not None and not self.abort_on_fail:
            raise ValueError("abort_delay needs abort_on_fail = true")
        if not self.abort_on_fail:
            return self
        if self.source != "k6" or parse_metric(self.metric).name in CONCURRENCY_METRICS:
            raise ValueError("abort_on_fail works only for criteria k6 evaluates itself (source k6, not the plugin's "
                             "concurrency or the target's metrics)")
        if self.level != "gate":
            raise ValueError("abort_on_fail needs level gate (a warning must not stop the run)")
        return self

    @field_validator("metric", "samples_from", "per")
    @classmethod
    def _valid_metric(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_metric(value)
            except ExpressionError as exc:
                raise ValueError(str(exc)) from None
        return value


class Criterion(_Strict):
    """A criterion resolved for one scenario and profile."""

    name: str
    metric: MetricRef
    expression: Expression
    expression_text: str
    profile: str
    unit: str
    description: str
    hint: str | None
    level: Literal["gate", "warn"]
    samples_from: MetricRef | None
    source: Literal["k6", "server"] = "k6"
    per: MetricRef | None = None
    scale: float = 1.0
    abort_on_fail: bool = False
    abort_delay: str | None = None
    not_applicable: str | None = None  # why this environment cannot judge it (the item is skipped)
    when: str = "always"
    absent_is_zero: bool = False
    coverage: Coverage | None = None  # latency SLOs: the plan's coverage rules
    k6_threshold: str | None = None  # a script threshold judged again: the k6 summary key of its metric
    baseline: BaselineRule | None = None

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)


def _game_only() -> list[Literal["game", "generic"]]:
    return ["game"]


class Scenario(_Strict):
    """One scenario file: the plan's id, marker, stages, targets and criteria.

    `script` may be any k6 script: with `catalogues = ["generic"]` it keeps its own options
    (scenarios, stages, thresholds), the plugin wraps it (`scripts.wrapper`) and judges it by
    the `window` offsets, k6's built-in metrics and its own thresholds (`script_thresholds`).
    """

    id: str = Field(pattern=r"^[A-Z][A-Z0-9_]*$")
    marker: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str = ""
    script: str = "k6/game.js"
    profile: str = "staging"
    stages: list[Stage] = Field(default_factory=list)  # the game script's; another script keeps its own
    steady_stage: int | None = None
    window: Window | None = None
    catalogues: list[Literal["game", "generic"]] = Field(default_factory=_game_only, min_length=1)
    script_thresholds: bool = True  # the script's own options.thresholds become criteria (not the game script's)
    coverage: Coverage | None = None
    peak_vus_hint: int = Field(default=0, ge=0, alias="peak_vus")  # another script's peak VUs (pool check)
    uses_pool: bool | None = None  # logs in as pool users (default: the game script does, another does not)
    graceful_ramp_down: str = "30s"
    targets: Targets = Targets(games=1, players=1, players_per_game=2)  # the game's; unused by another script
    game: GameSettings = GameSettings()
    websocket_companion: WebSocketCompanion = WebSocketCompanion(enabled=False)
    profile_overrides: dict[str, str] = Field(default_factory=dict)
    criteria: dict[str, CriterionSpec] = Field(default_factory=dict)
    source: Path | None = None

    @model_validator(mode="after")
    def _steady_in_range(self) -> Scenario:
        if self.is_game and not self.stages:
            raise ValueError("stages: the game script needs at least one stage")
        if self.is_game and "targets" not in self.model_fields_set:
            raise ValueError("targets: the game scenarios need [targets] (games, players, players_per_game)")
        if self.steady_stage is not None and self.window is not None:
            raise ValueError("steady_stage and window both set: the steady window is one or the other")
        if self.steady_stage is not None and (self.stages or self.is_game) and not 0 <= self.steady_stage < len(self.stages):
            raise ValueError(f"steady_stage={self.steady_stage} is not an index of stages (0..{len(self.stages) - 1})")
        return self

    @property
    def needs_pool(self) -> bool:
        """Whether the run logs in as pool users: then the pool is seeded and probed, the bypass verified."""
        return self.uses_pool if self.uses_pool is not None else self.is_game

    @property
    def is_game(self) -> bool:
        """Whether this is a run of the plan's game script (the plugin drives its stages)."""
        return "game" in self.catalogues

    @property
    def peak_vus(self) -> int:
        """Peak VUs of the run: players at the highest stage plus companion connections."""
        if not self.stages:
            return self.peak_vus_hint
        players = max(stage.target for stage in self.stages)
        return players + (self.websocket_companion.vus if self.websocket_companion.enabled else 0)

    @property
    def player_vus(self) -> int:
        """Peak player VUs (one VU is one human player)."""
        return max((stage.target for stage in self.stages), default=self.peak_vus_hint)

    def steady_window_s(self, time_scale: float = 1.0) -> tuple[float, float] | None:
        """Seconds from the start of the run to the start and end of the steady window.

        Stages scale with the time scale (the plugin drives them); `window` offsets name
        moments of a script's own schedule and do not.
        """
        if self.window is not None:
            return parse_duration(self.window.start), parse_duration(self.window.end)
        if self.steady_stage is None:
            return None
        if not self.stages:  # a script's own stages, as k6 reads them (unscaled: the script owns its schedule)
            from .scripts import stage_window

            return stage_window(self, self.steady_stage)
        start = sum(stage.seconds for stage in self.stages[: self.steady_stage]) * time_scale
        return start, start + self.stages[self.steady_stage].seconds * time_scale

    def duration_s(self, time_scale: float = 1.0) -> float:
        """Planned duration of the players scenario (all stages); a script's own: its window's end."""
        if not self.stages:
            return parse_duration(self.window.end) if self.window else 0.0
        return sum(stage.seconds for stage in self.stages) * time_scale

    def applies(self, spec: CriterionSpec) -> bool:
        """Whether a catalogue criterion applies to this scenario (AI and companion ones may not)."""
        if spec.when == "ai":
            return self.targets.ai_seats > 0
        if spec.when == "websocket_companion":
            return self.websocket_companion.enabled
        return True

    def script_path(self) -> Path:
        """The k6 script, resolved against the scenario file's folder."""
        base = self.source.parent if self.source else Path.cwd()
        return (base / self.script).resolve()


ExecutorKind = Literal["local", "segments", "k6-operator"]


class RunnerResources(_Strict):
    """Kubernetes resources of each k6 runner pod, e.g. requests = {cpu = "1", memory = "512Mi"}."""

    requests: dict[str, str] = Field(default_factory=dict)
    limits: dict[str, str] = Field(default_factory=dict)


class ExecutorConfig(_Strict):
    """`[ENV.executor]`: where a scenario's k6 instances run (executors/), and how many.

    `parallelism` is the number of instances; `vus_per_instance` derives it from a
    scenario's peak VUs instead. The k6-operator keys say where and how on Kubernetes.
    """

    kind: ExecutorKind = "local"
    parallelism: int | None = Field(default=None, ge=1)
    vus_per_instance: int | None = Field(default=None, ge=1)
    # k6-operator only
    namespace: str = "default"
    context: str | None = None  # kubectl context; None: kubectl's current one
    image: str = "grafana/k6:1.1.0"
    runner: RunnerResources = RunnerResources()
    cleanup: bool = True  # delete everything the run created (also after Ctrl-C/SIGTERM)
    storage_class: str | None = None  # a ReadWriteMany class for the results volume (None: the cluster default)
    storage: str = "1Gi"  # size of the results volume
    # ReadWriteOnce is enough when every runner lands on one node (kind); else ReadWriteMany.
    storage_access_mode: Literal["ReadWriteMany", "ReadWriteOnce"] = "ReadWriteMany"
    startup_timeout_s: float = Field(default=300.0, gt=0)  # image pulls, scheduling, the initializer
    poll_s: float = Field(default=1.0, gt=0, le=60)  # how often the TestRun's stage is read
    collector_image: str = "busybox:1.36"  # the pod that reads the results volume back
    kubectl: str = "kubectl"
    # The pods see only what the run gives them: PRODVAL_CONFIG and the target's URLs (BASE_URL,
    # WS_URL, PRODVAL_*_URL) in the archive, the pool password and bypass token in the Secret.
    # A script that reads more names them: values from this environment, into the archive
    # (`forward_env`, visible in the ConfigMap) or into the Secret (`forward_secrets`).
    forward_env: list[str] = Field(default_factory=list)
    forward_secrets: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_way_to_count(self) -> ExecutorConfig:
        if self.parallelism is not None and self.vus_per_instance is not None:
            raise ValueError("set parallelism or vus_per_instance, not both")
        if self.kind == "local" and (self.parallelism or 1) > 1:
            raise ValueError(f"kind 'local' runs one k6 process (parallelism={self.parallelism}); use kind 'segments' "
                             "for several processes on this machine")
        return self

    def instances(self, peak_vus: int) -> int:
        """How many k6 instances run a scenario with `peak_vus` VUs (never more instances than VUs)."""
        if self.kind == "local":
            return 1
        if self.parallelism is not None:
            return self.parallelism
        if self.vus_per_instance is not None:
            return max(1, min(peak_vus, -(-peak_vus // self.vus_per_instance)))
        return 1


class Environment(_Strict):
    """A target environment; values may reference variables as ${VAR} or ${VAR:-default}."""

    name: str
    description: str = ""
    embedded: bool = False  # the reference stack started by the plugin
    production: bool = False
    base_url: str | None = None
    ws_url: str | None = None
    ai_service_url: str | None = None
    metrics_url: str | None = None  # the target's Prometheus text endpoint (RingRift: BASE_URL/metrics)
    prometheus_url: str | None = None  # a Prometheus server scraping the target (PromQL over HTTP)
    # Label equality that selects the target's series on a shared Prometheus, e.g. {job = "ringrift"}.
    prometheus_match: dict[str, str] = Field(default_factory=dict)
    profile: str | None = None
    # The bypass switch for servers configured by environment (RingRift: no admin endpoint),
    # e.g. ["kubectl", "set", "env", "deploy/api", "RATE_LIMIT_BYPASS_ENABLED=true"].
    bypass_on: list[str] | None = None
    bypass_off: list[str] | None = None
    # Criteria whose source this target does not have: criterion name -> why (shown as skipped).
    not_applicable: dict[str, str] = Field(default_factory=dict)
    executor: ExecutorConfig = ExecutorConfig()
    # Extra k6 outputs as k6 takes --out (outputs.py), and their K6_* settings, e.g.
    # outputs = ["experimental-prometheus-rw"], output_env = {K6_PROMETHEUS_RW_SERVER_URL = "${PROM_RW_URL}"}.
    outputs: list[str] = Field(default_factory=list)
    output_env: dict[str, str] = Field(default_factory=dict)

    @field_validator("outputs")
    @classmethod
    def _valid_outputs(cls, values: list[str]) -> list[str]:
        for value in values:
            if "${" not in value:  # checked again once the variables are expanded
                parse_output(value)
        return values

    @field_validator("output_env")
    @classmethod
    def _valid_output_env(cls, values: dict[str, str]) -> dict[str, str]:
        for key in values:
            check_env_key(key)
        return values


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
            latency = spec.source == "k6" and expression.aggregation.startswith("p(") and steady
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


def expand_vars(text: str, env: Mapping[str, str]) -> str:
    """Expand ${VAR} and ${VAR:-default} (defaults may nest: ${A:-${B}/metrics}); a missing
    variable without default raises KeyError(VAR)."""

    def replace(match: re.Match[str]) -> str:
        name, default = match["name"], match["default"]
        value = env.get(name) or default
        if value is None:
            raise KeyError(name)
        return value

    innermost = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}$]*))?\}")
    while True:  # innermost first, so an outer default sees its inner variables expanded
        expanded = innermost.sub(replace, text)
        if expanded == text:
            return expanded
        text = expanded


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


def resolve_environment(env: Environment, variables: Mapping[str, str] | None = None) -> Environment:
    """Expand variables in an environment's URLs; missing variables raise ScenarioFileError."""
    variables = os.environ if variables is None else variables

    def expand(field: str, value: str) -> str:
        try:
            return expand_vars(value, variables)
        except KeyError as exc:
            raise ScenarioFileError(
                f"environment {env.name!r}: {field} needs the variable {exc.args[0]} (e.g. export {exc.args[0]}=...)"
            ) from None

    updates: dict[str, Any] = {}
    for field in ("base_url", "ws_url", "ai_service_url", "metrics_url", "prometheus_url"):
        value = getattr(env, field)
        if value is not None:
            updates[field] = expand(field, value).rstrip("/") or None
    updates["outputs"] = [expand(f"outputs[{i}]", value) for i, value in enumerate(env.outputs)]
    for i, value in enumerate(updates["outputs"]):
        try:
            parse_output(value)
        except ValueError as exc:
            raise ScenarioFileError(f"environment {env.name!r}: outputs[{i}]: {exc}") from None
    updates["output_env"] = {key: expand(f"output_env.{key}", value) for key, value in env.output_env.items()}
    return env.model_copy(update=updates)
