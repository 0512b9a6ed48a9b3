"""Executors: configuration, the operator's segment flags, and cleanup of a k6-operator run on Ctrl-C."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_prodval.executors import segment, segment_flags, segment_sequence
from pytest_prodval.scenarios import ExecutorConfig


def test_segments_are_the_operators_unreduced_fractions() -> None:
    assert [segment(i, 4) for i in range(1, 5)] == ["0/4:1/4", "1/4:2/4", "2/4:3/4", "3/4:4/4"]
    assert segment_sequence(4) == "0,1/4,2/4,3/4,1"
    assert segment_flags(2, 4) == ["--execution-segment=1/4:2/4", "--execution-segment-sequence=0,1/4,2/4,3/4,1"]
    assert segment_flags(1, 1) == []  # a single runner gets no segment flags


def test_parallelism_is_given_or_derived_from_vus_per_instance() -> None:
    assert ExecutorConfig(kind="segments", parallelism=4).instances(peak_vus=10) == 4
    assert ExecutorConfig(kind="segments", vus_per_instance=100).instances(peak_vus=250) == 3
    assert ExecutorConfig(kind="k6-operator", vus_per_instance=100).instances(peak_vus=3) == 1
    assert ExecutorConfig().instances(peak_vus=500) == 1
    with pytest.raises(ValueError, match="set parallelism or vus_per_instance, not both"):
        ExecutorConfig(kind="segments", parallelism=2, vus_per_instance=10)
    with pytest.raises(ValueError, match="kind 'local' runs one k6 process"):
        ExecutorConfig(kind="local", parallelism=2)


@pytest.mark.parametrize(
    ("args", "environments", "message"),
    [
        (["--prodval-executor", "kubernetes"], "", "*--prodval-executor / PRODVAL_EXECUTOR: 'kubernetes' is not an executor; "
                                                   "expected one of local, segments, k6-operator*"),
        (["--prodval-parallelism", "0"], "", "*--prodval-parallelism / PRODVAL_PARALLELISM: '0' is not a whole number >= 1*"),
        (["--prodval-parallelism", "3"], "", "*_environments.toml: [[]local.executor] with the command-line overrides: "
                                             "*kind 'local' runs one k6 process*"),
        ([], '\n[local.executor]\nkind = "swarm"\n', "  local.executor.kind: Input should be 'local', 'segments' or "
                                                      "'k6-operator' (got 'swarm')"),
    ],
)
def test_bad_executor_settings_are_usage_errors(pytester: pytest.Pytester, scenarios_dir: Path, args: list[str],
                                                environments: str, message: str) -> None:
    with (scenarios_dir / "_environments.toml").open("a") as handle:
        handle.write(environments)
    result = pytester.runpytest("--collect-only", "--env", "local", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_html_and_junit_say_how_many_instances_ran_with_their_rates() -> None:
    from pytest_prodval.html import render_html
    from pytest_prodval.models import InstanceRecord, SloReport

    report = SloReport(scenario_id="BCAP_X", marker="x", env="local", profile="staging", timestamp="20261201T120000Z",
                       executor="segments", instances=[
                           InstanceRecord(index=1, segment="0/2:1/2", exit_code=99, requests=1200, request_rate=40.0),
                           InstanceRecord(index=2, segment="1/2:2/2", exit_code=None, problem="instance 2/2 (segment 1/2:2/2) lost: gone"),
                       ])
    page = render_html(report)
    assert "<h2>Load generators</h2>" in page and "segments, 2 instances" in page
    assert 'style="width:120.0px"></span> 40.0/s' in page and "instance 2/2 (segment 1/2:2/2) lost: gone" in page
    assert report.instances_line() == "segments: 2 instances: 1 [0/2:1/2] exit 99, 2 [1/2:2/2] exit none"
    single = SloReport(scenario_id="BCAP_X", marker="x", env="local", profile="staging", timestamp="t")
    assert single.instances_line() == "local: 1 instance" and "<h2>Load generators</h2>" not in render_html(single)


def test_segments_start_no_instance_unless_all_are_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Instance 2's REST API port is taken (k6 exits 106): instance 1 is never resumed, so no partial
    test runs; both are problems naming the instance."""
    import os
    import socket

    from pytest_prodval import processes
    from pytest_prodval.artifacts import RunPaths
    from pytest_prodval.executors import Launch, executor_for
    from pytest_prodval.k6run import find_k6
    from pytest_prodval.scenarios import ExecutorConfig

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    ports = iter([processes.free_loopback_port(), taken.getsockname()[1]])
    monkeypatch.setattr(processes, "free_loopback_port", lambda: next(ports))
    script = tmp_path / "idle.js"
    script.write_text("export const options = { vus: 2, duration: '20s' };\nexport default function () {}\n")
    k6 = find_k6("k6")
    assert k6 is not None
    launch = Launch(scenario_id="IDLE", k6=k6, script=script, config={}, env={"PATH": os.environ["PATH"]}, secrets={},
                    paths=RunPaths.create(tmp_path, "IDLE", "local", "20261201T120000Z"), count=2, timeout_s=60)
    try:
        first, second = executor_for(ExecutorConfig(kind="segments", parallelism=2)).run(launch)
    finally:
        taken.close()
    assert second.k6.exit_code == 106 and "instance 2/2 (segment 1/2:2/2): k6 exited with code 106" in (second.problem() or "")
    assert first.started_at is None and "instance 1/2 (segment 0/2:1/2)" in (first.problem() or "")


def test_stopping_instances_signals_each_once_so_each_writes_its_summary(tmp_path: Path) -> None:
    """k6 takes a second SIGINT as "abort now": no summary. Ctrl-C reaches every instance exactly once
    (sent twice, each of 3 k6 processes lost its summary about every other time)."""
    import os
    import signal
    import subprocess
    import time

    from pytest_prodval import processes
    from pytest_prodval.k6run import _stop_all, find_k6

    k6 = find_k6("k6")
    assert k6 is not None
    script = tmp_path / "idle.js"
    script.write_text("import { sleep } from 'k6';\nexport const options = { vus: 2, duration: '30s' };\n"
                      "export default function () { sleep(0.1); }\n"
                      "export function handleSummary(d) { return { [__ENV.SUMMARY]: 'written' }; }\n")
    summaries = [tmp_path / f"summary{i}" for i in range(3)]
    procs = [processes.spawn([k6, "run", "--quiet", "--address", "", str(script)], env={**os.environ, "SUMMARY": str(out)},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for out in summaries]
    time.sleep(1.5)  # k6 running its VUs
    _stop_all(procs, grace_s=15, sig=signal.SIGINT)
    assert [p.returncode for p in procs] == [105, 105, 105]  # stopped by the signal...
    assert all(out.exists() for out in summaries)  # ...and each still wrote its summary
