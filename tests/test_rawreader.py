"""The streaming raw reader: the concurrency sweep, truncation, gzip, the split, exact percentiles."""

from __future__ import annotations

import gzip
import json
import random
import time
from pathlib import Path

import pytest

from pytest_prodval import rawfile
from pytest_prodval.concurrency import peak_concurrency
from pytest_prodval.rawreader import parse_time_ms, percentile, read_raw

T0 = 1_800_000_000_000.0  # epoch ms, whole second


def stamp(ms: float, zone: str = "Z") -> str:
    """k6's RFC3339Nano: trailing zeros trimmed."""
    sec, frac_ms = divmod(ms, 1000.0)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    nanos = round(frac_ms * 1e6)
    return (f"{text}.{nanos:09d}".rstrip("0") if nanos else text) + zone


def metric(name: str) -> str:
    return json.dumps({"type": "Metric", "data": {"name": name, "type": "counter", "contains": "default",
                                                   "thresholds": [], "submetrics": None}, "metric": name},
                      separators=(",", ":"))


def point(metric_name: str, ms: float, value: float, scenario: str = "players", **tags: str) -> str:
    all_tags = {"group": "", "phase": "steady", "scenario": scenario, **tags}
    return json.dumps({"metric": metric_name, "type": "Point",
                       "data": {"time": stamp(ms), "value": value, "tags": dict(sorted(all_tags.items()))}},
                      separators=(",", ":"))


def write(path: Path, lines: list[str], *, newline_at_end: bool = True) -> Path:
    path.write_text("\n".join(lines) + ("\n" if newline_at_end else ""))
    return path


# ---------------------------------------------------------------------------- the sweep


def test_sweep_counts_games_running_at_window_start_and_after_end() -> None:
    deltas = [(0.0, 1), (5.0, 1), (50.0, -1), (200.0, -1)]  # two games from before the window
    result = peak_concurrency(deltas, (10.0, 100.0), 2)
    assert result.peak == 2
    assert result.time_weighted_mean == pytest.approx((2 * 40 + 1 * 50) / 90)
    assert result.share_at_or_above_target == pytest.approx(40 / 90)
    assert result.events == 3  # the end at 200 is after the window


def test_sweep_overlapping_and_out_of_order() -> None:
    deltas = [(30.0, -1), (10.0, 1), (25.0, -1), (20.0, 1), (15.0, 1), (40.0, -1)]
    result = peak_concurrency(deltas, (0.0, 50.0), 3)
    assert result.peak == 3
    assert result.share_at_or_above_target == pytest.approx(5 / 50)  # 20..25
    assert result.time_weighted_mean == pytest.approx((1 * 5 + 2 * 5 + 3 * 5 + 2 * 5 + 1 * 10) / 50)


def test_sweep_no_events_in_window_but_ongoing_games() -> None:
    result = peak_concurrency([(0.0, 4), (1000.0, -4)], (100.0, 200.0), 4)
    assert (result.peak, result.time_weighted_mean, result.share_at_or_above_target) == (4, 4.0, 1.0)
    assert result.events == 1


def test_sweep_same_instant_is_applied_together_and_points_at_edges() -> None:
    # a game ends and another starts at the same instant: no spike to 2
    assert peak_concurrency([(0.0, 1), (10.0, -1), (10.0, 1)], (0.0, 20.0), None).peak == 1
    # a delta exactly at the window end still counts for the peak (closed window)
    result = peak_concurrency([(20.0, 3)], (0.0, 20.0), 3)
    assert result.peak == 3 and result.time_weighted_mean == 0.0 and result.share_at_or_above_target == 0.0
    # no deltas at all, empty window, no target
    empty = peak_concurrency([], (5.0, 5.0), None)
    assert empty.peak == 0 and empty.events == 0 and empty.share_at_or_above_target is None
    with pytest.raises(ValueError):
        peak_concurrency([], (5.0, 1.0), None)


def test_times_with_nanoseconds_and_offsets() -> None:
    cache: dict[bytes, float] = {}
    assert parse_time_ms(b"2026-11-27T02:47:23.602300718Z", cache) == pytest.approx(1795747643602.300718)
    assert parse_time_ms("2026-11-27T02:47:23.602300718+00:00") == pytest.approx(1795747643602.300718)
    assert parse_time_ms("2026-11-27T04:47:23.5+02:00", cache) == pytest.approx(1795747643500.0)
    assert parse_time_ms("2026-11-27T02:47:23Z", cache) == 1795747643000.0
    with pytest.raises(ValueError):
        parse_time_ms("2026-11-27T02:47")


# ---------------------------------------------------------------------------- whole files


def small_run(seed: int = 3) -> tuple[list[str], list[tuple[float, str, float]]]:
    """A k6-like file: lines, and the (ms, metric, value) of every needed point."""
    rng = random.Random(seed)
    lines = [metric(m) for m in ("http_reqs", "http_req_duration", "http_req_waiting", "games_active_delta",
                                 "players_active_delta", "rate_limit_hit_total", "ws_message_latency")]
    needed: list[tuple[float, str, float]] = []
    for n in range(3000):
        ms = T0 + n * 7.0 + rng.uniform(-300, 300)  # ±0.3 s out of order
        value = round(rng.lognormvariate(3, 0.7), 6)
        lines += [point("http_reqs", ms, 1, name="login", status="200"),
                  point("http_req_duration", ms, value, name="login", status="200"),
                  point("http_req_waiting", ms, value / 2, name="login", status="200")]
        needed += [(ms, "http_reqs", 1), (ms, "http_req_duration", value)]
        if n % 97 == 0:
            lines.append(point("rate_limit_hit_total", ms, 1))
            needed.append((ms, "rate_limit_hit_total", 1))
        if n % 50 == 0:
            lines.append(point("ws_message_latency", ms, 3.5, scenario="ws_companion"))
        if n % 300 == 0:
            lines += [point("games_active_delta", ms, 1), point("players_active_delta", ms, 3)]
            needed += [(ms, "games_active_delta", 1), (ms, "players_active_delta", 3)]
        if n % 300 == 100:
            lines += [point("games_active_delta", ms, -1), point("players_active_delta", ms, -3)]
            needed += [(ms, "games_active_delta", -1), (ms, "players_active_delta", -3)]
    return lines, needed


def test_series_percentiles_exact_against_brute_force(tmp_path: Path) -> None:
    lines, needed = small_run()
    digest = read_raw(write(tmp_path / "raw.json", lines), t0_ms=T0, steady=(2.0, 18.0),
                      targets={"games": 1, "players": 3}, bucket_s=1.0)
    assert (digest.lines, digest.points, digest.bad_lines, digest.truncated) == (len(lines), len(lines) - 7, 0, False)
    assert digest.late_values == 0
    by_bucket: dict[int, list[float]] = {}
    requests: dict[int, int] = {}
    errors: dict[int, int] = {}
    for ms, name, value in needed:
        idx = int((ms - T0) // 1000)
        if name == "http_req_duration":
            by_bucket.setdefault(idx, []).append(value)
        elif name == "http_reqs":
            requests[idx] = requests.get(idx, 0) + 1
        elif name == "rate_limit_hit_total":
            errors[idx] = errors.get(idx, 0) + 1
    series = {round(p.t): p for p in digest.series}
    assert sorted(series) == list(range(min(by_bucket), max(by_bucket) + 1))
    for idx, values in by_bucket.items():
        ordered = sorted(values)
        # brute force: k6's definition, written out
        for pct, got in ((50, series[idx].p50_ms), (95, series[idx].p95_ms), (99, series[idx].p99_ms)):
            rank = pct / 100 * (len(ordered) - 1)
            low = int(rank)
            high = min(low + 1, len(ordered) - 1)
            assert got == pytest.approx(ordered[low] + (ordered[high] - ordered[low]) * (rank - low), abs=1e-9)
        assert series[idx].requests == requests[idx]
        assert series[idx].errors.get("429", 0) == errors.get(idx, 0)
    # running concurrency at each bucket end, from the deltas
    deltas = sorted((ms, v) for ms, name, v in needed if name == "games_active_delta")
    for idx, p in series.items():
        assert p.games == round(sum(v for ms, v in deltas if ms <= T0 + (idx + 1) * 1000))
    games = digest.concurrency["games"]
    assert games == peak_concurrency(deltas, (T0 + 2000, T0 + 18000), 1)
    assert games.peak == 1 and 0 < games.share_at_or_above_target < 1
    assert digest.concurrency["players"].peak == 3
    assert digest.first_time_ms is not None and digest.last_time_ms is not None


def test_percentile_helper() -> None:
    assert percentile([5.0], 99) == 5.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0], 100) == 4.0


def test_small_blocks_give_the_same_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines, _ = small_run(seed=5)
    path = write(tmp_path / "raw.json", lines)
    whole = read_raw(path, t0_ms=T0, steady=(1.0, 15.0), targets={"games": 1})
    monkeypatch.setattr(rawfile, "_READ_SIZE", 997)  # lines straddle every block boundary
    pieces = read_raw(path, t0_ms=T0, steady=(1.0, 15.0), targets={"games": 1})
    assert pieces == whole


def test_cut_mid_line_is_reported_with_the_data_before(tmp_path: Path) -> None:
    lines = [metric("games_active_delta"), point("games_active_delta", T0 + 1000, 1),
             point("http_reqs", T0 + 1500, 1), point("http_req_duration", T0 + 1500, 12.5)]
    text = "\n".join(lines) + "\n" + point("http_reqs", T0 + 2500, 1)[:40]
    (tmp_path / "raw.json").write_text(text)
    digest = read_raw(tmp_path / "raw.json", t0_ms=T0, steady=(0.0, 3.0), targets={"games": 1})
    assert digest.truncated and "mid-line" in (digest.truncated_reason or "")
    assert digest.lines == 4 and digest.concurrency["games"].peak == 1
    assert [(p.t, p.requests, p.p50_ms) for p in digest.series] == [(1.0, 1, 12.5)]
    # a complete last record without its newline is read, not reported
    complete = write(tmp_path / "complete.json", lines, newline_at_end=False)
    digest = read_raw(complete, t0_ms=T0, steady=(0.0, 3.0), targets={})
    assert not digest.truncated and digest.lines == 4 and digest.series[0].p50_ms == 12.5


def test_bad_middle_line_is_skipped_and_counted(tmp_path: Path) -> None:
    lines = [metric("http_reqs"), point("http_reqs", T0 + 100, 1),
             point("http_req_duration", T0 + 100, 10.0)[:50],  # cut, then k6 went on
             "garbage \x00\x00",
             point("http_req_duration", T0 + 200, 20.0),
             json.dumps({"type": "Point", "metric": "http_req_duration",  # another key order, spaces: still read
                         "data": {"time": stamp(T0 + 300), "value": 20.0, "tags": {}}}),
             point("http_reqs", T0 + 400, 1)]
    digest = read_raw(write(tmp_path / "raw.json", lines), t0_ms=T0, steady=None, targets={})
    assert (digest.bad_lines, digest.truncated, digest.lines) == (2, False, 7)
    # requests are counted from http_req_duration points (one per request): the two whole ones
    assert digest.series[0].requests == 2 and digest.series[0].p50_ms == 20.0
    # the same bad line last: reported as truncated, and the cut point is not counted
    digest = read_raw(write(tmp_path / "last.json", lines[:3]), t0_ms=T0, steady=None, targets={})
    assert digest.truncated and digest.bad_lines == 1 and sum(p.requests for p in digest.series) == 0


def test_bad_time_or_value_in_a_needed_point_is_counted(tmp_path: Path) -> None:
    good = point("http_req_duration", T0 + 100, 10.0)
    lines = [good.replace('"value":10.0', '"value":"x"'), good.replace(stamp(T0 + 100), "yesterday"), good]
    digest = read_raw(write(tmp_path / "raw.json", lines), t0_ms=T0, steady=None, targets={})
    assert digest.bad_lines == 2 and digest.series[0].p50_ms == 10.0


def test_gzip_and_cut_gzip(tmp_path: Path) -> None:
    lines, _ = small_run(seed=9)
    plain = read_raw(write(tmp_path / "raw.json", lines), t0_ms=T0, steady=(1.0, 15.0), targets={"games": 1})
    packed = tmp_path / "raw.json.gz"
    with gzip.open(packed, "wt") as handle:
        handle.write("\n".join(lines) + "\n")
    assert read_raw(packed, t0_ms=T0, steady=(1.0, 15.0), targets={"games": 1}) == plain
    data = packed.read_bytes()
    cut = tmp_path / "cut.json.gz"
    cut.write_bytes(data[: len(data) // 2])
    digest = read_raw(cut, t0_ms=T0, steady=(1.0, 15.0), targets={"games": 1})
    assert digest.truncated and digest.truncated_reason
    assert 0 < digest.lines < plain.lines and digest.series
    corrupt = tmp_path / "corrupt.json.gz"
    corrupt.write_bytes(data[:2000] + bytes(200) + data[2200:])
    digest = read_raw(corrupt, t0_ms=T0, steady=None, targets={})
    assert digest.truncated and "gzip" in (digest.truncated_reason or "")


def test_split_writes_metric_lines_and_the_companion_points(tmp_path: Path) -> None:
    lines, _ = small_run(seed=11)
    split = tmp_path / "websocket.json"
    digest = read_raw(write(tmp_path / "raw.json", lines), t0_ms=T0, steady=None, targets={}, split_to=split)
    expected = [line for line in lines if line.startswith('{"type":"Metric"') or '"scenario":"ws_companion"' in line]
    assert split.read_text().splitlines() == expected
    assert digest.split_lines == len(expected)
    # no split without a scenario; gzip when the name says so
    digest = read_raw(tmp_path / "raw.json", t0_ms=T0, steady=None, targets={}, split_scenario=None,
                      split_to=tmp_path / "none.json")
    assert digest.split_lines == 0
    read_raw(tmp_path / "raw.json", t0_ms=T0, steady=None, targets={}, split_to=tmp_path / "ws.json.gz")
    assert gzip.decompress((tmp_path / "ws.json.gz").read_bytes()).decode().splitlines() == expected


def test_late_points_after_their_bucket_closed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rawfile, "_READ_SIZE", 300)
    lines = [point("http_req_duration", T0 + s * 1000 + 10, float(s)) for s in range(20)]
    lines.append(point("http_req_duration", T0 + 500, 99.0))  # 19 s late
    lines.append(point("http_reqs", T0 + 500, 1))
    digest = read_raw(write(tmp_path / "raw.json", lines), t0_ms=T0, steady=None, targets={}, lag_s=2.0)
    assert digest.late_values == 1
    assert digest.series[0].p99_ms == 0.0 and digest.series[0].requests == 2  # the late request still counts


def test_empty_file(tmp_path: Path) -> None:
    digest = read_raw(write(tmp_path / "raw.json", [], newline_at_end=False), t0_ms=T0, steady=(0, 1), targets={})
    assert digest.lines == 0 and digest.series == [] and digest.concurrency == {} and not digest.truncated
