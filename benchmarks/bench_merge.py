"""Judging N = 4 segment results merged vs the same samples from one file: time, peak RSS, exactness.

    python benchmarks/bench_merge.py [--vus 8] [--iterations 5000] [--segments 4]

1. Starts nginx on loopback (as bench_generator.py) and runs the deterministic workload
   (tests/data/exact/workload.js, no pause between iterations) on the plugin's `segments`
   executor with N instances: N raw files, as N runner pods would leave them.
2. Writes the same samples as one file: every metric definition once, then every point of
   the N files, merged by timestamp (what one k6 process would have written).
3. Judges each side in a fresh Python process, the plugin's way (results.read_run: the exact
   engine over the raw files and the concurrency sweep, then judging.judge with the
   acceptance test's criteria, tests/data/exact/exact.toml): wall time and peak RSS.
4. Prints both, the ratios, and whether every criterion value (observed and sample count)
   is identical; exit 1 if not.
"""

from __future__ import annotations

import argparse
import gzip
import heapq
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_generator import start_nginx  # noqa: E402
from bench_overhead import machine_note  # noqa: E402

from pytest_prodval import processes  # noqa: E402
from pytest_prodval.artifacts import RunPaths  # noqa: E402
from pytest_prodval.executors import Launch, executor_for  # noqa: E402
from pytest_prodval.k6run import find_k6  # noqa: E402
from pytest_prodval.scenarios import ExecutorConfig  # noqa: E402
from pytest_prodval.scripts import write_wrapper  # noqa: E402

DATA = REPO / "tests" / "data" / "exact"

JUDGE = """
import json, resource, sys, time
from pathlib import Path
from pytest_prodval.artifacts import RunPaths
from pytest_prodval.judging import judge
from pytest_prodval.models import SloReport
from pytest_prodval.results import read_run
from pytest_prodval.scenarios import load_catalogue

catalogue = load_catalogue(Path(sys.argv[1]))
scenario = catalogue.scenario("exact_workload")
criteria = catalogue.criteria_for(scenario)
raws = [Path(p) for p in sys.argv[2:]]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
report = SloReport(scenario_id=scenario.id, marker=scenario.marker, env="local", profile="staging", timestamp="x",
                   steady_window_s=None, targets=scenario.targets.model_dump())
data = read_run(RunPaths(raws[0].parent, "none"), report, scenario, criteria, raws=raws)
judge(report, criteria, metrics=data.metrics, concurrency=report.concurrency, run=data)
elapsed = time.perf_counter() - started
print(json.dumps({"s": elapsed, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rss_before_mb": before / 1024, "problems": data.problems,
                  "values": {c.name: [c.observed, c.samples] for c in report.criteria}}))
"""


def _time_key(line: bytes) -> bytes:
    at = line.find(b'"time":"')
    return line[at + 8:at + 43] if at >= 0 else b""


def _points(path: Path) -> Iterator[bytes]:
    with gzip.open(path, "rb") as handle:
        for line in handle:
            if line.startswith(b'{"metric":'):
                yield line


def one_file(raws: list[Path], out: Path) -> int:
    """The N files' samples as one raw file (definitions once, points merged by time); returns its lines."""
    seen: set[bytes] = set()
    lines = 0
    with gzip.open(out, "wb", compresslevel=1) as sink:
        for raw in raws:
            with gzip.open(raw, "rb") as handle:
                for line in handle:
                    if line.startswith(b'{"type":"Metric"'):
                        name = line[line.rfind(b'"metric":'):]
                        if name not in seen:
                            seen.add(name)
                            sink.write(line)
                            lines += 1
        for line in heapq.merge(*(_points(raw) for raw in raws), key=_time_key):
            sink.write(line)
            lines += 1
    return lines


def judged(scenarios: Path, raws: list[Path]) -> dict[str, Any]:
    """Judge `raws` in a fresh process (its own peak RSS)."""
    done = subprocess.run([sys.executable, "-c", JUDGE, str(scenarios), *map(str, raws)], capture_output=True, text=True,
                          timeout=1800, cwd=REPO)
    if done.returncode != 0:
        sys.exit(done.stderr[-3000:])
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vus", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=5000, help="per VU")
    parser.add_argument("--segments", type=int, default=4)
    args = parser.parse_args()
    k6 = find_k6("k6")
    if k6 is None:
        sys.exit("k6 not found")
    with tempfile.TemporaryDirectory(prefix="prodval-bench-merge-") as tmp:
        folder = Path(tmp)
        scenarios = folder / "scenarios"
        (scenarios / "k6").mkdir(parents=True)
        shutil.copy(DATA / "workload.js", scenarios / "k6" / "workload.js")
        (scenarios / "exact.toml").write_text((DATA / "exact.toml").read_text()
                                              .replace("count==200", f"count=={args.vus * args.iterations}"))
        (folder / "nginx").mkdir()
        nginx, url = start_nginx(folder / "nginx")
        print(f"{args.vus} VUs x {args.iterations} iterations on {args.segments} segments; {machine_note()}")
        try:
            paths = RunPaths.create(folder / "res", "EXACT_WORKLOAD", "local", "20261201T120000Z")
            env = {"PATH": os.environ["PATH"], "HOME": str(folder), "TARGET_URL": url, "WORK_VUS": str(args.vus),
                   "WORK_ITERATIONS": str(args.iterations), "WORK_PAUSE_S": "0", "WORK_MAX_DURATION": "30m"}
            launch = Launch(scenario_id="EXACT_WORKLOAD", k6=k6, script=write_wrapper(scenarios / "k6" / "workload.js",
                            folder / "wrapper.js"), config={}, env=env, secrets={}, paths=paths, count=args.segments,
                            timeout_s=1800, summary_export=True)
            started = time.monotonic()
            instances = executor_for(ExecutorConfig(kind="segments", parallelism=args.segments)).run(launch)
            problems = [p for p in (i.problem() for i in instances) if p]
            if problems:
                sys.exit(f"the segmented run failed: {problems}")
            print(f"  k6, {args.segments} segments: {time.monotonic() - started:.1f} s")
        finally:
            processes.stop(nginx)  # by its PID (process group)
        raws = [i.paths.raw for i in instances]
        single = folder / "res" / "EXACT_WORKLOAD_local_20261201T120000Z_single.json.gz"
        lines = one_file(raws, single)
        size = sum(r.stat().st_size for r in raws) / 1e6
        print(f"  {lines:,} lines; {args.segments} files {size:.1f} MB gzip, one file {single.stat().st_size / 1e6:.1f} MB")
        merged, alone = judged(scenarios, raws), judged(scenarios, [single])
    for name, result in ((f"{args.segments} files", merged), ("one file", alone)):
        print(f"  judge {name:<8}: {result['s']:.2f} s, peak RSS {result['rss_mb']:.0f} MB "
              f"(after imports {result['rss_before_mb']:.0f} MB){'; problems: ' + str(result['problems']) if result['problems'] else ''}")
    print(f"time {args.segments} files / one file: {merged['s'] / alone['s']:.2f}x; "
          f"peak RSS: {merged['rss_mb'] / alone['rss_mb']:.2f}x")
    differ = {k: (v, alone["values"].get(k)) for k, v in merged["values"].items() if alone["values"].get(k) != v}
    print(f"exact: {'every criterion value identical' if not differ else 'DIFFERENT: ' + json.dumps(differ)} "
          f"({len(merged['values'])} criteria)")
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
