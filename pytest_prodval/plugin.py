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
from typing import TYPE_CHECKING, Any

import pytest

from . import hookspecs
from .ci_reports import CiReports
from .extras import CriterionExtras
from .facts import BYPASS_TOKEN_VAR
from .fixtures import (  # noqa: F401 (fixtures of the entry-point module)
    prodval_bypass, prodval_pool, prodval_preflight, prodval_run, prodval_session, prodval_settings, prodval_target,
)
from .junit import JunitSystemOut
from .items import SESSION_KEY
from .scenarios import Environment, ScenarioFileError, load_catalogue, resolve_environment
from .session import ProdvalSession
from .target import Prepared

if TYPE_CHECKING:
    from .bypass import BypassController
from .settings import add_options, add_short_env_option, load_settings, refuse_production, with_executor_overrides

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
def pytest_prodval_bypass_controller(config: pytest.Config, prepared: Prepared, session: ProdvalSession) -> BypassController:
    """Default bypass switch, the first that applies: the environment's `bypass_on`/`bypass_off`
    commands; the admin endpoint with PRODVAL_ADMIN_TOKEN (the embedded stack); the bypass
    header alone when RATE_LIMIT_BYPASS_TOKEN is set (a target configured for it, like RingRift)."""
    from .bypass import default_switch

    controller = default_switch(session.environment, session.admin_token, prepared.base_url or "", os.environ)
    if controller is None:
        raise pytest.UsageError(_NO_SWITCH)
    return controller


_NO_SWITCH = (
    "the rate-limit bypass was requested (--prodval-bypass / RATE_LIMIT_BYPASS_ENABLED) but there is no way to switch it: "
    "set bypass_on/bypass_off commands for the environment in _environments.toml, PRODVAL_ADMIN_TOKEN for an admin "
    f"endpoint, or {BYPASS_TOKEN_VAR} when the target is configured with a bypass token; or implement "
    "pytest_prodval_bypass_controller"
)


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
            if not environment.embedded:
                _check_urls(environment)
    if environment is not None:
        environment = with_executor_overrides(environment, settings, settings.scenarios_dir / "_environments.toml")
    if settings.bypass and environment is not None and not environment.embedded and not settings.from_results:
        _require_bypass_switch(config, environment)
    session = ProdvalSession(config, settings, catalogue, environment)
    config.stash[SESSION_KEY] = session
    config.add_cleanup(session.close)
    config.pluginmanager.register(session, "prodval-session")
    _collect_scenarios_by_default(config, settings.scenarios_dir)
    _install_sigterm(config)
    config.pluginmanager.register(JunitSystemOut(config), "prodval-junit")
    config.pluginmanager.register(CiReports(session), "prodval-ci-reports")
    config.pluginmanager.register(CriterionExtras(session.redactor), "prodval-extras")
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(XdistHooks(), "prodval-xdist")


def _check_urls(environment: Environment) -> None:
    """A URL that cannot be used is a usage error at start, naming the environment and the value."""
    from .target import normalise_ws_url

    for field in ("base_url", "ai_service_url", "metrics_url", "prometheus_url"):
        value = getattr(environment, field)
        if value and not value.startswith(("http://", "https://")):
            raise pytest.UsageError(f"environment {environment.name!r}: {field} {value!r} is not an http(s):// URL")
    if not environment.base_url:
        raise pytest.UsageError(f"environment {environment.name!r}: base_url is not set")
    try:
        normalise_ws_url(environment.ws_url or "")
    except ValueError as exc:
        raise pytest.UsageError(f"environment {environment.name!r}: ws_url: {exc}") from None


def _require_bypass_switch(config: pytest.Config, environment: Environment) -> None:
    """The bypass needs a switch (see the default pytest_prodval_bypass_controller): a usage error at start."""
    import sys

    from .bypass import default_switch

    ours = sys.modules[__name__]
    impls = config.pluginmanager.hook.pytest_prodval_bypass_controller.get_hookimpls()
    has_default = default_switch(environment, os.environ.get("PRODVAL_ADMIN_TOKEN"), "", os.environ) is not None
    if not has_default and all(impl.plugin is ours for impl in impls):
        raise pytest.UsageError(_NO_SWITCH)


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
    """Unregister the session and restore the SIGTERM handler."""
    session = config.stash.get(SESSION_KEY, None)
    if session is not None:
        config.pluginmanager.unregister(session)
        del config.stash[SESSION_KEY]
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
        node.workerinput["prodval_shared"] = str(session.runs.folder)
        if session.prepared is not None:
            node.workerinput["prodval_prepared"] = session.prepared.model_dump_json()


def pytest_report_header(config: pytest.Config) -> list[str]:
    """The settings and where each came from."""
    settings = config.stash.get(_SETTINGS_KEY, None)
    lines = settings.header_lines() if settings is not None else []
    session = config.stash.get(SESSION_KEY, None)
    if session is not None and session.outputs:
        lines.append(f"prodval: extra k6 outputs: {', '.join(session.outputs.described())} "
                     "(samples tagged testid, scenario_id, env)")
    return lines
