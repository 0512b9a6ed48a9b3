"""Benchmark: judging a raw k6 file of >= 1 GB from scratch (no summary), exactly.

    python benchmarks/bench_exact.py [--size-gb 1.0] [--repeat 2]

The file is the one `bench_reader.py` generates (cached in benchmarks/out/): a game run's
metric mix, points out of order as k6 writes them. Every k6 value the baseline scenario's
criteria and triage hints read (`results.metric_keys`: ~60 (sub)metrics, steady window by
timestamp) is computed three ways, each in a fresh process so its peak RSS is its own:

* baseline: `orjson.loads` on every line, the values of every query kept in lists, sorted;
* exact engine, one pass (values kept: they fit the default buffer);
* exact engine, two passes (buffer of 100 000 values: histogram pass, then only the
  values in the bins that hold the needed ranks) — the bounded-memory path of a file of
  any size.

Prints wall time, peak RSS and the ratios against the baseline, and checks that all three
agree on every value (counts, rates, percentiles) to the last bit.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_reader  # noqa: E402

PCTS = (50.0, 90.0, 95.0, 99.0)


def _keys() -> list[str]:
    from pytest_prodval.results import metric_keys
    from pytest_prodval.scenarios import load_catalogue

    catalogue = load_catalogue(REPO / "scenarios")
    return metric_keys(catalogue.criteria_for(catalogue.scenario("baseline")))


def baseline(path: Path, keys: list[str], window: tuple[float, float]) -> dict[str, Any]:
    """Parse every line; keep every value of every query; aggregate at the end."""
    import orjson

    from pytest_prodval.exact import query
    from pytest_prodval.rawreader import parse_time_ms

    queries = [query(k) for k in keys]
    kinds: dict[str, str] = {}
    values: dict[str, list[float]] = {q.key: [] for q in queries}
    cache: dict[bytes, float] = {}
    with open(path, "rb") as handle:
        for line in handle:
            record = orjson.loads(line)
            if record.get("type") == "Metric":
                kinds[record["data"]["name"]] = record["data"]["type"]
                continue
            data = record["data"]
            t = parse_time_ms(data["time"], cache)
            tags = data.get("tags") or {}
            for q in queries:
                if q.metric != record["metric"]:
                    continue
                if q.steady and not window[0] <= t < window[1]:
                    continue
                if all(tags.get(k) == v for k, v in q.tags):
                    values[q.key].append(float(data["value"]))
    out: dict[str, Any] = {}
    for q in queries:
        vals, kind = values[q.key], kinds.get(q.metric)
        if not vals or kind is None:
            continue
        if kind == "counter":
            out[q.key] = {"count": sum(vals)}
        elif kind == "rate":
            passes = sum(1 for v in vals if v)
            out[q.key] = {"rate": passes / len(vals), "passes": passes, "fails": len(vals) - passes}
        elif kind == "trend":
            vals.sort()
            row: dict[str, float] = {"count": len(vals), "min": vals[0], "max": vals[-1]}
            for pct in PCTS:
                i = pct / 100 * (len(vals) - 1)
                low, high = vals[math.floor(i)], vals[math.ceil(i)]
                row["med" if pct == 50 else f"p({pct:g})"] = low + (high - low) * (i - math.floor(i))
            out[q.key] = row
    return out


def engine(path: Path, keys: list[str], window: tuple[float, float], buffer_values: int) -> dict[str, Any]:
    from pytest_prodval import exact

    measured = exact.measure([path], exact.queries_for(keys), window=window, pcts=PCTS, buffer_values=buffer_values)
    out: dict[str, Any] = {}
    for key, entry in measured.metrics.items():
        values = dict(entry["values"])
        values.pop("avg", None)  # the baseline does not sum
        if entry["type"] == "counter":
            values.pop("rate", None)
        out[key] = values
    return {"values": out, "two_pass": measured.two_pass}


def child(kind: str, path: Path, meta: dict[str, Any]) -> None:
    import orjson  # noqa: F401  (imports are not part of the measured time)

    import pytest_prodval.exact  # noqa: F401

    keys = _keys()
    window = (meta["t0_ms"] + meta["steady"][0] * 1000, meta["t0_ms"] + meta["steady"][1] * 1000)
    start = time.perf_counter()
    if kind == "baseline":
        result: dict[str, Any] = {"values": baseline(path, keys, window)}
    else:
        result = engine(path, keys, window, 100_000 if kind == "two-pass" else 50_000_000)
    result["wall_s"] = time.perf_counter() - start
    result["rss_mb"] = bench_reader._peak_rss_mb()
    print(json.dumps(result))


def main() -> int:
    args = bench_reader.parse_args(__doc__.split("\n")[0], 2, child)
    if args is None:
        return 0
    # The same generated file as bench_reader's (one size unit, GiB: the two used to disagree on it)
    path, meta_path, _ = bench_reader.raw_file(args.size_gb)
    gb = path.stat().st_size / 1e9
    runs: dict[str, list[dict[str, Any]]] = {"baseline": [], "one-pass": [], "two-pass": []}
    for _ in range(args.repeat):
        for kind in runs:
            runs[kind].append(bench_reader.run_child(kind, path, meta_path, script=__file__))
    best = {kind: min(r, key=lambda x: x["wall_s"]) for kind, r in runs.items()}
    base = best["baseline"]
    print(f"raw file: {gb:.2f} GB, {len(_keys())} (sub)metrics judged, steady window by timestamp")
    print(f"{'method':<10} {'wall s':>8} {'GB/s':>6} {'peak RSS MB':>12} {'time vs baseline':>17} {'RSS vs baseline':>16}")
    for kind, r in best.items():
        print(f"{kind:<10} {r['wall_s']:8.1f} {gb / r['wall_s']:6.2f} {r['rss_mb']:12.0f} "
              f"{r['wall_s'] / base['wall_s']:16.2f}x {r['rss_mb'] / base['rss_mb']:15.2f}x")
    agree = all(best[k]["values"] == base["values"] for k in ("one-pass", "two-pass"))
    print(f"two-pass path taken: {best['two-pass'].get('two_pass')}; every value identical to the baseline: {agree}")
    if not agree:
        for key in base["values"]:
            for kind in ("one-pass", "two-pass"):
                if best[kind]["values"].get(key) != base["values"][key]:
                    print(f"  {kind} {key}: {best[kind]['values'].get(key)} vs {base['values'][key]}")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
