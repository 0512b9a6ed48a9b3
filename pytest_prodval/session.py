"""The session: one object per pytest process, registered as a plugin while active.

Like pytest's own `LogXML`, it is built in `pytest_configure`, kept in `config.stash`,
registered under the name "prodval-session" and unregistered in `pytest_unconfigure`; its
methods are the hooks (an idle plugin is simply not registered). It owns the steps the
fixtures of `fixtures.py` call, in the README's order: target → preflight → seeding →
bypass → k6 run → judging → artifacts. Side effects on the outside world happen once, on
the controller; xdist workers get the prepared target through `workerinput`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Generator, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from . import preflight, terminal
from .artifacts import RunPaths, find_runs, parse_stem, rewrite_report, timestamp, utc_now_iso, write_report
from .baseline import DEFAULT_RUNS, Baseline, explicit, from_folder
from .bypass import BypassLease
from .facts import BYPASS_TOKEN_VAR
from .items import CriterionItem, ScenarioFile
from .judging import baseline_pairs, judge
from .models import BypassRecord, SloReport
from .outputs import K6Outputs
from .scenarios import Catalogue, Criterion, Environment, Scenario
from .secrets import Redactor
from .settings import PoolSettings, Settings
from .sharing import RunOutcome, SharedRuns
from .target import Prepared, Target, embedded_stack

if TYPE_CHECKING:
    from .results import RunData


# The bypass check before load: tried this often, this far apart, before "still limited" is an error.
BYPASS_SETTLE_TRIES = 3
BYPASS_SETTLE_S = 2.0


class ProdvalSession:
    """Owns the prepared target, the k6 runs and the outcomes of one pytest process."""

    def __init__(self, config: pytest.Config, settings: Settings, catalogue: Catalogue, environment: Environment | None) -> None:
        self.config = config
        self.settings = settings
        self.catalogue = catalogue
        self.environment = environment
        workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
        self.is_worker = workerinput is not None
        shared = workerinput.get("prodval_shared") if workerinput else None
        self.runs = SharedRuns(Path(shared) if shared else None)
        self.prepared: Prepared | None = None
        if workerinput and workerinput.get("prodval_prepared"):
            self.prepared = Prepared.model_validate_json(workerinput["prodval_prepared"])
        self.password: str | None = None
        self.admin_token: str | None = os.environ.get("PRODVAL_ADMIN_TOKEN") or None
        self.redactor = Redactor()
        self.interrupted: str | None = None
        self.selected: dict[str, Scenario] = {}
        self._controller_steps = ExitStack()  # xdist controller: target and bypass held for the session
        # Pool users 1..N are the only ones a run logs in (VU n → user n while the pool is at
        # least the peak VUs): once the selection is known, only those are seeded.
        self.seed_count = settings.pool.size
        self.started = timestamp()  # a median baseline takes only runs older than this session
        self.baselines: dict[str, Baseline | None] = {}
        self.explicit_baseline: Baseline | None = None
        if settings.baseline is not None and settings.baseline.is_file():
            try:
                self.explicit_baseline = explicit(settings.baseline)
            except ValueError as exc:
                raise pytest.UsageError(f"--prodval-baseline: {exc}") from None
        self.outputs = self._outputs()
        self._secrets_from_env()

    @property
    def pool(self) -> PoolSettings:
        """The load-test user pool settings."""
        return self.settings.pool

    @property
    def uses_pool(self) -> bool:
        """Whether a selected scenario logs in as pool users (then the pool is seeded and probed,
        and the bypass verified with pool user 1); before selection, assume so."""
        return not self.selected or any(s.needs_pool for s in self.selected.values())

    @property
    def live(self) -> bool:
        """A live run against a target (not a re-judge of earlier results)."""
        return self.environment is not None and self.settings.from_results is None

    def _outputs(self) -> K6Outputs:
        """The environment's extra k6 outputs plus `--prodval-out`'s (none when re-judging)."""
        env = self.environment
        if not self.live or env is None:
            return K6Outputs(inherited={k: v for k, v in os.environ.items() if k.startswith("K6_")})
        try:
            return K6Outputs.of(env.outputs, self.settings.outputs, env.output_env,
                                Path(self.config.invocation_params.dir), os.environ)
        except ValueError as exc:
            raise pytest.UsageError(f"extra k6 outputs (environment {env.name!r} outputs, --prodval-out): {exc}") from None

    def _secrets_from_env(self) -> None:
        """Every secret this session may see, known to the redactor before anything is written."""
        try:
            self.password = preflight.resolve_pool_password(os.environ)
        except preflight.PreflightError:  # reported by the preflight, with its hint
            self.password = None
        for secret in (self.password, self.admin_token, os.environ.get(BYPASS_TOKEN_VAR),
                       os.environ.get(preflight.SEEDER_PASSWORD_VAR), os.environ.get(preflight.POOL_PASSWORD_VAR)):
            self.redactor.add(secret)
        for secret in self.outputs.secrets():  # credentials in output URLs and K6_* settings
            self.redactor.add(secret)

    # -- the steps, called by the fixtures (and on the xdist controller by sessionstart) ------

    @contextmanager
    def open_target(self) -> Iterator[Target]:
        """The environment's URLs, or the embedded stack started for the session."""
        env = self.environment
        assert env is not None
        if self.is_worker and self.prepared is not None:
            yield self.prepared.target(self.admin_token)
            return
        if env.embedded:
            with embedded_stack(self.settings.results_dir / "local-stack", self.settings) as target:
                self.admin_token = target.admin_token
                self.redactor.add(target.admin_token)
                yield target
            return
        yield preflight.target_of(env, admin_token=self.admin_token)

    def preflight(self, target: Target) -> Prepared:
        """The clean-signal checks that need no pool user; a failure is recorded, not raised."""
        if self.prepared is not None:  # a worker's (from the controller), or the controller's own
            return self.prepared
        prepared = Prepared.of(target)
        self.prepared = prepared
        with self._recording(prepared):
            preflight.check_target(prepared, target, self.settings, self.password, self.selected.values())
            self.config.hook.pytest_prodval_preflight(config=self.config, prepared=prepared, session=self)
        return prepared

    def seed_and_probe(self, prepared: Prepared, target: Target) -> Prepared:
        """Seed the pool (if asked), then log pool user 1 in and learn the token TTL."""
        if prepared.error or self.is_worker or prepared.token_ttl_s is not None:
            return prepared
        if not self.uses_pool:
            return prepared
        assert self.environment is not None
        with self._recording(prepared):
            # Before anything is created: a pool the server will not bypass needs no users.
            preflight.check_bypass_reaches_pool(self.settings)
            seed = self.settings.seed if self.settings.seed is not None else self.environment.embedded
            if seed:
                result = self.config.hook.pytest_prodval_seed_users(
                    config=self.config, base_url=target.base_url,
                    emails=[self.pool.email(n) for n in range(1, self.seed_count + 1)],
                    password=self.password, admin_token=target.admin_token,
                )
                prepared.seeded = getattr(result, "summary", lambda: None)()
            token = preflight.probe_login(prepared.base_url or "", self.pool.email(1), self.password or "",
                                          ttl_fallback_s=self.settings.token_ttl_fallback_s)
            prepared.token_ttl_s, prepared.token_ttl_source = token.ttl_s, token.source
        return prepared

    @contextmanager
    def bypass(self, prepared: Prepared, target: Target) -> Iterator[BypassRecord | None]:
        """The staging rate-limit bypass, on for the session's k6 runs and always off after."""
        if (not self.settings.bypass or prepared.error or prepared.bypass_by_controller or self.is_worker
                or not self.uses_pool):
            yield prepared.bypass
            return
        controller = self.config.hook.pytest_prodval_bypass_controller(config=self.config, prepared=prepared, session=self)
        if controller is None:
            yield None
            return
        lease = BypassLease(controller, pattern=self.settings.bypass_pattern, lease_s=self.settings.bypass_lease_s)
        probe = preflight.limit_probe(target, self.pool.email(1), self.password or "")
        probe_after = preflight.limit_probe(target, self.pool.email(1), self.password or "", with_token=False)
        with lease:
            verified = lease.verify_on(probe)
            for _ in range(BYPASS_SETTLE_TRIES - 1):  # a switch by command (a rollout) takes a moment
                if verified is not False:
                    break
                time.sleep(BYPASS_SETTLE_S)
                verified = lease.verify_on(probe)
            if verified is False and not prepared.error:
                # A run whose pool users are still limited measures the limiter, not the target (the
                # plan's 31 % of 429s): a clean-signal error before any load, the bypass still turned off.
                prepared.error = ("preflight (bypass) failed: the rate-limit bypass is on, but an authenticated "
                                  f"request of pool user 1 ({self.pool.email(1)}) was still counted by a limiter "
                                  "(X-RateLimit-Remaining in the answer)")
                prepared.error_check = "bypass"
                prepared.hint = ("a limiter the bypass does not cover, or a server without the bypass configured "
                                 "(RATE_LIMIT_BYPASS_ENABLED / _TOKEN / _USER_PATTERN in its environment)")
            prepared.bypass = lease.to_record()
            try:
                yield prepared.bypass
            finally:
                lease.__exit__(None, None, None)
                lease.verify_off(probe_after)
                prepared.bypass = lease.to_record()
                for outcome in self.runs.local.values():  # the reports say when it went off
                    if outcome.report is not None and outcome.report_path:
                        outcome.report.bypass = prepared.bypass
                        rewrite_report(self, outcome.report, Path(outcome.report_path))

    @contextmanager
    def _recording(self, prepared: Prepared) -> Iterator[None]:
        """A failed step marks the prepared target broken, with the reason and hint (no secret)."""
        try:
            yield
        except preflight.PreflightError as exc:
            prepared.error = self.redactor.redact(f"preflight ({exc.check}) failed: {exc.reason}")
            prepared.error_check, prepared.hint = exc.check, exc.hint
        except Exception as exc:  # seeding hooks, launchers and bypass switches raise their own errors
            prepared.error = self.redactor.redact(f"preflight failed: {type(exc).__name__}: {exc}")
            prepared.error_check = "preflight"

    def fail_preflight(self, prepared: Prepared) -> None:
        """Write every selected scenario's report (incomplete, every criterion an ERROR), then ERROR the item."""
        for scenario in self.selected.values():
            self.runs.get(scenario.id, lambda s=scenario: self._preflight_failed(s, prepared))  # type: ignore[misc]
        hint = f"\nhint: {prepared.hint}" if prepared.hint else ""
        pytest.fail(f"{prepared.error}{hint}", pytrace=False)

    def prepare_on_controller(self) -> None:
        """xdist: the controller runs the fixtures' steps itself before workers start, once."""
        target = self._controller_steps.enter_context(self.open_target())
        prepared = self.seed_and_probe(self.preflight(target), target)
        self._controller_steps.enter_context(self.bypass(prepared, target))
        prepared.bypass_by_controller = prepared.bypass is not None

    # -- one k6 run per scenario ----------------------------------------------------------

    def criteria(self, scenario: Scenario) -> list[Criterion]:
        """The criteria of a scenario at the session's profile."""
        return self.catalogue.criteria_for(scenario, self.settings.profile, self.environment)

    def outcome(self, scenario: Scenario) -> RunOutcome:
        """The scenario's outcome, running k6 the first time any process asks for it."""
        return self.runs.get(scenario.id, lambda: self._produce(scenario))

    def _produce(self, scenario: Scenario) -> RunOutcome:
        try:
            if self.settings.from_results is not None:
                return self._reevaluate(scenario, self.settings.from_results)
            prepared = self.prepared
            if prepared is None:
                return RunOutcome(scenario_id=scenario.id, error_kind="preflight",
                                  error="no prepared target (the prodval_target fixture did not run)")
            if prepared.error:
                return self._preflight_failed(scenario, prepared)
            from .k6run import run_scenario

            return run_scenario(self, scenario, prepared)
        except Exception as exc:  # never run k6 twice because the first attempt broke
            return RunOutcome(scenario_id=scenario.id, error_kind="results",
                              error=self.redactor.redact(f"pytest-prodval could not finish the run: {type(exc).__name__}: {exc}"))

    def new_report(self, scenario: Scenario, paths: RunPaths) -> SloReport:
        """An empty report for a run of `scenario` stored at `paths`."""
        prepared = self.prepared or Prepared()
        return SloReport(
            scenario_id=scenario.id, marker=scenario.marker, env=self.env_name,
            profile=self.settings.profile or scenario.profile, timestamp=paths.stem.rsplit("_", 1)[-1],
            started_at=utc_now_iso(), time_scale=self.settings.time_scale, k6_version=prepared.k6_version,
            steady_window_s=scenario.steady_window_s(self.settings.time_scale),
            targets=scenario.targets.model_dump(), token_ttl_s=prepared.token_ttl_s, token_ttl_source=prepared.token_ttl_source,
            bypass=prepared.bypass,
        )

    @property
    def env_name(self) -> str:
        """The environment's name in artifact names."""
        return self.settings.env or "offline"

    def judge(self, report: SloReport, scenario: Scenario, *, metrics: Any, concurrency: Any, server: Any = None,
              run: RunData | None = None) -> SloReport:
        """The one judging step (judging.judge) with this session's baseline."""
        baseline = self.baseline_for(scenario.id)
        return judge(report, self.criteria(scenario), metrics=metrics, concurrency=concurrency, server=server,
                     baseline=baseline.report if baseline else None, baseline_source=baseline.source if baseline else "",
                     run=run)

    def _preflight_failed(self, scenario: Scenario, prepared: Prepared) -> RunOutcome:
        """No k6 run: a report marked incomplete, every criterion an error."""
        paths = RunPaths.create(self.settings.results_dir, scenario.id, self.env_name, timestamp())
        report = self.new_report(scenario, paths)
        report.complete, report.incomplete_reason = False, prepared.error
        self.judge(report, scenario, metrics=None, concurrency=None)
        write_report(report, paths.slo_report)
        return RunOutcome(scenario_id=scenario.id, report=report, report_path=str(paths.slo_report), error=prepared.error,
                          error_kind="preflight", hint=prepared.hint)

    def _reevaluate(self, scenario: Scenario, path: Path) -> RunOutcome:
        from .offline import reevaluate

        try:
            report, report_path = reevaluate(self, scenario, path)
        except ValueError as exc:
            return RunOutcome(scenario_id=scenario.id, error=str(exc), error_kind="results")
        return RunOutcome(scenario_id=scenario.id, report=report, report_path=str(report_path))

    # -- the target's own metrics (docs/contract.md §4) ---------------------------------------

    def start_server_metrics(self, prepared: Prepared, scenario: Scenario) -> Any:
        """Start scraping the target's metrics for a run (None when the environment has none)."""
        from . import server_criteria

        steady = scenario.steady_window_s(self.settings.time_scale)
        span = (steady[1] - steady[0]) if steady else scenario.duration_s(self.settings.time_scale)
        run = server_criteria.start(prepared, self.criteria_sources(), interval_s=max(1.0, min(5.0, span / 10)))
        if run is not None and steady is not None:
            run.mark_window(steady[0] + 1.0, steady[1] + 1.0)  # k6 starts its clock ~1 s after launch
        return run

    def stop_server_metrics(self, run: Any, paths: RunPaths) -> Any:
        """Stop scraping; the scrapes are an artifact; returns the record."""
        from . import server_criteria

        return server_criteria.stop(run, paths.server_metrics)

    def load_server_metrics(self, path: Path) -> Any:
        """The server metrics record of an earlier run (offline re-judge), or None."""
        from . import server_criteria

        return server_criteria.load(path)

    def criteria_sources(self) -> set[str]:
        """Metric names the server-side criteria of the selected scenarios read."""
        names: set[str] = set()
        for scenario in self.selected.values() or self.catalogue.scenarios:
            for criterion in self.criteria(scenario):
                if criterion.source == "server":
                    names.add(criterion.metric.name)
                    if criterion.per is not None:
                        names.add(criterion.per.name)
        return names

    # -- hooks ------------------------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        """Under xdist the controller prepares the target (seeding, bypass) before workers start."""
        if self.live and not self.is_worker and _uses_xdist(session):
            self.prepare_on_controller()

    def pytest_collect_file(self, file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
        """Scenario files in the scenarios folder are test files."""
        if file_path.suffix != ".toml" or file_path.name.startswith("_"):
            return None
        if file_path.resolve().parent != self.settings.scenarios_dir.resolve():
            return None
        # A stable node id (and JUnit classname) relative to the project, not to pytest's rootdir,
        # which moves to any existing path among the arguments (`--prodval-results-dir /tmp/x`).
        from .settings import project_dir

        base = project_dir(self.config).resolve()
        resolved = file_path.resolve()
        nodeid = str(resolved.relative_to(base)) if resolved.is_relative_to(base) else f"scenarios/{file_path.name}"
        return ScenarioFile.from_parent(parent, path=file_path, nodeid=nodeid)

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        """A user test that requests `prodval_run` runs once per scenario, marked with its marker."""
        if "prodval_run" not in metafunc.fixturenames or metafunc.definition.get_closest_marker("prodval_scenario"):
            return
        if isinstance(metafunc.definition, CriterionItem):
            return
        metafunc.parametrize(
            "prodval_run",
            [pytest.param(s.id, id=s.marker, marks=getattr(pytest.mark, s.marker)) for s in self.catalogue.scenarios],
            indirect=True,
        )

    def pytest_itemcollected(self, item: pytest.Item) -> None:
        """A test marked `prodval_scenario("x")` also carries x's marker, so `-m x` selects it."""
        marker = item.get_closest_marker("prodval_scenario")
        if marker is None or not marker.args:
            return
        try:
            item.add_marker(self.catalogue.scenario(marker.args[0]).marker)
        except KeyError:
            pass  # the fixture reports the unknown scenario as an error

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        """After -m/-k selection: what runs, and the pool must cover the peak VUs of each."""
        named = self.settings.from_scenario
        if named is not None:  # files of one scenario: the others' items are not about them
            if not any(isinstance(i, CriterionItem) and named in (i.scenario.id, i.scenario.marker) for i in items):
                known = sorted({i.scenario.marker for i in items if isinstance(i, CriterionItem)})
                raise pytest.UsageError(f"--prodval-scenario {named}: no such scenario selected (known: {', '.join(known)})")
            other = [i for i in items if isinstance(i, CriterionItem) and named not in (i.scenario.id, i.scenario.marker)]
            if other:
                config.hook.pytest_deselected(items=other)
                items[:] = [i for i in items if i not in other]
        self.selected = {item.scenario.id: item.scenario for item in items if isinstance(item, CriterionItem)}
        if not self.live:
            return
        if self.selected:
            self.seed_count = min(self.pool.size, max(s.peak_vus for s in self.selected.values()))
        for scenario in self.selected.values():
            try:
                preflight.check_pool_size(self.pool.size, scenario.peak_vus, scenario.id)
            except preflight.PoolTooSmall as exc:
                raise pytest.UsageError(
                    f"{exc} ({scenario.player_vus} players + {scenario.peak_vus - scenario.player_vus} WebSocket companion VUs)"
                ) from None

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        """Attach the criterion's values to its report (for JUnit system-out and xdist)."""
        report = yield
        if isinstance(item, CriterionItem) and report.when in ("setup", "call") and (report.when == "call" or not report.passed):
            data = item.junit_data()
            report.sections.append(("prodval", "\n".join(f"{k}={v}" for k, v in data.items())))
            if self.settings.junit_properties:
                item.user_properties.extend((f"prodval.{k}", v) for k, v in data.items())
        return report

    def pytest_terminal_summary(self, terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
        """Per scenario, every criterion's value, and the overall GO / NO-GO."""
        outcomes = self.runs.all()
        terminal.write_summary(terminalreporter, outcomes)
        if outcomes and self.settings.from_results is None and not self.is_worker:
            terminal.write_folder_decision(terminalreporter, self.settings.results_dir, self.settings.env)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        """The controller lets go of the target (bypass off, stack stopped) and updates the docs if asked."""
        self._controller_steps.close()
        if self.settings.update_docs and not self.is_worker:
            from .capacity_docs import update_capacity_docs

            reports = [o.report for o in self.runs.all() if o.report is not None and o.report.k6_exit_code is not None]
            if reports:
                from .settings import project_dir

                update_capacity_docs(reports, project_dir(session.config) / "docs")

    def close(self) -> None:
        """Undo whatever is still held and remove the shared folder (config cleanup)."""
        self._controller_steps.close()
        if not self.is_worker:
            self.runs.remove()

    def baseline_pairs(self, scenario_id: str) -> list[Any]:
        """Baseline criteria of this scenario that get a comparison item."""
        return baseline_pairs(self.baseline_report(scenario_id), scenario_id)

    def baseline_report(self, scenario_id: str) -> SloReport | None:
        """The scenario's baseline report (reference value per criterion), or None."""
        baseline = self.baseline_for(scenario_id)
        return baseline.report if baseline else None

    def baseline_for(self, scenario_id: str) -> Baseline | None:
        """--prodval-baseline: the report given, or the median of the last GO runs of the scenario and env
        in a folder (older than the run judged: this session's start, or the re-judged run's timestamp)."""
        if self.explicit_baseline is not None:
            return self.explicit_baseline if self.explicit_baseline.report.scenario_id == scenario_id else None
        settings = self.settings
        if settings.baseline_runs is None and settings.baseline is None:
            return None
        if scenario_id not in self.baselines:
            env, before = self.env_name, self.started
            if settings.from_results is not None:
                try:
                    judged = find_runs(settings.from_results).get(scenario_id)
                except ValueError:  # reported by the re-judge itself, as the item's error
                    judged = None
                parsed = parse_stem(judged.name) if judged else None
                env, before = (parsed[1], parsed[2]) if parsed else (env, before)
            self.baselines[scenario_id] = from_folder(settings.baseline or settings.results_dir, scenario_id, env,
                                                      before=before, runs=settings.baseline_runs or DEFAULT_RUNS)
        return self.baselines[scenario_id]


def _uses_xdist(session: pytest.Session) -> bool:
    """Whether this controller distributes tests to xdist workers (then it runs no fixtures itself)."""
    if not session.config.pluginmanager.hasplugin("xdist"):  # installed but not loaded (-p no:xdist)
        return False
    try:
        from xdist import is_xdist_controller  # type: ignore[import-untyped]
    except ImportError:
        return False
    return bool(is_xdist_controller(session))
