"""Benchmark of the k6 raw output reader against a parse-every-line baseline.

    python benchmarks/bench_reader.py [--size-gb 1.0] [--gzip]

Generates once (cached in benchmarks/out/, gitignored) a realistic k6 `--out json` file
of the requested size: the metric mix of a game run (~14 lines per HTTP request with
k6's tags, iteration metrics, custom rates, move latencies, WebSocket companion points,
lifecycle deltas, error counters), points slightly out of order as k6 writes them. Then
runs, each in a fresh subprocess so peak RSS is its own: (a) the baseline, `orjson.loads`
on every line keeping what is needed; (b) `read_raw`. Prints wall time, lines/s, the
speed ratio and peak RSS, and checks both agree (concurrency, requests, percentiles).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
import zlib
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
OUT = Path(__file__).resolve().parent / "out"
T0_MS = 1_795_000_000_000.0  # 2026-11-19, whole ms like Date.now()
STEADY = (60.0, 240.0)
TARGETS = {"games": 40, "players": 120}
RATE = 1000.0  # HTTP requests per second in the steady phase

sys.path.insert(0, str(REPO))


# ---------------------------------------------------------------------------- generator


class _Clock:
    """Epoch ns → k6's RFC3339Nano text (trailing zeros trimmed, `Z`)."""

    def __init__(self) -> None:
        self.second = -1
        self.prefix = ""

    def text(self, ns: int) -> str:
        sec, frac = divmod(ns, 1_000_000_000)
        if sec != self.second:
            self.second = sec
            self.prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        if frac == 0:
            return self.prefix + "Z"
        return f"{self.prefix}.{frac:09d}".rstrip("0") + "Z"


_ROUTES = [
    ("login", "POST", "/api/auth/login"),
    ("game_list", "GET", "/api/games?status=waiting&board=square8&maxPlayers=3&aiSeats=0"),
    ("game_create", "POST", "/api/games"),
    ("game_join", "POST", "/api/games/{id}/join"),
    ("game_state", "GET", "/api/games/{id}"),
    ("refresh", "POST", "/api/auth/refresh"),
]
_HTTP_TRENDS = ["http_req_blocked", "http_req_connecting", "http_req_tls_handshaking", "http_req_sending",
                "http_req_waiting", "http_req_receiving"]
_METRICS = {
    "http_reqs": "counter", "http_req_duration": "trend", "http_req_failed": "rate", "data_sent": "counter",
    "data_received": "counter", "iterations": "counter", "iteration_duration": "trend", "vus": "gauge",
    "vus_max": "gauge", "req_errors": "rate", "true_errors": "rate", "status_401": "rate", "status_429": "rate",
    "server_available": "rate", "move_e2e_latency": "trend", "move_server_processing": "trend",
    "move_stalled": "rate", "ws_message_latency": "trend", "ws_msgs_sent": "counter",
    "ws_msgs_received": "counter", "ws_connecting": "trend", "ws_sessions": "counter",
    "games_active_delta": "counter", "players_active_delta": "counter", "auth_token_expired_total": "counter",
    "rate_limit_hit_total": "counter", "capacity_failures_total": "counter", "contract_failures_total": "counter",
    "id_lifecycle_mismatches_total": "counter", **{m: "trend" for m in _HTTP_TRENDS},
}
_ERRORS = ["auth_token_expired_total", "rate_limit_hit_total", "capacity_failures_total", "contract_failures_total",
           "id_lifecycle_mismatches_total"]


def _phase(rel_s: float) -> str:
    return "ramp" if rel_s < STEADY[0] else "steady" if rel_s <= STEADY[1] else "rampdown"


def generate(path: Path, size_bytes: int, seed: int = 7) -> dict[str, Any]:
    """Write a k6-like raw file of about `size_bytes`; returns its metadata."""
    rng = random.Random(seed)
    clock = _Clock()
    seen: set[str] = set()
    out = open(path.with_suffix(".tmp"), "w", buffering=1 << 22)  # noqa: SIM115
    written = 0
    lines = 0
    duration_s = STEADY[1] + 60.0
    # scale the request rate so the file has the requested size over the run
    per_request = 3300
    rate = max(5.0, size_bytes / per_request / duration_s)
    games: list[tuple[float, int]] = []  # (end time, players) of running games

    def emit(metric: str, ns: int, value: float | int, tags: str) -> None:
        nonlocal written, lines
        if metric not in seen:
            seen.add(metric)
            meta = (f'{{"type":"Metric","data":{{"name":"{metric}","type":"{_METRICS[metric]}",'
                    f'"contains":"{"time" if _METRICS[metric] == "trend" else "default"}","thresholds":[],'
                    f'"submetrics":null}},"metric":"{metric}"}}\n')
            out.write(meta)
            written += len(meta)
            lines += 1
        line = (f'{{"metric":"{metric}","type":"Point","data":{{"time":"{clock.text(ns)}","value":{value},'
                f'"tags":{tags}}}}}\n')
        out.write(line)
        written += len(line)
        lines += 1

    t_ns = int(T0_MS * 1e6) - 2_000_000_000
    step_ns = int(1e9 / rate)
    requests = 0
    while written < size_bytes:
        rel = (t_ns / 1e6 - T0_MS) / 1000.0
        if rel > duration_s:  # keep the shape; stretch the run if the file is not big enough yet
            duration_s += 60.0
        phase = _phase(rel)
        jitter = rng.randrange(-400_000_000, 400_000_000)  # VUs flush out of order
        ns = t_ns + jitter
        name, method, url = _ROUTES[rng.randrange(len(_ROUTES))]
        url = url.replace("{id}", f"g{rng.randrange(100000)}")
        roll = rng.random()
        status = "200" if roll < 0.97 else "429" if roll < 0.985 else "401" if roll < 0.993 else "503"
        ok = status == "200"
        vu = rng.randrange(1, 150)
        tags = (f'{{"expected_response":"{"true" if ok else "false"}","group":"","method":"{method}",'
                f'"name":"{name}","phase":"{phase}","proto":"HTTP/1.1","scenario":"players","status":"{status}",'
                f'"url":"http://127.0.0.1:8080{url}"}}')
        duration = round(rng.lognormvariate(3.0, 0.6), 6)
        emit("http_reqs", ns, 1, tags)
        emit("http_req_duration", ns, duration, tags)
        for metric in _HTTP_TRENDS:
            emit(metric, ns, round(rng.random() * duration / 3, 6), tags)
        emit("http_req_failed", ns, 0 if ok else 1, tags)
        short = f'{{"group":"","phase":"{phase}","scenario":"players"}}'
        emit("data_sent", ns, rng.randrange(200, 900), short)
        emit("data_received", ns, rng.randrange(300, 3000), short)
        emit("req_errors", ns, 0 if ok else 1, f'{{"group":"","name":"{name}","phase":"{phase}","scenario":"players"}}')
        emit("true_errors", ns, 1 if status == "503" else 0, short)
        emit("server_available", ns, 0 if status == "503" else 1, short)
        if not ok:
            metric = {"429": "rate_limit_hit_total", "401": "auth_token_expired_total",
                      "503": "capacity_failures_total"}[status]
            emit(metric, ns, 1, short)
            if status == "429" and rng.random() < 0.5:
                emit("capacity_failures_total", ns, 1, short)
        if rng.random() < 0.002:
            emit(rng.choice(_ERRORS[3:]), ns, 1, short)
        if rng.random() < 0.3:  # a move
            emit("move_e2e_latency", ns, round(rng.lognormvariate(2.5, 0.5), 3), short)
            emit("move_server_processing", ns, round(rng.random() * 5, 3), short)
            emit("move_stalled", ns, 0, short)
        if rng.random() < 0.05:
            emit("iterations", ns, 1, short)
            emit("iteration_duration", ns, round(rng.lognormvariate(9, 0.3), 4), short)
        if rng.random() < 0.03:  # WebSocket companion traffic
            ws = f'{{"group":"","phase":"{phase}","scenario":"ws_companion","url":"ws://127.0.0.1:8080/ws"}}'
            emit("ws_msgs_sent", ns, 1, ws)
            emit("ws_msgs_received", ns, 1, ws)
            emit("ws_message_latency", ns, round(rng.lognormvariate(1.0, 0.4), 3), ws)
        # games: keep ~target running in steady, fewer in ramp / rampdown
        want = TARGETS["games"] * (min(1.0, max(0.0, rel / STEADY[0])) if rel < STEADY[1] else 0.3)
        while games and games[0][0] <= ns:
            _, players = games.pop(0)
            emit("games_active_delta", games_end := ns, -1, short)
            emit("players_active_delta", games_end, -players, short)
        if len(games) < want and rng.random() < 0.05:
            players = 3
            end = ns + int(rng.uniform(15, 45) * 1e9)
            games.append((end, players))
            games.sort()
            emit("games_active_delta", ns, 1, short)
            emit("players_active_delta", ns, players, short)
        if requests % 2000 == 0:
            emit("vus", t_ns, vu, '{}')
            emit("vus_max", t_ns, 150, '{}')
        requests += 1
        t_ns += step_ns
    out.close()
    path.with_suffix(".tmp").rename(path)
    return {"bytes": written, "lines": lines, "requests": requests, "t0_ms": T0_MS, "steady": STEADY,
            "targets": TARGETS}


def gzip_copy(src: Path, dst: Path) -> None:
    """Gzip `src` to `dst` streaming (level 1, like a fast writer)."""
    packer = zlib.compressobj(1, zlib.DEFLATED, 31)
    tmp = dst.with_suffix(".tmp")
    with open(src, "rb") as inp, open(tmp, "wb") as out:
        while block := inp.read(1 << 22):
            out.write(packer.compress(block))
        out.write(packer.flush())
    tmp.rename(dst)


# ---------------------------------------------------------------------------- the two readers


def baseline(path: Path, t0_ms: float, steady: tuple[float, float], targets: dict[str, int]) -> dict[str, Any]:
    """The simplest correct reader: orjson on every line, keep what is needed."""
    import gzip

    import orjson

    from pytest_prodval.concurrency import peak_concurrency
    from pytest_prodval.rawreader import parse_time_ms, percentile

    cache: dict[bytes, float] = {}
    deltas: dict[str, list[tuple[float, float]]] = {"games": [], "players": []}
    kinds = {"games_active_delta": "games", "players_active_delta": "players"}
    requests: dict[int, int] = {}
    open_durations: dict[int, array[float]] = {}
    pcts: dict[int, tuple[float, float, float]] = {}
    newest = -10**9
    lines = 0
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        for line in handle:
            lines += 1
            record = orjson.loads(line)
            if record.get("type") != "Point":
                continue
            metric = record["metric"]
            if metric not in ("http_reqs", "http_req_duration") and metric not in kinds:
                continue
            data = record["data"]
            ms = parse_time_ms(data["time"], cache)
            if metric in kinds:
                deltas[kinds[metric]].append((ms, data["value"]))
                continue
            idx = int((ms - t0_ms) // 1000.0)
            if metric == "http_reqs":
                requests[idx] = requests.get(idx, 0) + 1
                continue
            values = open_durations.get(idx)
            if values is None:
                if idx in pcts:
                    continue
                values = open_durations[idx] = array("d")
            values.append(data["value"])
            if idx > newest:
                newest = idx
                for old in [b for b in open_durations if b < newest - 5]:
                    ordered = sorted(open_durations.pop(old))
                    pcts[old] = (percentile(ordered, 50), percentile(ordered, 95), percentile(ordered, 99))
    for old in list(open_durations):
        ordered = sorted(open_durations.pop(old))
        pcts[old] = (percentile(ordered, 50), percentile(ordered, 95), percentile(ordered, 99))
    window = (t0_ms + steady[0] * 1000, t0_ms + steady[1] * 1000)
    return {
        "lines": lines,
        "concurrency": {k: peak_concurrency(v, window, targets[k]).model_dump() for k, v in deltas.items()},
        "requests": {str(k): v for k, v in sorted(requests.items())},
        "p95": {str(k): round(v[1], 9) for k, v in sorted(pcts.items())},
    }


def ours(path: Path, t0_ms: float, steady: tuple[float, float], targets: dict[str, int]) -> dict[str, Any]:
    """`read_raw`, with the companion split written next to the file."""
    from pytest_prodval.rawreader import read_raw

    digest = read_raw(path, t0_ms=t0_ms, steady=steady, targets=targets, split_to=OUT / "split_ws.json")
    return {
        "lines": digest.lines,
        "concurrency": {k: v.model_dump() for k, v in digest.concurrency.items()},
        "requests": {str(round(p.t)): p.requests for p in digest.series if p.requests},
        "p95": {str(round(p.t)): round(p.p95_ms, 9) for p in digest.series if p.p95_ms is not None},
        "bad_lines": digest.bad_lines, "truncated": digest.truncated, "late_values": digest.late_values,
        "split_lines": digest.split_lines,
    }


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(kind: str, path: Path, meta: dict[str, Any]) -> None:
    """Run one reader and print its result and cost as JSON (in a fresh process)."""
    func = ours if kind == "ours" else baseline
    import orjson  # noqa: F401  (imports are not part of the measured time)

    import pytest_prodval.rawreader  # noqa: F401

    start, cpu = time.perf_counter(), time.process_time()
    result = func(path, meta["t0_ms"], tuple(meta["steady"]), meta["targets"])
    result["wall_s"] = time.perf_counter() - start
    result["cpu_s"] = time.process_time() - cpu
    result["rss_mb"] = _peak_rss_mb()
    print(json.dumps(result))


def run_child(kind: str, path: Path, meta_path: Path, script: str = __file__) -> dict[str, Any]:
    """`script --child KIND PATH META` in a fresh process (its peak RSS is its own); its JSON line."""
    done = subprocess.run([sys.executable, script, "--child", kind, str(path), str(meta_path)],
                          check=True, capture_output=True, text=True)
    return dict(json.loads(done.stdout))


def parse_args(description: str, repeat: int, child_main: Callable[[str, Path, dict[str, Any]], None],
               extra: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace | None:
    """The raw-file benchmarks' command line (--size-gb, --repeat, the hidden --child KIND PATH META
    that run_child uses). None after a child ran: the caller exits."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--size-gb", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=repeat, help="runs per method; the fastest counts")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "PATH", "META"), help=argparse.SUPPRESS)
    if extra is not None:
        extra(parser)
    args = parser.parse_args()
    if args.child:
        kind, path, meta_path = args.child
        child_main(kind, Path(path), json.loads(Path(meta_path).read_text()))
        return None
    return args


def raw_file(size_gb: float) -> tuple[Path, Path, dict[str, Any]]:
    """The generated raw file of `size_gb` GiB (made once, shared by the benchmarks), its meta file and meta."""
    OUT.mkdir(exist_ok=True)
    raw = OUT / f"raw_{size_gb:g}gb.json"
    meta_path = raw.with_suffix(".meta.json")
    if not raw.exists() or not meta_path.exists():
        print(f"generating {raw} ({size_gb:g} GiB) ...", flush=True)
        start = time.perf_counter()
        meta = generate(raw, int(size_gb * (1 << 30)))
        meta_path.write_text(json.dumps(meta))
        print(f"  {meta['lines']:,} lines, {meta['requests']:,} requests in {time.perf_counter() - start:.1f}s")
    return raw, meta_path, json.loads(meta_path.read_text())


def best_of(repeat: int, path: Path, meta_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Alternate the two readers `repeat` times (fresh processes); keep each one's fastest run."""
    runs: dict[str, list[dict[str, Any]]] = {"baseline": [], "ours": []}
    for _ in range(repeat):
        for kind in runs:
            runs[kind].append(run_child(kind, path, meta_path))
    base, mine = (min(runs[k], key=lambda r: r["wall_s"]) for k in ("baseline", "ours"))
    return base, mine


def main() -> int:
    args = parse_args(__doc__.split("\n")[0], 3, child, lambda parser: parser.add_argument(
        "--gzip", action="store_true", help="also measure on the gzip copy (as the plugin writes)"))
    if args is None:
        return 0
    raw, meta_path, meta = raw_file(args.size_gb)
    files = [raw]
    if args.gzip:
        packed = OUT / f"{raw.name}.gz"
        if not packed.exists():
            print(f"gzipping to {packed} ...", flush=True)
            gzip_copy(raw, packed)
        files.append(packed)
    ok = True
    for path in files:
        size_mb = path.stat().st_size / (1 << 20)
        print(f"\n{path.name}: {size_mb:,.0f} MB, {meta['lines']:,} lines, {meta['requests']:,} requests")
        base, mine = best_of(args.repeat, path, meta_path)
        for label, res in (("baseline orjson", base), ("read_raw", mine)):
            print(f"  {label:16s} {res['wall_s']:7.2f} s wall {res['cpu_s']:7.2f} s CPU  "
                  f"{res['lines'] / res['wall_s'] / 1e6:6.2f} M lines/s  {size_mb / res['wall_s']:7.0f} MB/s  "
                  f"peak RSS {res['rss_mb']:6.1f} MB")
        ratio = base["wall_s"] / mine["wall_s"]
        print(f"  speed-up {ratio:.2f}x wall, {base['cpu_s'] / mine['cpu_s']:.2f}x CPU (best of {args.repeat}; "
              f"target >= 2x); RSS target <= 200 MB: "
              f"{'ok' if mine['rss_mb'] <= 200 else 'OVER'}")
        checks = {
            "lines": base["lines"] == mine["lines"],
            "concurrency": base["concurrency"] == mine["concurrency"],
            "requests per bucket": base["requests"] == mine["requests"],
            "p95 per bucket": base["p95"] == mine["p95"],
            "clean file": not mine["truncated"] and mine["bad_lines"] == 0,
        }
        print("  peaks:", {k: v["peak"] for k, v in mine["concurrency"].items()},
              f"requests: {sum(mine['requests'].values()):,}", f"split lines: {mine['split_lines']:,}",
              f"late values: {mine['late_values']}")
        for name, good in checks.items():
            print(f"  check {name}: {'same' if good else 'DIFFERENT'}")
            ok &= good
        ok &= ratio >= 2 and mine["rss_mb"] <= 200
    (OUT / "split_ws.json").unlink(missing_ok=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
