"""Capacity: can this machine's reference stack plus k6 hold target_scale concurrency?

    python benchmarks/bench_capacity.py [--steady-s 120]

Requirement: 100 games / 300 players + the WebSocket companion (scenarios/target_scale.toml:
220 player VUs + 20 companion VUs) held for at least 2 minutes of steady window with
error rate < 1 % and API p95 < 200 ms. Writes a copy of target_scale.toml with the same
id, VUs, targets and criteria but short ramps (30 s to 110, 30 s to 220, steady
--steady-s at 220, 15 s down), runs it once through the plugin (`--env local`, time scale
1) and, every second, samples the CPU ticks of pytest's children (k6, the API, the AI
service), pytest itself and the whole machine (/proc/stat) to say which side saturates.
Prints peak / mean / share-at-target of games and players, error rates, API p95/p99, move
e2e p95, CPU per process over the steady window and the whole run, and every criterion.
About 4 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_overhead import ProcWatch, copy_scenarios, machine_note, only_report, plugin_command, run_plugin  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
GAMES, PLAYERS, ERROR_RATE, API_P95_MS = 100, 300, 0.01, 200.0


def short_target_scale(scenarios_dir: Path, steady_s: int) -> tuple[str, float]:
    """Rewrite the copy of target_scale.toml with short ramps; returns its marker and planned seconds."""
    path = scenarios_dir / "target_scale.toml"
    text = path.read_text()
    stages = (f'stages = [\n  {{ duration = "30s", target = 110 }},\n  {{ duration = "30s", target = 220 }},\n'
              f'  {{ duration = "{steady_s}s", target = 220 }},\n  {{ duration = "15s", target = 0 }},\n]')
    text, n_stages = re.subn(r"(?ms)^stages = \[.*?^\]", stages, text)
    text, n_steady = re.subn(r"(?m)^steady_stage = \d+", "steady_stage = 2", text)
    assert n_stages == 1 and n_steady == 1, "scenarios/target_scale.toml changed shape: update short_target_scale()"
    path.write_text("# bench_capacity.py: target_scale with short ramps\n" + text)
    marker = re.search(r'(?m)^marker = "([a-z0-9_]+)"', text)
    assert marker is not None
    return marker.group(1), 30 + 30 + steady_s + 15


def _delta(samples: list[tuple[float, int]], start: float, end: float) -> tuple[float, float] | None:
    """(CPU seconds, wall seconds) between the samples closest to start and end."""
    inside = [s for s in samples if start - 1.5 <= s[0] <= end + 1.5]
    if len(inside) < 2:
        return None
    first = min(inside, key=lambda s: abs(s[0] - start))
    last = min(inside, key=lambda s: abs(s[0] - end))
    if last[0] <= first[0]:
        return None
    return (last[1] - first[1]) / CLK_TCK, last[0] - first[0]


def cpu_table(watch: ProcWatch, windows: dict[str, tuple[float, float]]) -> list[tuple[str, dict[str, float | None]]]:
    """CPU use in % of one core per process kind (and the machine's busy % of all cores) per window."""
    kinds: dict[str, list[list[tuple[float, int]]]] = {}
    for proc in watch.procs.values():
        kinds.setdefault(proc.kind, []).append(proc.cpu)
    rows: list[tuple[str, dict[str, float | None]]] = []
    ours: dict[str, float] = {name: 0.0 for name in windows}
    for kind in ("k6", "api", "ai"):
        row: dict[str, float | None] = {}
        for name, (start, end) in windows.items():
            parts = [d for d in (_delta(s, start, end) for s in kinds.get(kind, [])) if d is not None]
            row[name] = 100 * sum(p[0] for p in parts) / max(p[1] for p in parts) if parts else None
            ours[name] += row[name] or 0.0
        rows.append((kind, row))
    row = {}
    for name, (start, end) in windows.items():
        d = _delta(watch.root_cpu, start, end)
        row[name] = 100 * d[0] / d[1] if d else None
        ours[name] += row[name] or 0.0
    rows.append(("pytest (plugin)", row))
    machine: dict[str, float | None] = {}
    foreign: dict[str, float | None] = {}
    for name, (start, end) in windows.items():
        inside = [m for m in watch.machine if start - 1.5 <= m[0] <= end + 1.5]
        if len(inside) < 2:
            machine[name] = foreign[name] = None
            continue
        first = min(inside, key=lambda m: abs(m[0] - start))
        last = min(inside, key=lambda m: abs(m[0] - end))
        busy = (last[1] - first[1]) / max(1, last[2] - first[2])  # share of all cores
        machine[name] = 100 * busy * (os.cpu_count() or 1)  # in % of one core, like the rows above
        foreign[name] = machine[name] - ours[name]
    rows.append(("machine busy (all processes)", machine))
    rows.append(("  of which not ours (other runs)", foreign))
    return rows


def fmt_observed(criterion: Any) -> str:
    if criterion.observed is None:
        return "n/a"
    if criterion.unit == "%":
        return f"{100 * criterion.observed:.3f} %"
    if criterion.unit == "ms":
        return f"{criterion.observed:.1f} ms"
    return f"{criterion.observed:g} {criterion.unit}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steady-s", type=int, default=120)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (artifacts, logs)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="prodval-bench-capacity-"))
    try:
        return run(work, args.steady_s)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def run(work: Path, steady_s: int) -> int:
    marker, planned = short_target_scale(copy_scenarios(work), steady_s)
    results = work / "results"
    print(f"machine before: {machine_note()}")
    print(f"scenario {marker} (copy): 30 s -> 110 VUs, 30 s -> 220, {steady_s} s at 220, 15 s -> 0, "
          f"+20 companion VUs; planned {planned:.0f} s of k6", flush=True)
    epoch_minus_mono = time.time() - time.monotonic()
    code, start, end, wall, watch = run_plugin(work, plugin_command(marker, 1.0, results), log=work / "pytest.log",
                                               timeout_s=planned + 600, cpu=True, interval_s=1.0)
    print(f"machine after:  {machine_note()}")
    report = only_report(results)
    summary = json.loads((results / report.artifacts["summary"]).read_text())
    t0 = float(summary["setup_data"]["t0"]) / 1000 - epoch_minus_mono
    steady = report.steady_window_s or (0.0, 0.0)
    k6_runs = watch.of_kind("k6")
    windows = {"steady": (t0 + steady[0], t0 + steady[1])}
    if k6_runs and k6_runs[0].gone_at is not None:
        windows["k6 run"] = (k6_runs[0].first_seen, k6_runs[0].gone_at)
    by_name = {c.name: c for c in report.criteria}

    def observed(name: str) -> float | None:
        c = by_name.get(name)
        return c.observed if c is not None else None

    print(f"\npytest exit code {code}, wall {wall:.0f} s, run complete: {report.complete}"
          f"{'' if report.complete else ' (' + str(report.incomplete_reason) + ')'}, verdict {report.verdict}")
    print(f"steady window {steady[0]:.0f}-{steady[1]:.0f} s after t0 ({steady[1] - steady[0]:.0f} s)")
    for kind, target in (("games", GAMES), ("players", PLAYERS)):
        m = report.concurrency.get(kind)
        if m is None:
            print(f"  {kind}: no concurrency data")
            continue
        share = f"{100 * m.share_at_or_above_target:.0f} %" if m.share_at_or_above_target is not None else "n/a"
        print(f"  peak {kind:8s} {m.peak:4d} (target {target}), time-weighted mean {m.time_weighted_mean:6.1f}, "
              f"share of the steady window at/above target {share}")
    errors, api95 = observed("failed_requests_rate"), observed("api_latency_p95")
    print(f"  failed requests (steady) {100 * errors:.3f} %" if errors is not None else "  failed requests: n/a",
          f"| true errors {100 * (observed('true_error_rate') or 0):.3f} %",
          f"| 401 {100 * (observed('http_401_rate') or 0):.3f} % | 429 {100 * (observed('http_429_rate') or 0):.3f} %")
    for name in ("api_latency_p95", "api_latency_p99", "move_e2e_latency_p95", "move_e2e_latency_p99",
                 "ai_move_latency_p95", "ws_connect_p95"):
        value = observed(name)
        print(f"  {name:24s} {'n/a' if value is None else f'{value:8.1f} ms'}")
    games, players = report.concurrency.get("games"), report.concurrency.get("players")
    checks = {
        f"peak games >= {GAMES}": games is not None and games.peak >= GAMES,
        f"peak players >= {PLAYERS}": players is not None and players.peak >= PLAYERS,
        f"steady window >= 120 s": steady[1] - steady[0] >= 120,
        f"error rate < {100 * ERROR_RATE:g} %": errors is not None and errors < ERROR_RATE,
        f"API p95 < {API_P95_MS:g} ms": api95 is not None and api95 < API_P95_MS,
        "run complete": report.complete,
    }
    print("requirement (2-core box holds target_scale):")
    for label, good in checks.items():
        print(f"  {'ok  ' if good else 'FAIL'} {label}")
    print(f"  => {'HOLDS' if all(checks.values()) else 'DOES NOT HOLD'}")
    print("\nCPU, % of one core (2 cores = 200 %):")
    names = list(windows)
    print(f"  {'process':34s}" + "".join(f"{n:>10s}" for n in names))
    for label, row in cpu_table(watch, windows):
        print(f"  {label:34s}" + "".join(f"{'n/a' if row.get(n) is None else format(row[n], '.0f'):>10s}" for n in names))
    foreign, load1 = watch.disturbance()
    print(f"  during the run: foreign k6 processes up to {foreign}, 1-min load average up to {load1:.2f}")
    print(f"\ncriteria ({report.profile} profile), verdict {report.verdict}:")
    for c in report.criteria:
        print(f"  {c.verdict.upper():5s} {c.name:28s} {fmt_observed(c):>16s}  {c.expression:18s} {c.samples:>8d} samples"
              f"{'  (warn)' if c.level == 'warn' else ''}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
