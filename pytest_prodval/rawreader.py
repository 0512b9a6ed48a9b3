"""One streaming pass over k6's raw output (`--out json=FILE[.gz]`).

k6 writes one JSON object per line; a game run writes ~14 lines per request, so a long
run is gigabytes. This reader never parses a whole line as JSON: it reads the metric name
from the fixed line prefix, skips every metric it does not need, and slices `time` and
`value` out of the few it does. Memory holds only the concurrency deltas (a few per game)
and the latency values of the last few one-second buckets.
"""

from __future__ import annotations

import gzip
import math
import zlib
from array import array
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

from .models import ConcurrencyMeasurement, SeriesPoint

_POINT_PREFIX = b'{"metric":"'
_PREFIX_LEN = len(_POINT_PREFIX)
_ERROR_CLASSES = {
    b"auth_token_expired_total": "401",
    b"rate_limit_hit_total": "429",
    b"capacity_failures_total": "capacity",
    b"contract_failures_total": "contract",
    b"id_lifecycle_mismatches_total": "lifecycle",
}
_DELTAS = {b"games_active_delta": "games", b"players_active_delta": "players"}
_NEEDED = {b"http_reqs", b"http_req_duration", *_ERROR_CLASSES, *_DELTAS}
_OPEN_BUCKETS = 3  # buckets kept open for points that arrive slightly out of order


@dataclass
class RawDigest:
    """What the raw output says beyond k6's summary."""

    concurrency: dict[str, ConcurrencyMeasurement] = field(default_factory=dict)
    series: list[SeriesPoint] = field(default_factory=list)
    lines: int = 0
    points: int = 0
    bad_lines: int = 0
    truncated: bool = False
    first_time_ms: float | None = None
    last_time_ms: float | None = None


class _Clock:
    """RFC 3339 → epoch ms, with the date-time part cached (it changes once a second)."""

    def __init__(self) -> None:
        self._cache: dict[bytes, float] = {}

    def ms(self, stamp: bytes) -> float:
        head, rest = stamp[:19], stamp[19:]
        fraction = 0.0
        if rest[:1] == b".":
            end = 1
            while end < len(rest) and 48 <= rest[end] <= 57:
                end += 1
            fraction = float(b"0" + rest[:end])
            rest = rest[end:]
        key = head + rest
        base = self._cache.get(key)
        if base is None:
            zone = rest.decode() or "Z"
            text = head.decode() + ("+00:00" if zone in ("Z", "z") else zone)
            base = datetime.fromisoformat(text).astimezone(timezone.utc).timestamp() * 1000
            self._cache[key] = base
        return base + fraction * 1000


def _field(line: bytes, key: bytes, start: int = 0) -> tuple[bytes, int] | None:
    """The raw bytes of a scalar JSON field `"key":...` and where it ended."""
    at = line.find(key, start)
    if at < 0:
        return None
    at += len(key)
    if line[at : at + 1] == b'"':
        end = line.index(b'"', at + 1)
        return line[at + 1 : end], end
    end = at
    while end < len(line) and line[end] not in b",}":
        end += 1
    return line[at:end], end


def _normalize(line: bytes) -> bytes | None:
    """A Point line re-serialised the way k6 writes it (compact, `metric` first), else None."""
    import json

    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict) or record.get("type") != "Point" or "metric" not in record:
        return None
    ordered = {"metric": record["metric"], "type": "Point", "data": record.get("data", {})}
    return json.dumps(ordered, separators=(",", ":")).encode()


def _percentile(sorted_values: array[float] | list[float], p: float) -> float:
    """Linear interpolation between closest ranks (what k6 does for trends)."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    rank = (len(sorted_values) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


def _lines(path: Path) -> tuple[IO[bytes], Iterator[bytes]]:
    handle: IO[bytes] = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb", buffering=1 << 20)  # noqa: SIM115
    return handle, iter(handle)


def read_raw(
    path: Path,
    *,
    t0_ms: float,
    steady: tuple[float, float] | None,
    targets: dict[str, int],
    bucket_s: float = 1.0,
    split_scenario: str | None = "ws_companion",
    split_to: Path | None = None,
) -> RawDigest:
    """Concurrency over the steady window and a per-bucket time series, in one pass.

    A file cut mid-line or a cut gzip stream sets `truncated` (data before it is kept); a
    corrupt line in the middle is counted in `bad_lines` and skipped. Lines tagged with
    `split_scenario` (plus every Metric line) are also copied to `split_to`.
    """
    digest = RawDigest()
    clock = _Clock()
    deltas: dict[str, list[tuple[float, float]]] = {"games": [], "players": []}
    buckets: dict[int, SeriesPoint] = {}
    durations: dict[int, array[float]] = {}
    newest = -1
    split_marker = f'"scenario":"{split_scenario}"'.encode() if split_scenario else None
    out = open(split_to, "wb") if split_to is not None else None  # noqa: SIM115
    handle, lines = _lines(path)
    last = b""
    try:
        for line in lines:
            digest.lines += 1
            last = line
            if out is not None and (line.startswith(b'{"type":"Metric"') or (split_marker and split_marker in line)):
                out.write(line)
            if not line.startswith(_POINT_PREFIX):
                if line.startswith(b'{"type":"Metric"') or not line.strip():
                    continue
                compact = _normalize(line)  # slow path: valid JSON written by something other than k6
                if compact is None:
                    digest.bad_lines += 1
                    continue
                line = compact
            end = line.find(b'"', _PREFIX_LEN)
            name = line[_PREFIX_LEN:end]
            if name not in _NEEDED:
                digest.points += 1
                continue
            try:
                stamp, after = _field(line, b'"time":', end)  # type: ignore[misc]
                raw_value, _ = _field(line, b'"value":', after)  # type: ignore[misc]
                t_ms, value = clock.ms(stamp), float(raw_value)
            except (TypeError, ValueError):
                digest.bad_lines += 1
                continue
            digest.points += 1
            if digest.first_time_ms is None or t_ms < digest.first_time_ms:
                digest.first_time_ms = t_ms
            if digest.last_time_ms is None or t_ms > digest.last_time_ms:
                digest.last_time_ms = t_ms
            kind = _DELTAS.get(name)
            if kind is not None:
                deltas[kind].append((t_ms, value))
                continue
            index = int((t_ms - t0_ms) / 1000 // bucket_s)
            point = buckets.get(index)
            if point is None:
                point = buckets[index] = SeriesPoint(t=index * bucket_s)
            if name == b"http_reqs":
                point.requests += int(value)
            elif name == b"http_req_duration":
                values = durations.get(index)
                if values is None:
                    if index < newest - _OPEN_BUCKETS:
                        continue  # bucket already closed: too late for its percentiles
                    values = durations[index] = array("d")
                values.append(value)
                if index > newest:
                    newest = index
                    for old in [b for b in durations if b < newest - _OPEN_BUCKETS]:
                        _close(buckets[old], durations.pop(old))
            else:
                label = _ERROR_CLASSES[name]
                point.errors[label] = point.errors.get(label, 0) + int(value)
    except (EOFError, zlib.error, gzip.BadGzipFile, OSError):
        digest.truncated = True
    finally:
        handle.close()
        if out is not None:
            out.close()
    if last and not last.endswith(b"\n"):
        digest.truncated = True  # cut mid-line: k6 did not finish writing
    for index, values in durations.items():
        _close(buckets[index], values)
    window = None
    if steady is not None:
        window = (t0_ms + steady[0] * 1000, t0_ms + steady[1] * 1000)
    for kind, points in deltas.items():
        if points:
            digest.concurrency[kind] = peak_concurrency(points, window, targets.get(kind))
    digest.series = [buckets[i] for i in sorted(buckets)]
    _attach_running_counts(digest.series, deltas, t0_ms, bucket_s)
    return digest


def _close(point: SeriesPoint, values: array[float]) -> None:
    ordered = sorted(values)
    if ordered:
        point.p50_ms = _percentile(ordered, 50)
        point.p95_ms = _percentile(ordered, 95)
        point.p99_ms = _percentile(ordered, 99)


def _attach_running_counts(series: list[SeriesPoint], deltas: dict[str, list[tuple[float, float]]], t0_ms: float, bucket_s: float) -> None:
    """Games and players active at the end of each bucket, for the charts."""
    for kind, points in deltas.items():
        if not points:
            continue
        ordered = sorted(points)
        times = [t for t, _ in ordered]
        running: list[float] = []
        total = 0.0
        for _, value in ordered:
            total += value
            running.append(total)
        for point in series:
            at = bisect_right(times, t0_ms + (point.t + bucket_s) * 1000)
            setattr(point, kind, int(running[at - 1]) if at else 0)


def peak_concurrency(
    deltas: Iterable[tuple[float, float]], window: tuple[float, float] | None, target: int | None
) -> ConcurrencyMeasurement:
    """Peak, time-weighted mean and share at/above target of the running sum of ±deltas.

    Deltas are (time ms, +n/−n) in any order. Inside `window` (absolute ms) only; the sum at
    the window start counts everything that started before it and has not ended.
    """
    ordered = sorted(deltas)
    if window is None:
        window = (ordered[0][0], ordered[-1][0]) if ordered else (0.0, 0.0)
    start, end = window
    level = sum(v for t, v in ordered if t <= start)
    peak = level
    weighted = 0.0
    at_target = 0.0
    cursor = start
    for t, value in ordered:
        if t <= start:
            continue
        if t > end:
            break
        span = t - cursor
        weighted += level * span
        if target is not None and level >= target:
            at_target += span
        cursor = t
        level += value
        peak = max(peak, level)
    span = end - cursor
    weighted += level * span
    if target is not None and level >= target:
        at_target += span
    length = end - start
    return ConcurrencyMeasurement(
        peak=int(peak),
        time_weighted_mean=weighted / length if length > 0 else float(level),
        share_at_or_above_target=(at_target / length if length > 0 else None) if target is not None else None,
        target=target,
        events=len(ordered),
    )
