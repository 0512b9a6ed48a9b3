"""What a scenario file and a criterion are: the pydantic models, validated once at configure time.

A scenario file (`scenarios/<marker>.toml`) becomes a `Scenario` (stages, targets, the game's
settings, the steady window); a criterion as written in the catalogue or a scenario file is a
`CriterionSpec` (thresholds per profile), and one resolved for a scenario and profile is a
`Criterion`, the unit every item judges. Field problems are pydantic errors here; the loader
(`scenarios`) turns them into a `ScenarioFileError` naming the file, the field and the value
(defined here, below both the loader and `environments`, which raise it).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .expressions import Expression, ExpressionError, MetricRef, parse_metric
from .models import BaselineRule

# Metrics the plugin computes itself from the raw output (not by k6).
CONCURRENCY_METRICS = {"prodval_concurrent_games": "games", "prodval_concurrent_players": "players"}
_DURATION = re.compile(r"^(?:(?P<h>\d+(?:\.\d+)?)h)?(?:(?P<m>\d+(?:\.\d+)?)m(?!s))?(?:(?P<s>\d+(?:\.\d+)?)s)?(?:(?P<ms>\d+)ms)?$")


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


class StrictModel(BaseModel):
    """A file's table: unknown keys are errors, values frozen once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Stage(StrictModel):
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


class Targets(StrictModel):
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


class GameSettings(StrictModel):
    """How a game is played by the k6 script."""

    moves_per_game: int = Field(default=30, ge=1)  # then every human leaves (RingRift has no move limit)
    think_time_ms: int = Field(default=800, ge=0)
    stall_ms: int = Field(default=2000, ge=1)
    ai_difficulty: int = Field(default=2, ge=1, le=10)  # RingRift: 1 random, 2-3 heuristic, 4-5 minimax
    time_control: Literal["blitz", "rapid", "classical"] = "rapid"
    initial_time_s: int = Field(default=600, ge=60, le=7200)
    increment_s: int = Field(default=0, ge=0, le=60)


class WebSocketCompanion(StrictModel):
    """Long-lived WebSocket connections alongside the players (its own k6 scenario)."""

    enabled: bool = True
    vus: int = Field(default=20, ge=1)
    ping_interval_ms: int = Field(default=1000, ge=50)


class Coverage(StrictModel):
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


class Window(StrictModel):
    """The steady window as offsets from the start of the run's scenarios (a script's own stages)."""

    start: str
    end: str

    @model_validator(mode="after")
    def _ordered(self) -> Window:
        if not parse_duration(self.start) < parse_duration(self.end):
            raise ValueError(f"window start {self.start} must be before its end {self.end}")
        return self


class CriterionSpec(StrictModel):
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


class Criterion(StrictModel):
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


class Scenario(StrictModel):
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
