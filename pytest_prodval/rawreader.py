"""Streaming reader of k6's raw output (`--out json=FILE`, NDJSON, optionally gzip).

One pass over the file, memory that does not grow with its size, and no JSON parsing of
the lines in the normal case. k6 v1.1.0 writes every record on one line in a fixed
shape::

    {"type":"Metric","data":{"name":"games_active_delta","type":"counter",...},"metric":"games_active_delta"}
    {"metric":"games_active_delta","type":"Point","data":{"time":"2026-11-27T02:47:23.602300718Z","value":1,"tags":{...}}}

The reader works on large blocks of whole lines. In each block it checks with a few
`bytes.count` calls that every line has one of those two shapes (a block that does
not goes through a per-line slow path, which skips and counts bad lines and parses
lines of another shape with `json`), then finds the few metrics it needs with
`bytes.find` on the exact line prefix and slices `time` and `value` out of them. All
other lines (about 6 of every 7) are never looked at one by one.

Kept in memory: the lifecycle deltas (two per game and player, few), and the
`http_req_duration` values of the buckets that are still open (a bucket is closed, its
percentiles computed and its values dropped, once the stream is `lag_s` past its end;
k6 points from different VUs are not strictly time-ordered).

Times are epoch milliseconds (floats) throughout, like `t0_ms` (k6's `Date.now()`).
"""

from __future__ import annotations

import calendar
import gzip
import json
import zlib
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel, Field

from .concurrency import levels_at, peak_concurrency
from .facts import CONCURRENCY_DELTAS
from .models import ConcurrencyMeasurement, SeriesPoint

__all__ = [
    "DELTA_METRICS",
    "ERROR_CLASSES",
    "RawDigest",
    "parse_time_ms",
    "peak_concurrency",
    "percentile",
    "read_raw",
]

# Custom counters → error class in `SeriesPoint.errors`.
ERROR_CLASSES: dict[str, str] = {
    "auth_token_expired_total": "401",
    "rate_limit_hit_total": "429",
    "capacity_failures_total": "capacity",
    "contract_failures_total": "contract",
    "id_lifecycle_mismatches_total": "lifecycle",
}
# Lifecycle delta counters → concurrency kind (one fact, shared with the k6 script).
DELTA_METRICS: dict[str, str] = {metric: kind for kind, metric in CONCURRENCY_DELTAS.items()}

_READ_SIZE = 1 << 22  # bytes of (decompressed) data per block
_GZ_READ_SIZE = 1 << 20  # compressed bytes read at a time
_TIME_CACHE_MAX = 1 << 17

_POINT_HEAD = b'","type":"Point","data":{"time":"'
_P_DUR = b'\n{"metric":"http_req_duration' + _POINT_HEAD
_P_TOTAL = b"_total" + _POINT_HEAD  # all error counters end in _total
_P_DELTA = b"_active_delta" + _POINT_HEAD  # both lifecycle counters end in _active_delta
_LINE_POINT = b'}\n{"metric":"'
_LINE_METRIC = b'}\n{"type":"Metric","data":{'
_VALUE_KEY = b'","value":'
_ERROR_BYTES = {name.encode(): cls for name, cls in ERROR_CLASSES.items()}
_DELTA_BYTES = {name.encode(): kind for name, kind in DELTA_METRICS.items()}


class RawDigest(BaseModel):
    """What one pass over a k6 raw output file measured."""

    concurrency: dict[str, ConcurrencyMeasurement] = Field(default_factory=dict)
    series: list[SeriesPoint] = Field(default_factory=list)
    lines: int = 0  # complete lines read (plus a parseable unterminated last line)
    points: int = 0  # Point records
    bad_lines: int = 0  # lines skipped because they are not a k6 record
    truncated: bool = False  # the file ends mid-line, with a bad line, or the gzip stream is cut
    truncated_reason: str | None = None
    # first / last Point in file order (k6 writes nearly in time order), widened by the deltas
    first_time_ms: float | None = None
    last_time_ms: float | None = None
    late_values: int = 0  # durations that arrived after their bucket closed (not in its percentiles)
    split_lines: int = 0  # lines written to `split_to`


# ---------------------------------------------------------------------------- pure helpers


def percentile(sorted_values: list[float], pct: float) -> float:
    """k6's percentile (`p(N)` of a Trend): linear interpolation between closest ranks.

    `sorted_values` must be sorted ascending and not empty; `pct` is in [0, 100].
    """
    n = len(sorted_values)
    if n == 1:
        return sorted_values[0]
    rank = pct / 100.0 * (n - 1)
    low = int(rank)
    high = min(low + 1, n - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


def _offset_ms(zone: bytes) -> float:
    """Milliseconds to subtract for a zone suffix: b"Z", b"+02:00", b"-0530"."""
    if zone in (b"Z", b"z", b""):
        return 0.0
    sign = -1.0 if zone[:1] == b"-" else 1.0
    digits = zone[1:].replace(b":", b"")
    if len(digits) != 4 or not digits.isdigit():
        raise ValueError(f"bad UTC offset {zone!r}")
    return sign * (int(digits[:2]) * 60 + int(digits[2:])) * 60_000.0


def _second_ms(prefix: bytes) -> float:
    """Epoch ms of b"YYYY-MM-DDTHH:MM:SS" read as UTC."""
    if len(prefix) != 19 or prefix[4:5] != b"-" or prefix[10:11] not in (b"T", b"t", b" ") or prefix[16:17] != b":":
        raise ValueError(f"bad RFC3339 time {prefix!r}")
    fields = (int(prefix[0:4]), int(prefix[5:7]), int(prefix[8:10]), int(prefix[11:13]), int(prefix[14:16]),
              int(prefix[17:19]))
    return calendar.timegm(fields) * 1000.0


def _split_tail(tail: bytes) -> tuple[bytes, bytes]:
    """b".602300718Z" → (b".602300718", b"Z"); b"+00:00" → (b"", b"+00:00")."""
    if tail.endswith((b"Z", b"z")):
        return tail[:-1], tail[-1:]
    for i, c in enumerate(tail):
        if c in (43, 45):  # + -
            return tail[:i], tail[i:]
    return tail, b""


def parse_time_ms(text: bytes | str, cache: dict[bytes, float] | None = None) -> float:
    """RFC3339 time (k6: nanoseconds and `Z`, or a numeric offset) → epoch milliseconds.

    `cache` maps the second-resolution prefix (first 19 characters) to its epoch ms, so
    only the fractional part and the zone are read per call.
    """
    raw = text.encode() if isinstance(text, str) else text
    prefix = raw[:19]
    base = cache.get(prefix) if cache is not None else None
    if base is None:
        base = _second_ms(prefix)
        if cache is not None:
            if len(cache) >= _TIME_CACHE_MAX:
                cache.clear()
            cache[prefix] = base
    frac, zone = _split_tail(raw[19:])
    if zone != b"Z":
        base -= _offset_ms(zone)
    if frac:
        if frac[:1] != b"." or not frac[1:].isdigit():
            raise ValueError(f"bad fractional seconds in {raw!r}")
        return base + float(frac) * 1000.0
    return base


# ---------------------------------------------------------------------------- input blocks


@dataclass
class _Source:
    """Blocks of (decompressed) bytes from a plain or gzip file; notes a cut gzip stream."""

    path: Path
    truncated_reason: str | None = None

    def blocks(self) -> Iterator[bytes]:
        with open(self.path, "rb") as handle:
            magic = handle.read(2)
            handle.seek(0)
            if magic == b"\x1f\x8b":
                yield from self._gunzip(handle)
            else:
                while block := handle.read(_READ_SIZE):
                    yield block

    def _gunzip(self, handle: IO[bytes]) -> Iterator[bytes]:
        inflater = zlib.decompressobj(31)
        pending = handle.read(_GZ_READ_SIZE)
        while True:
            if not pending:
                pending = handle.read(_GZ_READ_SIZE)
                if not pending:
                    if not inflater.eof:
                        self.truncated_reason = "the gzip stream is cut (no end-of-stream marker)"
                    return
            try:
                out = inflater.decompress(pending, _READ_SIZE)
            except zlib.error as exc:
                self.truncated_reason = f"the gzip stream is corrupt: {exc}"
                return
            if out:
                yield out
            if inflater.eof:  # a member ended; another may follow (concatenated gzip)
                pending = inflater.unused_data or handle.read(_GZ_READ_SIZE)
                if not pending.strip(b"\x00"):
                    return
                inflater = zlib.decompressobj(31)
            else:
                pending = inflater.unconsumed_tail


# ---------------------------------------------------------------------------- the pass


class _Bucket:
    """One series bucket; `durations` is dropped when the bucket closes."""

    __slots__ = ("requests", "durations", "pcts", "errors")

    def __init__(self) -> None:
        self.requests = 0
        self.durations: array[float] | None = array("d")
        self.pcts: tuple[float, float, float] | None = None
        self.errors: dict[str, int] = {}

    def close(self) -> None:
        if self.durations:
            values = sorted(self.durations)
            self.pcts = (percentile(values, 50), percentile(values, 95), percentile(values, 99))
        self.durations = None


@dataclass
class _Pass:
    """State of one streaming pass."""

    t0_ms: float
    bucket_ms: float
    lag_ms: float
    split_scenario: bytes | None
    split_out: IO[bytes] | None
    digest: RawDigest = field(default_factory=RawDigest)
    buckets: dict[int, _Bucket] = field(default_factory=dict)
    deltas: dict[str, tuple[array[float], array[float]]] = field(default_factory=dict)
    times: dict[bytes, float] = field(default_factory=dict)
    last_line_bad: bool = False
    open: set[int] = field(default_factory=set)  # buckets still collecting durations
    newest: float = float("-inf")  # the latest block-end time seen: drives bucket closing

    def bucket(self, ms: float) -> tuple[_Bucket, float, float]:
        """The bucket holding `ms` and its bounds [lo, hi)."""
        idx = int((ms - self.t0_ms) // self.bucket_ms)
        found = self.buckets.get(idx)
        if found is None:
            found = self.buckets[idx] = _Bucket()
            self.open.add(idx)
        lo = self.t0_ms + idx * self.bucket_ms
        return found, lo, lo + self.bucket_ms

    def time_after(self, data: bytes, start: int) -> tuple[float, int]:
        """Parse the time string starting at `start`; returns (ms, index of its closing quote)."""
        quote = data.index(b'"', start, start + 48)
        return parse_time_ms(data[start:quote], self.times), quote

    # -- one block of whole lines: data = b"}\n" + lines, each ending in b"\n"

    def block(self, data: bytes, start: int, end: int, checked: bool = False) -> None:
        """Lines data[start + 2:end]; data[start:start + 2] must be b"}\n" (the previous line's end)."""
        lines = data.count(b"\n", start, end) - 1
        points = data.count(_LINE_POINT, start, end)
        metrics = _positions(data, _LINE_METRIC, start, end)
        if not checked and (points + len(metrics) != lines or data[end - 2] != 125 or data[start] != 125):
            self.slow_block(data[start + 2:end - 1].split(b"\n"))
            return
        self.last_line_bad = False
        digest = self.digest
        digest.lines += lines
        digest.points += points
        if points:
            self.note_times(data, start, end)
        self.durations(data, start, end)
        self.counters(data, start, end)
        if self.split_out is not None:
            self.split(data, start, end, metrics)
        self.close_buckets()

    def note_times(self, data: bytes, start: int, end: int) -> None:
        last = data.rfind(_LINE_POINT, start, end)
        if self.digest.first_time_ms is None:
            first = data.find(_LINE_POINT, start, end)
            self.digest.first_time_ms = self.point_time(data, first)
        ms = self.point_time(data, last)
        if ms is not None:
            self.digest.last_time_ms = ms
            if ms > self.newest:
                self.newest = ms

    def point_time(self, data: bytes, line: int) -> float | None:
        at = data.find(b'"time":"', line, data.find(b"\n", line + 2))
        if at < 0:
            return None
        try:
            return self.time_after(data, at + 8)[0]
        except ValueError:
            return None

    def slow_time(self, data: bytes, s: int, q: int) -> float | None:
        """Time of a point the fast path could not read (new second, offset, no fraction); None if bad."""
        try:
            return parse_time_ms(data[s:q], self.times)
        except ValueError:
            return None

    def durations(self, data: bytes, start: int, end: int) -> None:
        """`http_req_duration` values into their buckets, and the request count (the hot loop).

        k6 writes one `http_reqs` point (value 1) and one `http_req_duration` point per HTTP
        request, at the same time, so counting durations counts requests: one scan, not two.
        """
        find = data.find
        times = self.times
        t0, size = self.t0_ms, self.bucket_ms
        buckets = self.buckets
        width = len(_P_DUR)
        lo = hi = 0.0
        append = None
        bucket = None
        i = find(_P_DUR, start, end)
        while i >= 0:
            s = i + width
            q = find(b'"', s)
            try:
                if data[q - 1] != 90:  # not ...Z: an offset or no fraction
                    raise KeyError
                ms = times[data[s:s + 19]] + float(data[s + 19:q - 1]) * 1000.0
            except (KeyError, ValueError):
                ms = self.slow_time(data, s, q)  # type: ignore[assignment]
            v = q + 10
            comma = find(b",", v, v + 40)
            try:
                if ms is None or comma < 0:
                    raise ValueError
                value = float(data[v:comma])
            except ValueError:
                self.bad_point(data, i, end)
                i = find(_P_DUR, s, end)
                continue
            if not lo <= ms < hi:
                idx = int((ms - t0) // size)
                bucket = buckets.get(idx)
                if bucket is None:
                    bucket = buckets[idx] = _Bucket()
                    self.open.add(idx)
                lo = t0 + idx * size
                hi = lo + size
                append = None if bucket.durations is None else bucket.durations.append  # closed: too late
            bucket.requests += 1  # type: ignore[union-attr]  # set above on the first point
            if append is None:
                self.digest.late_values += 1
            else:
                append(value)
            i = find(_P_DUR, s, end)

    def counters(self, data: bytes, start: int, end: int) -> None:
        """The rare counters: error classes and lifecycle deltas (found by name suffix)."""
        for pattern, names in ((_P_TOTAL, _ERROR_BYTES), (_P_DELTA, _DELTA_BYTES)):
            i = data.find(pattern, start, end)
            while i >= 0:
                line = data.rfind(b"\n", start, i)
                s = i + len(pattern)
                name_at = line + 12
                if data[line:name_at] == b'\n{"metric":"':
                    target = names.get(data[name_at:i + len(pattern) - len(_POINT_HEAD)])
                    if target is not None:
                        self.counter_point(data, line, s, end, target, names is _DELTA_BYTES)
                i = data.find(pattern, s, end)

    def counter_point(self, data: bytes, line: int, s: int, end: int, target: str, is_delta: bool) -> None:
        try:
            ms, q = self.time_after(data, s)
            v = q + 10
            stop = data.index(b",", v, v + 40)
            if data[q:v] != _VALUE_KEY:
                raise ValueError("unexpected point layout")
            value = float(data[v:stop])
        except ValueError:
            self.bad_point(data, line, end)
            return
        if is_delta:
            times, values = self.deltas.setdefault(target, (array("d"), array("d")))
            times.append(ms)
            values.append(value)
        elif value:
            errors = self.bucket(ms)[0].errors
            errors[target] = errors.get(target, 0) + round(value)

    def bad_point(self, data: bytes, line: int, end: int) -> None:
        """A needed Point line whose time or value cannot be read: skip and count it."""
        self.digest.bad_lines += 1
        newline = data.find(b"\n", line + 1, end)
        if newline < 0 or newline >= end - 1:
            self.last_line_bad = True

    def split(self, data: bytes, start: int, end: int, metrics: list[int]) -> None:
        """Copy Metric lines and the split scenario's Point lines, in file order."""
        assert self.split_out is not None and self.split_scenario is not None
        starts = [at + 2 for at in metrics]
        tag = self.split_scenario
        find, rfind = data.find, data.rfind
        i = find(tag, start, end)
        while i >= 0:
            line = rfind(b"\n", start, i) + 1
            if data.startswith(b'{"metric":"', line):
                starts.append(line)
            i = find(tag, i + len(tag), end)
        if not starts:
            return
        if metrics:
            starts.sort()
        write = self.split_out.write
        for line in starts:
            write(data[line:find(b"\n", line) + 1])
        self.digest.split_lines += len(starts)

    def slow_block(self, raw_lines: list[bytes]) -> None:
        """A block with lines of another shape: skip bad ones, normalise parseable ones."""
        good: list[bytes] = []
        bad = 0
        for line in raw_lines:
            fixed = _normalise(line)
            if fixed is None:
                bad += 1
                self.last_line_bad = True
            else:
                good.append(fixed)
                self.last_line_bad = False
        self.digest.bad_lines += bad
        self.digest.lines += bad
        last_bad = self.last_line_bad
        if good:
            data = b"}\n" + b"\n".join(good) + b"\n"
            self.block(data, 0, len(data), checked=True)
        self.last_line_bad = last_bad

    def close_buckets(self, final: bool = False) -> None:
        """Close buckets the stream has left `lag_ms` behind (all when `final`)."""
        newest = self.newest
        for idx in [i for i in self.open if final or self.t0_ms + (i + 1) * self.bucket_ms + self.lag_ms <= newest]:
            self.buckets[idx].close()
            self.open.discard(idx)

    def finish(self, steady: tuple[float, float] | None, targets: dict[str, int]) -> RawDigest:
        self.close_buckets(final=True)
        digest = self.digest
        sorted_deltas = {
            kind: sorted(zip(times, values)) for kind, (times, values) in self.deltas.items()
        }
        for kind, pairs in sorted_deltas.items():
            for t, _ in pairs[:1] + pairs[-1:]:
                if digest.first_time_ms is None or t < digest.first_time_ms:
                    digest.first_time_ms = t
                if digest.last_time_ms is None or t > digest.last_time_ms:
                    digest.last_time_ms = t
        if steady is not None:
            window = (self.t0_ms + steady[0] * 1000.0, self.t0_ms + steady[1] * 1000.0)
        elif digest.first_time_ms is not None and digest.last_time_ms is not None:
            window = (digest.first_time_ms, digest.last_time_ms)
        else:
            window = None
        if window is not None:
            for kind in DELTA_METRICS.values():
                if kind in sorted_deltas:
                    digest.concurrency[kind] = peak_concurrency(sorted_deltas[kind], window, targets.get(kind))
        digest.series = self.series(sorted_deltas)
        return digest

    def series(self, sorted_deltas: dict[str, list[tuple[float, float]]]) -> list[SeriesPoint]:
        if not self.buckets:
            return []
        first, last = min(self.buckets), max(self.buckets)
        indexes = list(range(first, last + 1))
        ends = [self.t0_ms + (idx + 1) * self.bucket_ms for idx in indexes]
        levels: dict[str, list[int] | None] = {}
        for kind in ("games", "players"):
            pairs = sorted_deltas.get(kind)
            levels[kind] = levels_at(pairs, ends) if pairs else None
        out: list[SeriesPoint] = []
        empty = _Bucket()
        for n, idx in enumerate(indexes):
            bucket = self.buckets.get(idx, empty)
            p50, p95, p99 = bucket.pcts or (None, None, None)
            games, players = levels["games"], levels["players"]
            out.append(SeriesPoint(
                t=round(idx * self.bucket_ms / 1000.0, 6), requests=bucket.requests, p50_ms=p50, p95_ms=p95,
                p99_ms=p99, errors=dict(bucket.errors), games=games[n] if games else None,
                players=players[n] if players else None,
            ))
        return out


def _positions(data: bytes, pattern: bytes, start: int, end: int) -> list[int]:
    """Where `pattern` occurs in data[start:end] (for rare patterns)."""
    found: list[int] = []
    i = data.find(pattern, start, end)
    while i >= 0:
        found.append(i)
        i = data.find(pattern, i + 1, end)
    return found


def _normalise(line: bytes) -> bytes | None:
    """A line in k6's exact shape (as is, or rewritten from any valid JSON record), or None."""
    if line.endswith(b"}") and (line.startswith(b'{"metric":"') or line.startswith(b'{"type":"Metric","data":{')):
        return line
    try:
        record: Any = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    kind, name, data = record.get("type"), record.get("metric"), record.get("data")
    if kind == "Metric" and isinstance(name, str):
        return json.dumps({"type": "Metric", "data": data, "metric": name}, separators=(",", ":")).encode()
    if kind != "Point" or not isinstance(name, str) or not isinstance(data, dict):
        return None
    if not isinstance(data.get("time"), str) or not isinstance(data.get("value"), int | float):
        return None
    point = {"time": data["time"], "value": data["value"], "tags": data.get("tags") or {}}
    body = json.dumps(point, separators=(",", ":"))
    return b'{"metric":' + json.dumps(name).encode() + b',"type":"Point","data":' + body.encode() + b"}"


def read_raw(
    path: Path | Sequence[Path],
    *,
    t0_ms: float,
    steady: tuple[float, float] | None,
    targets: dict[str, int],
    bucket_s: float = 1.0,
    split_scenario: str | None = "ws_companion",
    split_to: Path | None = None,
    lag_s: float = 5.0,
) -> RawDigest:
    """Read a k6 raw output file (NDJSON or gzip) in one streaming pass.

    `path` may also be the files of one run's instances (segments, runner pods): they are read
    as one stream, a block of each in turn (instances started together write the same span of
    time at about the same rate, so the interleaved stream stays within `lag_s` of time order),
    and the ±1 deltas of all of them are swept on one time axis.

    `t0_ms`: the run's t0 (epoch ms, the script's `setup()` `Date.now()`); `steady`: the
    steady window in seconds after t0 (None: from the first to the last point);
    `targets`: {"games": n, "players": m} for the share of the window at/above target;
    `bucket_s`: series bucket width; `split_to`: also write every Metric line and every
    Point line tagged `scenario:<split_scenario>` there (gzip if it ends in `.gz`);
    `lag_s`: how long a bucket stays open for late (out-of-order) points.

    A file that ends mid-line, with an unparseable line, or with a cut/corrupt gzip
    stream gives `truncated=True` and everything read before; it never raises for that.
    """
    if bucket_s <= 0:
        raise ValueError("bucket_s must be > 0")
    paths = [Path(path)] if isinstance(path, (str, Path)) else [Path(p) for p in path]
    split_out: Any = None  # a GzipFile or a buffered file
    if split_to is not None:
        split_out = gzip.open(split_to, "wb", compresslevel=5) if split_to.name.endswith(".gz") \
            else open(split_to, "wb", buffering=1 << 20)
    state = _Pass(
        t0_ms=float(t0_ms), bucket_ms=bucket_s * 1000.0, lag_ms=max(lag_s, 0.0) * 1000.0,
        split_scenario=f'"scenario":{json.dumps(split_scenario)}'.encode() if split_scenario else None,
        split_out=split_out if split_scenario else None,
    )
    sources = [_Source(p) for p in paths]
    try:
        feeds = [_feed(state, source) for source in sources]
        while feeds:  # one block of each file in turn
            feeds = [feed for feed in feeds if next(feed, None) is not None]
    finally:
        if split_out is not None:
            split_out.close()
    digest = state.finish(steady, targets)
    for source in sources:
        if source.truncated_reason and not digest.truncated:
            digest.truncated = True
            digest.truncated_reason = source.truncated_reason if len(sources) == 1 else \
                f"{source.path.name}: {source.truncated_reason}"
    return digest


def _feed(state: _Pass, source: _Source) -> Iterator[bool]:
    """Feed one file's blocks of whole lines to `state`, yielding before each block (so its last
    block and its tail are read in one step: `last_line_bad` is still this file's)."""
    rest = b""
    for chunk in source.blocks():
        yield True
        first = chunk.find(b"\n")
        if first < 0:
            rest += chunk
            continue
        head = b"".join((b"}\n", rest, chunk[:first + 1]))  # the line across the block boundary
        state.block(head, 0, len(head))
        last = chunk.rfind(b"\n")
        if last > first:
            if first > 0 and chunk[first - 1] == 125:  # "}\n" before the region: no copy
                state.block(chunk, first - 1, last + 1)
            else:
                region = b"}\n" + chunk[first + 1:last + 1]
                state.block(region, 0, len(region))
        rest = chunk[last + 1:]
    _finish_tail(state, rest)


def _finish_tail(state: _Pass, rest: bytes) -> None:
    """The bytes after the last newline: a complete record is read, a partial one reported."""
    digest = state.digest
    if rest.strip():
        fixed = _normalise(rest.strip())
        if fixed is not None and _is_json(fixed):
            data = b"}\n" + fixed + b"\n"
            state.block(data, 0, len(data), checked=True)
            return
        digest.truncated = True
        digest.truncated_reason = f"the file ends mid-line ({len(rest)} bytes after the last newline)"
        return
    if state.last_line_bad:
        digest.truncated = True
        digest.truncated_reason = "the last line is not a k6 record"


def _is_json(line: bytes) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True
