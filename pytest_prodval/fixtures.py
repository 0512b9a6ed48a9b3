"""User-facing fixtures. Imported into the entry-point module (plugin.py)."""

from __future__ import annotations

import pytest

from .items import SESSION_KEY
from .session import Prepared, ProdvalSession, RunOutcome
from .settings import Settings


@pytest.fixture(scope="session")
def prodval_session(pytestconfig: pytest.Config) -> ProdvalSession:
    """The session object (scenarios, environment, outcomes). Skips when no environment is chosen."""
    session = pytestconfig.stash.get(SESSION_KEY, None)
    if session is None:
        pytest.skip("pytest-prodval is idle: choose an environment with --env / --prodval-env")
    return session


@pytest.fixture(scope="session")
def prodval_settings(prodval_session: ProdvalSession) -> Settings:
    """The validated settings of this session."""
    return prodval_session.settings


@pytest.fixture(scope="session")
def prodval_target(prodval_session: ProdvalSession) -> Prepared:
    """The preflighted target (URLs, k6 version, token TTL). A failed preflight is an ERROR.

    Under xdist this is the controller's preflight; workers never seed or toggle the bypass.
    Does not work with --prodval-from-results (there is no live target).
    """
    if prodval_session.settings.from_results is not None:
        pytest.skip("no live target when re-evaluating results (--prodval-from-results)")
    prepared = prodval_session.prepare() if not prodval_session.is_worker else prodval_session.prepared
    if prepared is None or prepared.error:
        hint = f" (hint: {prepared.hint})" if prepared and prepared.hint else ""
        raise RuntimeError(f"{prepared.error if prepared else 'no prepared target'}{hint}")
    return prepared


@pytest.fixture
def prodval_run(request: pytest.FixtureRequest, prodval_session: ProdvalSession) -> RunOutcome:
    """The scenario's run (its SloReport in `.report`), shared with the criterion items.

    Pick the scenario with `@pytest.mark.prodval_scenario("baseline")` (id or marker); without
    the marker the test is parametrized over every scenario and carries its marker, so
    `-m target_scale` selects it. k6 still runs once per scenario. A run that could not be
    judged (preflight, k6 crash) is an ERROR of this test.
    """
    marker = request.node.get_closest_marker("prodval_scenario")
    key = str(marker.args[0] if marker and marker.args else getattr(request, "param", ""))
    try:
        scenario = prodval_session.catalogue.scenario(key)
    except KeyError:
        known = ", ".join(s.marker for s in prodval_session.catalogue.scenarios)
        raise pytest.UsageError(f"prodval_scenario({key!r}): no such scenario; known: {known}") from None
    outcome = prodval_session.outcome(scenario)
    if outcome.report is None:
        raise RuntimeError(f"{scenario.id}: {outcome.error}")
    return outcome
