"""Run safety, with real processes: k6 once per scenario (also under -n 2 and in any item
order), orderly and disorderly interruption, secrets, and preflight errors before any load.

Every test starts `python -m pytest` in a pytester folder holding the project's scenarios
plus `smoke` (tests/data/smoke.toml, ~20 s of real k6); the reversed-order and the secrets
tests read one run made for both (`reversed_run_with_secrets`). What the tests observe:

* the results folder (raw, summary, SLO report, ...) and the JUnit XML;
* the process tree of that pytest, sampled from /proc every 0.1 s (`ProcWatch`): every
  `k6 run` and every other child is seen, and checked dead after pytest is gone;
* a conftest in the folder implementing the plugin's own public hooks
  (`pytest_prodval_seed_users` returns None, so the default seeder still runs;
  `pytest_prodval_run_finished`), which records in which process seeding and k6 ran;
* a reference stack started here (`teststack` environment, module scope), whose admin
  endpoint shows the rate-limit bypass after the run pytest has gone.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import REPO, SCENARIOS, reset_stack

from pytest_prodval import processes
from pytest_prodval.processes import free_loopback_port
from pytest_prodval.refstack.launcher import LocalStack
from pytest_prodval.scenarios import load_catalogue
from pytest_prodval.k6run import PoolSettings
from pytest_prodval.seeding import seed_users

SECRET_PASSWORD = "Sup3r-Secret-Value-123"
SECRET_ADMIN_TOKEN = "Adm1n-T0ken-Secret-Value-456"
SECRET_BYPASS_TOKEN = "Byp4ss-T0ken-Secret-Value-789"  # sent as X-RateLimit-Bypass-Token by seeding, preflight and k6
WRONG_PASSWORD = "Wr0ng-Pool-Pass-Value-789"
POOL_SIZE = 16  # smoke peaks at 9 player + 3 companion VUs
SMOKE_ID = "BCAP_SMOKE_4G_12P"
SMOKE_ITEMS = 29
INTERRUPTED = 2  # pytest.ExitCode.INTERRUPTED

TESTSTACK_ENV = """
[teststack]
description = "A reference stack started by tests/test_run_safety.py"
base_url = "${TESTSTACK_URL}"
ws_url = "${TESTSTACK_WS_URL}"
ai_service_url = "${TESTSTACK_AI_URL}"
metrics_url = "${TESTSTACK_URL}/metrics"
"""

OBSERVER_CONFTEST = '''
import json, os

import pytest


def _note(kind, config, **data):
    data.update(pid=os.getpid(), worker=hasattr(config, "workerinput"))
    with open(os.path.join(os.environ["RUN_SAFETY_OBS"], kind + ".jsonl"), "a") as handle:
        handle.write(json.dumps(data) + "\\n")


@pytest.hookimpl(tryfirst=True)
def pytest_prodval_seed_users(config, base_url, emails, password, admin_token):
    _note("seeding", config, users=len(emails), admin_token=admin_token)
    return None  # the plugin's default seeder still runs


def pytest_prodval_run_finished(config, report, paths):
    _note("runs", config, scenario=report.scenario_id, complete=report.complete)
'''

REVERSE_CONFTEST = '''

def pytest_collection_modifyitems(items):
    items.reverse()
'''


# -- the process tree of a pytest run ---------------------------------------------------------

def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, starttime) of a process, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[1]), int(fields[19])


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode("utf-8", "replace").split("\0")[:-1]
    except OSError:
        return []


@dataclass
class Seen:
    """A descendant of the pytest under test, as first seen."""

    pid: int
    start: int
    argv: list[str]
    seen_at: float

    @property
    def is_k6_run(self) -> bool:
        return len(self.argv) > 1 and Path(self.argv[0]).name == "k6" and self.argv[1] == "run"

    def alive(self) -> bool:
        stat = _stat(self.pid)
        return stat is not None and stat[2] == self.start and stat[0] not in ("Z", "X")


class ProcWatch:
    """Samples /proc every 0.1 s and keeps every process ever seen below `root`."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.seen: dict[tuple[int, int], Seen] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(0.1)

    def sample(self) -> None:
        parents: dict[int, tuple[int, int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                stat = _stat(int(entry))
                if stat is not None:
                    parents[int(entry)] = (stat[1], stat[2])
        with self._lock:
            for seen in self.seen.values():
                # A process that exec'd since it was first seen (a launcher such as pyenv's `k6`
                # shim, a shell script that execs the real k6): same pid and start, new argv.
                if not seen.is_k6_run and parents.get(seen.pid, (0, -1))[1] == seen.start:
                    seen.argv = _cmdline(seen.pid) or seen.argv
            known = {pid for pid, _ in self.seen} | {self.root}
            grew = True
            while grew:  # children of known processes, also reparented ones already recorded
                grew = False
                for pid, (ppid, start) in parents.items():
                    if ppid in known and pid not in known:
                        argv = _cmdline(pid)
                        self.seen[(pid, start)] = Seen(pid, start, argv, time.monotonic())
                        known.add(pid)
                        grew = True

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sample()

    @property
    def k6_runs(self) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen.values() if s.is_k6_run]

    def alive(self) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen.values() if s.alive()]

    def wait_for_k6(self, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> Seen:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            runs = self.k6_runs
            if runs:
                return runs[0]
            assert proc.poll() is None, "pytest ended before k6 started"
            time.sleep(0.05)
        raise AssertionError("k6 did not start")


# -- running pytest in a folder -----------------------------------------------------------------

@dataclass
class Run:
    """One `python -m pytest` in the project folder."""

    folder: Path
    obs: Path
    proc: subprocess.Popen[bytes]
    watch: ProcWatch
    started: float
    rc: int | None = None
    wall_s: float = 0.0
    output: str = ""
    observed: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def results(self) -> Path:
        return self.folder / "res"

    def wait(self, timeout_s: float = 120) -> Run:
        try:
            self.rc = self.proc.wait(timeout=timeout_s)
        finally:
            if self.proc.poll() is None:
                processes.stop(self.proc, grace_s=5, sig=signal.SIGKILL)
            self.wall_s = time.monotonic() - self.started
            self.watch.stop()
        self.output = (self.obs / "stdout.txt").read_text(errors="replace") + (self.obs / "stderr.txt").read_text(errors="replace")
        for kind in ("seeding", "runs"):
            path = self.obs / f"{kind}.jsonl"
            self.observed[kind] = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        return self

    def files(self, pattern: str) -> list[Path]:
        return sorted(self.results.glob(pattern)) if self.results.exists() else []

    def slo_report(self) -> dict[str, Any]:
        (path,) = self.files(f"{SMOKE_ID}_*_slo_report.json")
        return json.loads(path.read_text())

    def junit(self) -> ET.Element:
        return ET.parse(self.folder / "slo.xml").getroot()

    def no_process_left(self, within_s: float = 5.0) -> None:
        """Every process pytest started (k6, a local stack, ...) is gone."""
        deadline = time.monotonic() + within_s
        while (left := self.watch.alive()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not left, f"left running after pytest: {[(s.pid, s.argv[:3]) for s in left]}"


class Project:
    """The project folder: scenarios (+ smoke, + the `teststack` environment) and the observer conftest."""

    def __init__(self, folder: Path, obs: Path) -> None:
        self.folder = folder
        self.obs = obs
        self.runs: list[Run] = []
        (self.folder / "pytest.ini").write_text("[pytest]\n")  # no ini of an outer folder applies
        (self.folder / "conftest.py").write_text(OBSERVER_CONFTEST)
        with (self.folder / "scenarios" / "_environments.toml").open("a") as handle:
            handle.write(TESTSTACK_ENV)

    def reverse_items(self) -> None:
        with (self.folder / "conftest.py").open("a") as handle:
            handle.write(REVERSE_CONFTEST)

    def start(self, *args: str, env: dict[str, str] | None = None) -> Run:
        clean = {k: v for k, v in os.environ.items()
                 if not k.startswith(("PYTEST_", "PRODVAL_", "LOADTEST_", "SEED_LOADTEST", "RATE_LIMIT_", "TESTSTACK_"))}
        clean.update(RUN_SAFETY_OBS=str(self.obs), **(env or {}))
        argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--rootdir", str(self.folder),
                "--prodval-results-dir", "res", "-m", "smoke", *args]
        with (self.obs / "stdout.txt").open("wb") as out, (self.obs / "stderr.txt").open("wb") as err:
            # processes.spawn: own process group (a signal reaches pytest only) and PDEATHSIG.
            # A SIGINT ignored here (a background job of a non-interactive shell, as in some CI)
            # would stay ignored in the child: spawn it with Python's own handler in place.
            previous = signal.signal(signal.SIGINT, signal.default_int_handler)
            try:
                proc = processes.spawn(argv, env=clean, cwd=self.folder, stdout=out, stderr=err)
            finally:
                signal.signal(signal.SIGINT, previous)
        self.runs.append(Run(self.folder, self.obs, proc, ProcWatch(proc.pid), time.monotonic()))
        return self.runs[-1]

    def run(self, *args: str, env: dict[str, str] | None = None, timeout_s: float = 120) -> Run:
        return self.start(*args, env=env).wait(timeout_s)


def _leave_nothing_behind(project: Project) -> None:
    """A failed test leaves nothing running: the processes its runs started, by pid."""
    for run in project.runs:
        if run.proc.poll() is None:
            processes.stop(run.proc, grace_s=5, sig=signal.SIGKILL)
        for seen in run.watch.alive():
            os.kill(seen.pid, signal.SIGKILL)


@pytest.fixture
def project(smoke_scenarios: Path, pytester: pytest.Pytester, tmp_path: Path) -> Iterator[Project]:
    obs = tmp_path / "observed"  # outside the scanned folder
    obs.mkdir()
    made = Project(pytester.path, obs)
    yield made
    _leave_nothing_behind(made)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """One reference stack for the module, pool seeded with SECRET_PASSWORD, logs kept for the secret scan."""
    logs = tmp_path_factory.mktemp("teststack-logs")
    with LocalStack(admin_token=SECRET_ADMIN_TOKEN, log_dir=logs) as running:
        pool = PoolSettings(prefix="loadtest_user_", domain="loadtest.local", size=POOL_SIZE)
        result = seed_users(running.base_url, emails=[pool.email(n) for n in range(1, POOL_SIZE + 1)],
                            password=SECRET_PASSWORD, admin_token=SECRET_ADMIN_TOKEN)
        assert result.ok, result.summary()
        yield running


@pytest.fixture
def teststack(stack: LocalStack) -> Iterator[LocalStack]:
    """The module stack with default knobs and the bypass off, before and after the test."""
    reset_stack(stack)
    yield stack
    reset_stack(stack)


@pytest.fixture(scope="module")
def reversed_run_with_secrets(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """One healthy smoke run against the module stack that two tests read: its items in reverse
    order, the bypass on, every secret in play (pool password, admin token, bypass token), `-v -rA`
    printing every item. One run instead of two (~20 s of k6 less): each test still fails on its own
    property, the order of the items does not touch what is printed, and the bypass not what runs."""
    folder = tmp_path_factory.mktemp("reversed-secrets")
    shutil.copytree(SCENARIOS, folder / "scenarios")
    shutil.copy(REPO / "tests" / "data" / "smoke.toml", folder / "scenarios" / "smoke.toml")
    made = Project(folder, tmp_path_factory.mktemp("reversed-secrets-observed"))
    made.reverse_items()
    reset_stack(stack)
    try:
        # HOME and PY_COLORS as pytester sets them for the project fixture's runs.
        env = {**stack_env(stack), "RATE_LIMIT_BYPASS_TOKEN": SECRET_BYPASS_TOKEN, "HOME": str(folder), "PY_COLORS": "0"}
        yield made.run("--prodval-bypass", "true", "--junitxml", "slo.xml", "-rA", "-v", env=env)
    finally:
        _leave_nothing_behind(made)
        reset_stack(stack)


def _admin(stack: LocalStack, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    response = httpx.request(method, stack.base_url + path, json=body, headers={"X-Admin-Token": stack.admin_token}, timeout=5)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def _bypass(stack: LocalStack) -> dict[str, Any]:
    return _admin(stack, "GET", "/api/admin/rate-limit-bypass")


def stack_env(stack: LocalStack, **extra: str) -> dict[str, str]:
    """Environment of a run against the module stack (the plugin seeds, with the same password)."""
    return {"PRODVAL_ENV": "teststack",
            "TESTSTACK_URL": stack.base_url, "TESTSTACK_WS_URL": stack.ws_url, "TESTSTACK_AI_URL": stack.ai_url,
            "PRODVAL_ADMIN_TOKEN": stack.admin_token, "SEED_LOADTEST_USERS": "true",
            "LOADTEST_USER_POOL_SIZE": str(POOL_SIZE), "LOADTEST_USER_POOL_PASSWORD": SECRET_PASSWORD,
            "LOADTEST_USER_PASSWORD": SECRET_PASSWORD, **extra}


def outcomes(run: Run) -> dict[str, int]:
    """pytest's final counts: {"passed": 29, ...}."""
    line = [ln for ln in run.output.splitlines() if re.match(r"^=+ .* in [\d.]+s", ln)][-1]
    return {noun: int(n) for n, noun in re.findall(r"(\d+) (passed|failed|errors?|deselected|skipped)", line)}


def assert_one_k6_run(run: Run) -> None:
    """One k6 process, one raw + summary set, one SLO report of the smoke scenario."""
    assert len(run.watch.k6_runs) == 1, [s.argv for s in run.watch.k6_runs]
    assert len(run.files("*.json.gz")) == 1
    assert len(run.files("*_summary.json")) == 1
    assert len(run.files(f"{SMOKE_ID}_*_slo_report.json")) == 1
    assert len(run.observed["runs"]) == 1, run.observed["runs"]


def assert_no_secret(run: Run, *secrets: str) -> None:
    """No secret in any file of the folder (gz decompressed), nor in pytest's output."""
    places: dict[str, bytes] = {"terminal output": run.output.encode()}
    for path in run.folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            places[str(path.relative_to(run.folder))] = gzip.decompress(data) if path.suffix == ".gz" else data
    for secret in secrets:
        leaks = [where for where, data in places.items() if secret.encode() in data]
        assert not leaks, f"{secret!r} found in {leaks}"


# -- 1. and 2.: k6 runs once per scenario ------------------------------------------------------

@pytest.mark.slow
def test_xdist_runs_k6_once_and_seeds_on_the_controller(project: Project) -> None:
    run = project.run("--env", "local", "-n", "2", env={"LOADTEST_USER_POOL_PASSWORD": SECRET_PASSWORD, "LOADTEST_USER_PASSWORD": SECRET_PASSWORD})

    assert run.rc == 0, run.output[-3000:]
    assert f"2 workers [{SMOKE_ITEMS} items]" in run.output
    assert outcomes(run)["passed"] == SMOKE_ITEMS and "failed" not in outcomes(run) and "error" not in outcomes(run)
    assert_one_k6_run(run)
    (seeding,) = run.observed["seeding"]
    assert seeding["pid"] == run.proc.pid and not seeding["worker"] and seeding["users"] == 400
    (k6_run,) = run.observed["runs"]
    assert k6_run["worker"] and k6_run["pid"] != run.proc.pid and k6_run["complete"]
    # The embedded stack (logs in res/local-stack) never saw a secret it could log either.
    assert_no_secret(run, SECRET_PASSWORD, seeding["admin_token"])
    run.no_process_left()


@pytest.mark.slow
def test_reversed_item_order_still_runs_k6_once(reversed_run_with_secrets: Run) -> None:
    run = reversed_run_with_secrets

    assert run.rc == 0, run.output[-3000:]
    assert outcomes(run)["passed"] == SMOKE_ITEMS
    # `-v` lines in the order the items ran ("<path>::<scenario>::<name> PASSED [ n%]"; -rA's summary
    # lines start with PASSED and are not counted)
    ran = [m[1] for ln in run.output.splitlines() if (m := re.match(rf"^\S+::{SMOKE_ID}::(\w+) PASSED", ln))]
    catalogue = load_catalogue(run.folder / "scenarios")
    names = [c.name for c in catalogue.criteria_for(catalogue.scenario("smoke"))]
    assert len(ran) == SMOKE_ITEMS and ran == names[::-1]  # reversed
    assert_one_k6_run(run)
    assert len(run.observed["seeding"]) == 1


# -- 3., 4., 5.: interrupted runs -----------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_mid_run_stops_k6_writes_incomplete_artifacts_and_disables_bypass(
    project: Project, teststack: LocalStack, sig: signal.Signals
) -> None:
    run = project.start("--prodval-bypass", "true", "--junitxml", "slo.xml", env=stack_env(teststack))
    k6 = run.watch.wait_for_k6(run.proc)
    assert _bypass(teststack)["enabled"] is True  # on during k6 (default 120 s lease: only `disable` ends it now)
    time.sleep(max(0.0, k6.seen_at + 3 - time.monotonic()))  # VUs playing, ~10 s of stages to go
    assert run.proc.poll() is None and k6.alive()
    run.proc.send_signal(sig)
    signalled = time.monotonic()
    run.wait(timeout_s=60)
    stopped_in_s = time.monotonic() - signalled
    bypass = _bypass(teststack)

    assert bypass["enabled"] is False, bypass
    assert run.rc == INTERRUPTED, run.output[-3000:]
    assert "Interrupted: interrupted by signal during a k6 run" in run.output
    # Waiting for k6 to end would take its ~10 s of stages and more; a prompt stop takes a few seconds.
    assert stopped_in_s < 8, f"pytest took {stopped_in_s:.1f} s after the signal (k6 had ~10 s to go)"
    run.no_process_left()
    assert_one_k6_run(run)
    report = run.slo_report()
    assert report["complete"] is False and "interrupted" in report["incomplete_reason"]
    assert report["criteria"] and {c["verdict"] for c in report["criteria"]} == {"error"}
    assert report["bypass"]["enabled_at"] and report["bypass"]["disabled_at"]
    for kind in ("raw", "summary", "k6_log", "html", "slo_report"):
        assert (run.results / report["artifacts"][kind]).exists(), kind
    counts = outcomes(run)
    assert counts.get("error", counts.get("errors")) == 1 and "passed" not in counts  # stopped after the first item
    assert len(run.junit().findall(".//testcase/error")) == 1 and not run.junit().findall(".//testcase/failure")


@pytest.mark.slow
def test_kill_9_mid_run_leaves_no_k6_and_the_bypass_ends_with_its_lease(project: Project, teststack: LocalStack) -> None:
    lease_s = 3.0
    run = project.start("--prodval-bypass", "true", env=stack_env(teststack, PRODVAL_BYPASS_LEASE_S=f"{lease_s:g}"))
    k6 = run.watch.wait_for_k6(run.proc)
    time.sleep(max(0.0, k6.seen_at + 5 - time.monotonic()))
    assert _bypass(teststack)["enabled"] is True  # renewed past its 3 s lease while pytest lives
    run.proc.kill()
    killed = time.monotonic()
    run.wait(timeout_s=10)

    assert run.rc == -signal.SIGKILL
    run.no_process_left(within_s=2)  # k6 dies with pytest (PR_SET_PDEATHSIG)
    still = _bypass(teststack)
    assert still["enabled"] is True and still["expiresAt"] - time.time() <= lease_s  # nobody turned it off ...
    while _bypass(teststack)["enabled"] and time.monotonic() - killed < lease_s + 2:
        time.sleep(0.1)
    assert _bypass(teststack)["enabled"] is False  # ... the lease ran out
    assert time.monotonic() - killed <= lease_s + 1


@pytest.mark.slow
def test_kill_9_mid_run_takes_the_embedded_stack_and_k6_along(project: Project) -> None:
    run = project.start("--env", "local")  # the plugin starts the reference stack itself
    k6 = run.watch.wait_for_k6(run.proc)
    time.sleep(max(0.0, k6.seen_at + 3 - time.monotonic()))
    stack = [s for s in run.watch.alive() if "pytest_prodval.refstack.api" in s.argv or "pytest_prodval.refstack.ai" in s.argv]
    assert len(stack) == 2 and k6.alive()
    run.proc.kill()
    run.wait(timeout_s=10)

    assert run.rc == -signal.SIGKILL
    run.no_process_left(within_s=2)


# -- 6. secrets -------------------------------------------------------------------------------------

@pytest.mark.slow
def test_secrets_appear_nowhere(reversed_run_with_secrets: Run, stack: LocalStack) -> None:
    run = reversed_run_with_secrets

    assert run.rc == 0, run.output[-3000:]
    assert outcomes(run)["passed"] == SMOKE_ITEMS
    assert_one_k6_run(run)
    assert len(run.files("websocket_*")) == 2 and run.files("*_k6_dashboard.html") and run.files("*_report.html")
    assert "prodval" in run.output and len(run.junit().findall(".//testcase")) == SMOKE_ITEMS
    # The module stack's own logs are part of what is searched.
    shutil.copytree(stack.log_dir, run.folder / "teststack-logs", dirs_exist_ok=True)  # type: ignore[arg-type]
    assert_no_secret(run, SECRET_PASSWORD, SECRET_ADMIN_TOKEN, SECRET_BYPASS_TOKEN)
    # The search itself finds a secret, also inside a .gz.
    canary = run.folder / "canary.json.gz"
    canary.write_bytes(gzip.compress(SECRET_PASSWORD.encode()))
    try:
        with pytest.raises(AssertionError, match="canary.json.gz"):
            assert_no_secret(run, SECRET_PASSWORD)
    finally:
        canary.unlink()


def test_wrong_pool_password_errors_every_item_without_printing_it(project: Project, teststack: LocalStack) -> None:
    env = stack_env(teststack, SEED_LOADTEST_USERS="false", LOADTEST_USER_POOL_PASSWORD=WRONG_PASSWORD)
    del env["LOADTEST_USER_PASSWORD"]
    run = project.run("--junitxml", "slo.xml", "-rA", env=env)

    assert_preflight_error(run, "preflight (login) failed: pool user 1 cannot log in: loadtest_user_1@loadtest.local got 401")
    assert "hint: seed the pool" in run.output
    assert run.observed["seeding"] == []
    assert_no_secret(run, WRONG_PASSWORD, SECRET_PASSWORD, SECRET_ADMIN_TOKEN)


# -- 7. preflight errors before any load -------------------------------------------------------------

def assert_preflight_error(run: Run, message: str) -> None:
    """Every item of the scenario is an ERROR with the reason, JUnit says <error>, and k6 never started."""
    assert run.rc == 1, run.output[-3000:]
    counts = outcomes(run)
    assert counts.get("errors", counts.get("error")) == SMOKE_ITEMS and "passed" not in counts and "failed" not in counts
    assert run.output.count(message) >= SMOKE_ITEMS, run.output[-3000:]
    root = run.junit()
    errors = root.findall(".//testcase/error")
    assert len(errors) == SMOKE_ITEMS and not root.findall(".//testcase/failure")
    assert all(message in (e.get("message", "") + (e.text or "")) for e in errors)
    assert run.watch.k6_runs == [] and not run.files("*.json.gz") and not run.files("*_summary.json")
    report = run.slo_report()
    assert report["complete"] is False and {c["verdict"] for c in report["criteria"]} == {"error"}
    run.no_process_left()


@pytest.mark.parametrize("case", ["api_health_503", "ai_service_unreachable", "passwords_differ"])
def test_preflight_errors_every_item_before_any_load(project: Project, teststack: LocalStack, case: str) -> None:
    env = stack_env(teststack)
    if case == "api_health_503":
        teststack.set_faults(health_status=503)
        message = f"preflight (health) failed: API health check GET {teststack.base_url}/health failed after 3 attempt(s): HTTP 503"
    elif case == "ai_service_unreachable":
        env["TESTSTACK_AI_URL"] = f"http://127.0.0.1:{free_loopback_port()}"  # nothing listens there
        message = f"preflight (health) failed: AI service health check GET {env['TESTSTACK_AI_URL']}/health failed"
    else:
        env["LOADTEST_USER_POOL_PASSWORD"] = WRONG_PASSWORD
        message = "preflight (passwords) failed: LOADTEST_USER_PASSWORD and LOADTEST_USER_POOL_PASSWORD are both set and differ"
    run = project.run("--junitxml", "slo.xml", env=env)

    assert_preflight_error(run, message)
    assert run.observed["seeding"] == []  # nothing is sent before the checks pass
    assert_no_secret(run, WRONG_PASSWORD, SECRET_PASSWORD, SECRET_ADMIN_TOKEN)
