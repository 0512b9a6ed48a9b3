"""The fixtures of a run, in the README's order. Imported into the entry-point module.

    prodval_target → prodval_preflight → prodval_pool → prodval_bypass → prodval_run

Every criterion item requests `prodval_run`; the session-scoped steps before it run once
(`pytest --setup-show` shows them). Override any of them in a conftest, the way
pytest-django's `django_db_setup` is overridden: e.g. a `prodval_target` that starts your
own stack and returns a `pytest_prodval.target.Target`. Teardown (bypass off, embedded
stack stopped) is fixture teardown, which pytest also runs on Ctrl-C and SIGTERM; if
pytest is killed (-9) the bypass lease runs out on the target by itself.

Under xdist the controller runs these steps itself before the workers start (side effects
once per session); the workers' fixtures return the controller's results.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .items import SESSION_KEY, CriterionItem
from .models import BypassRecord
from .session import ProdvalSession
from .settings import Settings
from .sharing import RunOutcome
from .target import Prepared, Target


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
def prodval_target(prodval_session: ProdvalSession) -> Iterator[Target]:
    """Step 1: where the load goes — the environment's URLs, or the embedded stack (`--env local`).

    The embedded stack is stopped at teardown. Does not work with --prodval-from-results
    (there is no live target): the test is skipped.
    """
    if not prodval_session.live:
        pytest.skip("no live target when re-judging results (--prodval-from-results)")
    with prodval_session.open_target() as target:
        yield target


@pytest.fixture(scope="session")
def prodval_preflight(prodval_session: ProdvalSession, prodval_target: Target) -> Prepared:
    """Step 2: the clean-signal preflight of plan §3 (k6, /health of API and AI service, the
    Socket.IO endpoint, password alignment and rule, pool >= peak VUs).

    A failure is an ERROR of every item with the reason and the plan's hint, and every
    selected scenario's report says so; k6 never starts.
    """
    prepared = prodval_session.preflight(prodval_target)
    if prepared.error:
        prodval_session.fail_preflight(prepared)
    return prepared


@pytest.fixture(scope="session")
def prodval_pool(prodval_session: ProdvalSession, prodval_target: Target, prodval_preflight: Prepared) -> Prepared:
    """Step 3: the user pool — seeded (default for `local`, else --prodval-seed), pool user 1
    logs in, the token TTL is known (plan §3.2, §3.5). Failure: as for the preflight."""
    prepared = prodval_session.seed_and_probe(prodval_preflight, prodval_target)
    if prepared.error:
        prodval_session.fail_preflight(prepared)
    return prepared


@pytest.fixture(scope="session")
def prodval_bypass(prodval_session: ProdvalSession, prodval_target: Target, prodval_pool: Prepared) -> Iterator[BypassRecord | None]:
    """Step 4: the staging rate-limit bypass (plan §3.4) when asked for, on a lease, always
    turned off at teardown. None when the bypass is not used."""
    with prodval_session.bypass(prodval_pool, prodval_target) as record:
        if prodval_pool.error:
            prodval_session.fail_preflight(prodval_pool)
        yield record


@pytest.fixture
def prodval_run(request: pytest.FixtureRequest, prodval_session: ProdvalSession) -> RunOutcome:
    """Step 5: the scenario's k6 run (its SloReport in `.report`), shared by its criterion items.

    k6 runs once per scenario per pytest invocation, for the first test that asks. In your
    own tests pick the scenario with `@pytest.mark.prodval_scenario("baseline")` (id or
    marker); without the marker the test is parametrized over every scenario and carries
    its marker, so `-m target_scale` selects it. A run that could not be judged (preflight,
    k6 crash) is an ERROR of the test.
    """
    node = request.node
    if isinstance(node, CriterionItem):
        scenario = node.scenario
    else:
        marker = node.get_closest_marker("prodval_scenario")
        key = str(marker.args[0] if marker and marker.args else getattr(request, "param", ""))
        try:
            scenario = prodval_session.catalogue.scenario(key)
        except KeyError:
            known = ", ".join(s.marker for s in prodval_session.catalogue.scenarios)
            raise pytest.UsageError(f"prodval_scenario({key!r}): no such scenario; known: {known}") from None
        prodval_session.selected.setdefault(scenario.id, scenario)
    if prodval_session.live:
        request.getfixturevalue("prodval_bypass")  # and through it the target, preflight and pool
    outcome = prodval_session.outcome(scenario)
    if outcome.report is None and not isinstance(node, CriterionItem):
        pytest.fail(f"{scenario.id}: {outcome.error}", pytrace=False)
    return outcome
