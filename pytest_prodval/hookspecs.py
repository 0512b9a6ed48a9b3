"""Hooks a user (conftest or plugin) can implement to change how pytest-prodval acts."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .artifacts import RunPaths
    from .bypass import BypassController
    from .models import SloReport
    from .scenarios import Scenario
    from .seeding import SeedResult
    from .session import ProdvalSession
    from .target import Prepared


@pytest.hookspec(firstresult=True)
def pytest_prodval_seed_users(
    config: pytest.Config, base_url: str, emails: list[str], password: str, admin_token: str | None
) -> SeedResult | None:
    """Create (or repair) the load-test user pool; the default registers users over HTTP.

    Return a result to stop other implementations (e.g. seed through your own admin API or
    database). Raise to fail the preflight: every item then ERRORs with your message.
    Runs once per session, on the xdist controller.
    """


@pytest.hookspec(firstresult=True)
def pytest_prodval_bypass_controller(config: pytest.Config, prepared: Prepared, session: ProdvalSession) -> BypassController | None:
    """Return the object that turns the staging rate-limit bypass on and off.

    The default: the environment's `bypass_on`/`bypass_off` commands (`bypass.CommandBypass`),
    else the admin endpoint with PRODVAL_ADMIN_TOKEN (`bypass.HttpBypass`), else the header
    alone when RATE_LIMIT_BYPASS_TOKEN is set (`bypass.HeaderBypass`); or return your own.
    """


def pytest_prodval_run_finished(config: pytest.Config, report: SloReport, paths: RunPaths) -> None:
    """Called after a scenario's artifacts are written (also when criteria fail or the run broke)."""


def pytest_prodval_before_k6(config: pytest.Config, scenario: Scenario, prepared: Prepared, session: ProdvalSession) -> None:
    """Called right before a scenario's k6 process starts (after preflight, seeding and bypass).

    For last-moment setup against the target: warm caches, switch feature flags, or on the
    embedded stack inject faults through its admin API (`session.admin_token`). An exception
    here makes every item of the scenario an ERROR; k6 does not start.
    """


def pytest_prodval_preflight(config: pytest.Config, prepared: Prepared, session: ProdvalSession) -> None:
    """Add your own clean-signal checks after the built-in preflight (tools, health, passwords, login).

    Raise `pytest_prodval.preflight.PreflightError(reason, check=..., hint=...)` to stop: every
    item of the scenario then ERRORs with your reason and hint, and k6 never starts. Runs once
    per session, on the xdist controller.
    """
