"""Result models shared by every consumer: criteria, reports, JUnit, HTML, analyze."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Verdict = Literal["pass", "fail", "error", "warn", "n/a"]  # n/a: the environment has no source for it
RunVerdict = Literal["GO", "NO-GO", "ERROR"]


def overall_verdict(verdicts: list[RunVerdict]) -> RunVerdict:
    """GO only when every run is GO; ERROR if any run could not be judged or there is none."""
    if not verdicts or "ERROR" in verdicts:
        return "ERROR"
    return "NO-GO" if "NO-GO" in verdicts else "GO"


class BaselineRule(BaseModel):
    """How much worse than its baseline a criterion may get: by at most max(tolerance × baseline, floor).

    The floor keeps tiny values from flipping the gate (0.10 % after 0.09 % is noise, not a
    regression); written per criterion as `baseline = { tolerance = 0.10, floor = 0.001 }`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    tolerance: float = Field(default=0.10, ge=0)  # relative, of the baseline value
    floor: float = Field(default=0.0, ge=0)  # absolute, in the criterion's unit (a fraction for "%")


class CriterionResult(BaseModel):
    """One acceptance criterion judged on one scenario run."""

    name: str
    scenario_id: str
    metric: str
    expression: str  # the k6-style expression judged, e.g. "p(95)<500"
    aggregation: str  # "p(95)", "rate", "count", "peak", ...
    operator: str  # "<", "<=", ">", ">=", "==", "!="
    threshold: float
    observed: float | None = None
    unit: str = ""  # "ms", "%", "count", "games", "players"
    profile: str
    samples: int = 0
    verdict: Verdict
    level: Literal["gate", "warn"] = "gate"
    message: str = ""
    hint: str | None = None
    baseline_observed: float | None = None  # run-over-run comparison
    baseline_rule: BaselineRule | None = None  # the criterion's own rule, kept so `prodval compare` agrees
    source: str = "k6"  # "k6" or "server" (the target's own metrics)
    detail: str | None = None  # e.g. "bucket-interpolated", a breakdown for triage
    coverage: float | None = None  # latency SLOs: share of the steady window's buckets with data
    coverage_min: float | None = None
    worst_bucket: float | None = None  # the worst bucket's value of the aggregation
    max_multiple_of_target: float | None = None
    bucket_s: float | None = None
    k6_verdict: str | None = None  # a script threshold: k6's own verdict ("pass" / "fail")


class ConcurrencyMeasurement(BaseModel):
    """Concurrency over the steady window, from the raw output's delta points."""

    peak: int
    time_weighted_mean: float
    share_at_or_above_target: float | None = None
    target: int | None = None
    events: int = 0


class BypassRecord(BaseModel):
    """When the staging rate-limit bypass was on during the run."""

    pattern: str
    enabled_at: str | None = None
    disabled_at: str | None = None
    verified_on: bool | None = None
    verified_off: bool | None = None


class AbortRecord(BaseModel):
    """k6 stopped the run early: an abort_on_fail criterion crossed its threshold (aborts.py)."""

    at_s: float | None = None  # k6's test run duration when it stopped
    criteria: list[str] = Field(default_factory=list)  # the criteria whose thresholds stopped it
    reason: str  # one line: when and why, for the report and every other criterion
    k6_message: str = ""


class SeriesPoint(BaseModel):
    """One time bucket of the run for charts (seconds since t0)."""

    t: float
    requests: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    errors: dict[str, int] = Field(default_factory=dict)  # 401, 429, capacity (429/5xx/no answer), contract, lifecycle
    games: int | None = None
    players: int | None = None


class InstanceRecord(BaseModel):
    """One k6 instance of a run (a process here, a runner pod on Kubernetes), as the report shows it."""

    index: int  # 1-based (k6-operator's instance_id)
    segment: str | None = None  # its execution segment, "0/4:1/4"; None when it ran alone
    exit_code: int | None = None  # None: no exit seen (lost)
    started_at: str | None = None
    ended_at: str | None = None
    requests: int | None = None  # http_reqs in its own summary
    request_rate: float | None = None  # its http_reqs per second (k6's own rate)
    problem: str | None = None  # why its share is unusable (the run is then incomplete)
    # When its scenarios started (its `prodval_run_start` point, its own clock) after the first
    # instance's: resume latency plus, on several machines, their clock skew.
    start_offset_ms: float | None = None
    raw: str | None = None  # file names in the results folder
    summary: str | None = None
    log: str | None = None


class SloReport(BaseModel):
    """Everything known about one scenario run; written as `<ID>_<env>_<ts>_slo_report.json`."""

    schema_version: int = 1
    scenario_id: str
    marker: str
    env: str
    profile: str
    timestamp: str  # the run's artifact timestamp, e.g. 20261127T024723Z
    started_at: str | None = None
    finished_at: str | None = None
    time_scale: float = 1.0
    k6_version: str | None = None
    k6_exit_code: int | None = None
    complete: bool = True
    incomplete_reason: str | None = None
    steady_window_s: tuple[float, float] | None = None
    targets: dict[str, int | str] = Field(default_factory=dict)
    token_ttl_s: float | None = None
    token_ttl_source: str | None = None
    concurrency: dict[str, ConcurrencyMeasurement] = Field(default_factory=dict)
    bypass: BypassRecord | None = None
    executor: str = "local"  # local, segments or k6-operator
    instances: list[InstanceRecord] = Field(default_factory=list)
    aborted: AbortRecord | None = None  # k6 stopped the run on an abort_on_fail criterion
    testid: str | None = None  # the k6 tag on every sample sent to extra outputs
    outputs: list[str] = Field(default_factory=list)  # extra k6 outputs, credentials masked
    criteria: list[CriterionResult] = Field(default_factory=list)
    series: list[SeriesPoint] = Field(default_factory=list)
    artifacts: dict[str, str] = Field(default_factory=dict)  # kind -> file name in results dir
    source_files: list[str] = Field(default_factory=list)  # re-judged from these k6 outputs
    verdict: RunVerdict = "ERROR"

    def instances_line(self) -> str:
        """How many k6 instances ran, their segments and exit codes, in one line (JUnit, terminal)."""
        if not self.instances:
            return f"{self.executor}: 1 instance"
        parts = [f"{i.index} [{i.segment or 'all'}] exit {i.exit_code if i.exit_code is not None else 'none'}"
                 for i in self.instances]
        count = len(self.instances)
        return f"{self.executor}: {count} instance{'s' if count > 1 else ''}: " + ", ".join(parts)

    def decide(self) -> RunVerdict:
        """GO only if the run is complete and no gate criterion failed or errored.

        A run k6 stopped on a gate criterion that fails is NO-GO: that failure is certain,
        however the other criteria would have ended.
        """
        gate = [c for c in self.criteria if c.level == "gate" and c.verdict != "n/a"]
        if self.aborted is not None and any(c.verdict == "fail" and c.name in self.aborted.criteria for c in gate):
            return "NO-GO"
        if not self.complete or not gate or any(c.verdict == "error" for c in gate):
            return "ERROR"
        return "NO-GO" if any(c.verdict == "fail" for c in gate) else "GO"
