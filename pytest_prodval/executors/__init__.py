"""Executors: where the k6 processes of one scenario run, and what each instance left.

One interface for every kind (`[ENV.executor] kind` in `_environments.toml`, or
`--prodval-executor`): `run(launch)` starts the prepared k6 command and returns one
`InstanceResult` per instance — its index (1-based, like k6-operator's `instance_id`), its
execution segment, exit code, raw output, summary and log paths, start and end times.

* `local`: today's single k6 process (`local.py`).
* `segments`: N k6 processes on this machine with exactly the flags k6-operator gives its
  runner pods, started paused and resumed through each one's REST API (`segments.py`).
* `k6-operator`: a `TestRun` on Kubernetes, applied and followed with `kubectl` (`operator.py`).

The executor only runs k6; preflight, seeding and the bypass stay on the controller, and
the instances are judged together by `results.read_instances`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

from ..artifacts import RunPaths
from ..k6run import K6Result
from ..scenarios import ExecutorConfig

# The script's summary goes here when set (per instance); else PRODVAL_CONFIG.summaryPath.
SUMMARY_PATH_VAR = "PRODVAL_SUMMARY_PATH"


def segment(index: int, count: int) -> str:
    """k6-operator's `--execution-segment` of runner `index` of `count`: unreduced `(i-1)/N:i/N`."""
    return f"{index - 1}/{count}:{index}/{count}"


def segment_sequence(count: int) -> str:
    """k6-operator's `--execution-segment-sequence` for `count` runners: `0,1/N,...,(N-1)/N,1`."""
    return ",".join(["0", *(f"{i}/{count}" for i in range(1, count)), "1"])


def segment_share(text: str) -> Fraction:
    """The share of the test a segment `a/N:b/N` runs (for the report)."""
    start, _, end = text.partition(":")
    return Fraction(end) - Fraction(start)


def segment_flags(index: int, count: int) -> list[str]:
    """The segment flags k6-operator passes runner `index` (none when it runs alone)."""
    if count <= 1:
        return []
    return [f"--execution-segment={segment(index, count)}", f"--execution-segment-sequence={segment_sequence(count)}"]


@dataclass(frozen=True)
class InstancePaths:
    """Where one instance's files end up on this machine."""

    raw: Path
    summary: Path
    log: Path

    @classmethod
    def of(cls, paths: RunPaths, index: int, count: int) -> InstancePaths:
        """A single instance keeps the run's own names; instance i of N gets `<stem>_i<i>...`
        (`sources.find_run` reads every `<stem>_i<n>.json.gz` as one run, and skips the instances'
        own summaries: the run is judged from the raw points of all of them)."""
        if count == 1:
            return cls(paths.raw, paths.summary, paths.k6_log)
        stem = f"{paths.stem}_i{index}"
        return cls(paths.folder / f"{stem}.json.gz", paths.folder / f"{stem}_summary.json", paths.folder / f"{stem}_k6.log")


@dataclass
class InstanceResult:
    """What one k6 instance did (a process here, a runner pod on Kubernetes)."""

    index: int  # 1-based, k6-operator's instance_id
    count: int
    segment: str | None  # "0/4:1/4"; None when it ran alone
    paths: InstancePaths
    k6: K6Result  # exit code (None: no exit seen), duration, interrupted, timed out, log tail
    started_at: float | None = None  # epoch seconds, when it was resumed / started
    ended_at: float | None = None
    lost: str | None = None  # why no exit code is known (pod lost, never started)

    @property
    def name(self) -> str:
        """How messages name it: `instance 2/4 (segment 1/4:2/4)`."""
        if self.count == 1:
            return "k6"
        return f"instance {self.index}/{self.count} (segment {self.segment})"

    def problem(self) -> str | None:
        """Why this instance's share of the run is not usable; None when it ran to its end.

        Exit 99 (its own thresholds on its own share) is normal: the plugin judges the whole.
        """
        if self.lost:
            return f"{self.name} lost: {self.lost}"
        problem = self.k6.problem()
        if problem is None:
            return None
        return problem if self.count == 1 else f"{self.name}: {problem}"


@dataclass
class Launch:
    """Everything an executor needs to run the prepared k6 command of one scenario."""

    scenario_id: str
    k6: str  # the k6 binary
    script: Path
    config: dict[str, Any]  # PRODVAL_CONFIG (no secrets)
    env: Mapping[str, str]  # the environment of a local k6 process (secrets included)
    secrets: Mapping[str, str]  # name -> value of the secret variables in `env` (for a Kubernetes Secret)
    paths: RunPaths
    count: int  # instances
    timeout_s: float
    summary_export: bool = False  # a user's script: k6's --summary-export per instance (the game script has handleSummary)
    extra_args: Sequence[str] = ()  # the same for every instance: extra outputs and their run tags (outputs.py)
    output_env: Mapping[str, str] = field(default_factory=dict)  # their K6_* settings (in `env` too; may hold credentials)
    progress: Callable[[int | None], Callable[[float], None]] | None = None  # REST API port -> tick
    redact: Callable[[str], str] = field(default=lambda text: text)

    def instance_paths(self, index: int) -> InstancePaths:
        """The files of instance `index`."""
        return InstancePaths.of(self.paths, index, self.count)

    def instance_flags(self, paths: InstancePaths) -> list[str]:
        """Flags of a local instance after the plugin's own: extra outputs, then `--summary-export` to the
        instance's summary for a user's script (the game script writes its own with handleSummary)."""
        return [*self.extra_args, *(["--summary-export", str(paths.summary)] if self.summary_export else [])]


class Executor(Protocol):
    """Runs k6 for a scenario and returns what every instance did, in index order."""

    def run(self, launch: Launch) -> list[InstanceResult]:
        """Run every instance to its end (or the time bound, or Ctrl-C: marked interrupted)."""
        ...


def executor_for(config: ExecutorConfig) -> Executor:
    """The executor of an environment's `[ENV.executor]`."""
    if config.kind == "segments":
        from .segments import SegmentsExecutor

        return SegmentsExecutor()
    if config.kind == "k6-operator":
        from .operator import OperatorExecutor

        return OperatorExecutor(config)
    from .local import LocalExecutor

    return LocalExecutor()
