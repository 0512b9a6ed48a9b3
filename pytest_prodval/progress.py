"""A live progress line during a long k6 run: visible under capture, quiet in CI."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .scenarios import Scenario


class Progress:
    """Called every few seconds by the runner with the elapsed time."""

    def __init__(self, config: pytest.Config, scenario: Scenario, time_scale: float) -> None:
        self.reporter = config.pluginmanager.get_plugin("terminalreporter")
        self.scenario = scenario
        self.time_scale = time_scale
        self.total = scenario.duration_s(time_scale)
        self.ci = bool(os.environ.get("CI")) or not sys.stdout.isatty()
        self.every = 30.0 if self.ci else 5.0
        self.last = -1e9

    def planned_vus(self, elapsed: float) -> int:
        """Player VUs the stages ask for at `elapsed` seconds (linear ramps, as k6 does)."""
        start, previous = 0.0, 0
        for stage in self.scenario.stages:
            length = stage.seconds * self.time_scale
            if elapsed <= start + length:
                share = (elapsed - start) / length if length else 1.0
                return round(previous + (stage.target - previous) * share)
            start, previous = start + length, stage.target
        return 0

    def __call__(self, elapsed: float) -> None:
        if self.reporter is None or elapsed - self.last < self.every:
            return
        self.last = elapsed
        self.reporter.write_line(
            f"prodval: {self.scenario.id} {elapsed:,.0f}/{self.total:,.0f} s, ~{self.planned_vus(elapsed)} player VUs"
        )
