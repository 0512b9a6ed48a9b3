"""A live progress line during a long k6 run: visible under capture, quiet in CI.

Reads k6's REST API on a loopback port (VUs, requests and error classes so far).
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

import httpx
import pytest

if TYPE_CHECKING:
    from .scenarios import Scenario

# metric → label of the error classes shown in the line
_CLASSES = {"auth_token_expired_total": "401", "rate_limit_hit_total": "429", "capacity_failures_total": "capacity",
            "contract_failures_total": "contract", "id_lifecycle_mismatches_total": "lifecycle"}


class Progress:
    """Called every few seconds by the runner with the elapsed time; prints at most every `every` s."""

    def __init__(self, config: pytest.Config, scenario: Scenario, time_scale: float, api_port: int | None) -> None:
        self.reporter = config.pluginmanager.get_plugin("terminalreporter")
        self.capture = config.pluginmanager.get_plugin("capturemanager")
        self.scenario = scenario
        self.total = scenario.duration_s(time_scale)
        self.api = f"http://127.0.0.1:{api_port}/v1" if api_port else None
        # One line every 30 s in CI logs; every 5 s for a person at a terminal.
        self.every = 30.0 if os.environ.get("CI") or not sys.stdout.isatty() else 5.0
        self.last = -1e9

    def snapshot(self) -> dict[str, Any]:
        """VUs, requests and error counts so far from k6's REST API (empty if unavailable)."""
        if self.api is None:
            return {}
        try:
            vus = httpx.get(f"{self.api}/status", timeout=0.5).json()["data"]["attributes"]["vus"]
            metrics = httpx.get(f"{self.api}/metrics", timeout=0.5).json()["data"]
        except (httpx.HTTPError, ValueError, KeyError):
            return {}
        samples = {m["id"]: m["attributes"].get("sample", {}) for m in metrics}
        errors = {label: int(samples[name].get("count", 0)) for name, label in _CLASSES.items() if name in samples}
        return {"vus": vus, "requests": int(samples.get("http_reqs", {}).get("count", 0)), "errors": errors}

    def line(self, elapsed: float, snap: dict[str, Any]) -> str:
        """The progress line."""
        text = f"prodval: {self.scenario.id} {elapsed:,.0f}/{self.total:,.0f} s"
        if snap:
            errors = ", ".join(f"{k} {v:,}" for k, v in snap["errors"].items() if v) or "none"
            text += f", {snap['vus']} VUs, {snap['requests']:,} requests, errors: {errors}"
        return text

    def __call__(self, elapsed: float) -> None:
        if self.reporter is None or elapsed - self.last < self.every:
            return
        self.last = elapsed
        text = self.line(elapsed, self.snapshot())
        if self.capture is None:
            self._write(text)
            return
        # k6 runs inside a test's setup, where pytest captures fd 1: step outside the capture.
        with self.capture.global_and_fixture_disabled():
            self._write(text)

    def _write(self, text: str) -> None:
        assert self.reporter is not None
        self.reporter.ensure_newline()  # never glued to a half-written line (-v, --setup-show)
        self.reporter.write_line(text)
