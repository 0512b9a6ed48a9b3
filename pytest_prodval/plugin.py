"""pytest-prodval hooks (entry point `pytest11: prodval`). User fixtures live in fixtures.py.

Idle unless an environment (`--env`/`--prodval-env`/PRODVAL_ENV/ini) or
`--prodval-from-results` is given: `--collect-only`, `--markers` and `--help` never touch
the network or k6.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Generator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from . import hookspecs, terminal
from .fixtures import prodval_run, prodval_session, prodval_settings, prodval_target  # noqa: F401 (fixtures)
from .junit import JunitSystemOut
from .items import SESSION_KEY, CriterionItem, ScenarioFile
from .scenarios import ScenarioFileError, load_catalogue, resolve_environment
from .session import ProdvalSession
from .settings import add_options, add_short_env_option, load_settings, refuse_production

_SETTINGS_KEY = pytest.StashKey[Any]()
_SIGTERM_KEY = pytest.StashKey[Any]()


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    """Register pytest_prodval_* hooks."""
    pluginmanager.add_hookspecs(hookspecs)


@pytest.hookimpl(trylast=True)
def pytest_prodval_seed_users(
    config: pytest.Config, base_url: str, emails: list[str], password: str, admin_token: str | None
) -> Any:
    """Default seeding: register the pool over HTTP, repairing passwords with the admin token."""
    from .seeding import seed_users

    return seed_users(base_url, emails=emails, password=password, admin_token=admin_token)


@pytest.hookimpl(trylast=True)
def pytest_prodval_bypass_controller(config: pytest.Config, prepared: Any, session: Any) -> Any:
    """Default bypass switch: the stack's admin endpoint, authorised by PRODVAL_ADMIN_TOKEN."""
    from .bypass import HttpBypass

    token = session.admin_token
    if not token:
        raise pytest.UsageError(
            "the rate-limit bypass was requested but PRODVAL_ADMIN_TOKEN is not set "
            "(or implement pytest_prodval_bypass_controller)"
        )
    return HttpBypass(prepared.base_url, token)


def pytest_addoption(parser: pytest.Parser) -> None:
    """Namespaced options; `--env` is added after the initial conftests (see below)."""
    add_options(parser)


@pytest.hookimpl(wrapper=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> Generator[None]:
    """Add the short `--env` only if no conftest defined its own: a clash would stop pytest."""
    result = yield
    add_short_env_option(parser)
    return result


def pytest_configure(config: pytest.Config) -> None:
    """Validate settings and files once; idle when no environment is chosen."""
    config.addinivalue_line("markers", "prodval_scenario(name): run this test against a scenario's k6 run (id or marker)")
    settings = load_settings(config)
    config.stash[_SETTINGS_KEY] = settings
    if not settings.active:
        _register_markers_quietly(config, settings.scenarios_dir)
        return
    try:
        catalogue = load_catalogue(settings.scenarios_dir)
    except ScenarioFileError as exc:
        raise pytest.UsageError(str(exc)) from None
    for scenario in catalogue.scenarios:
        config.addinivalue_line("markers", f"{scenario.marker}: scenario {scenario.id} — {scenario.description}")
    if settings.profile is not None and settings.profile not in catalogue.profiles:
        raise pytest.UsageError(
            f"--prodval-profile {settings.profile!r}: unknown profile; expected one of {', '.join(sorted(catalogue.profiles))}"
        )
    environment = None
    if settings.env is not None:
        environment = catalogue.environments.get(settings.env)
        if environment is None:
            known = ", ".join(sorted(catalogue.environments)) or "none"
            raise pytest.UsageError(
                f"environment {settings.env!r} ({settings.env_source}) is not defined in "
                f"{settings.scenarios_dir / '_environments.toml'}; known: {known}"
            )
        # Before the variables are expanded (an environment marked production needs none of
        # them to be refused), and after (a variable may point at a production host).
        refuse_production(environment, settings.production_hosts)
        if not settings.from_results:
            try:
                environment = resolve_environment(environment)
            except ScenarioFileError as exc:
                raise pytest.UsageError(str(exc)) from None
            refuse_production(environment, settings.production_hosts)
    if settings.bypass and environment is not None and not environment.embedded and not settings.from_results:
        _require_bypass_switch(config)
    session = ProdvalSession(config, settings, catalogue, environment)
    config.stash[SESSION_KEY] = session
    config.add_cleanup(session.cleanup)
    _collect_scenarios_by_default(config, settings.scenarios_dir)
    _install_sigterm(config)
    config.pluginmanager.register(JunitSystemOut(config), "prodval-junit")
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(XdistHooks(), "prodval-xdist")


def _require_bypass_switch(config: pytest.Config) -> None:
    """The bypass needs PRODVAL_ADMIN_TOKEN for the default switch, or a switch of the user's own."""
    import sys

    ours = sys.modules[__name__]
    impls = config.pluginmanager.hook.pytest_prodval_bypass_controller.get_hookimpls()
    if not os.environ.get("PRODVAL_ADMIN_TOKEN") and all(impl.plugin is ours for impl in impls):
        raise pytest.UsageError(
            "the rate-limit bypass was requested (--prodval-bypass / RATE_LIMIT_BYPASS_ENABLED) but PRODVAL_ADMIN_TOKEN "
            "is not set: set it, or implement pytest_prodval_bypass_controller to switch the bypass your way"
        )


def _register_markers_quietly(config: pytest.Config, folder: Path) -> None:
    """`pytest --markers` lists scenario markers even when idle; broken files are ignored here."""
    try:
        catalogue = load_catalogue(folder) if folder.is_dir() else None
    except ScenarioFileError:
        return
    for scenario in catalogue.scenarios if catalogue else []:
        config.addinivalue_line("markers", f"{scenario.marker}: scenario {scenario.id} — {scenario.description}")


def _collect_scenarios_by_default(config: pytest.Config, folder: Path) -> None:
    """`pytest -m target_scale --env staging` needs no path: add the scenarios folder.

    Only when the user named no paths; `pytest scenarios/baseline.toml --env local` works too.
    """
    if config.args_source == pytest.Config.ArgsSource.ARGS:
        return
    resolved = [Path(arg.split("::")[0]).resolve() for arg in config.args]
    if not any(folder.resolve() == path or folder.resolve().is_relative_to(path) for path in resolved):
        config.args.append(str(folder))


def _install_sigterm(config: pytest.Config) -> None:
    """pytest ignores SIGTERM; turn it into KeyboardInterrupt for an orderly teardown."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        config.stash[_SIGTERM_KEY] = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not in the main thread
        pass


def pytest_unconfigure(config: pytest.Config) -> None:
    """Restore the SIGTERM handler."""
    previous = config.stash.get(_SIGTERM_KEY, None)
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


class XdistHooks:
    """Registered only when pytest-xdist is installed: data from the controller to workers."""

    def pytest_configure_node(self, node: Any) -> None:
        """Send the shared folder and the prepared target to a worker."""
        session = node.config.stash.get(SESSION_KEY, None)
        if session is None:
            return
        node.workerinput["prodval_shared"] = str(session.shared_dir)
        if session.prepared is not None:
            node.workerinput["prodval_prepared"] = session.prepared.model_dump_json()


def _uses_xdist(config: pytest.Config) -> bool:
    return not hasattr(config, "workerinput") and getattr(config.option, "dist", "no") != "no" and bool(
        getattr(config.option, "numprocesses", None) or getattr(config.option, "tx", None)
    )


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """Under xdist, the controller prepares the target (seeding, bypass) before workers start."""
    prodval = session.config.stash.get(SESSION_KEY, None)
    if prodval is None or prodval.environment is None or prodval.settings.from_results or not _uses_xdist(session.config):
        return
    prodval.prepare()
    prodval.start_session_bypass()


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    """Scenario files in the scenarios folder are test files."""
    session = parent.config.stash.get(SESSION_KEY, None)
    if session is None or file_path.suffix != ".toml" or file_path.name.startswith("_"):
        return None
    if file_path.resolve().parent != session.settings.scenarios_dir.resolve():
        return None
    return ScenarioFile.from_parent(parent, path=file_path)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A user test that requests `prodval_run` runs once per scenario, marked with its marker."""
    if "prodval_run" not in metafunc.fixturenames or metafunc.definition.get_closest_marker("prodval_scenario"):
        return
    session = metafunc.config.stash.get(SESSION_KEY, None)
    scenarios = session.catalogue.scenarios if session is not None else []
    metafunc.parametrize(
        "prodval_run",
        [pytest.param(s.id, id=s.marker, marks=getattr(pytest.mark, s.marker)) for s in scenarios],
        indirect=True,
    )


def pytest_itemcollected(item: pytest.Item) -> None:
    """A test marked `prodval_scenario("x")` also carries x's marker, so `-m x` selects it."""
    marker = item.get_closest_marker("prodval_scenario")
    session = item.config.stash.get(SESSION_KEY, None)
    if marker is None or session is None or not marker.args:
        return
    try:
        item.add_marker(session.catalogue.scenario(marker.args[0]).marker)
    except KeyError:
        pass  # the fixture reports the unknown scenario as an error


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """After -m/-k selection: the pool must cover the peak VUs of every selected scenario."""
    session = config.stash.get(SESSION_KEY, None)
    if session is None or session.settings.from_results or session.environment is None:
        return
    from .preflight import PoolTooSmall, check_pool_size

    selected = {item.scenario.id: item.scenario for item in items if isinstance(item, CriterionItem)}
    if selected:
        session.seed_count = min(session.pool.size, max(s.peak_vus for s in selected.values()))
    for scenario in selected.values():
        try:
            check_pool_size(session.pool.size, scenario.peak_vus, scenario.id)
        except PoolTooSmall as exc:
            raise pytest.UsageError(
                f"{exc} ({scenario.player_vus} players + {scenario.peak_vus - scenario.player_vus} WebSocket companion VUs)"
            ) from None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the criterion's values to its report (for JUnit system-out and xdist)."""
    report = yield
    if isinstance(item, CriterionItem) and report.when in ("setup", "call") and (report.when == "call" or report.failed):
        data = item.junit_data()
        report.sections.append(("prodval", "\n".join(f"{k}={v}" for k, v in data.items())))
        settings = item.config.stash[_SETTINGS_KEY]
        if settings.junit_properties:
            item.user_properties.extend((f"prodval.{k}", v) for k, v in data.items())
    return report


def pytest_report_header(config: pytest.Config) -> list[str]:
    """The settings and where each came from."""
    settings = config.stash.get(_SETTINGS_KEY, None)
    return settings.header_lines() if settings is not None else []


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Per scenario, every criterion's value, and the overall GO / NO-GO."""
    session = config.stash.get(SESSION_KEY, None)
    if session is None:
        return
    outcomes = session.shared_outcomes()
    terminal.write_summary(terminalreporter, outcomes)
    if outcomes and session.settings.from_results is None and not session.is_worker:
        terminal.write_folder_decision(terminalreporter, session.settings.results_dir, session.settings.env)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop the session's bypass; the controller updates the capacity docs if asked."""
    prodval = session.config.stash.get(SESSION_KEY, None)
    if prodval is None:
        return
    prodval.stop_session_bypass()
    if prodval.settings.update_docs and not prodval.is_worker:
        from .capacity_docs import update_capacity_docs

        reports = [o.report for o in prodval.shared_outcomes() if o.report is not None and o.report.k6_exit_code is not None]
        if reports:
            update_capacity_docs(reports, Path(session.config.rootpath) / "docs")
