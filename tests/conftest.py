"""Shared test helpers: a copy of the project's scenarios and k6-like results written by hand."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, NoReturn

import httpcore  # noqa: F401  (see below: imported here so that it is imported once)
import httpx
import pytest

from pytest_prodval.scenarios import load_catalogue

REPO = Path(__file__).resolve().parent.parent
SCENARIOS = REPO / "scenarios"

# The inner pytest runs (pytester, subprocesses) need none of the third-party plugins this
# machine may have installed: hypothesis alone costs 1.4 s of imports per pytest start, and
# every pytester run starts pytest again. Blocking a plugin that is not installed is a no-op.
INNER_PYTEST_ADDOPTS = "-p no:hypothesispytest -p no:benchmark"
os.environ["PYTEST_ADDOPTS"] = f"{os.environ.get('PYTEST_ADDOPTS', '')} {INNER_PYTEST_ADDOPTS}".strip()


@pytest.fixture(autouse=True)
def _quiet_inner_pytest(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """pytester clears PYTEST_ADDOPTS for its runs: set it again for them."""
    if "pytester" in request.fixturenames:
        request.getfixturevalue("pytester")
        monkeypatch.setenv("PYTEST_ADDOPTS", INNER_PYTEST_ADDOPTS)

# httpx imports httpcore lazily, on its first client, and maps httpcore's exceptions to its own
# from a table filled on first use. An in-process pytester run drops the modules imported during
# it: if the first client of a test process is made inside one, httpcore is imported again later,
# its exceptions no longer match the table, and a raw httpcore.ReadTimeout escapes every
# `except httpx.HTTPError` (the stack launcher's health wait, the preflight, seeding). Which
# test makes the first client depends on the order, so under xdist it bit; imported above, it
# stays the one httpcore of the process.

# The tests that run real k6 under `-n 2 --dist loadgroup` (the README's test command): two
# groups, each run test after test on one worker, so at most two k6 runs at a time on the 2 cores
# (a smoke run takes about a third of a core: k6, the stack and pytest together) and a module's
# shared stack starts once. xdist hands out the group with the most tests first, then the other,
# then every other test one by one to whichever worker runs short. The groups are balanced by
# measured time (one at a time, 2 cores); a new test file of real load joins the shorter one.
XDIST_GROUPS: dict[str, str] = {
    "test_run_safety.py": "load-a",  # ~115 s
    "test_prometheus_source.py": "load-a",  # ~40 s
    "test_end_to_end.py": "load-a",  # ~17 s
    "test_criteria_faults.py": "load-b",  # ~95 s
    "test_k6_script.py": "load-b",  # ~85 s
    "test_k6_failures.py": "load-b",  # ~8 s
    "test_own_script.py": "load-a",  # ~60 s (one module-scoped k6 run, re-judged offline)
    "test_outputs.py": "load-a",  # ~12 s
    "test_aborts.py": "load-b",  # ~8 s
    "test_exact_segments.py": "load-b",  # 5 k6 processes at once: never beside another run
    "test_k6_operator.py": "load-b",
    "test_fixtures_flow.py": "load-a",
}


def pytest_configure(config: pytest.Config) -> None:
    # xdist registers the mark when it is installed; a plain `pip install -e .` (the README's main
    # command collects this folder too) must not warn about it.
    config.addinivalue_line("markers", "xdist_group(name): run these tests on one xdist worker")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        group = XDIST_GROUPS.get(item.path.name)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture
def scenarios_dir(pytester: pytest.Pytester) -> Path:
    """The project's scenario files copied into the pytester folder."""
    target = pytester.path / "scenarios"
    shutil.copytree(SCENARIOS, target)
    return target


@pytest.fixture
def smoke_scenarios(scenarios_dir: Path) -> Path:
    """The project's scenarios plus `smoke` (tests/data/smoke.toml): real k6 in ~20 s."""
    shutil.copy(REPO / "tests" / "data" / "smoke.toml", scenarios_dir / "smoke.toml")
    return scenarios_dir


def reset_stack(stack: Any) -> None:
    """A shared reference stack back to its defaults: every fault knob, and the bypass off."""
    stack.set_faults(reset=True)
    stack.set_ai_faults(reset=True)
    response = httpx.post(f"{stack.base_url}/api/admin/rate-limit-bypass", json={"enabled": False},
                          headers={"X-Admin-Token": stack.admin_token}, timeout=5)
    assert response.status_code == 200, response.text


def require_tool(*names: str, install: str) -> str:
    """The first of `names` on PATH. Missing: a failure in CI (the env var CI is set, as in
    .ci/run), where the suite must really run it; a skip on a developer's machine."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    missing(f"{names[0]} is not installed ({install})")


def require_module(name: str, *, install: str = 'pip install -e ".[test]"') -> Any:
    """The imported module `name` (a test extra). Missing: a failure in CI (the env var CI is set),
    where the suite must really run the tests that need it; a skip of the whole module elsewhere
    (a plain `pip install -e .` still collects the other tests). Not `pytest.importorskip`: it
    skips in CI too."""
    import importlib

    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        message = f"{name} is not installed ({install}): {exc}"
    missing(message)


def missing(message: str) -> NoReturn:
    """A requirement of the suite is absent: a failure when CI is set, a skip (of the test, or of
    the module while it is imported) elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(f"{message}: required when CI is set", pytrace=False)
    pytest.skip(message, allow_module_level=True)


PROMETHEUS_INSTALL = "apt-get install -y --no-install-recommends prometheus"


@contextmanager
def prometheus_server(folder: Path, targets: Sequence[str], *, job: str, interval_s: float = 1.0,
                      ready_timeout_s: float = 15.0, wait_scraped: bool = False,
                      extra_args: Sequence[str] = ()) -> Iterator[str]:
    """A real Prometheus (Debian's binary) on a free 127.0.0.1 port scraping `targets` (host:port,
    path /metrics) as `job` every `interval_s`; config, tsdb and log in `folder`. Yields its URL once
    ready (with `wait_scraped`, once every target has been scraped up: Prometheus hands targets to its
    scrape manager only ~5 s after start); stopped by its PID (process group) on exit. `extra_args`
    go to Prometheus as given (e.g. `--web.enable-remote-write-receiver`); no targets, no scraping.
    Missing binary: `require_tool` (fail in CI, skip here)."""
    import httpx

    from pytest_prodval.processes import free_loopback_port, spawn, stop

    binary = require_tool("prometheus", install=PROMETHEUS_INSTALL)
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "prometheus.yml"
    listed = ", ".join(f"'{t}'" for t in targets)
    scrape = (
        "scrape_configs:\n"
        f"  - job_name: {job}\n"
        f"    scrape_interval: {interval_s:g}s\n    scrape_timeout: {interval_s:g}s\n"
        f"    static_configs: [{{targets: [{listed}]}}]\n"
    ) if targets else ""
    config.write_text(f"global: {{scrape_interval: {interval_s:g}s, evaluation_interval: {interval_s:g}s}}\n{scrape}")
    log_path = folder / "prometheus.log"
    for _attempt in range(3):  # the free port may be taken between choosing and binding
        port = free_loopback_port()
        url = f"http://127.0.0.1:{port}"
        with log_path.open("ab") as log:
            proc = spawn([binary, f"--config.file={config}", f"--storage.tsdb.path={folder / 'tsdb'}",
                          f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn", *extra_args],
                         stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + ready_timeout_s
            ready = False
            while not ready and proc.poll() is None and time.monotonic() < deadline:
                try:
                    ready = httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
                except httpx.HTTPError:
                    pass
                if not ready:
                    time.sleep(0.1)
            if ready and wait_scraped and not _scraped(url, job, len(targets),
                                                       deadline=time.monotonic() + ready_timeout_s):
                pytest.fail(f"prometheus did not scrape {', '.join(targets)} within {ready_timeout_s:g} s: "
                            f"{log_path.read_text(errors='replace')[-2000:]}")
            if ready:
                yield url
                return
        finally:
            stop(proc, grace_s=5)
    pytest.fail(f"prometheus did not start: {log_path.read_text(errors='replace')[-2000:]}")


def _scraped(url: str, job: str, targets: int, *, deadline: float) -> bool:
    """Until Prometheus has scraped each of the job's targets successfully (up == 1)."""
    import httpx

    while time.monotonic() < deadline:
        try:
            body = httpx.get(f"{url}/api/v1/query", params={"query": f'up{{job="{job}"}} == 1'}, timeout=1).json()
            if len(body["data"]["result"]) >= targets:
                return True
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            pass
        time.sleep(0.1)
    return False


def passing_metrics(scenario_key: str, *, profile: str | None = None, scenarios: Path = SCENARIOS,
                    overrides: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """A k6 summary `metrics` object in which every criterion of the scenario holds."""
    catalogue = load_catalogue(scenarios)
    scenario = catalogue.scenario(scenario_key)
    metrics: dict[str, Any] = {}
    for criterion in catalogue.criteria_for(scenario, profile):
        name = criterion.metric.k6_name
        agg = criterion.expression.aggregation
        if criterion.metric.name.startswith("prodval_") or criterion.source == "server":
            continue  # concurrency from the raw file, server criteria from _server_metrics.json
        if agg == "rate":
            good = 1.0 if criterion.expression.operator in (">", ">=") else 0.0
            passes = 1000 if good else 0
            metrics[name] = {"type": "rate", "contains": "default", "values": {"rate": good, "passes": passes, "fails": 1000 - passes}}
        elif agg == "count":
            metrics.setdefault(name, {"type": "counter", "contains": "default", "values": {"count": 0, "rate": 0}})
        else:
            values = {"avg": 10.0, "min": 1.0, "med": 9.0, "max": 50.0, "p(90)": 20.0, "p(95)": 25.0, "p(99)": 40.0, "count": 500}
            metrics[name] = {"type": "trend", "contains": "time", "values": values}
        if criterion.samples_from is not None:
            metrics.setdefault(criterion.samples_from.k6_name,
                               {"type": "rate", "contains": "default", "values": {"rate": 0.0, "passes": 0, "fails": 4321}})
    for name, values in (overrides or {}).items():
        if values is None:
            metrics.pop(name, None)
        else:
            metrics.setdefault(name, {"type": "trend", "values": {}})["values"].update(values)
    return metrics


def write_server_metrics(path: Path, t0_ms: float, steady: tuple[float, float], *, ai_requests: int = 1000,
                         ai_fallbacks: int = 0, games_active: int = 20, move_s: float = 0.01, ai_s: float = 0.1) -> None:
    """A `_server_metrics.json` as the plugin's scraper writes it: a real prometheus_client registry
    served on 127.0.0.1, scraped (with a clock at the steady window's edges) by the real Scraper."""
    import threading
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

    from pytest_prodval.server_criteria import TRIAGE_NAMES
    from pytest_prodval.servermetrics import Scraper, save_record

    registry = CollectorRegistry()
    requests = Counter("ringrift_ai_requests_total", "AI requests", ["outcome"], registry=registry)
    fallbacks = Counter("ringrift_ai_fallback_total", "AI fallbacks", ["reason"], registry=registry)
    gauge = Gauge("ringrift_games_active", "active games", registry=registry)
    moves = Histogram("ringrift_game_move_latency_seconds", "move", ["board_type", "phase"], registry=registry,
                      buckets=[0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56])
    ai = Histogram("ringrift_ai_request_duration_seconds", "ai", ["ai_type", "difficulty"], registry=registry,
                   buckets=[0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8])

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    server = make_server("127.0.0.1", 0, make_wsgi_app(registry), handler_class=Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    now = {"t": t0_ms / 1000 + steady[0] - 5}
    try:
        names = ["ringrift_ai_requests_total", "ringrift_ai_fallback_total", "ringrift_games_active", "ringrift_game_move_latency_seconds",
                 "ringrift_ai_request_duration_seconds", *TRIAGE_NAMES]
        scraper = Scraper(f"http://127.0.0.1:{server.server_port}/metrics", names=names, clock=lambda: now["t"])
        requests.labels(outcome="success").inc(0)
        requests.labels(outcome="fallback").inc(0)
        fallbacks.labels(reason="timeout").inc(0)
        scraper.mark("before")
        gauge.set(games_active)
        requests.labels(outcome="success").inc(ai_requests - ai_fallbacks)
        requests.labels(outcome="fallback").inc(ai_fallbacks)
        fallbacks.labels(reason="timeout").inc(ai_fallbacks)
        for _ in range(100):
            moves.labels(board_type="square8", phase="movement").observe(move_s)
            ai.labels(ai_type="heuristic", difficulty="2").observe(ai_s)
        now["t"] = t0_ms / 1000 + (steady[0] + steady[1]) / 2
        scraper.mark("middle")
        now["t"] = t0_ms / 1000 + steady[1]
        scraper.mark("steady_end")
        scraper.stop()
        save_record(scraper.record(), path)
    finally:
        server.shutdown()


def write_run(folder: Path, scenario_id: str, *, metrics: dict[str, Any], games: int, players: int,
              env: str = "local", stamp: str = "20261127T010000Z", steady: tuple[float, float] | None = None,
              server: dict[str, Any] | None = None) -> Path:
    """A k6-like summary + raw file pair (and the target's scraped metrics), as a run leaves them."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{scenario_id}_{env}_{stamp}"
    t0 = 1_800_000_000_000
    if steady is None:
        scenario = next(s for s in load_catalogue(SCENARIOS).scenarios if s.id == scenario_id)
        steady = scenario.steady_window_s() or (0.0, scenario.duration_s())
    write_server_metrics(folder / f"{stem}_server_metrics.json", t0, steady, **(server or {}))
    (folder / f"{stem}_summary.json").write_text(json.dumps({"metrics": metrics, "setup_data": {"t0": t0}, "state": {}}))
    lines = []
    for metric, count in (("games_active_delta", games), ("players_active_delta", players)):
        if count == 0:
            continue  # no lifecycle points at all: concurrency has no data
        lines.append(json.dumps({"type": "Metric", "data": {"name": metric, "type": "counter"}, "metric": metric},
                                separators=(",", ":")))
        for _ in range(count):
            lines.append(_point(metric, t0 + 5_000, 1))
        lines.append(_point(metric, t0 + 3_600_000, -count))  # ends after any steady window
    with gzip.open(folder / f"{stem}.json.gz", "wt") as handle:
        handle.write("\n".join(lines) + "\n")
    return folder / f"{stem}_summary.json"


def _point(metric: str, t_ms: int, value: float) -> str:
    from datetime import datetime, timezone

    iso = datetime.fromtimestamp(t_ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return json.dumps({"metric": metric, "type": "Point",  # compact, as k6 writes it
                       "data": {"time": iso, "value": value, "tags": {"phase": "ramp", "scenario": "players"}}},
                      separators=(",", ":"))


def store_report(folder: Path, scenario_key: str, stamp: str, *, env: str = "local",
                 observed: dict[str, float] | None = None) -> Path:
    """An SLO report as a finished run leaves it: every criterion of the scenario judged, values
    half their `<` threshold (or at their `>=` one) unless `observed` says otherwise."""
    from pytest_prodval.artifacts import write_report
    from pytest_prodval.models import CriterionResult, SloReport

    catalogue = load_catalogue(SCENARIOS)
    scenario = catalogue.scenario(scenario_key)
    criteria = []
    for c in catalogue.criteria_for(scenario):
        threshold = c.expression.threshold
        value = (observed or {}).get(c.name, threshold * 0.5 if c.expression.operator in ("<", "<=") else threshold)
        verdict = "pass" if c.expression.holds(value) else ("warn" if c.level == "warn" else "fail")
        criteria.append(CriterionResult(
            name=c.name, scenario_id=scenario.id, metric=c.metric.k6_name, expression=c.expression_text,
            aggregation=c.expression.aggregation, operator=c.expression.operator, threshold=threshold, observed=value,
            unit=c.unit, profile=c.profile, samples=100, verdict=verdict, level=c.level, baseline_rule=c.baseline,
            message=f"{c.name} {value:g}"))
    report = SloReport(scenario_id=scenario.id, marker=scenario.marker, env=env, profile=scenario.profile,
                       timestamp=stamp, criteria=criteria, k6_version="v1.1.0")
    report.verdict = report.decide()
    path = folder / f"{scenario.id}_{env}_{stamp}_slo_report.json"
    folder.mkdir(parents=True, exist_ok=True)
    write_report(report, path)
    return path


def render_markdown(text: str) -> str:
    """Markdown as GitHub renders it (CommonMark with GFM tables), with markdown-it-py."""
    from markdown_it import MarkdownIt  # a test extra: missing is an error, never a skip

    return MarkdownIt("commonmark").enable("table").render(text)


def markdown_tables(text: str) -> list[list[str]]:
    """Every table row of rendered Markdown, cells as the text a reader sees."""
    parser = _Tables()
    parser.feed(render_markdown(text))
    return parser.rows


class _Tables(HTMLParser):
    """The cells of every table in rendered HTML, as text a reader sees."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _render(markdown: str) -> str:
    from markdown_it import MarkdownIt  # a test extra: missing is an error, never a skip

    return MarkdownIt("commonmark").enable("table").render(markdown)
