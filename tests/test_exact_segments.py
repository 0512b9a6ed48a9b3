"""Acceptance: one deterministic k6 workload, run once as one process and once as 4 execution
segments (the flags k6-operator gives its runner pods), judged by the same function: every
criterion value is identical — counts, percentiles, rates and concurrency peaks."""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Callable, Iterator
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


def run_and_judge(folder: Path, kind: str, count: int, url: str) -> tuple[SloReport, Callable[[], SloReport]]:
    """The workload on an executor, judged the plugin's way (results.read_instances → judging.judge);
    also a function that judges its files again."""
    scenarios = folder / "scenarios"
    (scenarios / "k6").mkdir(parents=True)
    shutil.copy(DATA / "workload.js", scenarios / "k6" / "workload.js")
    shutil.copy(DATA / "exact.toml", scenarios / "exact.toml")
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

    def judged() -> SloReport:
        report = SloReport(scenario_id=scenario.id, marker=scenario.marker, env="local", profile="staging",
                           timestamp="20261201T120000Z", steady_window_s=scenario.steady_window_s(),
                           targets=scenario.targets.model_dump(), executor=kind)
        data = read_instances(instances, paths, report, scenario, criteria)
        report.complete = not data.problems
        report.incomplete_reason = "; ".join(data.problems) or None
        return judge(report, criteria, metrics=data.metrics, concurrency=report.concurrency, run=data)

    return judged(), judged


def test_four_segments_give_every_criterion_value_of_one_process(tmp_path: Path, target: str) -> None:
    whole, _ = run_and_judge(tmp_path / "whole", "local", 1, target)
    split, rejudge = run_and_judge(tmp_path / "split", "segments", 4, target)
    assert whole.complete and split.complete, (whole.incomplete_reason, split.incomplete_reason)
    # The script's own threshold p(95)<900 fails (p95 = 947.275): each instance exits 99 on its
    # own share, which is normal; the plugin judges the whole, the same way for both runs.
    assert [i.segment for i in split.instances] == ["0/4:1/4", "1/4:2/4", "2/4:3/4", "3/4:4/4"]
    assert all(i.exit_code in (0, 99) and i.problem is None for i in split.instances)
    assert sum(i.requests or 0 for i in split.instances) == 200 and all(i.requests == 50 for i in split.instances)
    offsets = [i.start_offset_ms for i in split.instances]  # one clock here: the resume latency only
    assert all(o is not None and 0 <= o < 2000 for o in offsets) and min(o or 0 for o in offsets) == 0
    values = {c.name: (c.observed, c.samples, c.verdict) for c in whole.criteria}
    assert len(values) == 14  # our 11 plus the script's 3 thresholds
    assert {c.name: (c.observed, c.samples, c.verdict) for c in split.criteria} == values
    assert values["requests"] == (200, 200, "pass") and values["work_max"][0] == 987.125
    assert values["concurrent_games"][0] == 8 and values["concurrent_players"][0] == 24
    assert values["threshold__work_ms__p95_lt_900"][:1] == (947.275,) and values["work_p95"][2] == "pass"
    failing = {name for name, (_, _, verdict) in values.items() if verdict != "pass"}
    assert failing == {"threshold__work_ms__p95_lt_900"}, [c.message for c in whole.criteria if c.verdict != "pass"]
    # An instance whose raw output and summary disagree (a cut or mixed-up file) makes every criterion an ERROR naming it
    summary = next((tmp_path / "split" / "res").glob("*_i3_summary.json"))
    data = json.loads(summary.read_text())
    data["metrics"]["http_reqs"]["count"] += 1
    summary.write_text(json.dumps(data))
    broken = rejudge()
    assert not broken.complete and all(c.verdict == "error" for c in broken.criteria)
    assert ("instance 3/4 (segment 2/4:3/4): its raw output and its summary disagree: http_reqs 50 in "
            "EXACT_WORKLOAD_local_20261201T120000Z_i3.json.gz, 51 in EXACT_WORKLOAD_local_20261201T120000Z_i3_summary.json"
            ) in (broken.incomplete_reason or "")
