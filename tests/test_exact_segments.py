"""Acceptance: one deterministic k6 workload, run once as one process and once as 4 execution
segments (the flags k6-operator gives its runner pods), judged by the same function: every
criterion value is identical — counts, percentiles, rates and concurrency peaks."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pytest_prodval.artifacts import RunPaths
from pytest_prodval.executors import Launch, executor_for
from pytest_prodval.judging import judge
from pytest_prodval.k6run import find_k6
from pytest_prodval.models import SloReport
from pytest_prodval.results import read_instances
from pytest_prodval.scenarios import ExecutorConfig, load_catalogue
from pytest_prodval.scripts import write_wrapper

DATA = Path(__file__).resolve().parent / "data" / "exact"
SCENARIO = """\
id = "EXACT_WORKLOAD"
marker = "exact_workload"
description = "8 VUs x 25 iterations; every value depends only on which iterations ran"
script = "k6/workload.js"
catalogues = ["generic"]

[targets]
games = 8
players = 24
players_per_game = 3

[criteria.work_p95]
metric = "work_ms"
unit = "ms"
staging = "p(95)<950"

[criteria.work_med]
metric = "work_ms"
unit = "ms"
staging = "med<600"

[criteria.work_p99_9]
metric = "work_ms"
unit = "ms"
staging = "p(99.9)<1000"

[criteria.work_avg]
metric = "work_ms"
unit = "ms"
staging = "avg<600"

[criteria.work_max]
metric = "work_ms"
unit = "ms"
staging = "max<1000"

[criteria.slow_rate]
metric = "work_slow"
unit = "%"
staging = "rate<0.5"

[criteria.work_units]
metric = "work_units_total"
staging = "count>0"

[criteria.requests]
metric = "http_reqs"
staging = "count==200"

[criteria.items_ok]
metric = "http_reqs{name:item,status:200}"
staging = "count==200"

[criteria.concurrent_games]
metric = "prodval_concurrent_games"
unit = "games"
staging = "peak>={games}"

[criteria.concurrent_players]
metric = "prodval_concurrent_players"
unit = "players"
staging = "peak>={players}"
"""


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def target() -> Iterator[str]:
    """A tiny HTTP server on 127.0.0.1 (in this process, stopped after the module)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def run_and_judge(folder: Path, kind: str, count: int, url: str) -> SloReport:
    """The workload on an executor, judged the plugin's way (results.read_instances → judging.judge)."""
    scenarios = folder / "scenarios"
    (scenarios / "k6").mkdir(parents=True)
    shutil.copy(DATA / "workload.js", scenarios / "k6" / "workload.js")
    (scenarios / "exact.toml").write_text(SCENARIO)
    catalogue = load_catalogue(scenarios)
    scenario = catalogue.scenario("exact_workload")
    criteria = catalogue.criteria_for(scenario)
    paths = RunPaths.create(folder / "res", scenario.id, "local", "20261201T120000Z")
    k6 = find_k6("k6")
    assert k6 is not None
    launch = Launch(scenario_id=scenario.id, k6=k6, script=write_wrapper(scenario.script_path(), folder / "wrapper.js"),
                    config={}, env={"PATH": os.environ["PATH"], "HOME": str(folder), "TARGET_URL": url}, secrets={},
                    paths=paths, count=count, timeout_s=60, summary_export=True)
    instances = executor_for(ExecutorConfig(kind=kind, parallelism=count if kind != "local" else None)).run(launch)
    report = SloReport(scenario_id=scenario.id, marker=scenario.marker, env="local", profile="staging",
                       timestamp="20261201T120000Z", steady_window_s=scenario.steady_window_s(),
                       targets=scenario.targets.model_dump(), executor=kind)
    data = read_instances(instances, paths, report, scenario, criteria)
    report.complete = not data.problems
    report.incomplete_reason = "; ".join(data.problems) or None
    return judge(report, criteria, metrics=data.metrics, concurrency=report.concurrency, run=data)


def test_four_segments_give_every_criterion_value_of_one_process(tmp_path: Path, target: str) -> None:
    whole = run_and_judge(tmp_path / "whole", "local", 1, target)
    split = run_and_judge(tmp_path / "split", "segments", 4, target)
    assert whole.complete and split.complete, (whole.incomplete_reason, split.incomplete_reason)
    # The script's own threshold p(95)<900 fails (p95 = 947.275): each instance exits 99 on its
    # own share, which is normal; the plugin judges the whole, the same way for both runs.
    assert [i.segment for i in split.instances] == ["0/4:1/4", "1/4:2/4", "2/4:3/4", "3/4:4/4"]
    assert all(i.exit_code in (0, 99) and i.problem is None for i in split.instances)
    assert sum(i.requests or 0 for i in split.instances) == 200 and all(i.requests == 50 for i in split.instances)
    values = {c.name: (c.observed, c.samples, c.verdict) for c in whole.criteria}
    assert len(values) == 14  # our 11 plus the script's 3 thresholds
    assert {c.name: (c.observed, c.samples, c.verdict) for c in split.criteria} == values
    assert values["requests"] == (200, 200, "pass") and values["work_max"][0] == 987.125
    assert values["concurrent_games"][0] == 8 and values["concurrent_players"][0] == 24
    assert values["threshold__work_ms__p95_lt_900"][:1] == (947.275,) and values["work_p95"][2] == "pass"
    failing = {name for name, (_, _, verdict) in values.items() if verdict != "pass"}
    assert failing == {"threshold__work_ms__p95_lt_900"}, [c.message for c in whole.criteria if c.verdict != "pass"]
